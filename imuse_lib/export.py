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
* ``songs.json``: every song of the index (id, artist, title, predicted VA as float32,
  official 4Q quadrant), in index order (by id), plus the few constants the page needs;
* ``manifest.json``: sizes, checksums, the check's numbers.

onnxruntime-web comes from the npm registry with a pinned checksum
(:func:`install_onnxruntime_web`), like the book's MathJax, and is served by the book.

What a model needs to be exported: ``image_pipeline_module()`` (the contract above),
``fingerprint`` (its index must carry the same), and to work with ``recommend.Recommender``;
the check compares the module with ``Recommender.image_point``, so a model whose image path
uses more than the 224 crop (statistics of the whole picture, say) is refused, not
published wrong.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from . import config, image_path, io, media, recommend
from .deployed import load_deployed
from .errors import DataError, ExportError
from .image_view import CROP, RESIZE, page_spec
from .index.reading import default_index_path, open_index
from .models.base import sha256_file
from .recommend import Recommender

OPSET = 18  # well inside what onnxruntime-web's wasm backend runs
TOLERANCE = 1e-4  # largest |VA(ONNX) - VA(PyTorch)| accepted by the check
CHECK_IMAGES = 8
SONGS_FORMAT = "imuse-tryit-songs/1"
EXPORT_VERSION = "1"  # bump when what is written changes (invalidates unchanged-export reuse)

ONNXRUNTIME_WEB_VERSION = "1.30.0"
# npm's dist.integrity of onnxruntime-web@1.30.0, checked on every use.
ONNXRUNTIME_WEB_INTEGRITY = ("sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1Si"
                             "gqR4CXAfKYQ==")
# The wasm backend only: the classic-script API, its wasm glue module and the wasm binary
# (single-threaded use needs no cross-origin isolation); WebGPU/WebGL/JSEP builds are left out.
# package.json goes along: the package has no LICENSE file, its licence (MIT) is stated there.
ONNXRUNTIME_WEB_FILES = ("dist/ort.wasm.min.js", "dist/ort-wasm-simd-threaded.mjs",
                         "dist/ort-wasm-simd-threaded.wasm", "package.json")
# Written gzipped (14.2 MB -> 3.7 MB): the page inflates it with the browser's own
# DecompressionStream and hands the bytes to the runtime (ort.env.wasm.wasmBinary), so the
# book stays within its size budget whatever compression the web server does or does not do.
GZIPPED = ("dist/ort-wasm-simd-threaded.wasm",)
RUNTIME_LAYOUT = "wasm-gz1"  # part of the VERSION stamp: a change of layout reinstalls


def runtime_file_name(member: str) -> str:
    """The name under which a member of :data:`ONNXRUNTIME_WEB_FILES` is served."""
    return Path(member).name + (".gz" if member in GZIPPED else "")


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
        from . import data

        catalog = data.load_catalog()
    quadrant = dict(zip(catalog.song_id.astype(str), catalog.quadrant)) if "quadrant" in catalog else {}
    songs = index.songs
    rows = [[str(sid), str(artist), str(title), _f32(va[0]), _f32(va[1]), quadrant.get(str(sid))]
            for sid, artist, title, va in zip(songs.song_id, songs.artist, songs.title, index.song_va)]
    return {"format": SONGS_FORMAT, "fingerprint": index.fingerprint,
            "model_label": index.meta.get("model_label", ""),
            "columns": ["song_id", "artist", "title", "valence", "arousal", "quadrant"],
            "quadrant": "official 4Q quadrant of the song (null when the song is not in the 4Q catalog)",
            "max_image_pixels": media.MAX_IMAGE_PIXELS, **page_spec(),  # preprocess.js reads the view here
            "songs": rows}


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
                      images: Sequence | None = None, check: bool = True, force: bool = False) -> dict:
    """Export the model and the song file into ``out`` (see the module docstring); returns the
    manifest. ``model``/``index``: objects or paths, default the deployed ones; ``images``: the
    OASIS images to check on (default :func:`check_images`). The model file of an earlier export
    of the same model and check is reused (``force`` redoes it); the song file is rewritten
    whenever the index changed."""
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
                "files": _files_info(out, [onnx_name, "songs.json"])}
    io.write_json(out / "manifest.json", manifest)
    return manifest


# --------------------------------------------------------------------------- onnxruntime-web from npm


