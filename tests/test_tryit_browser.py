"""The book's "Try it" page in a real browser (Playwright driving Debian's Chromium, served from
127.0.0.1): it recommends what `imuse recommend` recommends, within its size budget,
refuses bad files with a clear message, sends nothing off the machine, works from the
keyboard, and says how to serve it when opened as a file. Its times are printed, not asserted:
they are measured by `make book-check` (``build_book.py --browser-check``) and reported in
the book's build box, so a busy test machine cannot fail the suite.

The model is the deployed one: the VA model `imuse train` fits for the book
(``va_model.train_default``: the default build's sources, kernel ridge),
fitted from the feature store into a temporary results folder, with its song index.
"""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from imuse_lib import cli, data, export, media, recommend, report
from imuse_lib import image_path
from imuse_lib.index import building as index_building
from imuse_lib.index import files as index_files

import browser_helpers
import tryit_helpers as th

pytestmark = pytest.mark.slow

N_IMAGES = 12  # three per quadrant
ASSETS_BUDGET = 25e6  # bytes the page may download


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """(model path, index path): the deployed VA model, fitted as `imuse train` fits it, and its
    index, in a temporary results folder."""
    import torch

    from imuse_lib import va_model

    tmp = tmp_path_factory.mktemp("deployed")
    patch = pytest.MonkeyPatch()
    patch.setenv("IMUSE_RESULTS", str(tmp / "results"))
    torch.set_num_threads(1)
    # the default build's sources and hyperparameters; features computed into the cache if missing
    model_path = va_model.train_default(path=tmp / "results" / "models" / "va_model.npz")
    index_path = index_building.build_index(model_path, tmp / "index.sqlite", progress=False)
    yield model_path, index_path
    patch.undo()


@pytest.fixture(scope="module")
def site(deployed, tmp_path_factory, pytestconfig):
    """The page built as the book lays it out, and its export manifest."""
    model_path, index_path = deployed
    root = tmp_path_factory.mktemp("site")
    npm_cache = pytestconfig.cache.mkdir("npm")  # the runtime tarball is fetched once per checkout
    manifest = th.build_site(root, model_path, index_path, npm_cache, check_images=export.check_images(4))
    return root, manifest


@pytest.fixture(scope="module")
def browser():
    with th.book_browser.chromium(browser_helpers.require_browser()) as b:
        yield b


class Visit(th.book_browser.Visit):
    """The book's browser visit (requests recorded, any other host aborted, console problems
    collected) with the page's own steps: open it, choose a picture and wait for its answer."""

    def open(self, path: str = "/book/tryit.html"):
        self.page.goto(self.base + path)
        self.page.wait_for_function("window.imuseTryit !== undefined")
        return self

    def count(self) -> int:
        return self.page.evaluate("window.imuseTryit.results.length + window.imuseTryit.errors.length")

    def choose(self, path, via_chooser=None) -> dict:
        """Choose ``path`` in the file input and wait for the page's answer: a result or an error."""
        before = self.count()
        if via_chooser is not None:
            via_chooser.set_files(str(path))
        else:
            self.page.set_input_files("#tryit-file", str(path))
        self.page.wait_for_function(f"window.imuseTryit.results.length + window.imuseTryit.errors.length > {before}",
                                    timeout=60_000)
        return self.page.evaluate("({result: window.imuseTryit.results.at(-1), error: window.imuseTryit.errors.at(-1),"
                                  " results: window.imuseTryit.results.length})")


@pytest.fixture
def visit(browser, site):
    root, _ = site
    with th.serve(root) as base:
        v = Visit(browser, base)
        yield v
        v.close()


