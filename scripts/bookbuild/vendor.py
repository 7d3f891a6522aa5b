"""The book's JavaScript, served from the book itself: plotly.js from the installed plotly, and from
the npm registry (fetched once with `npm pack`, checksums pinned) MathJax and the "Try it" page's
runtime, onnxruntime-web; and the "Try it" page's model and song file (``imuse export onnx``)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from . import common
from .common import BuildError, log, short_path

# MathJax 3 from the npm registry; the integrity string is npm's (dist.integrity), checked again here.
MATHJAX_VERSION = "3.2.2"
MATHJAX_LAYOUT = "1"  # bump when what is extracted changes
MATHJAX_INTEGRITY = "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw=="

# onnxruntime-web: its version is the page's (imuse_lib.export.ONNXRUNTIME_WEB_VERSION, recorded in
# the model's manifest); npm's dist.integrity of onnxruntime-web@1.30.0, checked on every use.
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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- npm


def check_integrity(path: Path, integrity: str) -> None:
    """npm's Subresource-Integrity string (``sha512-<base64>``) against ``path``."""
    algo, _, expected = integrity.partition("-")
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    got = base64.b64encode(h.digest()).decode()
    if got != expected:
        raise BuildError(f"{path}: integrity mismatch (expected {integrity[:24]}..., got {algo}-{got[:16]}...); "
                         f"delete it and build again")


def npm_tarball(name: str, version: str, integrity: str, cache: str | os.PathLike | None = None) -> Path:
    """The npm tarball of ``name@version``, from ``cache`` (default: the download cache) or
    fetched once with `npm pack`; its pinned integrity is checked every time."""
    from imuse_lib import config

    dest = Path(cache) if cache is not None else config.cache_dir() / "downloads" / "npm"
    tarball = dest / f"{name.replace('/', '-').lstrip('@')}-{version}.tgz"
    if not tarball.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise BuildError(f"npm not found: it is needed once to fetch {name}@{version} (`make setup` installs it "
                             f"on Debian; or put {tarball.name} from the npm registry at {tarball})")
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest) as tmp:
            log(f"fetching {name}@{version} with npm pack")
            proc = subprocess.run([npm, "pack", f"{name}@{version}", "--pack-destination", tmp, "--silent"],
                                  capture_output=True, text=True)
            got = Path(tmp) / tarball.name
            if proc.returncode or not got.exists():
                last = ((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1]
                raise BuildError(f"`npm pack {name}@{version}` failed: {last}")
            check_integrity(got, integrity)
            os.replace(got, tarball)
    check_integrity(tarball, integrity)
    return tarball


# --------------------------------------------------------------------------- MathJax and plotly.js


def install_mathjax(vendor: Path = common.VENDOR_DIR) -> Path:
    """MathJax's es5 bundle (tex-chtml.js, its fonts and lazily loaded parts) in ``vendor/mathjax``."""
    target = vendor / "mathjax"
    stamp = target / "VERSION"
    if stamp.exists() and stamp.read_text().split() == [MATHJAX_VERSION, MATHJAX_LAYOUT] and (target / "tex-chtml.js").exists():
        return target
    tarball = npm_tarball("mathjax", MATHJAX_VERSION, MATHJAX_INTEGRITY)
    tmp = Path(tempfile.mkdtemp(dir=vendor.parent if vendor.parent.exists() else None))
    try:
        with tarfile.open(tarball) as tar:
            # latest.js would fetch the newest MathJax from a CDN, node-main.js is for Node: left out
            members = [m for m in tar.getmembers() if m.name.startswith("package/es5/") and m.isfile()
                       and Path(m.name).name not in {"latest.js", "node-main.js"}]
            for m in members:  # only plain files under es5/, no absolute or parent paths
                if Path(m.name).is_absolute() or ".." in Path(m.name).parts:
                    raise BuildError(f"{tarball}: unsafe member {m.name}")
            tar.extractall(tmp, members=members, filter="data")
        (tmp / "package" / "es5" / "VERSION").write_text(f"{MATHJAX_VERSION} {MATHJAX_LAYOUT}\n")
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(tmp / "package" / "es5"), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"MathJax {MATHJAX_VERSION} installed in {short_path(target)}")
    return target


def install_plotly(vendor: Path = common.VENDOR_DIR) -> Path:
    """plotly.min.js of the installed plotly package (the version that made the figures)."""
    import plotly

    source = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not source.exists():
        raise BuildError(f"{source}: missing; reinstall plotly (`pip install --force-reinstall plotly`)")
    target = vendor / "plotly.min.js"
    if not target.exists() or _sha256(target) != _sha256(source):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        log(f"plotly.js of plotly {plotly.__version__} copied to {short_path(target)}")
    return target


