"""IMUSE: reproducible companion to *Music recommendation based on affective image
content analysis* (Chheda et al., ICMLDE 2023).

The package map, one home per concept, from the top layer down (the layers contract in
``pyproject.toml``, checked by ``tests/test_layers.py``, keeps every import pointing down):

* ``cli``: the ``imuse`` command (one module per command group).
* ``experiments``: the paper's experiment grid: training runs, validation, Table 2, results.
* ``export``: the deployed recommender for the book's in-browser page (ONNX + song file).
* ``engine``: Ray embedding jobs (``imuse features`` / ``imuse index add --engine ray``).
* ``recommend``: queries on a song index: ranked songs for an image, images for a song.
* ``index``: the song index (SQLite + memory-mapped arrays); storage apart from building.
* ``deployed``: the deployed model (``DeployedModel``, ``load_deployed``, its one default).
* ``va_model``: the per-item VA regressors (the default deployed model), fit and ablation.
* ``training``: training the paper's IMUSE network and scoring it.
* ``taggers``: the MSD and MTG-Jamendo music taggers, feature sources offered to the VA model's song arm.
* ``finetune``: MobileNetV2's last stage fine-tuned on stored block-13 activations.
* ``baselines``: the predictors the network is compared with.
* ``features``: the feature store (frozen-backbone features, computed once).
* ``feature_views``: how an item becomes backbone inputs (views, crops) and features.
* ``network``: the paper's two-arm network (``IMUSENet``) and its factorised variant.
* ``joint``: the joint network at serving time (Eq. 1 through the fusion layers).
* ``metrics``: the paper's metrics, bootstrap intervals and tests.
* ``ranking``: top-k and Eq. 1 nearest neighbours in VA space.
* ``models``: the frozen image and audio backbones (weights, provenance).
* ``image_path``: the image path in torch, from the evaluation crop to VA.
* ``frozen_runtime``: frozen backbones on ONNX Runtime on a CPU (PyTorch elsewhere).
* ``acquisition``: the Spotify / YouTube / chorus acquisition pipeline.
* ``pairs``: Eq. 1, pair sampling and splits.
* ``media``: decoding images and audio, with their limits.
* ``data``: the data assets and their loaders.
* ``io``: atomic writes and checked output paths.
* ``parallel``: a Ray session and lists of calls run as Ray tasks.
* ``report``: formatting and glue for the book.
* ``provenance``: what a result was made with: git commit, date, device, versions.
* ``scaling``: the scaling benchmark's results read and projected (chapter 07).
* ``image_view``: the image-view spec (resize, crop, normalisation), written once.
* ``config``: folders, seeds and settings from the environment.
* ``profiles``: the run profiles (quick, full): every setting a run depends on, checked.
* ``errors``: the exceptions that become one ``imuse: error:`` line.
"""

__version__ = "0.1.0"
