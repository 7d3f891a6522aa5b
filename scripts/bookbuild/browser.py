"""The built book in a real browser: Playwright for Python driving the system Chromium.

Used by ``scripts/build_book.py --browser-check`` (:mod:`bookbuild.checks`) and by the tests. The book is served over
HTTP from 127.0.0.1 (as a reader's web server would serve it) and every page is opened at a
laptop's and a phone's width. For each page and width it records:

* requests for anything but the served book (aborted, so nothing leaves the machine);
* console errors and uncaught exceptions;
* layout: elements of the main column that scroll sideways, elements or text cut off past
  its right edge (outside any scroller; a page that scrolls sideways as a whole counts too),
  plotly figures found and drawn, images without alt text;
* a full-page screenshot ``<page>-<width>.png``.

:func:`measure_tryit` times the "Try it" page on real pictures: model load, first result and
later results, in the page's own clock (``window.imuseTryit``).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from pathlib import Path
from statistics import median
from typing import Iterator, Sequence

WIDTHS = (1280, 390)  # a laptop and a phone
WAIT_MS = 90_000  # generous: the machine's two cores may be shared; these are waits, not budgets

# Run in the page once it has settled: what sticks out of the main column.
LAYOUT_PROBE = """() => {
  const col = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const right = col.getBoundingClientRect().right + 1, scroll = [], cut = [];
  const name = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
    (el.className && typeof el.className === 'string' ? '.' + el.className.trim().split(/\\s+/).join('.') : '');
  const scroller = (el) => { for (let p = el.parentElement; p && p !== col; p = p.parentElement) {
    const ox = getComputedStyle(p).overflowX; if (ox === 'auto' || ox === 'scroll' || ox === 'hidden') return p; }
    return null; };
  col.querySelectorAll('*').forEach((el) => {
    if (!el.getClientRects().length || el.closest('details:not([open])')) return;  // folded code: not seen
    const ox = getComputedStyle(el).overflowX;
    if ((ox === 'auto' || ox === 'scroll') && el.scrollWidth > el.clientWidth + 1) scroll.push(name(el));
    else if (el.getBoundingClientRect().right > right && !scroller(el)) cut.push(name(el));
  });
  // text running past the edge from a box that fits (a word too long for a phone's line)
  const words = document.createTreeWalker(col, NodeFilter.SHOW_TEXT), range = document.createRange();
  for (let t = words.nextNode(); t; t = words.nextNode()) {
    const el = t.parentElement, ox = getComputedStyle(el).overflowX;
    if (!t.textContent.trim() || !el.getClientRects().length || el.closest('details:not([open])') ||
        ox === 'auto' || ox === 'scroll' || ox === 'hidden' || scroller(el)) continue;
    range.selectNodeContents(t);
    const label = name(el) + ' (text)';
    if (Array.from(range.getClientRects()).some((r) => r.right > right) && !cut.includes(label)) cut.push(label);
  }
  if ((document.scrollingElement || document.documentElement).scrollWidth > window.innerWidth + 1 && !cut.length)
    cut.push('html (the page scrolls sideways)');
  const plots = document.querySelectorAll('.js-plotly-plot');
  const drawn = Array.from(plots).filter((p) => p.querySelector('svg.main-svg'));
  const noAlt = Array.from(document.querySelectorAll('img')).filter((i) => !i.alt).map((i) => i.src.slice(-60));
  return {scroll, cut, plotly: plots.length, plotly_drawn: drawn.length, img_without_alt: noAlt};
}"""


# WCAG 2 contrast of every piece of text under a selector (HTML colour or SVG fill against the
# composited background of its ancestors), as the page's stylesheets colour it: the Try-it page's
# text and the chapters' plotly figures, in the theme's light and dark modes.
TEXT_CONTRAST_JS = """(scope) => {
  const rgba = (c) => { const m = /rgba?\\(([^)]+)\\)/.exec(c); if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number); return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1]; };
  const over = (top, under) => [0, 1, 2].map((i) => top[i] * top[3] + under[i] * (1 - top[3])).concat(1);
  const lum = (c) => { const f = (x) => { x /= 255; return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]); };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const background = (el) => { const layers = [];
    for (let e = el; e; e = e.parentElement) { const c = rgba(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; } }
    return layers.reverse().reduce((bg, c) => over(c, bg), [255, 255, 255, 1]); };
  const out = [];
  for (const el of document.querySelectorAll(scope + " *")) {
    const own = Array.from(el.childNodes).some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.closest("[hidden]") || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility !== "visible" || style.display === "none") continue;
    const isSvg = el instanceof SVGElement;
    const fg = rgba(isSvg ? style.fill : style.color);
    const bg = background(isSvg ? el.ownerSVGElement : el);
    out.push({ what: el.tagName.toLowerCase() + (el.id ? "#" + el.id : "") + (el.getAttribute("class") ? "." +
      el.getAttribute("class").split(" ")[0] : ""), text: el.textContent.trim().slice(0, 40),
      ratio: ratio(over(fg, bg), bg) });
  }
  return out;
}"""


def text_contrast(page, scope: str = ".bd-article") -> list[dict]:
    """``[{what, text, ratio}]``: the contrast of each text under ``scope`` in ``page`` as it is now
    styled (:data:`TEXT_CONTRAST_JS`)."""
    return page.evaluate(TEXT_CONTRAST_JS, scope)


CONTRAST_MIN = 4.5  # WCAG AA for body text
THEMES = ("light", "dark")  # pydata-sphinx-theme's modes (html[data-theme])


def low_contrast(page, scope: str = ".bd-article", minimum: float = CONTRAST_MIN) -> list[str]:
    """The texts under ``scope`` whose contrast is below ``minimum`` in the theme's light or dark
    mode, e.g. ``'dark: caption "cold split" 1.71:1'``; the page's own mode is restored after."""
    before = page.evaluate("document.documentElement.dataset.theme || ''")
    found = []
    try:
        for theme in THEMES:
            page.evaluate(f"document.documentElement.dataset.theme = '{theme}'")
            found += [f'{theme}: {t["what"]} "{t["text"]}" {t["ratio"]:.2f}:1'
                      for t in text_contrast(page, scope) if t["ratio"] < minimum]
    finally:
        page.evaluate("(mode) => mode ? document.documentElement.dataset.theme = mode"
                      " : delete document.documentElement.dataset.theme", before)
    return found


