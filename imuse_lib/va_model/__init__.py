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

The parts: :mod:`.arm` (one arm: fit and predict), :mod:`.blocks` (its feature blocks from
the store), :mod:`.model` (the two-arm model and its file), :mod:`.fitting` (the validation
search, the refit, the deployed default build), :mod:`.ablation` (issue 10's ideas, scored),
:mod:`.torch_path` (the image arm in torch, for queries and the book's page).
"""

from .ablation import (ABLATION, CV_FOLDS, cross_validate, fold_roles, part_metrics, ranking_nsg, run_ablation,
                       tuning_roles)
from .arm import DIMS, KERNELS, LAMBDAS, ArmModel, fit_arm
from .blocks import Blocks, load_blocks
from .fitting import (DEFAULT_TRIALS, PARAMS_FILE, RAY_SEARCH_BATCH, default_model_path, fit, fit_arm_tuned,
                      save_tuned_params, train_default, tune_arm, tuned_params)
from .model import FORMAT, FORMAT_VERSION, VAModel, is_va_model_file, load

__all__ = ["ABLATION", "CV_FOLDS", "DEFAULT_TRIALS", "DIMS", "FORMAT", "FORMAT_VERSION", "KERNELS",
           "LAMBDAS", "PARAMS_FILE", "RAY_SEARCH_BATCH", "ArmModel", "Blocks", "VAModel", "cross_validate",
           "default_model_path", "fit", "fit_arm", "fit_arm_tuned", "fold_roles", "is_va_model_file", "load",
           "load_blocks", "part_metrics", "ranking_nsg", "run_ablation", "save_tuned_params",
           "train_default", "tune_arm", "tuned_params", "tuning_roles"]