def check_integrity(path: Path, integrity: str) -> None:
    """npm's Subresource-Integrity string (``sha512-<base64>``) against ``path``."""
    algo, _, expected = integrity.partition("-")
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    got = base64.b64encode(h.digest()).decode()
    if got != expected:
        raise ExportError(f"{path}: integrity mismatch (expected {integrity[:24]}..., got {algo}-{got[:16]}...); "
                          f"delete it and try again")


def npm_tarball(name: str, version: str, integrity: str, cache: str | os.PathLike | None = None) -> Path:
    """The npm tarball of ``name@version``, from ``cache`` (default: the download cache) or
    fetched once with `npm pack`; its pinned integrity is checked every time."""
    dest = Path(cache) if cache is not None else config.cache_dir() / "downloads" / "npm"
    tarball = dest / f"{name.replace('/', '-').lstrip('@')}-{version}.tgz"
    if not tarball.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise ExportError(f"npm not found: it is needed once to fetch {name}@{version} (install Node.js/npm, "
                              f"e.g. `apt-get install -y npm`, or put {tarball.name} from the npm registry at {tarball})")
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest) as tmp:
            proc = subprocess.run([npm, "pack", f"{name}@{version}", "--pack-destination", tmp, "--silent"],
                                  capture_output=True, text=True)
            got = Path(tmp) / tarball.name
            if proc.returncode or not got.exists():
                last = ((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1]
                raise ExportError(f"`npm pack {name}@{version}` failed: {last}")
            check_integrity(got, integrity)
            os.replace(got, tarball)
    check_integrity(tarball, integrity)
    return tarball


def install_onnxruntime_web(target: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """onnxruntime-web's wasm backend (:data:`ONNXRUNTIME_WEB_FILES`, the wasm binary gzipped)
    in ``target`` (a VERSION stamp says what is there; an up-to-date folder is left alone)."""
    target = Path(target)
    stamp = target / "VERSION"
    names = [runtime_file_name(f) for f in ONNXRUNTIME_WEB_FILES]
    if stamp.is_file() and stamp.read_text().split() == [ONNXRUNTIME_WEB_VERSION, RUNTIME_LAYOUT] \
            and all((target / n).is_file() for n in names):
        return target
    tarball = npm_tarball("onnxruntime-web", ONNXRUNTIME_WEB_VERSION, ONNXRUNTIME_WEB_INTEGRITY, cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        with tarfile.open(tarball) as tar:
            for member in ONNXRUNTIME_WEB_FILES:
                info = tar.getmember(f"package/{member}")
                if not info.isfile():
                    raise ExportError(f"{tarball}: package/{member} is not a plain file")
                with tar.extractfile(info) as src, open(tmp / runtime_file_name(member), "wb") as dst:
                    if member in GZIPPED:  # mtime 0 and no name: the same bytes on every build
                        with gzip.GzipFile(filename="", mode="wb", fileobj=dst, compresslevel=9, mtime=0) as gz:
                            shutil.copyfileobj(src, gz)
                    else:
                        shutil.copyfileobj(src, dst)
        (tmp / "VERSION").write_text(f"{ONNXRUNTIME_WEB_VERSION} {RUNTIME_LAYOUT}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except KeyError as exc:
        raise ExportError(f"{tarball}: has no {exc.args[0]}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# --------------------------------------------------------------------------- the book


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def page_asset_sizes(static_dir: str | os.PathLike) -> dict[str, int]:
    """Bytes of what the page loads, under a book's ``_static`` folder: its own scripts and style,
    the model and song file (``tryit/model``), and the runtime (``vendor/onnxruntime-web``,
    counted without its package.json and stamp)."""
    static_dir = Path(static_dir)
    tryit, runtime = static_dir / "tryit", static_dir / "vendor" / "onnxruntime-web"
    model_dir = tryit / "model"
    manifest = io.read_json(model_dir / "manifest.json")
    sizes: dict[str, Any] = {
        "page scripts and style": sum(p.stat().st_size for p in tryit.glob("*") if p.suffix in (".js", ".css")),
        "model": (model_dir / manifest["model_file"]).stat().st_size,
        "songs": (model_dir / "songs.json").stat().st_size,
        "runtime": sum((runtime / runtime_file_name(f)).stat().st_size for f in ONNXRUNTIME_WEB_FILES
                       if f.startswith("dist/")),
    }
    sizes["total"] = sum(sizes.values())
    return sizes