def _cli_recommend(image, model_path, index_path, capsys) -> list[dict]:
    capsys.readouterr()
    code = cli.main(["recommend", str(image), "--top", "10", "--json", "--model", str(model_path),
                     "--index", str(index_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def _differ_only_by_ties(page_sim, cli_rows, tol=1e-5) -> bool:
    """Two top-10 lists whose similarities agree position by position within ``tol`` differ only
    where songs tie (the page's VA and PyTorch's differ in the last float32 bits)."""
    return all(abs(a - r["similarity"]) <= tol for a, r in zip(page_sim, cli_rows))


def test_page_recommends_what_imuse_recommend_does(visit, deployed, site, capsys, tmp_path):
    model_path, index_path = deployed
    root, manifest = site
    images = recommend.example_images(N_IMAGES)  # spread over the four quadrants
    assert sorted(images.quadrant.value_counts().to_dict().items()) == [("Q1", 3), ("Q2", 3), ("Q3", 3), ("Q4", 3)]
    visit.open()
    identical, va_diffs, rows, page_va = 0, [], [], []
    for path in images.path:
        got = visit.choose(path)
        assert got["error"] is None, got["error"]
        res = got["result"]
        page_va.append(res["va"])
        want = _cli_recommend(path, model_path, index_path, capsys)
        cli_va = (want[0]["image_valence"], want[0]["image_arousal"])
        va_diffs.append(max(abs(res["va"][0] - cli_va[0]), abs(res["va"][1] - cli_va[1])))
        same = res["top"] == [r["song_id"] for r in want]
        identical += same
        assert same or _differ_only_by_ties(res["similarity"], want), (path, res["top"], want)
        rows.append((Path(path).name, res["ms"], same))
    timings = [r[1] for r in rows]
    load_ms = visit.page.evaluate("window.imuseTryit.timings.load_ms")
    sizes = th.vendor.page_asset_sizes(root / "_static")
    print(f"\n[tryit] parity: {identical}/{len(rows)} images with identical top 10, largest VA difference "
          f"{max(va_diffs):.1e}; first result {timings[0]:.0f} ms (model load {load_ms:.0f} ms), later "
          f"median {np.median(timings[1:]):.0f} ms, max {max(timings[1:]):.0f} ms; assets "
          f"{sizes['total'] / 1e6:.2f} MB (model {sizes['model'] / 1e6:.2f}, runtime {sizes['runtime'] / 1e6:.2f}, "
          f"songs {sizes['songs'] / 1e6:.3f}, page {sizes['page scripts and style'] / 1e6:.3f}); "
          f"ONNX vs PyTorch in the build check {manifest['check']['max_abs_diff_onnx_vs_torch']:.1e}")
    assert np.ptp(np.array(page_va), axis=0).max() > 0.05  # the pictures get different answers
    assert identical >= 9
    assert max(va_diffs) <= 0.01
    assert sizes["total"] < ASSETS_BUDGET
    # what the reader sees
    page = visit.page
    assert page.locator("#tryit-table tbody tr").count() == 10
    # each song says where its VA comes from, as `imuse recommend` does (the catalog's: its mood tags)
    shown = page.locator("#tryit-table tbody tr td:last-child").all_inner_texts()
    assert len(shown) == 10 and set(shown) == {index_files.VA_SOURCES["allmusic-tags"]}
    share = page.locator("#tryit-rated-share").inner_text()
    assert f"{manifest['n_songs']} of {manifest['n_songs']} songs (100%) are placed by rated VA" in share
    # the picture's VA in words, by the Python side's rule, on the page's own numbers
    said = page.locator("#tryit-va").inner_text()
    assert said == res["words"] and f"reads as {report.va_words(*res['va'])}, in quadrant " in said
    assert page.locator("#tryit-plane text.quad").all_text_contents()[0] == "Q1 " + report.QUADRANT_WORDS["Q1"]
    assert page.locator("#tryit-quality").is_hidden()  # this results folder has no table2.csv: no note
    assert page.locator("#tryit-plane circle.song").count() == manifest["n_songs"]
    assert page.locator("#tryit-error").is_hidden()
    page.screenshot(path=str(tmp_path / "tryit.png"), full_page=True)
    # nothing left the machine, and everything came from the book's own files
    assert visit.blocked == []
    assert all(u.startswith((visit.base + "/", "blob:", "data:")) for u in visit.requests)
    assert visit.problems == []


def test_an_example_picture_is_recommended_for_with_a_click(visit, deployed, capsys):
    """The page's example pictures (export.example_pictures: one per quadrant, test pictures of
    the model's own split) are buttons; a click recommends what `imuse recommend` recommends for
    the OASIS file, and the page says where OASIS's raters placed the picture."""
    model_path, index_path = deployed
    page = visit.open().page
    page.evaluate("window.imuseTryit.opened")
    buttons = page.locator("#tryit-example-list button")
    assert buttons.count() == export.N_EXAMPLES
    # the thumbnails load after the song file adds them: wait for them (a broken one never passes)
    page.wait_for_function("Array.from(document.querySelectorAll('#tryit-example-list img'))"
                           ".every((i) => i.complete && i.naturalWidth > 0)", timeout=30_000)
    chosen = recommend.example_images(export.N_EXAMPLES, protocol="cold")  # the deployed model's split
    said = []
    for i in (0, 2):
        before = visit.count()
        buttons.nth(i).click()
        page.wait_for_function(f"window.imuseTryit.results.length + window.imuseTryit.errors.length > {before}",
                               timeout=60_000)
        assert page.evaluate("window.imuseTryit.errors") == []
        res = page.evaluate("window.imuseTryit.results.at(-1)")
        image = chosen.iloc[i]
        assert res["name"] == image.image_id + Path(image.path).suffix
        want = _cli_recommend(image.path, model_path, index_path, capsys)
        assert res["top"] == [r["song_id"] for r in want] or _differ_only_by_ties(res["similarity"], want)
        rated = f"{report.va_words(image.valence, image.arousal)}, {data.quadrant_of(image.valence, image.arousal)}"
        assert f"OASIS's raters placed this picture at valence {image.valence:.2f}" in res["words"]
        assert f": {rated}" in res["words"]
        said.append(f"[tryit] example {image.image_id}: {res['words']}")
    print("\n" + "\n".join(said))
    assert visit.blocked == [] and visit.problems == []


def _themed_page(root: Path) -> str:
    """book/tryit-themed.html: the page under the book theme's own stylesheets, as the built book
    styles it."""
    return browser_helpers.themed_page(root, "tryit-themed.html", "<main>\n" + th.raw_html() + "\n</main>")


def test_text_contrast_is_at_least_4_5_in_light_and_dark_mode(visit, site):
    """Every text of the page - captions, the plane's axis and quadrant labels, the table, the
    example buttons, the quality note - has a WCAG contrast of at least 4.5:1 against its
    background, under the book theme's light and dark colours."""
    root, _ = site
    path = _themed_page(root)
    quality = {"profile": "quick", "source": "results/quick/table2.csv", "split": "cold", "metric": "nsg@10",
               "value": 0.289, "lo": 0.213, "hi": 0.363, "n_images": 225, "n_songs": 124, "image_agnostic": 0.378}

    def with_quality(route):  # the note renders only with a table2.csv, which this fixture has not
        body = json.loads(route.fetch().text())
        route.fulfill(json={**body, "quality": quality})

    page = visit.page
    page.route("**/songs.json", with_quality)
    visit.open(path)
    page.evaluate("window.imuseTryit.opened")
    note = page.locator("#tryit-quality").inner_text()
    assert note.startswith("How well it works: on 225 pictures and 124 songs it never saw (the cold split)")
    assert "NSG@10 0.289 (95% interval 0.213 to 0.363)" in note and "scores 0.378: as much or more" in note
    page.locator("#tryit-example-list button").first.click()
    page.wait_for_function("window.imuseTryit.results.length > 0", timeout=60_000)
    worst = {}
    for theme in ("light", "dark"):
        page.evaluate(f"document.documentElement.dataset.theme = '{theme}'")
        texts = th.book_browser.text_contrast(page, "#imuse-tryit")
        kinds = {t["what"] for t in texts}
        assert {"figcaption", "text.axis", "text.quad", "td", "th", "caption"} <= kinds, kinds
        low = [t for t in texts if t["ratio"] < 4.5]
        worst[theme] = min(t["ratio"] for t in texts)
        assert low == [], (theme, low)
    print(f"\n[tryit] lowest text contrast: light {worst['light']:.2f}:1, dark {worst['dark']:.2f}:1 "
          f"over {len(texts)} text elements")


def test_page_preprocessing_equals_pil_on_real_images(visit):
    """The crop the page feeds the model is the one torchvision makes, byte for byte, from the
    browser's own decoding of OASIS JPEGs."""
    visit.open()
    for path in export.check_images(4):
        visit.page.set_input_files("#tryit-file", str(path))
        got = visit.page.evaluate("window.imuseTryit.crop(document.getElementById('tryit-file').files[0])")
        want = (image_path.load_crop(path).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        assert np.array_equal(np.array(got, np.uint8).reshape(224, 224, 3), want), path


def test_the_command_line_gives_the_same_answer(deployed, capsys):
    """The in-process `imuse recommend` the parity test compares with is the installed command's."""
    model_path, index_path = deployed
    image = recommend.example_images(1).path.iloc[0]
    proc = subprocess.run([sys.executable, "-m", "imuse_lib", "recommend", str(image), "--top", "10", "--json",
                           "--model", str(model_path), "--index", str(index_path)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    # the same songs, ranks and sources; numbers to float rounding (one thread there, the
    # worker's threads here: a network's sums may be ordered differently, in the last bits)
    got, want = json.loads(proc.stdout), _cli_recommend(image, model_path, index_path, capsys)
    assert len(got) == len(want) == 10 and [r.keys() for r in got] == [r.keys() for r in want]
    for g, w in zip(got, want):
        for key, value in w.items():
            if isinstance(value, float):
                assert math.isclose(g[key], value, rel_tol=1e-9, abs_tol=1e-12), (key, g, w)
            else:
                assert g[key] == value, (key, g, w)


def test_bad_files_get_a_clear_message(visit, tmp_path):
    visit.open()
    text = tmp_path / "notes.txt"
    text.write_text("not a picture\n")
    got = visit.choose(text)
    assert got["results"] == 0
    assert "\u201cnotes.txt\u201d" in got["error"] and "is not a picture this browser can read" in got["error"]
    assert visit.page.locator("#tryit-error").is_visible()
    assert visit.page.get_by_role("alert").inner_text() == got["error"]
    # a picture over the pixel limit of `imuse recommend` (a 1-bit PNG: small on disk)
    huge = tmp_path / "huge.png"
    w, h = 10_000, 9_000
    assert w * h > media.MAX_IMAGE_PIXELS
    Image.new("1", (w, h)).save(huge)
    start = time.perf_counter()
    got = visit.choose(huge)
    assert time.perf_counter() - start < 10
    assert "\u201chuge.png\u201d is 10000 \u00d7 9000 pixels (90.0 megapixels)" in got["error"]
    assert "more than the 89.5 megapixels" in got["error"] and got["results"] == 0
    with pytest.raises(media.MediaError, match="exceeds"):
        media.load_image(huge)  # the Python side refuses it too
    # the page still works after a refusal, and the message goes away
    got = visit.choose(export.check_images(1)[0])
    assert got["results"] == 1 and visit.page.locator("#tryit-error").is_hidden()
    assert visit.blocked == [] and visit.problems == []


def test_keyboard_only_use(visit):
    page = visit.open().page
    label = page.get_by_label("Choose a picture")
    assert label.count() == 1 and label.evaluate("e => e.id") == "tryit-file"
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement.id") == "tryit-file":
            break
    else:
        pytest.fail("the file input cannot be reached with the Tab key")
    page.bring_to_front()  # the key goes to the focused page of the one browser the module shares
    chooser = None
    for key in ("Space", "Enter"):  # either key opens a focused file input's chooser
        try:
            with page.expect_file_chooser(timeout=15_000) as opened:
                page.keyboard.press(key)
            chooser = opened.value
            break
        except PlaywrightTimeout:
            assert page.evaluate("document.activeElement && document.activeElement.id") == "tryit-file"
    assert chooser is not None, "neither Space nor Enter opened the file chooser"
    got = visit.choose(export.check_images(1)[0], via_chooser=chooser)
    assert got["error"] is None and got["results"] == 1
    assert page.locator("#tryit-table tbody tr").count() == 10
    assert page.get_by_role("status").inner_text().startswith("Top 10 songs for")


def test_a_dropped_picture_is_recommended_for(visit):
    page = visit.open().page
    path = export.check_images(1)[0]
    transfer = page.evaluate_handle(
        """([b64, name]) => {
             const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
             const dt = new DataTransfer();
             dt.items.add(new File([bytes], name, { type: "image/jpeg" }));
             return dt;
           }""", [base64.b64encode(path.read_bytes()).decode(), path.name])
    page.dispatch_event("#tryit-drop", "drop", {"dataTransfer": transfer})
    page.wait_for_function("window.imuseTryit.results.length + window.imuseTryit.errors.length > 0", timeout=60_000)
    assert page.evaluate("window.imuseTryit.errors") == []
    assert page.evaluate("window.imuseTryit.results[0].name") == path.name


def test_opened_as_a_file_the_page_says_how_to_serve_it(browser, site):
    root, _ = site
    context = browser.new_context()
    context.set_default_timeout(90_000)
    try:
        page = context.new_page()
        page.goto((root / "book" / "tryit.html").as_uri())
        note = page.locator("#tryit-file-protocol")
        note.wait_for(state="visible")
        text = note.inner_text()
        assert "\n" not in text.strip() and "python3 -m http.server" in text and "tryit.html" in text
        assert page.locator("#tryit-file").is_disabled()
    finally:
        context.close()
