"""One arm of the VA model: standardised, weighted feature blocks -> kernel ridge -> calibrated VA.

See :mod:`imuse_lib.va_model` for the method. :class:`ArmModel` predicts in numpy (float64:
what the feature store's items are scored with); :mod:`.torch_path` runs the same arithmetic
in torch (float32, ONNX-exportable) from the same stored arrays, via :meth:`ArmModel.folded_affine`
and :attr:`ArmModel.gamma`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ImuseError, ModelMismatchError

KERNELS = ("linear", "rbf")
LAMBDAS = np.logspace(-4, 3, 36)  # ridge penalties relative to the kernel's mean diagonal
DIMS = ("valence", "arousal")


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

    def folded_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(shift, mult) [D]: the standardisation and block weights of :meth:`transform` as one
        affine map ``(x - shift) * mult`` over the concatenated blocks (the torch path's form)."""
        shift = np.concatenate(self.mean)
        mult = np.concatenate([np.full(len(m), w / np.sqrt(len(m))) / s
                               for m, s, w in zip(self.mean, self.sd, self.weights)])
        return shift, mult

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
    from ..metrics import pearson_r

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
