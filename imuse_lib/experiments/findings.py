"""What the results chapter (notebook 04) says about a profile's Table 2 and margins: the names
a reader sees for splits, metrics and predictors, the one predictor order of every table, and
:class:`Findings`, which looks rows up, formats their intervals and writes the verdict sentences
the chapter glues into its prose."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..report import MISSING, PREDICTOR_COLOURS, READER_NAMES, fmt_interval, fmt_metric
from .evaluation import DEPLOYED, IMAGE_ONLY_METRICS
from .inputs import PAPER_TABLE2
from .predictors import FREE_BASELINES

SPLIT_NAMES = {"paper": "paper split (pairs held out; every test image and song seen in training)",
               "cold": "cold split (test images and songs never seen in training)"}
METRIC_NAMES = {"nsg@10": "NSG@10", "ndcg@10": "NDCG@10", "rev_nsg@10": "reverse NSG@10", "map_a@10": "MAP@10 (a)",
                "mae": "MAE"}
# Every predictor's name for a reader, in the order of every table (learned first, then the
# baselines from the strongest to the floor, the oracle last).
# The predictors, in the order of every table, with their reader names (one home: report.READER_NAMES).
PREDICTOR_NAMES = {p: READER_NAMES[p] for p in PREDICTOR_COLOURS}
PREDICTOR_ORDER = tuple(PREDICTOR_NAMES)
# The learned predictors, in the order sentences name them.
LEARNED = ("va_model", "joint", "joint_tta", "joint_item", "factorised")
# How close to the paper's MAP@10 counts as "reaches it" (the scale of its seed-to-seed spread).
MAP_CLOSE = 0.02
VERDICT_WORDS = {"win": "beats", "loss": "does worse than", "tie": "cannot be told apart from"}
# Table 2's recommendation columns and the paper's own: (heading, table2 column).
REC_COLUMNS = [("NSG@10", "nsg@10"), ("NDCG@10", "ndcg@10"), ("quadrant@10", "quadrant@10"),
               ("rev NSG@10", "rev_nsg@10")]
PAPER_COLUMNS = [("MAP@10 (a)", "map_a@10"), ("MAE", "mae"), ("RMSE", "rmse")]


def predictor_rank(predictors: pd.Series) -> pd.Series:
    """Each predictor's place in :data:`PREDICTOR_ORDER` (-1 for a name not in it: first)."""
    return predictors.map({p: i for i, p in enumerate(PREDICTOR_ORDER)}).fillna(-1)


