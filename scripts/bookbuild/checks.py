"""Checks of the built HTML: no page or stylesheet loads anything remote (a static scan), and, with
``--browser-check``, every page in headless Chromium (:mod:`bookbuild.browser`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from imuse_lib import provenance

from . import browser as book_browser
from . import common
from .common import BuildError, log, short_path


@dataclass(frozen=True)
class RemoteLoad:
    file: str
    what: str  # e.g. "script src", "css url()", "link rel=stylesheet"
    url: str


REMOTE = re.compile(r"^\s*(?:https?:)?//", re.I)
CSS_URL = re.compile(r"""url\(\s*['"]?\s*((?:https?:)?//[^'")\s]+)""", re.I)
CSS_IMPORT = re.compile(r"""@import\s+['"]\s*((?:https?:)?//[^'"\s]+)""", re.I)
JS_LOAD = re.compile(r"""(?:\bimport\s*\(?\s*|\.src\s*=\s*|\bfetch\s*\(\s*|importScripts\s*\(\s*)['"`]"""
                     r"""((?:https?:)?//[^'"`\s]+)""", re.I)
# <link rel=...> values that make the browser fetch or connect; canonical, alternate, next... do not.
LINK_LOADS = {"stylesheet", "icon", "shortcut", "apple-touch-icon", "preload", "modulepreload", "prefetch",
              "preconnect", "dns-prefetch", "manifest", "mask-icon", "prerender"}
SRC_ATTRS = {"src", "data", "poster", "background", "srcset", "imagesrcset"}


def _css_loads(text: str) -> list[str]:
    return CSS_URL.findall(text) + CSS_IMPORT.findall(text)


class _LoadFinder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str]] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        a = {k.lower(): (v or "") for k, v in attrs}
        for attr in SRC_ATTRS & a.keys():
            urls = [u.strip().split()[0] for u in a[attr].split(",") if u.strip()] if "srcset" in attr else [a[attr]]
            self.found += [(f"{tag} {attr}", u.strip()) for u in urls if REMOTE.match(u)]
        if tag == "link" and REMOTE.match(a.get("href", "")):
            rels = set(a.get("rel", "").lower().split())
            if rels & LINK_LOADS or not rels:
                self.found.append((f"link rel={a.get('rel', '')}", a["href"].strip()))
        for attr in ("href", "xlink:href"):
            if tag in {"image", "use", "feimage"} and REMOTE.match(a.get(attr, "")):
                self.found.append((f"{tag} {attr}", a[attr].strip()))
        if "style" in a:
            self.found += [(f"{tag} style url()", u) for u in _css_loads(a["style"])]
        if tag in {"script", "style"}:
            self._in = tag

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "style":
            self.found += [("inline style url()", u) for u in _css_loads(data)]
        elif self._in == "script":
            self.found += [("inline script load", u) for u in JS_LOAD.findall(data)]


