"""Shared by test_export.py and test_tryit_browser.py: real models for the page, the page
built into a folder as the book lays it out, and a local web server for it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import torch

from imuse_lib import deployed, export, models
from imuse_lib.network import IMUSENet
from imuse_lib.index import building as index_building

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
PAGE_SOURCES = BOOK / "_static" / "tryit"


def mobilenet_model(seed: int = 0, audio_dim: int = 16) -> deployed.DeployedModel:
    """The real MobileNetV2 backbone (ImageNet weights) under a seeded, untrained factorised
    network: a real image path for export checks that need no feature store."""
    backbone = models.build_image_backbone("mobilenet_v2")
    torch.manual_seed(seed)
    net = IMUSENet(backbone.dim, audio_dim, factorised=True).eval()
    with torch.no_grad():  # spread the predictions over the plane instead of around 0.5
        net.image_head[1].weight.mul_(8.0)
        net.music_head[1].weight.mul_(8.0)
    meta = {"image_backbone": "mobilenet_v2", "audio_backbone": "fake_audio",
            "image_weights": backbone.weights, "audio_weights": {"kind": "random", "init_seed": 0},
            "factorised": True, "image_dim": backbone.dim, "audio_dim": audio_dim}
    return deployed.DeployedModel(net=net, meta=meta, image_backbone=backbone)


def random_index(model: deployed.DeployedModel, path: Path, catalog, images, seed: int = 1) -> Path:
    """An index of the real catalog's songs with seeded random music features."""
    rng = np.random.default_rng(seed)
    audio_dim = model.net.audio_dim
    song_feats = rng.normal(size=(len(catalog), audio_dim)).astype(np.float32)
    image_feats = rng.normal(size=(len(images), model.net.image_dim)).astype(np.float32)
    return index_building.build_index(model, path, catalog=catalog, song_features=song_feats,
                                 images=images, image_features=image_feats, progress=False)


def raw_html(md: Path = BOOK / "tryit.md") -> str:
    """The page's markup: the ```{raw} html``` block of book/tryit.md, as the book embeds it."""
    match = re.search(r"```\{raw\} html\n(.*?)\n```", md.read_text(encoding="utf-8"), flags=re.S)
    assert match, f"{md}: no raw html block"
    return match.group(1)


def build_site(site: Path, model, index, npm_cache: Path, check_images=None) -> dict:
    """The page laid out as in the built book (book/tryit.html, _static/tryit, _static/vendor),
    inside a minimal HTML document instead of the book's theme. Returns the export manifest."""
    static = site / "_static"
    shutil.copytree(PAGE_SOURCES, static / "tryit", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("model"))
    manifest = export.write_page_assets(static / "tryit" / "model", model, index,
                                        images=check_images, check=check_images is not None)
    vendor.install_onnxruntime_web(static / "vendor" / "onnxruntime-web", cache=npm_cache)
    page = site / "book" / "tryit.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
                    "<title>Try it</title></head><body><main>\n" + raw_html() + "\n</main></body></html>\n",
                    encoding="utf-8")
    return manifest


from browser_helpers import book_browser  # noqa: E402  (scripts/bookbuild/browser.py)
from bookbuild import vendor  # noqa: E402  (after browser_helpers: scripts/ on sys.path)

serve = book_browser.serve
