"""The deployed VA model: per-item valence/arousal regressors for images and for songs.

Each arm (image, audio) stacks several feature sources of the feature store (see
:data:`imuse_lib.features.IMAGE_SOURCES` / ``AUDIO_SOURCES``), each standardised on the
training items and weighted as a block (a source of ``d`` columns is scaled by
``w / sqrt(d)``, so its expected squared norm is ``w**2`` whatever its size), then fits a
kernel ridge regression per VA dimension:

* ``kernel="linear"``: ridge on the weighted blocks;
* ``kernel="rbf"``: Gaussian kernel ``exp(-g * |x - x'|^2 / (2 sum w^2))`` (``g`` is
  relative to the expected squared distance between two items, so it is scale-free).

The ridge penalty of each dimension is chosen by exact leave-one-out error on the items the
arm is fitted on (one eigendecomposition of the kernel serves every penalty). The block
weights, the kernel and ``g`` are searched with Optuna (TPE, seeded) on the **validation**
items only (fit on ``train``, score on ``val``); the chosen model is then refitted on
``train`` + ``val``. Test items are never read before the final scoring: their labels are
not even passed to the fitting code (see :func:`fit`).

Calibration: regression to the mean shrinks predictions; a recommender built on shrunk VA
sends every picture to the same corner. Each dimension is therefore stretched around the
training mean by ``sd(true) / sd(leave-one-out prediction)`` on the fitted items (an
out-of-sample estimate of the shrinkage that needs no extra data), so held-out predictions
keep about the true spread.

    model = va_model.fit()                      # default sources, tuned on validation
    model.predict_images(ids), model.predict_songs(ids)  # [n, 2] VA in [0, 1]
    model.predictor()                           # a baselines.ItemVAPredictor for metrics.score
    model.save(path); va_model.load(path)
    model.image_pipeline_module()               # torch: RGB [N,3,224,224] in [0,1] -> VA [N,2]
"""

from __future__ import annotations

import contextlib
import json
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import config
from .errors import ImuseError, ModelMismatchError
from .io import atomic_path, open_npz, write_json

FORMAT = "imuse-va-model"
FORMAT_VERSION = 1
KERNELS = ("linear", "rbf")
LAMBDAS = np.logspace(-4, 3, 36)  # ridge penalties relative to the kernel's mean diagonal
DIMS = ("valence", "arousal")
DEFAULT_TRIALS = 30


# --------------------------------------------------------------------------- one arm


def _block_matrix(blocks: list[np.ndarray], mean: list, sd: list, weights) -> np.ndarray:
    """Standardise each block with the training statistics and weight it by w / sqrt(d)."""
    out = [(np.asarray(b, np.float64) - m) / s * (w / np.sqrt(b.shape[1]))
           for b, m, s, w in zip(blocks, mean, sd, weights)]
    return np.concatenate(out, axis=1)


def _kernel(a: np.ndarray, b: np.ndarray, kind: str, gamma: float) -> np.ndarray:
    if kind == "linear":
        return a @ b.T
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.exp(-gamma * np.maximum(d2, 0.0))