def find_remote_loads(html_dir: Path) -> list[RemoteLoad]:
    """Every resource an HTML page or stylesheet under ``html_dir`` would load from another host.

    Looks at src/srcset/data of any tag, <link> that fetches (stylesheet, icon, preload...),
    url() and @import in CSS files, <style> and style= attributes, and imports/fetches in
    inline scripts. Plain <a href> links are not loads and are not reported.
    """
    html_dir = Path(html_dir)
    out: list[RemoteLoad] = []
    for path in sorted(html_dir.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(html_dir).as_posix()
        if path.suffix in {".html", ".htm"}:
            finder = _LoadFinder()
            finder.feed(path.read_text(encoding="utf-8", errors="replace"))
            finder.close()
            out += [RemoteLoad(rel, what, url) for what, url in finder.found]
        elif path.suffix == ".css":
            out += [RemoteLoad(rel, "css url()", u) for u in _css_loads(path.read_text(encoding="utf-8", errors="replace"))]
    return out


def check_offline(html_dir: Path = common.HTML_DIR) -> None:
    loads = find_remote_loads(html_dir)
    if loads:
        shown = "; ".join(f"{r.file}: {r.what} {r.url}" for r in loads[:5])
        raise BuildError(f"{len(loads)} remote resource load(s) in {html_dir} (the book must work offline): "
                         f"{shown}{' ...' if len(loads) > 5 else ''}")
    log(f"offline check passed: no page or stylesheet under {short_path(html_dir)} loads anything remote")


# "notebook 05", "chapter 04", "chapters 04 and 05", "notebooks 03, 04 or 05"
CHAPTER_REF = re.compile(r"\b(?:notebook|chapter)s?\s+(\d{2}(?:(?:\s*,\s*|\s+(?:and|or|to)\s+|\s*-\s*)\d{2})*)\b",
                         re.I)


@dataclass(frozen=True)
class DanglingRef:
    file: str
    text: str  # the reference as written, e.g. "chapter 08"
    number: str  # the missing chapter, e.g. "08"


def dangling_references(texts: dict[str, str], chapters: Iterable[str]) -> list[DanglingRef]:
    """Every "notebook NN" / "chapter NN" in ``texts`` (name -> prose) whose NN is not the number of
    a chapter in ``chapters`` (names such as ``04_results``)."""
    numbers = {c.split("_", 1)[0] for c in chapters}
    out = []
    for file, text in texts.items():
        for m in CHAPTER_REF.finditer(text):
            out += [DanglingRef(file, m[0], n) for n in re.findall(r"\d{2}", m[1]) if n not in numbers]
    return out


def book_prose(names: Iterable[str], toc: Path = common.TOC, notebooks: Path | None = None) -> dict[str, str]:
    """The prose a reader reads: the markdown cells of the executed notebooks ``names`` (or of
    those in ``notebooks``, e.g. their sources) and the book's own .md pages that the table of
    contents lists."""
    import nbformat

    texts = {}
    for name in names:
        path = (notebooks or common.EXECUTED_DIR) / f"{name}.ipynb"
        if path.exists():
            nb = nbformat.read(path, as_version=4)
            texts[short_path(path)] = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    listed = re.findall(r"(?:file|root):\s*(\S+)", toc.read_text(encoding="utf-8"))
    for entry in listed:
        path = common.ROOT / f"{entry}.md"
        if path.exists():
            texts[short_path(path)] = path.read_text(encoding="utf-8")
    return texts


def check_references(names: list[str], toc: Path = common.TOC) -> None:
    """Fail on a reference to a chapter that the table of contents does not have (``names``:
    its chapters, :func:`bookbuild.toc.toc_notebooks`)."""
    bad = dangling_references(book_prose(names, toc), names)
    if bad:
        shown = "; ".join(f"{r.file}: {r.text!r}" for r in bad[:5])
        raise BuildError(f"{len(bad)} reference(s) to a chapter the book does not have (chapters: "
                         f"{', '.join(n.split('_', 1)[0] for n in names)}): {shown}{' ...' if len(bad) > 5 else ''}")
    log(f"reference check passed: every \"chapter NN\"/\"notebook NN\" names one of the book's {len(names)} chapters")


# Reader aids: every chapter opens with what it teaches ("What you will learn", a few points,
# before its first section) and closes with what it showed (a last section "## Summary").
LEARN_TITLE = "What you will learn"
LEARN_POINTS = (3, 5)
SUMMARY_HEADING = re.compile(r"^##\s+Summary\s*$", re.M)
SECTION = re.compile(r"^##\s", re.M)
# Pages a reader looks things up in rather than reads through: no overview or summary asked of them.
# (The landing page, the toc's root, is the book's overview itself.)
REFERENCE_PAGES = ("book/glossary.md",)
# A result typed into a summary instead of glued from the build: a decimal or a percentage.
TYPED_RESULT = re.compile(r"(?<![\w.])\d+\.\d+|(?<![\w.])\d+(?:\.\d+)?\s?%")
GLUED = re.compile(r"\{glue(?::\w+)?\}`|```\{glue(?::\w+)?\}")
_NOT_PROSE = re.compile(r"```.*?```|\{[\w:-]+\}`[^`]*`|`[^`]*`|\$\$.*?\$\$|\$[^$]*\$", re.S)


def reader_aid_problems(file: str, text: str) -> list[str]:
    """What ``text`` (a chapter's prose, :func:`book_prose`) lacks of the reader aids: the
    "What you will learn" points at the top and a "## Summary" at the end whose numbers, in a
    notebook, are glued from the build (a typed decimal or percentage is a problem anywhere)."""
    problems = []
    first = SECTION.search(text)
    top = text[:first.start()] if first else text
    at = top.find(LEARN_TITLE)
    if at < 0:
        problems.append(f'no "{LEARN_TITLE}" before its first section')
    else:
        block = re.split(r"^```\s*$|^##", top[at:], maxsplit=1, flags=re.M)[0]
        points = len(re.findall(r"^[-*]\s+\S", block, re.M))
        low, high = LEARN_POINTS
        if not low <= points <= high:
            problems.append(f'"{LEARN_TITLE}" has {points} point(s), not {low} to {high}')
    headings = list(SECTION.finditer(text))
    summary = list(SUMMARY_HEADING.finditer(text))
    if not summary or summary[-1].start() != headings[-1].start():
        problems.append('does not end with a "## Summary" section')
        return problems
    body = text[summary[-1].end():].strip()
    if not body:
        problems.append("its summary is empty")
    typed = TYPED_RESULT.findall(_NOT_PROSE.sub(" ", body))
    if typed:
        problems.append(f"its summary types {typed[0]!r} instead of gluing it from the build")
    if file.endswith(".ipynb") and body and not GLUED.search(body):
        problems.append("its summary glues no number from the build")
    return problems


def chapter_texts(names: list[str], toc: Path = common.TOC, notebooks: Path | None = None) -> dict[str, str]:
    """:func:`book_prose` of the chapters: without the toc's root (the landing page) and the
    :data:`REFERENCE_PAGES`."""
    import yaml

    root = (yaml.safe_load(toc.read_text(encoding="utf-8")) or {}).get("root")
    skip = {f"{root}.md", *REFERENCE_PAGES}
    return {file: text for file, text in book_prose(names, toc, notebooks).items() if file not in skip}


def check_reader_aids(names: list[str], toc: Path = common.TOC) -> None:
    """Fail on a chapter without its "What you will learn" points or its closing summary."""
    bad = {file: found for file, text in chapter_texts(names, toc).items()
           if (found := reader_aid_problems(file, text))}
    if bad:
        shown = "; ".join(f"{file}: {', '.join(found)}" for file, found in list(bad.items())[:4])
        raise BuildError(f"{len(bad)} chapter(s) without their reader aids: {shown}{' ...' if len(bad) > 4 else ''}")
    log(f'reader aids check passed: every chapter opens with "{LEARN_TITLE}" and ends with a summary')


TRYIT_TIMES = common.ROOT / "_build" / "browser-check" / "tryit-times.json"


def browser_check(html_dir: Path = common.HTML_DIR, out_dir: Path | None = None) -> dict:
    """Every page of the built book in headless Chromium at a laptop's and a phone's width
    (``book_browser.check_pages``): screenshots and ``browser-check.json`` in ``out_dir``.
    Raises BuildError on a request that leaves the machine, a console error, a plotly figure
    that does not draw, anything cut off past the main column's edge at either width, a
    sideways scroller at a laptop's width (at a phone's, a wide table scrolls inside its own
    box, as it should), or a text of the article below 4.5:1 contrast in the theme's light or
    dark mode. Returns the summary."""
    bb = book_browser
    out_dir = out_dir or common.ROOT / "_build" / "browser-check"
    pages = sorted(p.relative_to(html_dir).as_posix() for p in (html_dir / "book").rglob("*.html"))
    try:
        measured = bb.check_pages(html_dir, pages, out_dir)
    except RuntimeError as exc:
        raise BuildError(str(exc)) from None
    summary = bb.summarise(measured)
    log(f"browser: {summary['pages']} pages x {len(bb.WIDTHS)} widths -> {short_path(out_dir)}; sideways scrollers "
        f"{summary['scroll']}, cut off {summary['cut']}, plotly drawn {summary['plotly_drawn']}/{summary['plotly']}, "
        f"images without alt text {summary['img_without_alt']}, texts below {bb.CONTRAST_MIN}:1 contrast (light or "
        f"dark mode) {summary['low_contrast']}")
    laptop = max(bb.WIDTHS)

    def problems(key: str, v: dict) -> list:
        found = v["remote"] + v["console"] + [f"cut off: {c}" for c in v["cut"]]
        found += [f"low contrast: {c}" for c in v.get("low_contrast", [])]
        if key.endswith(f"@{laptop}"):  # on a phone a wide table scrolls in its own box
            found += [f"scrolls sideways: {c}" for c in v["scroll"]]
        if v["plotly_drawn"] < v["plotly"]:
            found.append("a plotly figure did not draw")
        return found

    bad = {k: found for k, v in measured.items() if (found := problems(k, v))}
    if not bad:  # then a phone on a slow link: does the text come first? (reported, not judged)
        paint = bb.first_paint(html_dir, pages)
        summary["first_paint_s"] = paint
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "first-paint.json").write_text(json.dumps(paint, indent=1), encoding="utf-8")
        log(f"first paint at {bb.SLOW_LINK_MBPS} Mbps ({bb.SLOW_LINK_LATENCY_MS:.0f} ms round trips), cache empty: "
            + ", ".join(f"{Path(p).stem} {'never' if t is None else f'{t:.1f} s'}" for p, t in paint.items()))
    if bad:
        shown = "; ".join(f"{k}: {found[:2]}" for k, found in list(bad.items())[:4])
        raise BuildError(f"browser check: {len(bad)} page-width(s) with a remote request, a console error, an "
                         f"undrawn figure or a layout a reader would have to scroll: {shown} (screenshots in "
                         f"{short_path(out_dir)})")
    return summary


def tryit_times(html_dir: Path = common.HTML_DIR) -> dict:
    """The "Try it" page timed on real OASIS pictures in the browser, saved with the model's
    fingerprint for the build box (:data:`TRYIT_TIMES`)."""
    from imuse_lib import export, io

    manifest = io.read_json(common.ROOT / "book" / "_static" / "tryit" / "model" / "manifest.json")
    times = book_browser.measure_tryit(html_dir, export.check_images(4))
    times.update(fingerprint=manifest["fingerprint"], measured=provenance.utc_now())
    if times["remote"] or times["console"]:
        raise BuildError(f"Try-it page: {(times['remote'] + times['console'])[:3]}")
    io.write_json(TRYIT_TIMES, times)
    log(f"try-it page in the browser: first result {times['first_ms']:.0f} ms (model load "
        f"{times['model_load_ms']:.0f} ms), later {times['later_median_ms']:.0f} ms (median)")
    return times