class Findings:
    """Table 2 and the margins of one profile, read as the chapter reads them: a predictor's row
    is looked up in its own configuration (the feature-free baselines' rows carry ``"(none)"``,
    the deployed VA model's :data:`DEPLOYED`, every other one ``main_config``)."""

    def __init__(self, table2: pd.DataFrame, margins: pd.DataFrame, main_config: str):
        self.table2, self.margins, self.main_config = table2, margins, main_config

    def config_of(self, pred: str) -> str:
        return "(none)" if pred in FREE_BASELINES else DEPLOYED if pred == "va_model" else self.main_config

    def row(self, pred: str, split: str, cfg: str | None = None) -> pd.Series | None:
        """The table2 row of a predictor on a split; None when it was not evaluated."""
        t = self.table2
        r = t[(t.config == (cfg or self.config_of(pred))) & (t.split == split) & (t.predictor == pred)]
        return r.iloc[0] if len(r) else None

    def value(self, pred: str, split: str, col: str, cfg: str | None = None) -> float:
        r = self.row(pred, split, cfg)
        return float(r[col]) if r is not None else float("nan")

    def interval(self, pred: str, split: str, col: str, cfg: str | None = None) -> str:
        """``"0.412 (0.38-0.45)"``: the mean over seeds and its two-way bootstrap interval."""
        r = self.row(pred, split, cfg)
        return fmt_interval(r[col], r.get(f"{col}_lo"), r.get(f"{col}_hi")) if r is not None else MISSING

    def averaged(self, pred: str, split: str, cfg: str | None = None) -> str:
        """Which runs a row's mean averages and which failed: "mean of seeds 0 and 2; seed 1
        failed: validation NSG@10 0.004 (random level 0.028)" ("" when not evaluated)."""
        r = self.row(pred, split, cfg)
        if r is None:
            return ""
        note = r.get("seeds_note")
        return str(note) if isinstance(note, str) and note else f"mean of {int(r.seeds)} run(s)"

    def verdict_sentence(self, pred: str, base: str, split: str, metric: str = "nsg@10") -> str:
        """"on the cold split the joint network (the paper's) beats ridge (difference in NSG@10
        ..., paired over the same resamples)"; empty when the comparison was not made."""
        cfg = DEPLOYED if pred == "va_model" else self.main_config
        m = self.margins
        m = m[(m.config == cfg) & (m.predictor == pred) & (m.baseline == base) & (m.split == split)
              & (m.metric == metric)]
        if m.empty:
            return ""
        m = m.iloc[0]
        return (f"on the {split} split the {PREDICTOR_NAMES[pred]} {VERDICT_WORDS[m.verdict]} {PREDICTOR_NAMES[base]} "
                f"(difference in {METRIC_NAMES[metric]} {fmt_interval(m.difference, m.lo, m.hi)}, paired over the "
                f"same resamples)")

    def learned(self, split: str) -> list[str]:
        """The learned predictors evaluated on ``split``, in :data:`LEARNED` order."""
        return [p for p in LEARNED if self.row(p, split) is not None]

    def blind_sentence(self, split: str = "cold", metric: str = "nsg@10") -> str:
        """Whether any learned predictor beats the picture-blind ranking (image-agnostic: one song
        ranking for every picture) on ``metric``, by the paired interval of their difference:
        "No learned model beats ..." or "The deployed VA model beats ..."; "" without the row."""
        if self.row("image_agnostic", split) is None or not self.learned(split):
            return ""
        m = self.margins
        m = m[(m.split == split) & (m.baseline == "image_agnostic") & (m.metric == metric)
              & m.config.isin([self.main_config, DEPLOYED])]
        verdict = {r.predictor: r.verdict for r in m.itertuples()}
        learned = self.learned(split)
        winners = [p for p in learned if verdict.get(p) == "win"]
        blind = fmt_metric(self.value("image_agnostic", split, metric))
        best = max(learned, key=lambda p: self.value(p, split, metric))
        name = METRIC_NAMES.get(metric, metric)
        if not winners:
            return (f"No learned model beats the picture-blind ranking on the {split} split: one song ranking "
                    f"for every picture scores {name} {blind}; the best learned model, the {PREDICTOR_NAMES[best]}, "
                    f"scores {fmt_metric(self.value(best, split, metric))}.")
        names = " and ".join(f"the {PREDICTOR_NAMES[p]} ({fmt_metric(self.value(p, split, metric))})"
                             for p in winners)
        return (f"On the {split} split {names} beat{'s' if len(winners) == 1 else ''} the picture-blind ranking "
                f"(one song ranking for every picture, {name} {blind}), by a paired interval that excludes 0.")

    def map_sentence(self, split: str = "paper") -> str:
        """The paper's claim on its own metric: the reproduced network's MAP@10 (a) against the
        published one, which runs it averages, and every predictor that scores above the published
        figure (the quadrant-only one is told each item's true quadrant); "" without the row."""
        if self.row("joint", split) is None:
            return ""
        paper = PAPER_TABLE2["map@10"]
        ours = self.value("joint", split, "map_a@10")
        how = ("reaches" if abs(ours - paper) <= MAP_CLOSE else "stays below" if ours < paper else "exceeds")
        text = (f"The paper reports MAP@10 {paper:.3f} for its network; reproduced on the {split} split, the "
                f"paper's network {how} it with {fmt_metric(ours)} ({self.averaged('joint', split)}).")
        above = [p for p in PREDICTOR_ORDER if p not in ("oracle", "lookup", "joint")
                 and self.row(p, split) is not None and self.value(p, split, "map_a@10") > paper]
        if above:
            parts = [f"{PREDICTOR_NAMES[p]} {fmt_metric(self.value(p, split, 'map_a@10'))}"
                     + (" (told each item's true quadrant)" if p == "quadrant" else "") for p in above]
            text += f" Above the published {paper:.3f}: {', '.join(parts)}."
        return text

    def split_table(self, split: str, cols: list[tuple[str, str]]) -> pd.DataFrame:
        """One split's predictors (main configuration, feature-free baselines, deployed model) in
        :data:`PREDICTOR_ORDER`, a column of "estimate (interval)" per (heading, column)."""
        t = self.table2
        t = t[(t.split == split) & t.config.isin([self.main_config, "(none)", DEPLOYED])].copy()
        t = t.assign(_o=predictor_rank(t.predictor)).sort_values("_o")
        out = pd.DataFrame({"predictor": t.predictor.map(lambda p: PREDICTOR_NAMES.get(p, p)),
                            "runs averaged": [averaged_label(r) for _, r in t.iterrows()]})
        for label, col in cols:
            out[label] = [fmt_interval(r[col], r.get(f"{col}_lo"), r.get(f"{col}_hi")) for _, r in t.iterrows()]
        return out

    def interval_widths(self, splits, predictors=("joint", "ridge", "random")) -> pd.DataFrame:
        """How much wider the two-way intervals are than the image-only ones, per split,
        predictor and metric of ``IMAGE_ONLY_METRICS``."""
        rows = []
        for split in splits:
            for pred in predictors:
                r = self.row(pred, split)
                for col in IMAGE_ONLY_METRICS:
                    img_w, two_w = r[f"{col}_hi_img"] - r[f"{col}_lo_img"], r[f"{col}_hi"] - r[f"{col}_lo"]
                    rows.append({"split": split, "predictor": PREDICTOR_NAMES[pred], "metric": METRIC_NAMES[col],
                                 "image-only width": img_w, "two-way width": two_w,
                                 "ratio": two_w / img_w})
        return pd.DataFrame(rows)