@dataclass
class ArmModel:
    """One modality's VA regressor (see the module docstring); every array it needs to
    predict is stored, so it can be saved, loaded and turned into a torch module.

    ``linear``: raw = X @ coef + bias; ``rbf``: raw = K(X, basis) @ coef + bias, where X is
    the weighted, standardised block matrix. Calibrated = centre + (raw - centre) * scale."""

    sources: tuple
    weights: np.ndarray
    kernel: str
    g: float
    mean: list = field(default_factory=list)   # per block: training column means
    sd: list = field(default_factory=list)     # per block: training column sds (0 -> 1)
    basis: np.ndarray | None = None            # rbf: [n, D] weighted training matrix
    coef: np.ndarray | None = None             # linear: [D, 2]; rbf: [n, 2] dual coefficients
    bias: np.ndarray | None = None             # [2]
    centre: np.ndarray | None = None           # [2] training mean of y (calibration centre)
    scale: np.ndarray | None = None            # [2] calibration stretch
    lambdas: np.ndarray | None = None          # [2] chosen penalties (absolute)
    loo_r: np.ndarray | None = None            # [2] leave-one-out r on the fitted items
    n_fit: int = 0

    @property
    def gamma(self) -> float:
        return float(self.g / (2.0 * np.sum(np.asarray(self.weights, float) ** 2)))

    def transform(self, blocks: list[np.ndarray]) -> np.ndarray:
        if len(blocks) != len(self.sources):
            raise ModelMismatchError(f"the arm needs {len(self.sources)} feature blocks "
                                     f"({', '.join(self.sources)}), got {len(blocks)}")
        for b, m, s in zip(blocks, self.mean, self.sources):
            if np.asarray(b).shape[1] != len(m):
                raise ModelMismatchError(f"feature source {s}: {np.asarray(b).shape[1]} columns, the model "
                                         f"was fitted on {len(m)}")
        return _block_matrix(blocks, self.mean, self.sd, self.weights)

    def predict_raw(self, blocks: list[np.ndarray]) -> np.ndarray:
        x = self.transform(blocks)
        if self.kernel == "linear":
            return x @ self.coef + self.bias
        if getattr(self, "_basis_sq", None) is None:  # per query only x's norms are new
            self._basis_sq = (self.basis * self.basis).sum(1)
        d2 = (x * x).sum(1)[:, None] + self._basis_sq[None, :] - 2.0 * x @ self.basis.T
        return np.exp(-self.gamma * np.maximum(d2, 0.0)) @ self.coef + self.bias

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        return self.centre + (raw - self.centre) * self.scale

    def predict(self, blocks: list[np.ndarray], calibrated: bool = True) -> np.ndarray:
        raw = self.predict_raw(blocks)
        return np.clip(self.calibrate(raw) if calibrated else raw, 0.0, 1.0)

    def arrays(self, prefix: str) -> dict:
        out = {f"{prefix}weights": np.asarray(self.weights, float), f"{prefix}coef": self.coef,
               f"{prefix}bias": self.bias, f"{prefix}centre": self.centre, f"{prefix}scale": self.scale,
               f"{prefix}lambdas": self.lambdas, f"{prefix}loo_r": self.loo_r}
        if self.basis is not None:
            out[f"{prefix}basis"] = self.basis
        for i, (m, s) in enumerate(zip(self.mean, self.sd)):
            out[f"{prefix}mean{i}"], out[f"{prefix}sd{i}"] = m, s
        return out

    def describe(self) -> dict:
        return {"sources": list(self.sources), "weights": [float(w) for w in self.weights],
                "kernel": self.kernel, "g": float(self.g), "n_fit": int(self.n_fit),
                "lambdas": [float(v) for v in self.lambdas], "calibration_scale": [float(v) for v in self.scale],
                "loo_r": [float(v) for v in self.loo_r]}

    @classmethod
    def from_arrays(cls, z, prefix: str, desc: dict) -> "ArmModel":
        n = len(desc["sources"])
        arm = cls(tuple(desc["sources"]), np.asarray(z[f"{prefix}weights"]), desc["kernel"], float(desc["g"]),
                  [np.asarray(z[f"{prefix}mean{i}"]) for i in range(n)],
                  [np.asarray(z[f"{prefix}sd{i}"]) for i in range(n)])
        arm.basis = np.asarray(z[f"{prefix}basis"]) if f"{prefix}basis" in z else None
        for name in ("coef", "bias", "centre", "scale", "lambdas", "loo_r"):
            setattr(arm, name, np.asarray(z[f"{prefix}{name}"]))
        arm.n_fit = int(desc["n_fit"])
        return arm


def fit_arm(blocks: list[np.ndarray], y: np.ndarray, sources, weights=None, kernel: str = "rbf", g: float = 1.0,
            calibrate: bool = True) -> ArmModel:
    """Fit one arm on ``blocks`` (list of [n, d_s]) and VA targets ``y`` [n, 2]; the penalty
    of each dimension by exact leave-one-out error (see the module docstring)."""
    from .metrics import pearson_r

    if kernel not in KERNELS:
        raise ImuseError(f"kernel must be one of {KERNELS}, not {kernel!r}")
    y = np.asarray(y, np.float64)
    if len(y) < 5:
        raise ImuseError(f"an arm needs at least 5 training items, got {len(y)}")
    if any(len(b) != len(y) for b in blocks):
        raise ImuseError("every feature block needs one row per training item")
    weights = np.ones(len(blocks)) if weights is None else np.asarray(weights, float)
    mean = [np.asarray(b, np.float64).mean(0) for b in blocks]
    sd = [np.where(s > 1e-12, s, 1.0) for s in (np.asarray(b, np.float64).std(0) for b in blocks)]
    arm = ArmModel(tuple(sources), weights, kernel, float(g), mean, sd)
    x = arm.transform(blocks)
    centre = y.mean(0)
    yc = y - centre
    if kernel == "linear":  # centred kernel: the intercept is the (unpenalised) mean
        xc = x - x.mean(0)
        k = xc @ xc.T
    else:
        k = _kernel(x, x, "rbf", arm.gamma)
        k = k - k.mean(0)[None] - k.mean(1)[:, None] + k.mean()
    evals, evecs = np.linalg.eigh(k)
    evals = np.maximum(evals, 0.0)
    proj = evecs.T @ yc
    base = float(np.mean(np.diag(k))) or 1.0
    dual, lambdas, loo_pred = np.zeros_like(yc), np.zeros(y.shape[1]), np.zeros_like(yc)
    sq = evecs ** 2
    for j in range(y.shape[1]):
        best = None
        for lam in LAMBDAS * base:
            shrink = evals / (evals + lam)
            fitted = evecs @ (shrink * proj[:, j])
            h = sq @ shrink + 1.0 / len(y)  # hat diagonal, the mean included
            loo_res = (yc[:, j] - fitted) / np.maximum(1.0 - h, 1e-9)
            err = float(np.mean(loo_res ** 2))
            if best is None or err < best[0]:
                best = (err, lam, yc[:, j] - loo_res)
        _, lambdas[j], loo_pred[:, j] = best
        dual[:, j] = evecs @ (proj[:, j] / (evals + lambdas[j]))
    if kernel == "linear":
        arm.coef = xc.T @ dual
        arm.bias = centre - x.mean(0) @ arm.coef
    else:
        # the centred kernel k_c(a, b) = k(a, b) - mean_i k(a, x_i) - mean_j k(x_j, b) + mean: its
        # dual coefficients sum to 0 (they live in the centred space), so the row mean term drops
        # out and only a constant shift remains.
        kbar = _kernel(x, x, "rbf", arm.gamma).mean(0)
        arm.basis, arm.coef = x, dual
        arm.bias = centre - kbar @ dual
    arm.centre, arm.lambdas, arm.n_fit = centre, lambdas, len(y)
    arm.loo_r = np.array([pearson_r(loo_pred[:, j], yc[:, j]) for j in range(y.shape[1])])
    sd_loo = loo_pred.std(0)
    arm.scale = (np.where(sd_loo > 1e-9, yc.std(0) / np.maximum(sd_loo, 1e-9), 1.0) if calibrate
                 else np.ones(y.shape[1]))
    return arm


