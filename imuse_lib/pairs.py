"""Pair formation (paper section 3.2): Eq. 1, the best/worst/random sampling, and splits.

Eq. 1: S = 1 - sqrt((Iv - Mv)^2 + (Ia - Ma)^2) on VA normalised to [0, 1]; S lies in
[1 - sqrt(2), 1]. For every image the ``n_best`` most similar songs, the ``n_worst`` least
similar and ``n_random`` drawn from the rest form its pairs: 900 x 15 = 13,500.

Splits:
* ``paper``: 75/25 over pairs, stratified by song (each song's pairs are split 75/25, the
  rounding spread so that the whole test share is exactly 25 %).
* ``cold``: 25 % of the images and 25 % of the songs (stratified by quadrant) are held
  out; a pair is ``test`` when both its image and song are held out, ``train`` when
  neither is, and ``none`` when it mixes the two, so no test image or song is ever seen
  in training.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import config

GROUPS = ("best", "worst", "random")
SPLITS = ("paper", "cold")
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


def _held_out(ids: np.ndarray, strata: np.ndarray, rng: np.random.Generator, test_size: float) -> set:
    out = set()
    for stratum in sorted(set(strata)):
        members = np.sort(ids[strata == stratum])
        out.update(rng.permutation(members)[: int(round(test_size * len(members)))])
    return out


def _cold_split(pairs: pd.DataFrame, images: pd.DataFrame, songs: pd.DataFrame,
                rng: np.random.Generator, test_size: float) -> np.ndarray:
    test_images = _held_out(images.image_id.to_numpy(), images.category.to_numpy(), rng, test_size)
    test_songs = _held_out(songs.song_id.to_numpy(), songs.quadrant.to_numpy(), rng, test_size)
    img_test = pairs.image_id.isin(test_images).to_numpy()
    song_test = pairs.song_id.isin(test_songs).to_numpy()
    return np.where(img_test & song_test, "test", np.where(~img_test & ~song_test, "train", "none"))


def split_pairs(pairs: pd.DataFrame, protocol: str = "paper", seed: int = config.SEED,
                test_size: float = 0.25, images: pd.DataFrame | None = None,
                songs: pd.DataFrame | None = None) -> pd.DataFrame:
    """A copy of ``pairs`` with a ``split`` column (train / test, and none for ``cold``).

    The cold split holds out images stratified by OASIS category and songs by quadrant;
    pass ``images`` and ``songs`` frames with those columns (by default the real data).
    """
    rng = np.random.default_rng(seed)
    out = pairs.copy()
    if protocol == "paper":
        out["split"] = _paper_split(out, rng, test_size)
    elif protocol == "cold":
        if images is None or songs is None:
            from . import data
            images = data.load_images() if images is None else images
            songs = data.load_catalog() if songs is None else songs
        out["split"] = _cold_split(out, images, songs, rng, test_size)
    else:
        raise ValueError(f"split protocol must be one of {SPLITS}, not {protocol!r}")
    return out


def make_pairs(protocol: str = "paper", seed: int = config.SEED, scale: str = "fixed") -> pd.DataFrame:
    """The real IMUSE pairs: 900 OASIS images x the 500-clip catalog, split by ``protocol``."""
    from . import data

    images, songs = data.load_images(scale), data.load_catalog(scale)
    return split_pairs(form_pairs(images, songs, seed), protocol, seed, images=images, songs=songs)
