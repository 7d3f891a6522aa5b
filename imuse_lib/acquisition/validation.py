"""How good is Spotify valence (and energy) as a valence-arousal label?

The paper labels its songs with Spotify's valence and energy. PMEmo (Zhang et al. 2018)
has listener ratings of static valence and arousal for 767 popular songs, many of them in
the Spotify top-hits snapshot. Joining the two by artist and title measures how far
Spotify's numbers follow what listeners report.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .. import data

_SPLIT = re.compile(r"[,&/;+]|\b(?:and|x|feat\.?|ft\.?|featuring|with)\b", re.IGNORECASE)


def artist_names(artist: str) -> set[str]:
    """Normalised individual artists of a credit ("Zara Larsson, MNEK" -> both, and the whole)."""
    names = {data.normalise_name(part) for part in _SPLIT.split(str(artist))}
    return {n for n in names if n} | {data.normalise_name(artist)}


def match_pmemo_spotify(pmemo: pd.DataFrame | None = None, spotify: pd.DataFrame | None = None) -> pd.DataFrame:
    """PMEmo songs found in the Spotify snapshot, one row per PMEmo song.

    Two passes: the normalised ``artist - title`` key the data layer builds (``exact``),
    then, for songs still unmatched, the same normalised title with at least one artist in
    common (``title+artist``: credits differ, "A feat. B" vs "A, B").
    Columns: ``pmemo_id, artist, title, rated_valence, rated_arousal, spotify_artist,
    spotify_title, spotify_valence, spotify_energy, match``.
    """
    pmemo = data.load_pmemo() if pmemo is None else pmemo
    spotify = data.load_spotify() if spotify is None else spotify
    spotify = spotify.copy()
    if "key" not in spotify.columns:
        spotify["key"] = [f"{data.normalise_name(a)} - {data.normalise_name(t)}"
                          for a, t in zip(spotify.artist, spotify.title)]
    by_key = {k: i for i, k in zip(spotify.index, spotify.key)}
    by_title: dict[str, list[int]] = {}
    for i, t in zip(spotify.index, spotify.title):
        by_title.setdefault(data.normalise_name(t), []).append(i)
    rows = []
    for song in pmemo.itertuples(index=False):
        key = f"{data.normalise_name(song.artist)} - {data.normalise_name(song.title)}"
        hit, how = by_key.get(key), "exact"
        if hit is None:
            names = artist_names(song.artist)
            hit = next((i for i in by_title.get(data.normalise_name(song.title), [])
                        if names & artist_names(spotify.at[i, "artist"])), None)
            how = "title+artist"
        if hit is None:
            continue
        sp = spotify.loc[hit]
        rows.append({"pmemo_id": song.pmemo_id, "artist": song.artist, "title": song.title,
                     "rated_valence": float(song.valence), "rated_arousal": float(song.arousal),
                     "spotify_artist": sp.artist, "spotify_title": sp.title,
                     "spotify_valence": float(sp.valence), "spotify_energy": float(sp.energy), "match": how})
    return pd.DataFrame(rows, columns=["pmemo_id", "artist", "title", "rated_valence", "rated_arousal",
                                       "spotify_artist", "spotify_title", "spotify_valence",
                                       "spotify_energy", "match"]).drop_duplicates("pmemo_id")


def correlation(x, y, confidence: float = 0.95) -> dict:
    """Pearson r with its p-value and confidence interval (Fisher z), and Spearman rho."""
    from scipy import stats

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 4:
        raise ValueError(f"need at least 4 pairs for a correlation, got {len(x)}")
    res = stats.pearsonr(x, y)
    ci = res.confidence_interval(confidence)
    return {"n": int(len(x)), "r": float(res.statistic), "p": float(res.pvalue), "ci_low": float(ci.low),
            "ci_high": float(ci.high), "spearman": float(stats.spearmanr(x, y).statistic)}


def correlations(matched: pd.DataFrame) -> pd.DataFrame:
    """Spotify valence vs rated valence and Spotify energy vs rated arousal: one row each."""
    pairs = {"valence": ("spotify_valence", "rated_valence"), "arousal": ("spotify_energy", "rated_arousal")}
    rows = [{"dimension": dim, "spotify": sp, "rated": rated, **correlation(matched[sp], matched[rated])}
            for dim, (sp, rated) in pairs.items()]
    return pd.DataFrame(rows).set_index("dimension")


def quadrant_agreement(matched: pd.DataFrame) -> float:
    """Share of matched songs whose Spotify (valence, energy) and rated (valence, arousal)
    fall in the same Russell quadrant (split at 0.5, as our 4Q labels)."""
    spotify_q = data.quadrant_of(matched.spotify_valence, matched.spotify_energy)
    rated_q = data.quadrant_of(matched.rated_valence, matched.rated_arousal)
    return float(np.mean(spotify_q == rated_q))


def catalog_in_snapshot(catalog: pd.DataFrame | None = None, spotify: pd.DataFrame | None = None) -> pd.DataFrame:
    """Songs of a catalog (the 4Q clips by default) found in the Spotify snapshot by the
    normalised artist - title key, with both label sets side by side."""
    catalog = data.load_catalog() if catalog is None else catalog
    spotify = data.load_spotify() if spotify is None else spotify
    keys = [f"{data.normalise_name(a)} - {data.normalise_name(t)}" for a, t in zip(catalog.artist, catalog.title)]
    joined = catalog.assign(key=keys).merge(spotify[["key", "valence", "energy"]], on="key",
                                            suffixes=("", "_spotify"))
    return joined.rename(columns={"energy": "energy_spotify"})
