"""The browser the book's checks drive, for the tests: the one set-up installs.

A browser test runs wherever set-up could install the browser (`make test` runs set-up first,
which installs Debian's chromium when missing); it is skipped, saying why, only where set-up
recorded that it could not (not root, not Debian, no package registry); anywhere else a missing
browser fails it: a newcomer's `make test` would have one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "scripts") not in sys.path:  # the book's builder and set-up's list live there
    sys.path.insert(0, str(ROOT / "scripts"))
import setup_system  # noqa: E402
from bookbuild import browser as book_browser  # noqa: E402

SETUP_STAMP = Path(sys.prefix) / ".imuse-setup-stamp"  # the Makefile's STAMP, in this environment


def require_browser() -> str:
    """The system browser's path; skips where set-up could not install one, fails otherwise."""
    found = book_browser.find_chromium()
    if found is not None:
        return found
    why = setup_system.read_stamp(str(SETUP_STAMP))["system"].get("chromium", "")
    if why.startswith("missing"):
        pytest.skip(f"no Chromium: set-up could not install it here ({why})")
    pytest.fail(f"no Chromium on PATH, yet set-up did not record that it could not install it "
                f"({SETUP_STAMP}: {why or 'no record'}); run `make setup`")


def themed_page(root: Path, name: str, body: str) -> str:
    """``root/book/<name>``: ``body`` under the book theme's own stylesheets (pydata-sphinx-theme,
    sphinx-book-theme and myst-nb's; light and dark through html[data-theme]), as the built book
    styles its pages. Returns the page's path on a server of ``root``."""
    import myst_nb
    import pydata_sphinx_theme
    import sphinx_book_theme

    styles = [Path(p.__file__).parent / "theme" / p.__name__ / "static" / "styles"
              / f"{p.__name__.replace('_', '-')}.css" for p in (pydata_sphinx_theme, sphinx_book_theme)]
    styles.append(Path(myst_nb.__file__).parent / "static" / "mystnb.css")
    links = ""
    (root / "_static" / "styles").mkdir(parents=True, exist_ok=True)
    for css in styles:
        (root / "_static" / "styles" / css.name).write_bytes(css.read_bytes())
        links += f"<link rel=\"stylesheet\" href=\"../_static/styles/{css.name}\">"
    page = root / "book" / name
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("<!DOCTYPE html><html lang=\"en\" data-theme=\"light\"><head><meta charset=\"utf-8\">"
                    f"{links}<title>{name}</title></head><body>\n{body}\n</body></html>\n", encoding="utf-8")
    return f"/book/{name}"
