"""What is scored: the feature-free baselines, ridge and kNN on a configuration's features,
and the trained networks of a profile (with the joint network's view-averaged variant)."""

from __future__ import annotations

from ..errors import ImuseError
from ..profiles import Profile
from . import inputs
from .paths import run_dir

# Baselines without features: their rows carry config "(none)"; scored once per split.
FREE_BASELINES = ("quadrant", "image_agnostic", "lookup", "constant", "mean_similarity", "random", "oracle")
FEATURE_BASELINES = ("ridge", "knn")


def free_baselines(data, split: str, seeds) -> list:
    """(name, seed, predictor) of the feature-free baselines (lookup only on the paper split,
    where it equals the oracle; on the cold split it would be the constant)."""
    from .. import baselines

    pairs_ = inputs.split_pairs(split)
    train = pairs_[pairs_.split == "train"]
    ti, ts = data.rows(train)
    out = [("quadrant", 0, baselines.quadrant_only(data.image_va, data.song_va, ti, ts)),
           ("image_agnostic", 0, baselines.image_agnostic(data.image_va, data.song_va, ti))]
    if split == "paper":
        out.append(("lookup", 0, baselines.lookup(data.image_va, data.song_va, ti, ts)))
    out += [("constant", 0, baselines.constant(data.image_va, data.song_va, ti, ts)),
            ("mean_similarity", 0, baselines.mean_similarity(train.similarity))]
    out += [("random", s, baselines.random_va(data.image_va, data.song_va, ti, ts, seed=s)) for s in seeds]
    out.append(("oracle", 0, baselines.oracle(data.image_va, data.song_va)))
    return out


def feature_baselines(data, split: str) -> list:
    """(name, seed, predictor) of ridge and kNN on the evaluation features, fitted on the
    training items only (their hyperparameters by cross-validation on those items)."""
    from .. import baselines

    ti, ts = inputs.train_rows(data, split)
    x_i, x_a = data.image_eval.numpy(), data.audio_eval.numpy()
    return [("ridge", 0, baselines.ridge(x_i, x_a, data.image_va, data.song_va, ti, ts)),
            ("knn", 0, baselines.knn(x_i, x_a, data.image_va, data.song_va, ti, ts))]


def network_predictors(prof: Profile, cfg: str, split: str, data, tta: bool = True) -> list:
    """(name, seed, predictor, meta) of every trained run of a configuration and split, plus
    the joint network scored with test-time averaging of its stored views (``joint_tta``)."""
    from .. import training

    out = []
    for variant in prof.variants:
        for seed in prof.seeds_for(variant):
            path = run_dir(prof, cfg, split, variant, seed) / "model.pt"
            if not path.exists():
                raise ImuseError(f"{path}: run not trained yet; run `imuse train --profile {prof.name}` first")
            model, meta = training.load_checkpoint(path)
            out.append((variant, seed, training.NetworkPredictor(model, data, name=variant), meta))
            if tta and variant == "joint":
                out.append(("joint_tta", seed, training.NetworkPredictor(model, data, name="joint_tta", tta=True),
                            meta))
    return out
