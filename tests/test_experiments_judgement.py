"""Every training run judged on validation against its split's random level (imuse_lib.experiments
.selection), failed runs left out of Table 2's means and named beside them (evaluation), the
per-seed table and the sentences the results chapter and the landing page glue (findings)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imuse_lib import experiments
from imuse_lib.errors import ImuseError
from imuse_lib.experiments import DEPLOYED, Findings, evaluation

MAIN = "mobilenet_v2+musicnn"
LEVELS = pd.DataFrame({"split": ["paper", "cold"], "draws": [100, 100], "random_mean": [0.0, 0.002],
                       "random_sd": [0.01, 0.02], "random_level": [0.03, 0.062]})


def _validation(scores: dict) -> pd.DataFrame:
    """validation.csv rows: {(split, variant, seed): NSG@10}, plus a ridge row that is never judged."""
    rows = [{"config": MAIN, "split": sp, "predictor": v, "seed": s, "selected_epoch": 3.0, "nsg@10": x}
            for (sp, v, s), x in scores.items()]
    rows.append({"config": MAIN, "split": "cold", "predictor": "ridge", "seed": 0, "selected_epoch": np.nan,
                 "nsg@10": 0.0})
    return pd.DataFrame(rows)


def test_a_run_at_or_below_its_splits_random_level_failed():
    judged = experiments.judge_runs(_validation({("paper", "joint", 0): 0.34, ("paper", "joint", 1): 0.004,
                                                 ("paper", "joint", 2): 0.03, ("cold", "factorised", 1): 0.042,
                                                 ("cold", "factorised", 0): 0.26,
                                                 ("cold", "joint", 0): float("nan")}), LEVELS)
    failed = {(r.split, r.variant, r.seed) for r in judged.itertuples() if r.failed}
    # 0.004 is random on the paper split; 0.03 is AT the level (failed); 0.042 is below the cold
    # split's level even though it is above the paper split's; no score at all is no success
    assert failed == {("paper", "joint", 1), ("paper", "joint", 2), ("cold", "factorised", 1), ("cold", "joint", 0)}
    assert "ridge" not in set(judged.variant) and list(judged.columns) == experiments.JUDGED_COLUMNS
    assert judged.set_index(["split", "variant", "seed"]).loc[("cold", "factorised", 1), "random_level"] == 0.062


def test_no_failed_run_and_the_sentence_that_says_so():
    judged = experiments.judge_runs(_validation({("paper", "joint", s): 0.3 + s / 100 for s in range(3)}), LEVELS)
    assert not judged.failed.any()
    assert experiments.failure_summary(judged).startswith("none of the 3 runs failed")
    judged = experiments.judge_runs(_validation({("paper", "joint", 0): 0.3, ("paper", "joint", 1): 0.004}), LEVELS)
    assert experiments.failure_summary(judged) == (
        "1 of 2 runs failed (joint network, paper split, seed 1: validation NSG@10 0.004, random level 0.030)")


def test_a_split_without_a_random_level_is_an_error():
    with pytest.raises(ImuseError, match="no random level for the cold split"):
        experiments.judge_runs(_validation({("cold", "joint", 0): 0.3}), LEVELS[LEVELS.split == "paper"])


def _runs(nsg: dict, failed=()) -> pd.DataFrame:
    """table2_runs rows of the joint network on the paper split: {seed: test NSG@10}."""
    rows = []
    for seed, x in nsg.items():
        bad = seed in failed
        rows.append({"config": MAIN, "split": "paper", "predictor": "joint", "seed": seed, "image_weights": "w",
                     "audio_weights": "w", "n_queries": 10, "n_candidates": 50, "n_pairs": 30, "n_queries_a": 10,
                     "nsg@10": x, "map_a@10": 0.6 if bad else 0.8, "failed": bad,
                     "failed_val_nsg@10": 0.004 if bad else np.nan, "random_level": 0.03 if bad else np.nan})
    return pd.DataFrame(rows)


def _reps() -> dict:
    from imuse_lib import metrics

    return {(MAIN, "paper", "joint"): {c: np.linspace(0, 1, 11) for c in metrics.BOOT_METRICS}}


def test_table2_leaves_a_failed_run_out_of_the_mean_and_names_it():
    row = evaluation._aggregate(_runs({0: 0.34, 1: 0.01, 2: 0.32}, failed={1}), _reps()).iloc[0]
    assert row["nsg@10"] == pytest.approx(0.33) and row["map_a@10"] == pytest.approx(0.8)
    assert row.seeds == 2 and row.failed_seeds == 1
    assert row.seeds_note == "mean of seeds 0 and 2; seed 1 failed: validation NSG@10 0.004 (random level 0.030)"
    assert experiments.averaged_label(row) == "seeds 0, 2 (seed 1 failed)"
    mapk = evaluation._map_at_k(pd.DataFrame([{**r, **{f"nsg@{k}": r["nsg@10"] for k in range(1, 11)},
                                               **{f"map_a@{k}": r["map_a@10"] for k in range(1, 11)}}
                                              for r in _runs({0: 0.34, 1: 0.01, 2: 0.32}, failed={1}).to_dict("records")]))
    assert mapk[(mapk.metric == "NSG@k") & (mapk.k == 10)].value.iloc[0] == pytest.approx(0.33)


def test_without_a_failed_run_every_seed_is_averaged():
    row = evaluation._aggregate(_runs({0: 0.34, 1: 0.30, 2: 0.32}), _reps()).iloc[0]
    assert row["nsg@10"] == pytest.approx(0.32) and row.seeds == 3 and row.failed_seeds == 0
    assert row.seeds_note == "mean of seeds 0, 1 and 2"
    assert experiments.averaged_label(row) == "seeds 0, 1, 2"
    # result files from before the judgement (no `failed` column) are averaged as they were
    old = _runs({0: 0.34, 1: 0.30}).drop(columns=["failed", "failed_val_nsg@10", "random_level"])
    assert evaluation._aggregate(old, _reps()).iloc[0].seeds_note == "mean of seeds 0 and 1"


def test_when_every_seed_failed_the_row_still_says_so():
    row = evaluation._aggregate(_runs({0: 0.01, 1: 0.02}, failed={0, 1}), _reps()).iloc[0]
    assert row.seeds == 2 and row.failed_seeds == 2 and "seed 0 failed" in row.seeds_note
    assert "seed 1 failed" in row.seeds_note


def test_the_per_seed_table_shows_every_run_with_its_judgement():
    judged = experiments.judge_runs(_validation({("paper", "joint", 0): 0.34, ("paper", "joint", 1): 0.004,
                                                 ("paper", "joint", 2): 0.32}), LEVELS)
    runs = _runs({0: 0.34, 1: 0.01, 2: 0.32}, failed={1})
    table = experiments.seed_table(runs, judged, MAIN)
    assert list(table.columns) == list(experiments.SEED_COLUMNS.values())
    assert table["seed"].tolist() == [0, 1, 2]
    assert table["judgement"].tolist() == ["kept", "FAILED: left out of the mean", "kept"]
    assert table["NSG@10, validation"].tolist() == [0.34, 0.004, 0.32]
    assert table["network"].iloc[0] == "joint network (the paper's)"


def _table2(agnostic: float, joint_map: float) -> pd.DataFrame:
    rows = []
    for cfg, pred, nsg, mapa, kind in [(MAIN, "joint", 0.23, joint_map, "learned"), (MAIN, "knn", 0.29, 0.871, "baseline"),
                                       (DEPLOYED, "va_model", 0.29, 0.80, "learned"),
                                       ("(none)", "image_agnostic", agnostic, 0.80, "reference"),
                                       ("(none)", "quadrant", 0.68, 0.92, "reference"),
                                       ("(none)", "random", 0.0, 0.63, "baseline"), ("(none)", "oracle", 1.0, 1.0,
                                                                                       "reference")]:
        for split in ("cold", "paper"):
            if pred == "va_model" and split == "paper":
                continue
            rows.append({"config": cfg, "split": split, "predictor": pred, "kind": kind, "seeds": 3,
                         "failed_seeds": 0, "seeds_note": "mean of seeds 0, 1 and 2" if kind == "learned" else "",
                         "nsg@10": nsg, "map_a@10": mapa})
    return pd.DataFrame(rows)


def _blind_margins(table2: pd.DataFrame) -> pd.DataFrame:
    """margins.csv rows learned - image-agnostic on NSG@10, the verdict following the sign (as a
    paired interval that excludes 0 would)."""
    rows = []
    for _, r in table2[table2.kind == "learned"].iterrows():
        base = table2[(table2.predictor == "image_agnostic") & (table2.split == r.split)]["nsg@10"].iloc[0]
        d = r["nsg@10"] - base
        rows.append({"config": r.config, "split": r.split, "predictor": r.predictor, "baseline": "image_agnostic",
                     "metric": "nsg@10", "difference": d, "lo": d - 0.02, "hi": d + 0.02,
                     "verdict": "win" if d - 0.02 > 0 else "loss" if d + 0.02 < 0 else "tie"})
    return pd.DataFrame(rows)


def test_the_picture_blind_sentence_follows_the_numbers():
    t = _table2(agnostic=0.378, joint_map=0.815)
    f = Findings(t, _blind_margins(t), MAIN)
    assert f.blind_sentence("cold").startswith("No learned model beats the picture-blind ranking on the cold split")
    assert "NSG@10 0.378; the best learned model, the deployed VA model, scores 0.290" in f.blind_sentence("cold")
    t = _table2(agnostic=0.10, joint_map=0.815)
    f = Findings(t, _blind_margins(t), MAIN)
    assert f.blind_sentence("cold") == (
        "On the cold split the deployed VA model (0.290) and the joint network (the paper's) (0.230) beat the "
        "picture-blind ranking (one song ranking for every picture, NSG@10 0.100), by a paired interval that "
        "excludes 0.")


def test_the_map_sentence_names_whatever_scores_above_the_published_figure():
    t = _table2(agnostic=0.378, joint_map=0.815)
    text = Findings(t, _blind_margins(t), MAIN).map_sentence("paper")
    assert text.startswith("The paper reports MAP@10 0.855 for its network; reproduced on the paper split, the "
                           "paper's network stays below it with 0.815 (mean of seeds 0, 1 and 2).")
    assert "Above the published 0.855: kNN 0.871, quadrant only 0.920 (told each item's true quadrant)." in text
    t = _table2(agnostic=0.378, joint_map=0.86)
    assert "the paper's network reaches it with 0.860" in Findings(t, _blind_margins(t), MAIN).map_sentence("paper")


def test_the_command_lines_table2_names_a_failed_run_under_the_table():
    from imuse_lib.experiments import format_table2

    t = evaluation._aggregate(_runs({0: 0.34, 1: 0.01, 2: 0.32}, failed={1}), _reps())
    t = t.assign(**{c: 0.1 for c in ("ndcg@10", "quadrant@10", "rev_nsg@10", "mae", "rmse")})
    text = format_table2(t, paper=False)
    assert ("paper/mobilenet_v2+musicnn/joint: mean of seeds 0 and 2; seed 1 failed: validation NSG@10 0.004 "
            "(random level 0.030)") in text


def test_a_run_whose_predictions_collapsed_failed_even_above_the_random_level():
    """Paper-split joint seed 1 of a quick build: validation NSG@10 0.053 (random level 0.029),
    but its image VA spread 1% of the truth's: one prediction for every picture."""
    val = _validation({("paper", "joint", 0): 0.31, ("paper", "joint", 1): 0.053, ("paper", "joint", 2): 0.30})
    spread = {"image_item_valence_sd_ratio": 0.7, "image_item_arousal_sd_ratio": 0.6,
              "song_item_valence_sd_ratio": 0.6, "song_item_arousal_sd_ratio": 0.5}
    for col, x in spread.items():
        val[col] = x
    val.loc[(val.predictor == "joint") & (val.seed == 1), ["image_item_valence_sd_ratio",
                                                            "image_item_arousal_sd_ratio"]] = [0.010, 0.008]
    judged = experiments.judge_runs(val, LEVELS)
    assert judged[judged.failed].seed.tolist() == [1]
    assert judged.failure.tolist()[0] == "" and judged.failure.tolist()[2] == ""
    assert experiments.failure_summary(judged) == (
        "1 of 3 runs failed (joint network, paper split, seed 1: its predicted image arousal collapsed "
        "(spread 0.008 of the truth's; validation NSG@10 0.053))")
    # just above the threshold: kept
    val.loc[(val.predictor == "joint") & (val.seed == 1), "image_item_arousal_sd_ratio"] = 0.11
    val.loc[(val.predictor == "joint") & (val.seed == 1), "image_item_valence_sd_ratio"] = 0.11
    assert not experiments.judge_runs(val, LEVELS).failed.any()
    # the reason reaches Table 2's note
    note = evaluation.seeds_note([0, 2], judged[judged.failed].assign(**{"failed_val_nsg@10": 0.053}))
    assert note.startswith("mean of seeds 0 and 2; seed 1 failed: its predicted image arousal collapsed")