def install_tryit(allow_missing: bool = False, profile: str | None = None) -> dict | None:
    """The "Try it" page's assets in book/_static: the deployed model's image path as ONNX, the
    song file and the example pictures (``imuse export onnx``, checked against PyTorch; reused
    while model and index are unchanged; the note on the model's quality from ``profile``'s
    table2.csv), and onnxruntime-web from npm (pinned checksum). Returns their sizes in bytes."""
    from imuse_lib import export
    from imuse_lib.errors import ImuseError

    static = common.ROOT / "book" / "_static"
    try:
        manifest = export.write_page_assets(static / "tryit" / "model", profile=profile)
    except ImuseError as exc:
        if not allow_missing:
            raise
        log(f"try-it page left without its model (--allow-missing): {exc}")
        return None
    install_onnxruntime_web(common.VENDOR_DIR / "onnxruntime-web")
    sizes = page_asset_sizes(static)
    check = manifest["check"]
    log(f"try-it page assets {sizes['total'] / 1e6:.1f} MB (model {sizes['model'] / 1e6:.1f}, runtime "
        f"{sizes['runtime'] / 1e6:.1f}, songs {sizes['songs'] / 1e6:.2f}); ONNX vs PyTorch max |VA difference| "
        f"{check['max_abs_diff_onnx_vs_torch']:.1e} on {len(check['images'])} OASIS images")
    return sizes


# --------------------------------------------------------------------------- onnxruntime-web


def runtime_file_name(member: str) -> str:
    """The name under which a member of :data:`ONNXRUNTIME_WEB_FILES` is served."""
    return Path(member).name + (".gz" if member in GZIPPED else "")


def install_onnxruntime_web(target: str | os.PathLike, cache: str | os.PathLike | None = None) -> Path:
    """onnxruntime-web's wasm backend (:data:`ONNXRUNTIME_WEB_FILES`, the wasm binary gzipped)
    in ``target`` (a VERSION stamp says what is there; an up-to-date folder is left alone)."""
    from imuse_lib import export

    version = export.ONNXRUNTIME_WEB_VERSION
    target = Path(target)
    stamp = target / "VERSION"
    names = [runtime_file_name(f) for f in ONNXRUNTIME_WEB_FILES]
    if stamp.is_file() and stamp.read_text().split() == [version, RUNTIME_LAYOUT] \
            and all((target / n).is_file() for n in names):
        return target
    tarball = npm_tarball("onnxruntime-web", version, ONNXRUNTIME_WEB_INTEGRITY, cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        with tarfile.open(tarball) as tar:
            for member in ONNXRUNTIME_WEB_FILES:
                info = tar.getmember(f"package/{member}")
                if not info.isfile():
                    raise BuildError(f"{tarball}: package/{member} is not a plain file")
                with tar.extractfile(info) as src, open(tmp / runtime_file_name(member), "wb") as dst:
                    if member in GZIPPED:  # mtime 0 and no name: the same bytes on every build
                        with gzip.GzipFile(filename="", mode="wb", fileobj=dst, compresslevel=9, mtime=0) as gz:
                            shutil.copyfileobj(src, gz)
                    else:
                        shutil.copyfileobj(src, dst)
        (tmp / "VERSION").write_text(f"{version} {RUNTIME_LAYOUT}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except KeyError as exc:
        raise BuildError(f"{tarball}: has no {exc.args[0]}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def page_asset_sizes(static_dir: str | os.PathLike) -> dict[str, int]:
    """Bytes of what the page loads, under a book's ``_static`` folder: its own scripts and style,
    the model, song file and example pictures (``tryit/model``), and the runtime (``vendor/onnxruntime-web``,
    counted without its package.json and stamp)."""
    from imuse_lib import io

    static_dir = Path(static_dir)
    tryit, runtime = static_dir / "tryit", static_dir / "vendor" / "onnxruntime-web"
    model_dir = tryit / "model"
    manifest = io.read_json(model_dir / "manifest.json")
    sizes: dict[str, Any] = {
        "page scripts and style": sum(p.stat().st_size for p in tryit.glob("*") if p.suffix in (".js", ".css")),
        "model": (model_dir / manifest["model_file"]).stat().st_size,
        "songs": (model_dir / "songs.json").stat().st_size,
        "example pictures": folder_bytes(model_dir / "examples") if (model_dir / "examples").is_dir() else 0,
        "runtime": sum((runtime / runtime_file_name(f)).stat().st_size for f in ONNXRUNTIME_WEB_FILES
                       if f.startswith("dist/")),
    }
    sizes["total"] = sum(sizes.values())
    return sizes