def _luminance(rgb):
    import numpy as np

    c = np.asarray(rgb, dtype=float) / 255.0
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return c @ np.array([0.2126, 0.7152, 0.0722])


def drawn_text_contrast(with_text: bytes, without_text: bytes, share: float = 0.1) -> float:
    """WCAG contrast of the text drawn into a figure, as a reader sees it: two screenshots of the
    same figure on the page, with and without its text (labels, ticks, titles). The pixels that
    differ are the text, each compared with the same pixel without it (what it is drawn on: the
    figure's own background, or the page's where the figure is transparent). Antialiased edges
    blend into the background, so each glyph (a connected blob of text pixels) counts at its core,
    its highest contrast; returned is the ``share`` quantile over the glyphs: a whole label of low
    contrast pulls it down, a stray dot of an "i" does not."""
    import io

    import numpy as np
    from PIL import Image
    from scipy import ndimage

    a, b = (np.asarray(Image.open(io.BytesIO(x)).convert("RGB"), dtype=float) for x in (with_text, without_text))
    if a.shape != b.shape:
        raise ValueError(f"the two screenshots differ in size: {a.shape} and {b.shape}")
    text = np.abs(a - b).max(axis=-1) > 2  # any difference: text of low contrast differs little
    glyphs, n = ndimage.label(text, structure=np.ones((3, 3)))
    if n == 0:
        raise ValueError("no text drawn: the two screenshots are the same")
    la, lb = _luminance(a), _luminance(b)
    ratio = (np.maximum(la, lb) + 0.05) / (np.minimum(la, lb) + 0.05)
    cores = ndimage.maximum(ratio, glyphs, index=np.arange(1, n + 1))
    sizes = ndimage.sum(text, glyphs, index=np.arange(1, n + 1))
    cores = cores[sizes >= 4] if (sizes >= 4).any() else cores
    return float(np.quantile(cores, share))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # the build's log is for the build
        pass


@contextlib.contextmanager
def serve(folder: str | Path) -> Iterator[str]:
    """A web server for ``folder`` on 127.0.0.1 (a free port) for the duration of the block."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def find_chromium() -> str | None:
    """The system's browser, the one set-up installs (``setup_system.browser``); None without one."""
    import setup_system  # beside this file: scripts/ is on sys.path for this module's users

    return setup_system.browser()


