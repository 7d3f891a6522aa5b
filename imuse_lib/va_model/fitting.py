"""Fitting the VA model: the validation search (Optuna), the refit, and the deployed default build."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import config
from ..errors import ImuseError
from ..profiles import VA_MODEL_PARAMS_FILE
from ..io import write_json
from .arm import KERNELS, fit_arm
from .blocks import Blocks, load_blocks
from .model import VAModel

DEFAULT_TRIALS = 30


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
    ``parallel.session``) and finds exactly what the local engine finds with the same batch.
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
            from .. import parallel

            losses = parallel.map_shared(_trial_loss, shared, params)
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


def item_labels():
    from .. import data

    return data.load_images(), data.load_catalog()


def item_roles_of(roles, images, songs, seed):
    from .. import pairs

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
        li, ls = item_labels()
        images = li if images is None else images
        songs = ls if songs is None else songs
    roles = item_roles_of(roles, images, songs, seed)
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


PARAMS_FILE = VA_MODEL_PARAMS_FILE  # the profiles' home for every setting (imuse_lib/va_model_params.json)


def tuned_params() -> dict:
    """The sources and hyperparameters the default build uses: the Optuna search's choice on
    validation (``benchmarks/va_ablation.py --save-params`` writes them)."""
    from ..io import read_json

    if not PARAMS_FILE.is_file():
        raise ImuseError(f"{PARAMS_FILE}: no tuned VA-model parameters; run benchmarks/va_ablation.py --save-params")
    return read_json(PARAMS_FILE)


CHOSEN_ON = "cold split, validation items (fit on train)"


def save_tuned_params(model: VAModel, among: str | None = None) -> Path:
    """Record a fitted model's chosen sources and hyperparameters as the default build's;
    ``among`` says which candidates it was chosen from (and why those)."""
    summary = model.provenance["tuning_summary"]
    out = {"chosen_on": CHOSEN_ON + (f": {among}" if among else ""), "seed": model.provenance.get("seed"),
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
            from .. import parallel

            stack.enter_context(parallel.session(ray_address))
        model = fit(tuple(chosen["image"]["sources"]), tuple(chosen["audio"]["sources"]), seed=seed,
                    n_trials=n_trials, compute=True, search=search,
                    params=None if tune else {"image": chosen["image"], "audio": chosen["audio"]})
    model.provenance["profile"] = str(profile)
    model.provenance["params_from"] = "search" if tune else PARAMS_FILE.name
    return model.save(path or default_model_path())
