"""The recommender in a static page: the image path as ONNX, the songs as a JSON file.

The book's "Try it" page runs the deployed model's image path - normalisation, frozen
backbone, image arm, VA head: ``DeployedModel.image_pipeline_module()``, see
:mod:`imuse_lib.image_path` - in the reader's browser with onnxruntime-web, and ranks the
precomputed songs by Eq. 1 exactly as ``imuse recommend`` does (:func:`ranking.rank_va`:
similarity, ties by song id). The page itself does only what precedes the module: decoding,
the evaluation view of :mod:`imuse_lib.image_view` (resizing the shorter side with PIL's
antialiased bilinear filter, reproduced in ``book/_static/tryit/preprocess.js``, and the
centre crop), as floats in [0, 1]; ``songs.json`` carries the view's sizes, which the page
reads.

What is written (``write_page_assets``) into one folder:

* ``model.<fingerprint16>.onnx``: the image path, batch 1, checked with the ONNX checker
  and against PyTorch on real OASIS images (predicted VA within :data:`TOLERANCE`);
  named by the model's fingerprint so that a browser never pairs a cached old model with
  a new song file;
* ``songs.json``: every song of the index (id, artist, title, the VA it is ranked with as
  float32: rated where the index has one, else predicted, official 4Q quadrant, where that VA
  comes from: ``va_source`` and its words), in index order (by id), plus the few constants the page needs;
* ``examples/``: the page's example pictures (:func:`example_pictures`: OASIS test images, one
  per quadrant, by :func:`recommend.example_images`' rule): a small JPEG thumbnail of each, which
  the page shows, and its original bytes, which a click runs, so that it recommends what ``imuse
  recommend`` recommends for that OASIS file;
* ``manifest.json``: sizes, checksums, the check's numbers.

``songs.json`` also carries what the page says in words: the rule that puts a VA point into words
(``va_words``: :func:`report.va_words_spec`), the examples, and the deployed model's measured
quality (``quality``: :func:`measured_quality`, from ``results/<profile>/table2.csv``; absent when
that file or its row is missing, never made up).

onnxruntime-web (:data:`ONNXRUNTIME_WEB_VERSION`) comes from the npm registry with a pinned
checksum, like the book's MathJax, fetched by the book's builder (``scripts/bookbuild/vendor.py``).

What a model needs to be exported: ``image_pipeline_module()`` (the contract above),
``fingerprint`` (its index must carry the same), and to work with ``recommend.Recommender``;
the check compares the module with ``Recommender.image_point``, so a model whose image path
uses more than the 224 crop (statistics of the whole picture, say) is refused, not
published wrong.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from . import config, data, image_path, io, media, recommend, report
from .deployed import load_deployed
from .errors import DataError, ExportError
from .image_view import CROP, RESIZE, page_spec
from .index.files import PREDICTED, VA_SOURCES
from .index.reading import default_index_path, open_index
from .models.base import sha256_file
from .recommend import Recommender

OPSET = 18  # well inside what onnxruntime-web's wasm backend runs
TOLERANCE = 1e-4  # largest |VA(ONNX) - VA(PyTorch)| accepted by the check
CHECK_IMAGES = 8
SONGS_FORMAT = "imuse-tryit-songs/2"  # 2: each song says where its VA comes from
EXPORT_VERSION = "2"  # bump when what is written changes (invalidates unchanged-export reuse)
N_EXAMPLES = 4  # example pictures on the page: one per quadrant
EXAMPLES_DIR = "examples"
# the deployed VA model's rows in table2.csv (experiments.evaluation.DEPLOYED; a layer above this one)
DEPLOYED_CONFIG, DEPLOYED_PREDICTOR, QUALITY_SPLIT = "deployed", "va_model", "cold"

# The runtime the page is built for (recorded in its manifest); the book's builder fetches it
# (scripts/bookbuild/vendor.py: npm, pinned checksum).
ONNXRUNTIME_WEB_VERSION = "1.30.0"


# --------------------------------------------------------------------------- ONNX


def _need(module: str):
    """``module``, or one line saying how to install the export's dependencies."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"exporting for the book's page needs the Python package {module}: "
                          f"pip install -r requirements.txt (or pip install 'imuse[book]')") from None


