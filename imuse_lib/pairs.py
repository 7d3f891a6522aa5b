"""Pair formation (paper section 3.2): Eq. 1, the best/worst/random sampling, and splits.

Eq. 1: S = 1 - sqrt((Iv - Mv)^2 + (Ia - Ma)^2) on VA normalised to [0, 1]; S lies in
[1 - sqrt(2), 1]. For every image the ``n_best`` most similar songs, the ``n_worst`` least
similar and ``n_random`` drawn from the rest form its pairs: 900 x 15 = 13,500.

Splits (the ``split`` column: ``train``, ``val``, ``test`` and, for ``cold``, ``none``):
* ``paper``: 75/25 over pairs, stratified by song (each song's pairs are split 75/25, the
  rounding spread so that the whole test share is exactly 25 %). The validation pairs are
  carved out of the training pairs the same way (``val_size`` of all pairs, per song).
* ``cold``: 25 % of the images (stratified by OASIS category) and 25 % of the songs
  (stratified by quadrant) are held out for test, and ``val_size`` of each, drawn from the
  rest, for validation. A pair is ``test`` (``val``) when both its image and its song are
  test (val) items, ``train`` when both are training items, and ``none`` when it mixes
  roles, so no test or validation item is ever seen in training.

Every choice (early stopping, model selection, tuning) is made on ``val``; ``test`` is read
once, by the final scoring. :func:`item_roles` gives each item's role; the validation draw
uses its own random stream, so the test split is the same with or without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import config

GROUPS = ("best", "worst", "random")
SPLITS = ("paper", "cold")
ROLES = ("train", "val", "test")
VAL_SIZE = 0.15  # share of all items (cold) or pairs (paper) held out for validation
PAIR_COLUMNS = ["image_id", "song_id", "similarity", "group"]


def similarity(iv, ia, mv, ma):
    """Eq. 1 on arrays that broadcast (numpy or torch)."""
    return 1 - ((iv - mv) ** 2 + (ia - ma) ** 2) ** 0.5


def similarity_matrix(images: pd.DataFrame, songs: pd.DataFrame) -> np.ndarray:
    """S for every (image, song): shape [n_images, n_songs]."""
    iv, ia = images.valence.to_numpy()[:, None], images.arousal.to_numpy()[:, None]
    return similarity(iv, ia, songs.valence.to_numpy()[None, :], songs.arousal.to_numpy()[None, :])


def form_pairs(images: pd.DataFrame, songs: pd.DataFrame, seed: int = config.SEED,
               n_best: int = 5, n_worst: int = 5, n_random: int = 5) -> pd.DataFrame:
    """``image_id, song_id, similarity, group`` for each image's best, worst and random songs.

    Ties in S are broken by catalog order (a stable sort), so the result depends only on
    the inputs and the seed.
    """
    if n_best + n_worst + n_random > len(songs):
        raise ValueError(f"{n_best}+{n_worst}+{n_random} pairs per image need more than {len(songs)} songs")
    rng = np.random.default_rng(seed)
    sim = similarity_matrix(images, songs)
    song_ids = songs.song_id.to_numpy()
    rows = []
    for i, image_id in enumerate(images.image_id):
        order = np.argsort(-sim[i], kind="stable")
        best, worst = order[:n_best], order[len(order) - n_worst:][::-1]
        rest = order[n_best:len(order) - n_worst]
        random = rng.choice(rest, size=n_random, replace=False)
        for group, idx in (("best", best), ("worst", worst), ("random", random)):
            rows.extend((image_id, song_ids[j], float(sim[i, j]), group) for j in idx)
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


def _paper_split(pairs: pd.DataFrame, rng: np.random.Generator, test_size: float) -> np.ndarray:
    """75/25 per song; the fractional parts of each song's quota are rounded by largest
    remainder (ties at random) so the total test share is exact."""
    split = np.full(len(pairs), "train", dtype=object)
    groups = pairs.groupby("song_id", sort=True).indices
    quotas = {song: test_size * len(idx) for song, idx in groups.items()}
    n_test = {song: int(np.floor(q)) for song, q in quotas.items()}
    left = int(round(test_size * len(pairs))) - sum(n_test.values())
    songs = list(groups)
    frac = np.array([quotas[s] - n_test[s] for s in songs])
    order = np.lexsort((rng.random(len(songs)), -frac))  # largest remainder first, random tie-break
    for k in order[:left]:
        n_test[songs[k]] += 1
    for song, idx in groups.items():
        split[rng.permutation(idx)[:n_test[song]]] = "test"
    return split


def _held_out(ids: np.ndarray, strata: np.ndarray, rng: np.random.Generator, size: float,
              n_total: dict | None = None) -> set:
    """``size`` of each stratum, drawn at random; ``n_total`` (stratum -> count) sets the
    base the share is taken of when ``ids`` is already a remainder (validation)."""
    out = set()
    for stratum in sorted(set(strata)):
        members = np.sort(ids[strata == stratum])
        base = len(members) if n_total is None else n_total[stratum]
        out.update(rng.permutation(members)[: min(len(members), int(round(size * base)))])
    return out


def _val_rng(seed: int) -> np.random.Generator:
    # A stream of its own: adding validation leaves the test draw of a seed unchanged.
    return np.random.default_rng([int(seed), 1])


@dataclass
class ItemRoles:
    """Role (train / val / test) of every image and song of a split.

    ``paper`` splits pairs, not items: every item is a training item (``train``) and the
    test and validation queries are the items that have test or validation pairs."""

    protocol: str
    images: pd.Series  # image_id -> role
    songs: pd.Series   # song_id -> role

    def image_ids(self, role: str) -> list:
        return self.images.index[self.images == role].tolist()

    def song_ids(self, role: str) -> list:
        return self.songs.index[self.songs == role].tolist()


def item_roles(protocol: str, images: pd.DataFrame, songs: pd.DataFrame, seed: int = config.SEED,
               test_size: float = 0.25, val_size: float = VAL_SIZE) -> ItemRoles:
    """Item roles of a split: for ``cold`` held out by stratum (images by category, songs by
    quadrant), test first (the draw of the original two-way split), then validation."""
    image_ids, song_ids = images.image_id.to_numpy(), songs.song_id.to_numpy()
    img_role = pd.Series("train", index=pd.Index(image_ids, name="image_id"), dtype=object)
    song_role = pd.Series("train", index=pd.Index(song_ids, name="song_id"), dtype=object)
    if protocol == "paper":
        return ItemRoles(protocol, img_role, song_role)
    if protocol != "cold":
        raise ValueError(f"split protocol must be one of {SPLITS}, not {protocol!r}")
    rng = np.random.default_rng(seed)
    cats, quads = images.category.to_numpy(), songs.quadrant.to_numpy()
    test_i = _held_out(image_ids, cats, rng, test_size)
    test_s = _held_out(song_ids, quads, rng, test_size)
    img_role[img_role.index.isin(test_i)] = "test"
    song_role[song_role.index.isin(test_s)] = "test"
    if val_size > 0:
        vrng = _val_rng(seed)
        rest_i, rest_s = ~img_role.index.isin(test_i), ~song_role.index.isin(test_s)
        val_i = _held_out(image_ids[rest_i], cats[rest_i], vrng, val_size,
                          pd.Series(cats).value_counts().to_dict())
        val_s = _held_out(song_ids[rest_s], quads[rest_s], vrng, val_size,
                          pd.Series(quads).value_counts().to_dict())
        img_role[img_role.index.isin(val_i)] = "val"
        song_role[song_role.index.isin(val_s)] = "val"
    return ItemRoles(protocol, img_role, song_role)


def _cold_split(pairs: pd.DataFrame, roles: ItemRoles) -> np.ndarray:
    ir = pairs.image_id.map(roles.images).to_numpy()
    sr = pairs.song_id.map(roles.songs).to_numpy()
    return np.where(ir == sr, ir, "none").astype(object)


def split_pairs(pairs: pd.DataFrame, protocol: str = "paper", seed: int = config.SEED,
                test_size: float = 0.25, images: pd.DataFrame | None = None,
                songs: pd.DataFrame | None = None, val_size: float = VAL_SIZE) -> pd.DataFrame:
    """A copy of ``pairs`` with a ``split`` column: train / val / test (and none for ``cold``).

    The cold split holds out images stratified by OASIS category and songs by quadrant;
    pass ``images`` and ``songs`` frames with those columns (by default the real data).
    ``val_size=0`` gives the two-way split (no validation)."""
    if protocol not in SPLITS:
        raise ValueError(f"split protocol must be one of {SPLITS}, not {protocol!r}")
    out = pairs.copy()
    if protocol == "paper":
        split = _paper_split(out, np.random.default_rng(seed), test_size)
        if val_size > 0:
            train = np.flatnonzero(split == "train")
            share = val_size / (1 - test_size)  # of the training pairs: val_size of all pairs
            sub = _paper_split(out.iloc[train], _val_rng(seed), share)
            split[train[sub == "test"]] = "val"
        out["split"] = split
    else:
        if images is None or songs is None:
            from . import data
            images = data.load_images() if images is None else images
            songs = data.load_catalog() if songs is None else songs
        out["split"] = _cold_split(out, item_roles("cold", images, songs, seed, test_size, val_size))
    return out


def make_pairs(protocol: str = "paper", seed: int = config.SEED, scale: str = "fixed") -> pd.DataFrame:
    """The real IMUSE pairs: 900 OASIS images x the 500-clip catalog, split by ``protocol``."""
    from . import data

    images, songs = data.load_images(scale), data.load_catalog(scale)
    return split_pairs(form_pairs(images, songs, seed), protocol, seed, images=images, songs=songs)


# --------------------------------------------------------------------------- what a split holds


def split_summary(protocols: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per protocol and part (train / val / test): pairs, distinct images and songs, and pairs
    per group; indexed by (protocol, split). ``protocols``: name -> pairs with a split column."""
    rows = []
    for name, split in protocols.items():
        for part, sub in split.groupby("split"):
            rows.append({"protocol": name, "split": part, "pairs": len(sub), "images": sub.image_id.nunique(),
                         "songs": sub.song_id.nunique(), **sub.group.value_counts().reindex(GROUPS).to_dict()})
    return pd.DataFrame(rows).set_index(["protocol", "split"])


def song_test_share(split: pd.DataFrame) -> pd.Series:
    """Share of each song's pairs that are test pairs (the paper protocol holds out pairs, so
    every song has some in each part)."""
    return split.groupby("song_id").split.apply(lambda s: (s == "test").mean())


def cold_leak(split: pd.DataFrame) -> int:
    """Images plus songs that appear in both the test and the training pairs: 0 for a cold split."""
    test, train = split[split.split == "test"], split[split.split == "train"]
    return len(set(test.image_id) & set(train.image_id)) + len(set(test.song_id) & set(train.song_id))
