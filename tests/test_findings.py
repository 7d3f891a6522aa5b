"""imuse_lib.experiments.findings: how the results chapter reads Table 2 and the margins (row
look-ups in each predictor's own configuration, intervals, verdict sentences, one predictor
order for every table) and the recommendation chapter's quadrant table."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from imuse_lib import experiments
from imuse_lib.experiments import DEPLOYED, Findings, findings

MAIN = "mobilenet_v2+musicnn"


def _table2() -> pd.DataFrame:
    rows = []
    for cfg, pred, nsg in [(MAIN, "ridge", 0.30), ("(none)", "oracle", 1.0), (MAIN, "joint", 0.41),
                           ("(none)", "random", 0.0), (DEPLOYED, "va_model", 0.52), ("(none)", "quadrant", 0.35),
                           ("other+fcn", "joint", 0.9)]:
        rows.append({"config": cfg, "split": "cold", "predictor": pred, "seeds": 3 if pred == "joint" else 1,
                     "nsg@10": nsg, "nsg@10_lo": nsg - 0.05, "nsg@10_hi": nsg + 0.04,
                     "nsg@10_lo_img": nsg - 0.02, "nsg@10_hi_img": nsg + 0.02,
                     "map_a@10": 0.8, "map_a@10_lo": 0.7, "map_a@10_hi": 0.9, "map_a@10_lo_img": 0.75,
                     "map_a@10_hi_img": 0.85, "mae": 0.2, "mae_lo": 0.19, "mae_hi": 0.23, "mae_lo_img": 0.2,
                     "mae_hi_img": 0.22})
    return pd.DataFrame(rows)


def _margins() -> pd.DataFrame:
    return pd.DataFrame([
        {"config": MAIN, "split": "cold", "predictor": "joint", "baseline": "ridge", "metric": "nsg@10",
         "difference": 0.11, "lo": 0.04, "hi": 0.18, "verdict": "win"},
        {"config": DEPLOYED, "split": "cold", "predictor": "va_model", "baseline": "ridge", "metric": "nsg@10",
         "difference": -0.01, "lo": -0.03, "hi": 0.01, "verdict": "tie"},
    ])


def test_rows_are_looked_up_in_each_predictors_own_configuration():
    f = Findings(_table2(), _margins(), MAIN)
    assert f.row("joint", "cold")["nsg@10"] == 0.41  # the main configuration's, not other+fcn's
    assert f.row("joint", "cold", cfg="other+fcn")["nsg@10"] == 0.9
    assert f.row("random", "cold").config == "(none)" and f.row("va_model", "cold").config == DEPLOYED
    assert f.row("joint", "paper") is None
    assert f.value("ridge", "cold", "nsg@10") == 0.30 and np.isnan(f.value("knn", "cold", "nsg@10"))
    assert f.interval("joint", "cold", "nsg@10") == "0.410 (0.36-0.45)"
    assert f.interval("knn", "cold", "nsg@10") == "n/a"


def test_verdict_sentences_say_what_the_paired_interval_says():
    f = Findings(_table2(), _margins(), MAIN)
    assert f.verdict_sentence("joint", "ridge", "cold") == (
        "on the cold split the joint network (the paper's) beats ridge (difference in NSG@10 0.110 (0.04-0.18), "
        "paired over the same resamples)")
    assert "deployed VA model cannot be told apart from ridge" in f.verdict_sentence("va_model", "ridge", "cold")
    assert "-0.010 (-0.03 to 0.01)" in f.verdict_sentence("va_model", "ridge", "cold")
    assert f.verdict_sentence("joint", "knn", "cold") == ""


def test_one_predictor_order_for_the_chapter_and_the_command_line():
    t2 = _table2()
    f = Findings(t2, _margins(), MAIN)
    table = f.split_table("cold", [("NSG@10", "nsg@10")])
    names = experiments.PREDICTOR_NAMES
    assert list(table.predictor) == [names[p] for p in ("va_model", "joint", "ridge", "quadrant", "random", "oracle")]
    assert table.iloc[1]["NSG@10"] == "0.410 (0.36-0.45)" and table.iloc[1]["runs averaged"] == "3"
    text = experiments.format_table2(t2.assign(**{c: 0.1 for c in ("ndcg@10", "quadrant@10", "rev_nsg@10", "rmse")},
                                               n_queries=1), paper=False)
    order = [line.split()[2] for line in text.splitlines()[2:] if line.startswith("cold")]
    assert order == ["va_model", "joint", "ridge", "joint", "quadrant", "random", "oracle"]  # by config, then order
    assert list(findings.predictor_rank(pd.Series(["oracle", "something_new", "joint"]))) == [
        findings.PREDICTOR_ORDER.index("oracle"), -1, findings.PREDICTOR_ORDER.index("joint")]


def test_interval_widths_compare_two_way_with_image_only():
    widths = Findings(_table2(), _margins(), MAIN).interval_widths(["cold"], ("joint", "ridge"))
    assert len(widths) == 2 * len(experiments.IMAGE_ONLY_METRICS)
    nsg = widths[(widths.predictor == experiments.PREDICTOR_NAMES["joint"]) & (widths.metric == "NSG@10")].iloc[0]
    assert nsg["two-way width"] == np.float64(0.41 + 0.04) - np.float64(0.41 - 0.05)
    assert nsg.ratio == nsg["two-way width"] / nsg["image-only width"]


def test_top_song_quadrants_compare_each_image_with_its_songs():
    examples = pd.DataFrame({"image_id": ["happy", "sad"], "valence": [0.8, 0.2], "arousal": [0.8, 0.2]})
    results = [SimpleNamespace(query_va=(0.7, 0.6), items=pd.DataFrame({"song_id": ["a", "b", "c", "zz"]})),
               SimpleNamespace(query_va=(0.6, 0.3), items=pd.DataFrame({"song_id": ["c", "c"]}))]
    official = pd.Series({"a": "Q1", "b": "Q2", "c": "Q3"})
    q = findings.top_song_quadrants(examples, results, official)
    assert list(q["image quadrant"]) == ["Q1", "Q3"] and list(q["predicted quadrant"]) == ["Q1", "Q4"]
    assert q.iloc[0]["top songs' quadrants (4Q)"] == "Q1 Q2 Q3 ?"  # an unknown song counts against
    assert list(q["share in the image's quadrant"]) == [0.25, 1.0]