def any_browser() -> str | None:
    """:func:`find_chromium`'s browser, else the one `playwright install chromium` put in
    Playwright's cache (a CI runner), else None."""
    found = find_chromium()
    if found is not None:
        return found
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as p:
            path = p.chromium.executable_path
    except Exception:  # no driver, unsupported platform: no browser for us either way
        return None
    return path if Path(path).is_file() else None


@contextlib.contextmanager
def chromium(executable: str | None = None):
    """A headless Chromium: the system's (Playwright's wheel carries its driver, not a browser),
    else one that `playwright install chromium` put in Playwright's cache (a CI runner)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    executable = executable or find_chromium()
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        except PlaywrightError:
            if executable is not None:
                raise
            raise RuntimeError("chromium not found: the browser checks use the system's Chromium "
                               "(apt-get install -y chromium, which `make setup` does on Debian as root) or "
                               "Playwright's (python -m playwright install chromium)") from None
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def browsing(html_dir: str | Path, browser=None):
    """``(browser, base URL)`` for the block: ``html_dir`` served on 127.0.0.1, and ``browser``
    (or a headless Chromium opened here and closed after)."""
    with contextlib.ExitStack() as stack:
        if browser is None:
            browser = stack.enter_context(chromium())
        yield browser, stack.enter_context(serve(html_dir))


class Visit:
    """A fresh browser context on the served book: records every request, aborts (and records)
    any request for another host, and collects console errors and uncaught exceptions."""

    def __init__(self, browser, base: str, width: int = 1280, height: int = 1000):
        self.base = base
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.context.set_default_timeout(WAIT_MS)
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.problems: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.base + "/") or url.startswith(("blob:", "data:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def goto(self, path: str):
        self.page.goto(self.base + "/" + path.lstrip("/"), wait_until="load")
        return self

    def close(self):
        self.context.close()


def settle(page) -> None:
    """Wait until every plotly figure has drawn (or stopped trying) and the fonts are in."""
    page.wait_for_function("Array.from(document.querySelectorAll('.js-plotly-plot'))"
                           ".every((p) => p.querySelector('svg.main-svg'))", timeout=30_000)
    page.evaluate("document.fonts ? document.fonts.ready.then(() => true) : true")


def check_pages(html_dir: str | Path, pages: Sequence[str], out_dir: str | Path | None = None,
                widths: Sequence[int] = WIDTHS, browser=None) -> dict[str, dict]:
    """Open each page (paths relative to ``html_dir``) at each width; returns
    ``{"<page>@<width>": {scroll, cut, plotly, plotly_drawn, img_without_alt, low_contrast, console, remote}}``
    and writes the screenshots (and ``browser-check.json``) into ``out_dir`` when given."""
    import json

    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    measured: dict[str, dict] = {}
    with browsing(html_dir, browser) as (browser, base):
        for rel in pages:
            # one load per page, then each width in turn (the page reflows as a window resized
            # by the reader would); problems and requests are counted from the previous width on
            visit = Visit(browser, base, width=widths[0])
            try:
                visit.goto(rel)
                for width in widths:
                    if width != widths[0]:
                        visit.page.set_viewport_size({"width": width, "height": 1000})
                    seen_problems, seen_blocked = len(visit.problems), len(visit.blocked)
                    try:
                        settle(visit.page)
                    except Exception as exc:  # a figure that never draws is reported by the probe
                        visit.problems.append(f"did not settle: {str(exc).splitlines()[0]}")
                    visit.page.wait_for_timeout(300)  # reflow after the resize (plotly listens to it)
                    result = visit.page.evaluate(LAYOUT_PROBE)
                    if out is not None:
                        visit.page.screenshot(path=str(out / f"{Path(rel).stem}-{width}.png"), full_page=True)
                    # colours do not change with the width: measured once, in light and dark mode
                    result["low_contrast"] = low_contrast(visit.page) if width == widths[0] else []
                    problems = visit.problems if width == widths[0] else visit.problems[seen_problems:]
                    blocked = visit.blocked if width == widths[0] else visit.blocked[seen_blocked:]
                    result["console"] = list(problems)
                    result["remote"] = sorted(set(blocked))
                    measured[f"{rel}@{width}"] = result
            finally:
                visit.close()
    if out is not None:
        (out / "browser-check.json").write_text(json.dumps(measured, indent=1), encoding="utf-8")
    return measured


SLOW_LINK_MBPS = 1.6  # a phone on a slow mobile link (the reference)
SLOW_LINK_LATENCY_MS = 150
PAINT_AFTER_LOAD_MS = 5_000  # how long after its load event a page may still paint first


def first_paint(html_dir: str | Path, pages: Sequence[str], mbps: float = SLOW_LINK_MBPS,
                latency_ms: float = SLOW_LINK_LATENCY_MS, width: int = 390, browser=None) -> dict[str, float | None]:
    """Seconds to the first contentful paint of each page (paths relative to ``html_dir``) over a
    link throttled to ``mbps`` megabits a second with ``latency_ms`` round trips, cache empty, as a
    phone first opening the page: ``{page: seconds}`` (None for a page that paints nothing by its
    load event). Served uncompressed, as by a plain server."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    rate = mbps * 1e6 / 8  # bytes a second
    out: dict[str, float] = {}
    with browsing(html_dir, browser) as (browser, base):
        for rel in pages:
            context = browser.new_context(viewport={"width": width, "height": 800})
            try:
                page = context.new_page()
                cdp = context.new_cdp_session(page)
                cdp.send("Network.enable")
                cdp.send("Network.setCacheDisabled", {"cacheDisabled": True})
                cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": latency_ms,
                                                              "downloadThroughput": rate, "uploadThroughput": rate})
                page.goto(base + "/" + rel.lstrip("/"), wait_until="load", timeout=WAIT_MS * 4)
                try:  # the paint may come just after the load event; a page with nothing to paint never does
                    page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0",
                                           timeout=PAINT_AFTER_LOAD_MS)
                except PlaywrightTimeout:
                    pass
                ms = page.evaluate("(performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime")
                out[rel] = None if ms is None else round(float(ms) / 1000.0, 2)  # None: nothing painted
            finally:
                context.close()
    return out