# --------------------------------------------------------------------------- feature blocks


@dataclass
class Blocks:
    """The evaluation features of one arm's sources, rows aligned to ``ids``."""

    ids: list
    sources: tuple
    arrays: list
    provenance: dict

    def rows(self, ids) -> np.ndarray:
        index = {i: n for n, i in enumerate(self.ids)}
        missing = [i for i in ids if str(i) not in index]
        if missing:
            raise ImuseError(f"no features for {len(missing)} item(s), e.g. {missing[0]!r}")
        return np.array([index[str(i)] for i in ids], dtype=np.int64)

    def take(self, rows) -> list[np.ndarray]:
        return [a[rows] for a in self.arrays]


def load_blocks(sources, arm: str, frame=None, compute: bool = False, progress: bool = False) -> Blocks:
    """Load (``compute=True``: compute when missing) each source's evaluation features."""
    from . import features

    allowed = features.IMAGE_SOURCES if arm == "image" else features.AUDIO_SOURCES
    bad = [s for s in sources if s not in allowed]
    if bad:
        raise ImuseError(f"{bad[0]!r} is not an {arm} feature source; choose from {', '.join(allowed)}")
    arrays, prov, ids = [], {}, None
    for s in sources:
        fs = features.source_features(s, progress=progress, frame=frame, compute=compute)
        if ids is None:
            ids = list(fs.ids)
        elif list(fs.ids) != ids:
            raise ModelMismatchError(f"feature source {s}: its items differ from {sources[0]}'s")
        arrays.append(np.asarray(fs.eval, np.float64))
        prov[s] = {"key": fs.meta.get("key") or fs.meta.get("derived_from"),
                   "weights": _weights_provenance(fs.meta.get("weights")), "dim": int(fs.eval.shape[1])}
    return Blocks(ids, tuple(sources), arrays, prov)


def _weights_provenance(w) -> dict | None:
    if not isinstance(w, dict):
        return None
    return {k: w.get(k) for k in ("kind", "source", "sha256") if k in w}


# --------------------------------------------------------------------------- tuning on validation


def _val_error(pred: np.ndarray, true: np.ndarray, sd: np.ndarray) -> float:
    """Validation loss: mean squared error per dimension in units of the training sd."""
    return float(np.mean(((pred - true) / sd) ** 2))


def _trial_loss(shared: tuple, params: dict) -> float:
    """One trial of the search: fit on the training items, validation loss (module level, so
    that a Ray worker can run it)."""
    blocks, y_train, val_blocks, y_val, sources, calibrate, sd = shared
    arm = fit_arm(blocks, y_train, sources, params["weights"], params["kernel"], params["g"], calibrate)
    return _val_error(arm.predict(val_blocks), y_val, sd)


