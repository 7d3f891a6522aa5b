"""The IMUSE book's builder (what `make book` runs through ``scripts/build_book.py``), by part:

* :mod:`~bookbuild.cli` - the build step by step, its options, its lock and its time by step;
* :mod:`~bookbuild.toc` - the notebooks ``_toc.yml`` lists;
* :mod:`~bookbuild.vendor` - the book's JavaScript and the "Try it" page's assets, served offline;
* :mod:`~bookbuild.execution` - papermill execution, the execution cache, plotly figures;
* :mod:`~bookbuild.presentation` - reader-first cells, the "numbers from" line, the repository setting;
* :mod:`~bookbuild.build_box` - the landing page's build box;
* :mod:`~bookbuild.checks` - the offline scan of the HTML and the browser check;
* :mod:`~bookbuild.browser` - Playwright driving the system's Chromium (pages, layout, Try it times);
* :mod:`~bookbuild.common` - paths, :class:`~bookbuild.common.BuildError`, the log line.

It lives in ``scripts/`` (it is run, not installed): import it with ``scripts/`` on ``sys.path``.
Provenance (git commit, date, device) is the library's: :mod:`imuse_lib.provenance`.
"""