def summarise(measured: dict[str, dict]) -> dict:
    """Counts over :func:`check_pages`' result: what a reader would notice, by width."""
    def count(key, width=None):
        return sum(len(v.get(key, [])) for k, v in measured.items() if width is None or k.endswith(f"@{width}"))

    widths = sorted({int(k.rsplit("@", 1)[1]) for k in measured}, reverse=True)
    return {"page_widths": len(measured), "pages": len({k.rsplit("@", 1)[0] for k in measured}),
            "scroll": {w: count("scroll", w) for w in widths}, "cut": {w: count("cut", w) for w in widths},
            "console_errors": count("console"), "remote_requests": count("remote"),
            "plotly": sum(v["plotly"] for v in measured.values()),
            "plotly_drawn": sum(v["plotly_drawn"] for v in measured.values()),
            "img_without_alt": count("img_without_alt"), "low_contrast": count("low_contrast")}


def measure_tryit(html_dir: str | Path, images: Sequence[str | Path], page: str = "book/tryit.html",
                  browser=None) -> dict:
    """The "Try it" page on ``images`` in turn (one fresh page, so the first pays for loading the
    runtime and the model): times in ms, from the page's own clock."""
    with browsing(html_dir, browser) as (browser, base):
        visit = Visit(browser, base)
        try:
            visit.goto(page)
            visit.page.wait_for_function("window.imuseTryit !== undefined")
            times = []
            for i, image in enumerate(images):
                visit.page.set_input_files("#tryit-file", str(image))
                visit.page.wait_for_function(
                    f"window.imuseTryit.results.length + window.imuseTryit.errors.length > {i}", timeout=WAIT_MS)
                errors = visit.page.evaluate("window.imuseTryit.errors")
                if errors:
                    raise RuntimeError(f"the Try-it page refused {Path(image).name}: {errors[-1]}")
                times.append(visit.page.evaluate("window.imuseTryit.results.at(-1).ms"))
            load_ms = visit.page.evaluate("window.imuseTryit.timings.load_ms")
        finally:
            visit.close()
    return {"images": len(times), "first_ms": times[0], "model_load_ms": load_ms,
            "later_median_ms": median(times[1:]) if len(times) > 1 else None,
            "later_max_ms": max(times[1:]) if len(times) > 1 else None,
            "console": visit.problems, "remote": sorted(set(visit.blocked))}