def tune_arm(blocks: list[np.ndarray], y_train: np.ndarray, val_blocks: list[np.ndarray], y_val: np.ndarray,
             sources, n_trials: int = DEFAULT_TRIALS, seed: int = config.SEED, kernels=KERNELS,
             calibrate: bool = True, batch: int = 1, engine: str = "local") -> dict:
    """Optuna TPE search of block weights, kernel and ``g``: fit on the training items, loss on
    the validation items (calibrated predictions, in training-sd units). Returns the best
    parameters and the trial table.

    Trials are asked ``batch`` at a time and told in order, so the search depends on the seed
    and the batch size only: ``engine="ray"`` runs each batch's trials as Ray tasks (inside an
    ``engine.session``) and finds exactly what the local engine finds with the same batch.
    ``batch=1`` is the plain sequential search."""
    import optuna

    if batch < 1:
        raise ImuseError(f"search batch must be at least 1, got {batch}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sd = np.asarray(y_train, float).std(0)

    def params_of(trial) -> dict:
        kernel = trial.suggest_categorical("kernel", list(kernels))
        weights = [1.0] + [trial.suggest_float(f"w_{s}", 0.1, 3.0, log=True) for s in sources[1:]]
        g = trial.suggest_float("g", 0.05, 4.0, log=True) if kernel == "rbf" else 1.0
        return {"kernel": kernel, "weights": weights, "g": g}

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    # start from equal weights, each kernel: the search can only improve on them
    for kernel in kernels:
        start = {"kernel": kernel, **{f"w_{s}": 1.0 for s in sources[1:]}}
        if kernel == "rbf":
            start["g"] = 0.5
        study.enqueue_trial(start)
    shared = (blocks, y_train, val_blocks, y_val, tuple(sources), calibrate, sd)
    total = max(n_trials, len(kernels))
    while len(study.trials) < total:
        trials = [study.ask() for _ in range(min(batch, total - len(study.trials)))]
        params = [params_of(t) for t in trials]
        if engine == "ray":
            from . import engine as ray_engine

            losses = ray_engine.map_shared(_trial_loss, shared, params)
        else:
            losses = [_trial_loss(shared, p) for p in params]
        for trial, loss in zip(trials, losses):
            study.tell(trial, loss)
    best = study.best_trial
    kernel = best.params["kernel"]
    weights = [1.0] + [best.params[f"w_{s}"] for s in sources[1:]]
    g = best.params.get("g", 1.0) if kernel == "rbf" else 1.0
    return {"kernel": kernel, "weights": weights, "g": float(g), "val_loss": float(best.value),
            "n_trials": len(study.trials), "trials": study.trials_dataframe()}


# --------------------------------------------------------------------------- the two-arm model


@dataclass
class VAModel:
    """Image and audio arms plus everything needed to trust and reuse them."""

    image: ArmModel
    audio: ArmModel
    provenance: dict
    _image_blocks: Blocks | None = None
    _audio_blocks: Blocks | None = None
    path: Path | None = None

    kind = "va_model"

    # ---- predictions from the feature store (every OASIS image / catalog song)
    def image_blocks(self) -> Blocks:
        if self._image_blocks is None:
            self._image_blocks = load_blocks(self.image.sources, "image")
        return self._image_blocks

    def audio_blocks(self) -> Blocks:
        if self._audio_blocks is None:
            self._audio_blocks = load_blocks(self.audio.sources, "audio")
        return self._audio_blocks

    def predict_images(self, ids=None, calibrated: bool = True) -> np.ndarray:
        b = self.image_blocks()
        rows = np.arange(len(b.ids)) if ids is None else b.rows(ids)
        return self.image.predict(b.take(rows), calibrated)

    def predict_songs(self, ids=None, calibrated: bool = True) -> np.ndarray:
        b = self.audio_blocks()
        rows = np.arange(len(b.ids)) if ids is None else b.rows(ids)
        return self.audio.predict(b.take(rows), calibrated)

    def predictor(self, name: str = "va_model", image_ids=None, song_ids=None, calibrated: bool = True):
        """An :class:`~imuse_lib.baselines.ItemVAPredictor` whose rows are ``image_ids`` /
        ``song_ids`` (default: the feature store's order, i.e. ``data.load_images()`` and
        ``data.load_catalog()``), for :func:`imuse_lib.metrics.score`."""
        from .baselines import ItemVAPredictor

        return ItemVAPredictor(name, self.predict_images(image_ids, calibrated),
                               self.predict_songs(song_ids, calibrated), self.describe())

    def describe(self) -> dict:
        return {"image": self.image.describe(), "audio": self.audio.describe(),
                **{k: v for k, v in self.provenance.items() if k != "tuning"}}

    def label(self) -> str:
        # "factorised" first: the CLI and the index read it as "each side predicts VA alone"
        return (f"factorised VA model: images {'+'.join(self.image.sources)} ({self.image.kernel}), "
                f"songs {'+'.join(self.audio.sources)} ({self.audio.kernel})")

    # ---- query time: raw inputs -> VA
    def image_pipeline_module(self):
        """torch.nn.Module: RGB [N, 3, 224, 224] in [0, 1] (evaluation preprocessing: resize the
        shorter side to 256, centre crop 224) -> calibrated VA [N, 2]. Backbone normalisation and
        the image statistics run inside, in torch ops (ONNX-exportable)."""
        from .va_torch import ImageVAPipeline

        return ImageVAPipeline(self.image)

    def embed_song_sources(self, paths) -> list[np.ndarray]:
        """The audio arm's source blocks for audio files outside the catalog (not stored)."""
        from . import features, media
        from .models import descriptors

        for p in paths:
            media.check_file(p, "audio")
        out, cache = [], {}
        for s in self.audio.sources:
            if s == "audio_descriptors":
                rows = [descriptors.audio_descriptor_inputs(str(p), p)[0].numpy() for p in paths]
                out.append(np.stack(rows).astype(np.float64))
                continue
            base = s[: -len(features.TAG_SUFFIX)] if s.endswith(features.TAG_SUFFIX) else s
            if base not in cache:
                bb = features.source_backbone(base)
                cache[base] = (bb, features.embed_audio(bb, paths))
            bb, emb = cache[base]
            if s.endswith(features.TAG_SUFFIX):
                import torch

                with torch.inference_mode():
                    out.append(bb.head(torch.from_numpy(emb)).numpy().astype(np.float64))
            else:
                out.append(emb.astype(np.float64))
        return out

    def predict_audio_files(self, paths) -> np.ndarray:
        return self.audio.predict(self.embed_song_sources(paths))

    # ---- persistence
    def fingerprint(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for prefix, arm in (("image_", self.image), ("audio_", self.audio)):
            for k, v in sorted(arm.arrays(prefix).items()):
                h.update(k.encode())
                h.update(np.ascontiguousarray(np.asarray(v, np.float64)).tobytes())
        h.update(json.dumps({"image": self.image.describe(), "audio": self.audio.describe(),
                             "sources": self.provenance.get("sources")}, sort_keys=True, default=str).encode())
        return h.hexdigest()

    def save(self, path) -> Path:
        """One ``.npz`` (arrays + a JSON header with the full provenance), written atomically,
        plus a readable copy of the header beside it (``.json``)."""
        path = Path(path)
        header = {"format": FORMAT, "format_version": FORMAT_VERSION, "image": self.image.describe(),
                  "audio": self.audio.describe(), "provenance": _jsonable(self.provenance),
                  "fingerprint": self.fingerprint()}
        arrays = {**self.image.arrays("image_"), **self.audio.arrays("audio_")}
        arrays["header"] = np.array(json.dumps(header, sort_keys=True))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        write_json(path.with_suffix(".json"), header)
        self.path = path
        return path


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if k != "trials"}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def is_va_model_file(path) -> bool:
    path = Path(path)
    if path.suffix != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return "header" in z.files and json.loads(str(z["header"])).get("format") == FORMAT
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def load(path) -> VAModel:
    """A saved :class:`VAModel`; ModelMismatchError when the file is not one (or altered)."""
    path = Path(path)
    if not path.is_file():
        raise ImuseError(f"{path}: VA model file not found")
    try:
        with open_npz(path, "VA model file") as z:
            header = json.loads(str(z["header"]))
            if header.get("format") != FORMAT:
                raise ModelMismatchError(f"{path}: not an IMUSE VA model file")
            if header.get("format_version") != FORMAT_VERSION:
                raise ModelMismatchError(f"{path}: VA model format {header.get('format_version')}, "
                                         f"this code reads {FORMAT_VERSION}")
            image = ArmModel.from_arrays(z, "image_", header["image"])
            audio = ArmModel.from_arrays(z, "audio_", header["audio"])
    except (KeyError, ValueError, OSError) as exc:
        raise ModelMismatchError(f"{path}: unreadable VA model file ({type(exc).__name__}: {exc})") from None
    model = VAModel(image, audio, header.get("provenance", {}), path=path)
    if model.fingerprint() != header.get("fingerprint"):
        raise ModelMismatchError(f"{path}: arrays do not match the recorded fingerprint (altered file)")
    return model


# --------------------------------------------------------------------------- fitting


def _labels():
    from . import data

    return data.load_images(), data.load_catalog()


def _roles(roles, images, songs, seed):
    from . import pairs

    return roles if roles is not None else pairs.item_roles("cold", images, songs, seed)


def _arm_data(blocks: Blocks, frame, id_col: str, role: pd.Series, which: tuple):
    """Feature rows and VA labels of the items whose role is in ``which``; the labels of other
    items (test) are never read."""
    ids = [str(i) for i in frame[id_col] if role.get(i) in which]
    by_id = frame.set_index(frame[id_col].astype(str))
    y = by_id.loc[ids, ["valence", "arousal"]].to_numpy(float)
    return blocks.take(blocks.rows(ids)), y, ids


def fit_arm_tuned(blocks: Blocks, frame, id_col: str, role, n_trials: int, seed: int, kernels=KERNELS,
                  refit: bool = True, tune: bool = True, calibrate: bool = True,
                  params: dict | None = None, search: dict | None = None) -> tuple[tuple, dict]:
    """Tune on validation (fit on train), then refit on train + val with the chosen parameters
    (``params``: ``{"kernel", "weights", "g"}`` chosen earlier, no search). Returns
    ((refitted arm, train-only arm), tuning info)."""
    xt, yt, tid = _arm_data(blocks, frame, id_col, role, ("train",))
    xv, yv, vid = _arm_data(blocks, frame, id_col, role, ("val",))
    if params is not None:
        if len(params["weights"]) != len(blocks.sources):
            raise ImuseError(f"{len(params['weights'])} block weights given for {len(blocks.sources)} sources")
        best = {"kernel": params["kernel"], "weights": list(params["weights"]), "g": float(params["g"]),
                "val_loss": params.get("val_loss"), "n_trials": 0, "from": "given parameters"}
    elif tune and len(vid) >= 5:
        best = tune_arm(xt, yt, xv, yv, blocks.sources, n_trials, seed, kernels, calibrate, **(search or {}))
    else:
        best = {"kernel": kernels[0], "weights": [1.0] * len(blocks.sources), "g": 1.0, "val_loss": None,
                "n_trials": 0}
    train_only = fit_arm(xt, yt, blocks.sources, best["weights"], best["kernel"], best["g"], calibrate)
    if refit and len(vid):
        xa, ya, _ = _arm_data(blocks, frame, id_col, role, ("train", "val"))
        final = fit_arm(xa, ya, blocks.sources, best["weights"], best["kernel"], best["g"], calibrate)
    else:
        final = train_only
    info = {k: v for k, v in best.items() if k != "trials"}
    info.update(n_train=len(tid), n_val=len(vid), refit_on="train+val" if refit and len(vid) else "train")
    info["trials"] = best.get("trials")
    return (final, train_only), info


def fit(image_sources=None, audio_sources=None, roles=None, *, seed: int = config.SEED,
        n_trials: int = DEFAULT_TRIALS, kernels=KERNELS, refit: bool = True, tune: bool = True,
        calibrate: bool = True, images=None, songs=None, compute: bool = False,
        return_train_only: bool = False, params: dict | None = None, search: dict | None = None):
    """Fit the deployed model on the cold split's non-test items (see the module docstring).

    ``image_sources`` / ``audio_sources``: feature sources (default: those of
    :func:`tuned_params`). ``roles``: an :class:`imuse_lib.pairs.ItemRoles` (default: the cold
    split of ``seed``); only items whose role is ``train`` or ``val`` are used. ``images`` /
    ``songs`` (frames with ids and VA; default the real data) let tests swap the labels.
    ``compute=True`` computes missing feature sources (minutes); the default needs them in
    the store. ``return_train_only``: also return the model fitted on ``train`` alone (what is
    scored on validation in the ablation). ``params``: ``{"image": {...}, "audio": {...}}``
    hyperparameters chosen earlier (see :func:`tuned_params`): no search, seconds. ``search``:
    ``{"batch": k, "engine": "local" | "ray"}`` for :func:`tune_arm`."""
    t0 = time.perf_counter()
    if image_sources is None or audio_sources is None:
        chosen = tuned_params()
        image_sources = chosen["image"]["sources"] if image_sources is None else image_sources
        audio_sources = chosen["audio"]["sources"] if audio_sources is None else audio_sources
    if images is None or songs is None:
        li, ls = _labels()
        images = li if images is None else images
        songs = ls if songs is None else songs
    roles = _roles(roles, images, songs, seed)
    ib = load_blocks(tuple(image_sources), "image", compute=compute)
    ab = load_blocks(tuple(audio_sources), "audio", compute=compute)
    (img_final, img_train), img_info = fit_arm_tuned(ib, images, "image_id", roles.images, n_trials, seed,
                                                     kernels, refit, tune, calibrate,
                                                     (params or {}).get("image"), search)
    (aud_final, aud_train), aud_info = fit_arm_tuned(ab, songs, "song_id", roles.songs, n_trials, seed,
                                                     kernels, refit, tune, calibrate,
                                                     (params or {}).get("audio"), search)
    prov = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seed": int(seed),
            "split": roles.protocol, "tuned_on": "val (fit on train)", "n_trials": int(n_trials),
            "search": dict(search or {"batch": 1, "engine": "local"}) if tune and params is None else None,
            "sources": {"image": ib.provenance, "audio": ab.provenance},
            "tuning": {"image": img_info, "audio": aud_info},
            "tuning_summary": {"image": {k: v for k, v in img_info.items() if k != "trials"},
                               "audio": {k: v for k, v in aud_info.items() if k != "trials"}},
            "refit_on": img_info["refit_on"], "seconds": None, "versions": _versions()}
    model = VAModel(img_final, aud_final, prov, ib, ab)
    prov["seconds"] = round(time.perf_counter() - t0, 2)
    if return_train_only:
        return model, VAModel(img_train, aud_train, dict(prov, refit_on="train"), ib, ab)
    return model


