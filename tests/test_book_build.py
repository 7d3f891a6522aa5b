"""The quick book, built end to end as `make book` builds it, and checked as a reader gets it: every
page, the glued numbers, nothing remote, the browser check. Its own file, so that under `make test`
it is the first unit of work on one worker (tests/conftest.py) while the other files run beside it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import browser_helpers  # first: puts scripts/ on sys.path (bookbuild)
from bookbuild import browser as book_browser
from bookbuild import checks, cli, common, presentation
from test_book import TOC_NOTEBOOKS


@pytest.mark.slow
@pytest.mark.real_deployed_model
def test_quick_book_builds_offline():
    """`make book` in the quick profile: every page built, glued numbers present, nothing remote."""
    from imuse_lib import data

    assert cli.main(["--profile", "quick"]) == 0
    html = common.HTML_DIR
    assert (html / "index.html").exists()
    for name in TOC_NOTEBOOKS:
        assert (html / "book" / "_executed" / f"{name}.html").exists(), name
    assert checks.find_remote_loads(html) == []
    page = (html / "book" / "_executed" / "01_data_selection.html").read_text()
    agreement = data.quadrant_agreement(data.load_catalog())
    assert f"{agreement:.1%}" in page  # the glued number, computed by the library
    assert "Plotly.newPlot" in page and "imuse-static-figure" in page
    assert "imuse-provenance" in page and "<strong>quick</strong> profile" in page
    assert "imuse-box" in page  # the "what this shows" box at the top
    assert (html / "_static" / "vendor" / "mathjax" / "tex-chtml.js").exists()
    landing = (html / "book" / "intro.html").read_text()
    assert "This edition" in landing and "SHA-256 checksums verified" in landing
    assert_launch_links_follow_the_repository_setting(html)


def assert_launch_links_follow_the_repository_setting(html: Path) -> None:
    """With a repository URL (_config.yml or $IMUSE_REPOSITORY_URL, as the build read it) every
    chapter links its notebooks/ source on Colab and Binder and every page has the repository
    button; without one, no page has either."""
    import html as html_lib

    url, branch = presentation.repository_setting()
    pages = {name: (html / "book" / "_executed" / f"{name}.html").read_text() for name in TOC_NOTEBOOKS}
    for name, page in pages.items():
        links = presentation.launch_links(name, url, branch)
        assert all(f'href="{html_lib.escape(href)}"' in page for _, href in links), name
        assert ("colab.research.google.com" in page) == ("Open in Colab" in dict(links)), name
        assert ("mybinder.org" in page) == ("Launch on Binder" in dict(links)), name
    button = "source-repository-button"
    pages["intro"] = (html / "book" / "intro.html").read_text()
    assert all((button in page) == bool(url) for page in pages.values())


@pytest.mark.slow
def test_built_book_reads_well_in_a_browser(tmp_path):
    """Every page of the built book (the quick build above) at 1280 and 390 px: loads with no
    console error, requests nothing remote, draws every plotly figure, gives every image alt
    text, scrolls nothing sideways at 1280 px and cuts nothing off at either width."""
    browser_helpers.require_browser()
    pages = sorted(p.relative_to(common.HTML_DIR).as_posix() for p in (common.HTML_DIR / "book").rglob("*.html"))
    if not pages:
        pytest.fail("no built book: test_quick_book_builds_offline builds it first")
    measured = book_browser.check_pages(common.HTML_DIR, pages, tmp_path / "shots")
    summary = book_browser.summarise(measured)
    print(f"\n[browser] {summary}")
    problems = {k: {f: v[f] for f in ("remote", "console", "cut", "img_without_alt", "low_contrast") if v[f]}
                for k, v in measured.items()}
    problems.update({k: {"scroll": v["scroll"]} for k, v in measured.items() if k.endswith("@1280") and v["scroll"]})
    problems.update({k: {"plotly undrawn": v["plotly"] - v["plotly_drawn"]} for k, v in measured.items()
                     if v["plotly_drawn"] < v["plotly"]})
    assert {k: v for k, v in problems.items() if v} == {}
    assert summary["pages"] == len(pages) >= len(TOC_NOTEBOOKS)


@pytest.mark.slow
def test_built_pages_load_plotly_only_where_they_draw_it():
    """In the built book (test_quick_book_builds_offline), a page without a plotly figure has no
    plotly script; a page with one loads it with defer."""
    pages = sorted((common.HTML_DIR / "book").rglob("*.html"))
    if not pages:
        pytest.fail("no built book: test_quick_book_builds_offline builds it first")
    with_figures = 0
    for page in pages:
        text = page.read_text(encoding="utf-8")
        tags = re.findall(r"<script[^>]*plotly\.min\.js[^>]*>", text)
        if 'class="plotly-graph-div"' in text:
            with_figures += 1
            assert len(tags) == 1 and "defer" in tags[0], (page.name, tags)
        else:
            assert tags == [], page.name
    assert with_figures >= 1
