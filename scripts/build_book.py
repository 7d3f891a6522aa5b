#!/usr/bin/env python
"""Build the IMUSE Jupyter Book, offline: what `make book` runs.

1. verify the input data (checksums of every registered file);
2. fetch the book's JavaScript into ``book/_static/vendor`` (plotly.js from the installed plotly
   package, MathJax 3 from the npm registry, cached) so that no page loads anything from the internet;
3. execute the notebooks listed in ``_toc.yml`` in order with papermill into ``book/_executed/``
   (a notebook is skipped while its executed copy is up to date: same notebook, parameters,
   library sources and results; ``--force`` re-executes);
4. present the executed copies reader-first: code folded or removed by a rule that cell tags
   override, a line on each chapter saying which profile and commit its numbers come from (with
   Colab/Binder links when the repository is set), and the landing page's build box;
5. build the HTML with Jupyter Book 1 (``execute_notebooks: off``; warnings are errors);
6. check that no page loads a resource from the internet, optionally in a real browser.

Usage: ``.venv/bin/python scripts/build_book.py --profile quick|full [--force] [--browser-check]``
(``--help`` lists every option). The parts live in the package ``scripts/bookbuild``.

Repository link and launch buttons come from one setting: ``repository.url`` in ``_config.yml``,
or the environment variable ``IMUSE_REPOSITORY_URL`` (which wins; the CI workflow sets it). Unset,
the book has no repository button and no launch links.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bookbuild and setup_system, beside this file
from bookbuild.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