def _versions() -> dict:
    import sklearn

    out = {"numpy": np.__version__, "scikit-learn": sklearn.__version__}
    try:
        import optuna

        out["optuna"] = optuna.__version__
    except ImportError:
        pass
    return out


def default_model_path() -> Path:
    """The VA model `imuse recommend` uses by default (written by :func:`train_default`)."""
    return config.results_dir() / "models" / "va_model.npz"


PARAMS_FILE = Path(__file__).with_name("va_model_params.json")


def tuned_params() -> dict:
    """The sources and hyperparameters the default build uses: the Optuna search's choice on
    validation (``benchmarks/va_ablation.py --save-params`` writes them)."""
    from .io import read_json

    if not PARAMS_FILE.is_file():
        raise ImuseError(f"{PARAMS_FILE}: no tuned VA-model parameters; run benchmarks/va_ablation.py --save-params")
    return read_json(PARAMS_FILE)


def save_tuned_params(model: VAModel) -> Path:
    """Record a fitted model's chosen sources and hyperparameters as the default build's."""
    summary = model.provenance["tuning_summary"]
    out = {"chosen_on": "cold split, validation items (fit on train)", "seed": model.provenance.get("seed"),
           "n_trials": model.provenance.get("n_trials"), "created": model.provenance.get("created")}
    for arm_name, arm in (("image", model.image), ("audio", model.audio)):
        out[arm_name] = {"sources": list(arm.sources), "kernel": arm.kernel, "weights": [float(w) for w in arm.weights],
                         "g": float(arm.g), "val_loss": summary[arm_name].get("val_loss")}
    write_json(PARAMS_FILE, out)
    return PARAMS_FILE