def export_onnx(model, path: str | os.PathLike) -> Path:
    """Export ``model.image_pipeline_module()`` (batch 1) to ``path`` and run the ONNX checker."""
    onnx = _need("onnx")
    _need("onnxscript")  # torch's ONNX exporter

    module = model.image_pipeline_module().eval()
    example = torch.rand(1, 3, CROP, CROP, generator=torch.Generator().manual_seed(config.SEED))
    path = Path(path)
    with io.atomic_path(path) as tmp, torch.inference_mode(False), torch.no_grad():
        with warnings.catch_warnings():  # the exporter's own deprecation notices are not the user's business
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            program = torch.onnx.export(module, (example,), dynamo=True, input_names=["image"],
                                        output_names=["va"], opset_version=OPSET, external_data=False, verbose=False)
        program.save(str(tmp), external_data=False)
        proto = onnx.load(str(tmp))
        meta = {"imuse_fingerprint": getattr(model, "fingerprint", ""), "imuse_model": _label(model),
                "imuse_input": f"float RGB [1, 3, {CROP}, {CROP}] in [0, 1]: shorter side resized to {RESIZE} "
                               f"(PIL bilinear), centre crop {CROP}",
                "imuse_output": "predicted valence, arousal [1, 2]"}
        onnx.helper.set_model_props(proto, meta)
        onnx.save(proto, str(tmp))
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"{path}: the ONNX checker rejects the exported model ({str(exc).splitlines()[0]})") from None
    return path


def _label(model) -> str:
    label = getattr(model, "label", None)
    return label() if callable(label) else str(label or type(model).__name__)