def averaged_label(row: pd.Series) -> str:
    """A Table 2 row's "runs averaged" cell: the seeds and any failed run for a learned
    predictor ("seeds 0, 2 (seed 1 failed)", "seed 0"), the number of runs for a baseline."""
    failed = int(row.get("failed_seeds", 0) or 0)
    note = row.get("seeds_note")
    if row.get("kind") != "learned" or not isinstance(note, str):
        return str(int(row.seeds))
    kept = note.split(";")[0].removeprefix("mean of ").replace(" and ", ", ")
    bad = [part.split(" failed")[0].strip() for part in note.split(";")[1:]]
    return f"{kept} ({', '.join(bad)} failed)" if failed else kept


# The per-seed table's columns, as a reader sees them.
SEED_COLUMNS = {"split": "split", "network": "network", "seed": "seed", "val_nsg@10": "NSG@10, validation",
                "random_level": "random level, validation", "judgement": "judgement", "nsg@10": "NSG@10, test",
                "map_a@10": "MAP@10 (a), test"}


def seed_table(runs: pd.DataFrame, judged: pd.DataFrame, main_config: str) -> pd.DataFrame:
    """Every trained network of ``main_config`` (table2_runs.csv rows of the variants judged),
    one row per split x variant x seed: its validation NSG@10 against its split's random level,
    the judgement ("kept" or "FAILED: left out of the mean") and its test scores."""
    j = judged[judged.config == main_config]
    t = runs[(runs.config == main_config) & runs.predictor.isin(j.variant.unique())]
    t = t.merge(j.rename(columns={"variant": "predictor"})[["split", "predictor", "seed", "val_nsg@10",
                                                            "random_level", "failed"]],
                on=["split", "predictor", "seed"], how="left", suffixes=("_test", ""))
    t = t.assign(_s=t.split.map({"cold": 0, "paper": 1}), _o=predictor_rank(t.predictor))
    t = t.sort_values(["_s", "_o", "seed"])
    out = pd.DataFrame({"split": t.split, "network": t.predictor.map(lambda p: PREDICTOR_NAMES.get(p, p)),
                        "seed": t.seed.astype(int), "val_nsg@10": t["val_nsg@10"], "random_level": t.random_level,
                        "judgement": np.where(t.failed.fillna(False).astype(bool), "FAILED: left out of the mean",
                                              "kept"),
                        "nsg@10": t["nsg@10"], "map_a@10": t["map_a@10"]})
    return out.rename(columns=SEED_COLUMNS).reset_index(drop=True)


def top_song_quadrants(examples: pd.DataFrame, results, official: pd.Series) -> pd.DataFrame:
    """Per example image (rows with image_id, valence, arousal) and its recommendation (with
    ``query_va`` and ``items.song_id``): its quadrant, its predicted quadrant, the official 4Q
    quadrant of each top song (``official``: song_id -> "Q1".."Q4") and the share of the top
    songs in the image's own quadrant (the chapter's quadrant@k of a handful of images)."""
    from ..metrics import va_quadrant

    rows = []
    for (_, ex), res in zip(examples.iterrows(), results):
        image_q = f"Q{va_quadrant([ex.valence, ex.arousal])[0]}"
        predicted_q = f"Q{va_quadrant(res.query_va)[0]}"
        song_q = [official.get(s, "?") for s in res.items.song_id]
        rows.append({"image": ex.image_id, "image quadrant": image_q, "predicted quadrant": predicted_q,
                     "top songs' quadrants (4Q)": " ".join(song_q),
                     "share in the image's quadrant": np.mean([q == image_q for q in song_q])})
    return pd.DataFrame(rows)