RAY_SEARCH_BATCH = 8  # trials asked at a time when the search runs on Ray (one task each)


def train_default(profile: str = "quick", path=None, *, tune: bool = False, n_trials: int = DEFAULT_TRIALS,
                  seed: int = config.SEED, engine: str = "local", ray_address: str | None = None) -> Path:
    """Fit the deployed model from the feature store and save it where `imuse recommend` looks.

    Default: the sources and hyperparameters of :func:`tuned_params` (chosen on validation by
    the ablation), refitted on train + val: seconds. ``tune=True`` searches again (minutes):
    sequentially on the local engine, in batches of :data:`RAY_SEARCH_BATCH` trials run as Ray
    tasks with ``engine="ray"``. Missing feature sources are computed (minutes each, once)."""
    chosen = tuned_params()
    search = {"batch": RAY_SEARCH_BATCH, "engine": "ray"} if engine == "ray" else None
    with contextlib.ExitStack() as stack:
        if tune and engine == "ray":
            from . import engine as ray_engine

            stack.enter_context(ray_engine.session(ray_address))
        model = fit(tuple(chosen["image"]["sources"]), tuple(chosen["audio"]["sources"]), seed=seed,
                    n_trials=n_trials, compute=True, search=search,
                    params=None if tune else {"image": chosen["image"], "audio": chosen["audio"]})
    model.provenance["profile"] = str(profile)
    model.provenance["params_from"] = "search" if tune else PARAMS_FILE.name
    return model.save(path or default_model_path())