def onnx_session(path: str | os.PathLike):
    """An onnxruntime CPU session on one thread (like the page's wasm backend)."""
    ort = _need("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_images(n: int = CHECK_IMAGES) -> list[Path]:
    """``n`` real OASIS images spread over the VA quadrants (the book's example rule)."""
    return [Path(p) for p in recommend.example_images(n).path]


@dataclass
class CheckResult:
    images: list[str]
    onnx_va: np.ndarray  # [n, 2] onnxruntime on the exported file
    torch_va: np.ndarray  # [n, 2] the PyTorch module that was exported
    recommend_va: np.ndarray  # [n, 2] what `imuse recommend` computes for the same files

    @property
    def max_diff_onnx(self) -> float:
        return float(np.abs(self.onnx_va - self.torch_va).max(initial=0.0))

    @property
    def max_diff_recommend(self) -> float:
        return float(np.abs(self.torch_va - self.recommend_va).max(initial=0.0))

    def as_dict(self) -> dict:
        return {"images": self.images, "tolerance": TOLERANCE,
                "max_abs_diff_onnx_vs_torch": self.max_diff_onnx,
                "max_abs_diff_torch_vs_recommend": self.max_diff_recommend}


def check_onnx(model, index, onnx_path: str | os.PathLike, images: Sequence[str | os.PathLike]) -> CheckResult:
    """Predicted VA of ``images`` by the ONNX file (onnxruntime) against the PyTorch module it was
    exported from, and that module against the recommender's own image path (``model`` with its
    ``index``); raises ExportError when either differs by more than :data:`TOLERANCE`."""
    if not images:
        raise ExportError("no image to check the exported model on")
    module = model.image_pipeline_module().eval()
    recommender = Recommender(model, index)
    session = onnx_session(onnx_path)
    onnx_va, torch_va, rec_va = [], [], []
    for image in images:
        x = image_path.load_crop(image).unsqueeze(0)
        with torch.no_grad():
            torch_va.append(module(x).numpy()[0])
        onnx_va.append(session.run(["va"], {"image": x.numpy()})[0][0])
        rec_va.append(recommender.image_point(image)[1])
    result = CheckResult([Path(i).name for i in images], np.array(onnx_va, np.float64),
                         np.array(torch_va, np.float64), np.array(rec_va, np.float64))
    for what, diff in (("ONNX vs PyTorch", result.max_diff_onnx), ("exported module vs `imuse recommend`",
                                                                   result.max_diff_recommend)):
        if not diff <= TOLERANCE:
            raise ExportError(f"{onnx_path}: predicted VA differs by {diff:.2e} ({what}) on real OASIS images, "
                              f"more than the {TOLERANCE:g} allowed")
    return result


# --------------------------------------------------------------------------- the songs


def _f32(x) -> float:
    """Shortest decimal that reads back as the same float32 (the page applies Math.fround)."""
    return float(repr(np.float32(x)).removeprefix("np.float32(").removesuffix(")"))


def song_table(index, catalog=None) -> dict:
    """The index's songs for the page: rows in index order (by id, the ranking's tie-break)."""
    if catalog is None:
        catalog = data.load_catalog()
    quadrant = dict(zip(catalog.song_id.astype(str), catalog.quadrant)) if "quadrant" in catalog else {}
    songs = index.songs
    rows = [[str(sid), str(artist), str(title), _f32(va[0]), _f32(va[1]), quadrant.get(str(sid)), str(source)]
            for sid, artist, title, va, source in zip(songs.song_id, songs.artist, songs.title, index.song_va,
                                                      songs.va_source)]
    return {"format": SONGS_FORMAT, "fingerprint": index.fingerprint,
            "model_label": index.meta.get("model_label", ""),
            "columns": ["song_id", "artist", "title", "valence", "arousal", "quadrant", "va_source"],
            "quadrant": "official 4Q quadrant of the song (null when the song is not in the 4Q catalog)",
            "valence": "the VA the song is ranked with: its rated VA where the index has one, else predicted",
            "va_source": {code: VA_SOURCES[code] for code in sorted(set(songs.va_source.astype(str)))
                          if code in VA_SOURCES},
            "va_predicted": PREDICTED,  # the one va_source code that is not a rating
            "max_image_pixels": media.MAX_IMAGE_PIXELS, **page_spec(),  # preprocess.js reads the view here
            "va_words": report.va_words_spec(),  # preprocess.js vaWords(): the page says the VA in words
            "songs": rows}


# --------------------------------------------------------------------------- what the page says


def measured_quality(profile: str | None) -> dict | None:
    """The deployed VA model's measured NSG@10 on the cold split (images and songs it never saw),
    with its interval and the picture-blind ranking's score beside it, from
    ``results/<profile>/table2.csv`` (``imuse evaluate``); None without a profile, that file or
    the model's row: the page then leaves its note out."""
    if not profile:
        return None
    path = config.results_dir(create=False) / profile / "table2.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    cold = table[table.split == QUALITY_SPLIT]
    row = cold[(cold.config == DEPLOYED_CONFIG) & (cold.predictor == DEPLOYED_PREDICTOR)]
    if row.empty:
        return None
    row = row.iloc[0]
    agnostic = cold[cold.predictor == "image_agnostic"]
    number = lambda x: None if pd.isna(x) else round(float(x), 3)  # noqa: E731 - three digits, as the book prints
    return {"profile": profile, "source": f"results/{profile}/table2.csv", "split": QUALITY_SPLIT,
            "metric": "nsg@10", "value": number(row["nsg@10"]), "lo": number(row.get("nsg@10_lo")),
            "hi": number(row.get("nsg@10_hi")), "n_images": int(row.n_queries), "n_songs": int(row.n_candidates),
            "image_agnostic": number(agnostic["nsg@10"].iloc[0]) if not agnostic.empty else None}


THUMBNAIL_PX = 192  # longer side of an example's thumbnail on the page


def _example_stem(image_id: str) -> str:
    """An example picture's file name stem: its OASIS name as a URL-safe slug."""
    return "".join(c if c.isalnum() else "-" for c in str(image_id).lower()).strip("-")


def _write_if_changed(path: Path, content: bytes) -> None:
    if not path.is_file() or path.read_bytes() != content:
        with io.atomic_path(path) as tmp:
            Path(tmp).write_bytes(content)


def example_pictures(out: str | os.PathLike, protocol: str = "paper", n: int = N_EXAMPLES) -> list[dict]:
    """Copy ``n`` OASIS test pictures (:func:`recommend.example_images`: one per quadrant, the one
    nearest its centre among the images the book may show, of the model's own split, so pictures
    it never saw) into ``out``: each as its original bytes (what a click recommends for, as
    ``imuse recommend`` does for that file) and a small JPEG thumbnail (what the page shows).
    Any other file there is removed. Returns what the page shows of them (files, OASIS name and
    source, the picture's rated VA and quadrant)."""
    from PIL import Image

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    listed = []
    for _, img in recommend.example_images(n, protocol=protocol).iterrows():
        original = Path(img.path).read_bytes()
        stem = _example_stem(img.image_id)
        name = stem + (".png" if original.startswith(b"\x89PNG") else ".jpg")  # one OASIS ".jpg" is a PNG
        _write_if_changed(out / name, original)
        thumb = media.load_image(img.path)
        thumb.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX), Image.Resampling.LANCZOS)
        buffer = BytesIO()
        thumb.save(buffer, "JPEG", quality=82, optimize=True)
        _write_if_changed(out / f"{stem}.thumb.jpg", buffer.getvalue())
        listed.append({"file": f"{EXAMPLES_DIR}/{name}", "thumbnail": f"{EXAMPLES_DIR}/{stem}.thumb.jpg",
                       "width": thumb.width, "height": thumb.height, "name": str(img.image_id),
                       "source": str(img.source), "valence": float(img.valence), "arousal": float(img.arousal),
                       "quadrant": str(data.quadrant_of(img.valence, img.arousal))})  # its rated VA's
    keep = {Path(e[k]).name for e in listed for k in ("file", "thumbnail")}
    for stale in out.iterdir():  # a picture of an earlier choice: not served any more
        if stale.is_file() and stale.name not in keep:
            stale.unlink()
    return listed


