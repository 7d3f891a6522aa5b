"""The paper's experiments: configurations, quick/full profiles, training and evaluation
runs, and the result files the book and the CLI share.

Layout under ``results_dir()/<profile>/``::

    runs/<config>/<split>/<variant>/seed<k>/checkpoint.pt   training state (resume)
    runs/<config>/<split>/<variant>/seed<k>/model.pt        the trained network + meta
    history/<config>__<split>__<variant>__seed<k>.json      loss per epoch and per batch, timings
    table1.csv      seconds per epoch / total, cached vs end-to-end, per configuration
    validation.csv  every learned run scored on the validation split (model choice reads this)
    random_level.csv per split, NSG@10 of 100 random rankings on validation: a run at or below
                    mean + 3 sd FAILED (left out of Table 2's means, named beside them)
    table2_runs.csv one row per (configuration, split, predictor, seed), on the test split
    table2.csv      mean and spread over seeds, two-way bootstrap 95 % intervals
    margins.csv     paired differences learned predictor - baseline, with intervals and verdicts
    map_at_k.csv    NSG@k and the paper's MAP@k (a), k = 1..10
    results.json    what was run: profile, device, git commit, backbones and weights provenance, baselines

A configuration is an (image backbone, audio backbone) pair, named ``<image>+<audio>``.
Variants: ``joint`` (the paper's network), ``factorised`` (a VA head on each arm) and
``joint_item`` (the joint network with item-weighted loss); ``joint_tta`` is the joint
network scored with its training views and crops averaged. The pairs and their splits are
fixed (``config.SEED``); the seeds vary the network's initialisation, shuffling, view/crop
draws and dropout. Every choice is made on the validation split; the test split is read
once, by :func:`run_evaluation`.

The package, by concept (each module's public names are re-exported here):

* :mod:`~imuse_lib.profiles` (outside the package: the CLI and the book read it too): the
  profiles and the settings that override them;
* :mod:`.paths`: where a profile's results live;
* :mod:`.inputs`: configurations, the fixed pairs and splits, feature data, evaluation sets;
* :mod:`.grid`: the training grid and Table 1;
* :mod:`.predictors`: the baselines and the trained networks as predictors;
* :mod:`.selection`: validation scores, each run judged against the random level, and the
  default network (the test split plays no part);
* :mod:`.evaluation`: the test split, read once: Table 2, margins, MAP@k, results.json;
* :mod:`.results`: reading the result files back, Table 2 as text;
* :mod:`.findings`: what the results chapter says about them (row look-ups, intervals,
  verdict sentences, predictor names and order).
"""

from __future__ import annotations

from ..profiles import PROFILES, SPLITS, VARIANT_SETTINGS, VARIANTS, Profile, get_profile  # noqa: F401
from .evaluation import (DEPLOYED, IMAGE_ONLY_METRICS, KIND, MARGIN_BASELINES, MARGIN_METRICS,  # noqa: F401
                         METRIC_COLUMNS, run_evaluation, seeds_note)
from .findings import (METRIC_NAMES, PAPER_COLUMNS, PREDICTOR_NAMES, PREDICTOR_ORDER, REC_COLUMNS,  # noqa: F401
                       SEED_COLUMNS, SPLIT_NAMES, Findings, averaged_label, predictor_rank, seed_table,
                       top_song_quadrants)
from .grid import run_training, time_configuration, train_one, write_table1  # noqa: F401
from .inputs import (PAPER_CONFIGS, PAPER_TABLE2, config_name, configurations, evalset, feature_data,  # noqa: F401
                     item_roles, labels, paper_configurations_status, split_pairs, train_rows, weights_label)
from .paths import history_path, profile_dir, run_dir, run_id  # noqa: F401
from .predictors import FEATURE_BASELINES, FREE_BASELINES, feature_baselines, free_baselines  # noqa: F401
from .predictors import network_predictors  # noqa: F401
from .results import (batch_frame, epoch_frame, format_table2, load_history, load_map_at_k,  # noqa: F401
                      load_margins, load_results, load_table1, load_table2, load_validation)
from .selection import (COLLAPSE_SD_RATIO, JUDGED_COLUMNS, RANDOM_DRAWS, RANDOM_LEVEL_SDS, VALIDATION_COLUMNS,  # noqa: F401
                        diagnose_runs, failure_summary, judge_runs, judged_runs, load_random_levels, random_levels,
                        run_validation, write_default_model)