# --------------------------------------------------------------------------- evaluation and ablation


def part_metrics(image_va_pred: np.ndarray, song_va_pred: np.ndarray, images, songs, roles, part: str,
                 k: int = 10) -> dict:
    """Point metrics of predicted VA (rows = ``images`` / ``songs`` frames) on the items whose
    role is ``part``: NSG@k both ways (queries x candidates of the part), per-dimension r
    and sd ratio, and the songs' official 4Q quadrant recovered from the predicted VA."""
    from .metrics import nsg_at_k, pearson_r, sd_ratio, va_quadrant
    from .pairs import similarity

    irows = np.flatnonzero(images.image_id.map(roles.images).to_numpy() == part)
    srows = np.flatnonzero(songs.song_id.map(roles.songs).to_numpy() == part)
    ti = images[["valence", "arousal"]].to_numpy(float)[irows]
    ts = songs[["valence", "arousal"]].to_numpy(float)[srows]
    pi, ps = np.asarray(image_va_pred, float)[irows], np.asarray(song_va_pred, float)[srows]
    true_m = similarity(ti[:, None, 0], ti[:, None, 1], ts[None, :, 0], ts[None, :, 1])
    pred_m = similarity(pi[:, None, 0], pi[:, None, 1], ps[None, :, 0], ps[None, :, 1])
    out = {"part": part, "n_images": len(irows), "n_songs": len(srows),
           "nsg@10": float(np.nanmean(nsg_at_k(pred_m, true_m, k))),
           "rev_nsg@10": float(np.nanmean(nsg_at_k(pred_m.T, true_m.T, k)))}
    for j, dim in enumerate(("v", "a")):
        out[f"image_r_{dim}"] = pearson_r(pi[:, j], ti[:, j])
        out[f"song_r_{dim}"] = pearson_r(ps[:, j], ts[:, j])
        out[f"image_sd_ratio_{dim}"] = sd_ratio(pi[:, j], ti[:, j])
        out[f"song_sd_ratio_{dim}"] = sd_ratio(ps[:, j], ts[:, j])
    official = songs.quadrant.to_numpy()[srows]
    out["song_4q_acc"] = float(np.mean(np.array([f"Q{q}" for q in va_quadrant(ps)]) == official))
    return out