def _model_split(model) -> str:
    """The split the model was fitted on (its test pictures are the ones it never saw)."""
    for attr in ("provenance", "meta"):
        split = (getattr(model, attr, None) or {}).get("split")
        if split:
            return str(split)
    return "paper"


# --------------------------------------------------------------------------- the page's assets


def model_file_name(fingerprint: str) -> str:
    return f"model.{fingerprint[:16]}.onnx"


def _files_info(folder: Path, names: Sequence[str]) -> dict:
    return {n: {"bytes": (folder / n).stat().st_size, "sha256": sha256_file(folder / n)} for n in names}


def _reusable(out: Path, model_key: str) -> dict | None:
    """The manifest of an earlier export in ``out`` of the same model (same export code, same
    check), if its model file is intact: that file and its check are reused."""
    try:
        manifest = io.read_json(out / "manifest.json")
        info = manifest["files"][manifest["model_file"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = out / manifest["model_file"]
    if manifest.get("model_key") != model_key or not path.is_file() or path.stat().st_size != info.get("bytes") \
            or sha256_file(path) != info.get("sha256"):
        return None
    return manifest


def write_page_assets(out: str | os.PathLike, model=None, index=None, *, catalog=None,
                      images: Sequence | None = None, check: bool = True, force: bool = False,
                      profile: str | None = None) -> dict:
    """Export the model, the song file and the example pictures into ``out`` (see the module
    docstring); returns the manifest. ``model``/``index``: objects or paths, default the deployed
    ones; ``images``: the OASIS images to check on (default :func:`check_images`); ``profile``:
    whose table2.csv gives the page's note on the model's measured quality (None: no note). The
    model file of an earlier export of the same model and check is reused (``force`` redoes it);
    the song file is rewritten whenever what it says changed."""
    out = Path(out)
    if model is None or isinstance(model, (str, os.PathLike)):
        model = load_deployed(model)
    if index is None or isinstance(index, (str, os.PathLike)):
        path = Path(index) if index is not None else default_index_path(model)
        if index is None and not path.exists():
            raise DataError(f"{path}: no song index for this model yet ({_label(model)}); "
                            f"build it with `imuse index build`")
        index = open_index(path)
    if not callable(getattr(model, "image_pipeline_module", None)):
        raise ExportError(f"{_label(model)}: this model type offers no image_pipeline_module(), "
                          f"so the book's page cannot run it")
    index.check_model(model)
    images = [] if not check else list(images) if images is not None else check_images()
    checked_on = json.dumps([Path(i).name for i in images]) if check else "unchecked"
    model_key = hashlib.sha256(f"{EXPORT_VERSION}\0{model.fingerprint}\0{checked_on}".encode()).hexdigest()
    previous = None if force else _reusable(out, model_key)
    if previous is not None:
        onnx_name, checked = previous["model_file"], previous["check"]
    else:
        onnx_name = model_file_name(model.fingerprint)
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob("model.*.onnx"):  # an older model's file: never served beside the new songs
            if stale.name != onnx_name:
                stale.unlink()
        export_onnx(model, out / onnx_name)
        checked = check_onnx(model, index, out / onnx_name, images).as_dict() if check else None
    songs = song_table(index, catalog)
    songs["model_file"] = onnx_name
    songs["examples"] = example_pictures(out / EXAMPLES_DIR, _model_split(model))
    quality = measured_quality(profile)
    if quality is not None:
        songs["quality"] = quality
    songs_text = json.dumps(songs, ensure_ascii=False, separators=(",", ":")) + "\n"
    songs_path = out / "songs.json"
    if previous is not None and songs_path.is_file() and songs_path.read_text(encoding="utf-8") == songs_text:
        return previous
    io.write_text(songs_path, songs_text)
    onnxruntime = _need("onnxruntime")
    manifest = {"format": "imuse-tryit-manifest/1", "model_key": model_key, "fingerprint": model.fingerprint,
                "model_label": _label(model), "model_file": onnx_name, "opset": OPSET, "n_songs": len(index),
                "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                "onnxruntime_web": ONNXRUNTIME_WEB_VERSION, "check": checked,
                "files": _files_info(out, [onnx_name, "songs.json"] + [e[k] for e in songs["examples"]
                                                                             for k in ("file", "thumbnail")])}
    io.write_json(out / "manifest.json", manifest)
    return manifest