# Each idea of issue 10, cumulative where it says "+": (name, image sources, audio sources,
# kernels searched (None: baselines.ridge), calibrated, tuned).
_IMG = ("mobilenet_v2", "mobilenet_v2_mid", "image_stats")
ABLATION = [
    ("ridge (baselines.ridge)", ("mobilenet_v2",), ("musicnn",), None, False, False),
    ("linear, LOO penalty", ("mobilenet_v2",), ("musicnn",), ("linear",), False, False),
    ("+ calibration", ("mobilenet_v2",), ("musicnn",), ("linear",), True, False),
    ("+ RBF kernel (tuned on val)", ("mobilenet_v2",), ("musicnn",), KERNELS, True, True),
    ("+ image statistics", ("mobilenet_v2", "image_stats"), ("musicnn",), KERNELS, True, True),
    ("+ MobileNetV2 intermediate blocks", _IMG, ("musicnn",), KERNELS, True, True),
    ("+ Musicnn tag probabilities", _IMG, ("musicnn", "musicnn_tags"), KERNELS, True, True),
    ("+ librosa descriptors", _IMG, ("musicnn", "musicnn_tags", "audio_descriptors"), KERNELS, True, True),
    ("+ FCN (+ its tags)", _IMG, ("musicnn", "musicnn_tags", "audio_descriptors", "fcn", "fcn_tags"),
     KERNELS, True, True),
    ("+ EfficientNet-Lite0 (second image backbone)", _IMG + ("efficientnet_lite0",),
     ("musicnn", "musicnn_tags", "audio_descriptors"), KERNELS, True, True),
]


def run_ablation(configs=ABLATION, *, seed: int = config.SEED, n_trials: int = DEFAULT_TRIALS,
                 parts=("val", "test"), skip_missing: bool = True, progress: bool = False):
    """One row per (idea, part): each model fitted on ``train`` (tuned on ``val``) and scored on
    the ``parts``. Ideas whose feature sources are not in the store are listed with part
    ``missing`` unless ``skip_missing=False`` computes them. Returns (table, {idea: fitted
    model (refitted on train + val)})."""
    from . import baselines

    images, songs = _labels()
    roles = _roles(None, images, songs, seed)
    rows, models = [], {}
    for name, isrc, asrc, kernels, calibrate, tune in configs:
        t0 = time.perf_counter()
        try:
            if kernels is None:
                ib, ab = load_blocks(isrc, "image"), load_blocks(asrc, "audio")
                tr_i = np.flatnonzero(images.image_id.map(roles.images).to_numpy() == "train")
                tr_s = np.flatnonzero(songs.song_id.map(roles.songs).to_numpy() == "train")
                pred = baselines.ridge(np.concatenate(ib.arrays, 1), np.concatenate(ab.arrays, 1),
                                       images[["valence", "arousal"]].to_numpy(float),
                                       songs[["valence", "arousal"]].to_numpy(float), tr_i, tr_s)
                iva, sva, detail = pred.image_va, pred.song_va, pred.info
            else:
                final, model = fit(isrc, asrc, roles, seed=seed, n_trials=n_trials, kernels=kernels,
                                   tune=tune, calibrate=calibrate, images=images, songs=songs,
                                   compute=not skip_missing, return_train_only=True)
                models[name] = final
                iva, sva = model.predict_images(), model.predict_songs()
                detail = {"image": model.image.describe(), "audio": model.audio.describe()}
        except ImuseError as exc:
            if not skip_missing:
                raise
            rows.append({"idea": name, "part": "missing", "detail": str(exc)})
            if progress:
                print(f"{name}: missing ({exc})", flush=True)
            continue
        for part in parts:
            rows.append({"idea": name, **part_metrics(iva, sva, images, songs, roles, part),
                         "image_sources": "+".join(isrc), "audio_sources": "+".join(asrc),
                         "seconds": round(time.perf_counter() - t0, 1), "detail": json.dumps(_jsonable(detail))})
        if progress:
            print(f"{name}: " + ", ".join(f"{r['part']} NSG@10 {r['nsg@10']:.3f}" for r in rows[-len(parts):]),
                  flush=True)
    return pd.DataFrame(rows), models
