"""The inputs: an asset registry with checksums, and loaders for each data set.

Every file the project reads is listed with its sha256 in ``registry.tsv`` (shipped with
the package). A file is looked for, in order, under ``$IMUSE_DATA``, then in the mirror at
``../shared/imuse-data``, then in the download cache (``cache_dir()/downloads``), where
:func:`fetch` puts what it downloads from an asset's upstream address (pooch). Whatever
the place, the checksum is verified before the file is used.

Valence and arousal are returned on [0, 1]. ``scale="fixed"`` (default) maps each
instrument's fixed range (OASIS 1-7, Warriner 1-9) onto [0, 1]; ``scale="minmax"`` maps
the observed min and max of the loaded set instead (the paper does not say which it used).
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from . import config
from .errors import DataError, NetworkError

REGISTRY_FILE = config.PACKAGE_DIR / "registry.tsv"
SCALES = ("fixed", "minmax")


@dataclass(frozen=True)
class Asset:
    """One input data set: its folder in the mirror layout and how to obtain it."""

    name: str
    folder: str  # prefix of its files in the registry / mirror layout
    description: str
    source: str  # citation / where it comes from
    licence: str
    # file (relative to ``folder``) -> direct download address, where a stable one exists
    urls: tuple[tuple[str, str], ...] = ()
    how_to_get: str = ""


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        Asset(
            "oasis", "oasis",
            "OASIS: 900 images with normative valence/arousal ratings (1-7)",
            "Kurdi, Lozano & Banaji 2016, Behavior Research Methods 49:457-470",
            "free for research use",
            urls=(("OASIS.csv", "https://raw.githubusercontent.com/DavidBrocker/Morbid/"
                   "efae3ee201ac8eebfd88bb276fdf70a45b1fd161/OASIS.csv"),),
            how_to_get="download the OASIS archive from the authors (benedekkurdi.com, 'OASIS') and "
                       "lay it out as <IMUSE_DATA>/oasis/OASIS.csv and <IMUSE_DATA>/oasis/images/*.jpg",
        ),
        Asset(
            "4q", "4q",
            "4Q audio emotion dataset: 30 s clips with AllMusic mood tags (500 of 900 used)",
            "Panda, Malheiro & Paiva, IEEE TAFFC 2018",
            "research use; copyrighted previews, do not publish",
            how_to_get="download MER_audio_taffc_dataset.zip from mir.dei.uc.pt and lay it out as "
                       "<IMUSE_DATA>/4q/audio/Q1..Q4/*.mp3 plus the metadata CSVs in <IMUSE_DATA>/4q/",
        ),
        Asset(
            "lexicon", "lexicon",
            "Warriner valence/arousal/dominance norms for 13,915 English lemmas (1-9)",
            "Warriner, Kuperman & Brysbaert 2013, Behavior Research Methods 45:1191-1207",
            "CC BY-NC-ND 3.0",
            how_to_get="download Ratings_Warriner_et_al.csv (the article's supplementary material) "
                       "into <IMUSE_DATA>/lexicon/",
        ),
        Asset(
            "spotify", "spotify",
            "Frozen Spotify audio-features snapshot of 2000-2019 top hits",
            "Kaggle 'Top Hits Spotify from 2000-2019'",
            "metadata only",
            urls=(("top_hits_2000_2019.csv", "https://raw.githubusercontent.com/Noorazwana/Top-Hits-Spotify/"
                   "6523ad3f711e421da529adac468b254cb505da49/songs_normalize.csv"),),
            how_to_get="download the Kaggle data set 'Top Hits Spotify from 2000-2019' into "
                       "<IMUSE_DATA>/spotify/top_hits_2000_2019.csv",
        ),
        Asset(
            "pmemo", "pmemo",
            "PMEmo static valence/arousal listener ratings (767 songs, [0,1])",
            "Zhang et al., ICMR 2018",
            "research use; labels only",
            how_to_get="build static_va.json ({id,title,artist,v,a} per song) from the PMEmo release "
                       "(github.com/HuiZhangDB/PMEmo) into <IMUSE_DATA>/pmemo/",
        ),
        Asset(
            "mtat_weights", "weights/mtat",
            "Musicnn and FCN taggers trained on MagnaTagATune (50 tags, 16 kHz)",
            "Won et al. 2020, 'Evaluation of CNN-based automatic music tagging models'",
            "MIT",
            urls=(("musicnn_best_model.pth", "https://raw.githubusercontent.com/minzwon/"
                   "sota-music-tagging-models/master/models/mtat/musicnn/best_model.pth"),
                  ("fcn_best_model.pth", "https://raw.githubusercontent.com/minzwon/"
                   "sota-music-tagging-models/master/models/mtat/fcn/best_model.pth")),
            how_to_get="copy models/mtat/{musicnn,fcn}/best_model.pth of github.com/minzwon/"
                       "sota-music-tagging-models to <IMUSE_DATA>/weights/mtat/<model>_best_model.pth",
        ),
        Asset(
            "msd_weights", "weights/msd",
            "FCN and CRNN taggers trained on the Million Song Dataset's top-50 last.fm tags (16 kHz)",
            "Won et al. 2020, 'Evaluation of CNN-based automatic music tagging models'",
            "MIT",
            how_to_get="copy models/msd/{fcn,crnn}/best_model.pth of github.com/minzwon/"
                       "sota-music-tagging-models to <IMUSE_DATA>/weights/msd/<model>_best_model.pth, and the "
                       "50 tag names in output order (MSD_tags of philtgun/music-tagging-benchmark's "
                       "analysis/evaluation_script.py), one a line, to <IMUSE_DATA>/weights/msd/msd_tags.txt",
        ),
        Asset(
            "jamendo_weights", "weights/jamendo",
            "Musicnn, FCN and CRNN taggers trained on MTG-Jamendo's top-50 tags (16 kHz)",
            "Won et al. 2020, 'Evaluation of CNN-based automatic music tagging models'",
            "MIT",
            how_to_get="copy models/jamendo/{musicnn,fcn,crnn}/best_model.pth of github.com/minzwon/"
                       "sota-music-tagging-models to <IMUSE_DATA>/weights/jamendo/<model>_best_model.pth, and the "
                       "50 tag names in output order (jamendo_tags of philtgun/music-tagging-benchmark's "
                       "analysis/evaluation_script.py), one a line, to <IMUSE_DATA>/weights/jamendo/jamendo_tags.txt",
        ),
    ]
}


# --------------------------------------------------------------------------- registry


@lru_cache(maxsize=None)
def registry() -> dict[str, str]:
    """Mirror-relative path -> expected sha256, for every file the project may read."""
    with open(REGISTRY_FILE, encoding="utf-8") as fh:
        return {row["path"]: row["sha256"] for row in csv.DictReader(fh, delimiter="\t")}


def _asset_of(relpath: str) -> Asset:
    for asset in ASSETS.values():
        if relpath.startswith(asset.folder + "/"):
            return asset
    raise DataError(f"{relpath}: not a file of any registered asset")


def _candidates(relpath: str) -> list[Path]:
    roots = [config.data_root(), config.cache_dir() / "downloads"]
    return [root / relpath for root in roots if root is not None]


_VERIFIED: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    import pooch

    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:  # hashing once per process is enough
        _VERIFIED[key] = pooch.file_hash(str(path), alg="sha256")
    return _VERIFIED[key]


def locate(relpath: str, verify: bool = True) -> Path:
    """Path of a registered file (mirror-relative ``relpath``), checksum verified.

    Raises DataError naming the file and how to obtain it when it is missing or altered.
    """
    expected = registry().get(relpath)
    if expected is None:
        raise DataError(f"{relpath}: not in the asset registry ({REGISTRY_FILE.name})")
    asset = _asset_of(relpath)
    odd = None
    for path in _candidates(relpath):
        if path.is_file():
            if verify and file_sha256(path) != expected:
                raise DataError(
                    f"{path}: checksum mismatch (expected sha256 {expected[:12]}..., got "
                    f"{file_sha256(path)[:12]}...); the file is altered or corrupt - obtain it again: "
                    f"{asset.how_to_get}"
                )
            return path
        if (path.exists() or path.is_symlink()) and odd is None:  # there, but a folder or broken link
            odd = (path, "a directory" if path.is_dir() else "a broken symbolic link" if not path.exists()
                   else "not a regular file")
    if odd is not None:
        raise DataError(f"{odd[0]}: is {odd[1]}, not the data file it should be; {asset.how_to_get}")
    where = ", ".join(str(p.parent) for p in _candidates(relpath)) or "(no data root)"
    hint = f"run `imuse data fetch {asset.name}` or " if dict(asset.urls).get(relpath[len(asset.folder) + 1:]) else ""
    raise DataError(
        f"{relpath}: missing (looked in {where}); {hint}{asset.how_to_get}, "
        f"or set IMUSE_DATA to a folder laid out like the mirror"
    )


def asset_path(asset: str, relpath: str) -> Path:
    """Verified path of ``relpath`` inside ``asset``; e.g. ``asset_path("mtat_weights", "fcn_best_model.pth")``."""
    if asset not in ASSETS:
        raise DataError(f"unknown asset {asset!r}; known: {', '.join(ASSETS)}")
    return locate(f"{ASSETS[asset].folder}/{relpath}")


def fetch(asset: str, downloader=None) -> list[Path]:
    """Download an asset's files that have a stable upstream address into the download
    cache (checksum verified by pooch). ``downloader`` is passed to pooch (tests mock it)."""
    import pooch

    spec = ASSETS[asset]
    if not spec.urls:
        raise DataError(f"asset {asset!r} has no direct download address; {spec.how_to_get}")
    dest = config.cache_dir() / "downloads" / spec.folder
    out = []
    logger = pooch.get_logger()  # its "Downloading data from ..." line came before our one line
    level = logger.level
    logger.setLevel("WARNING")
    try:
        for name, url in spec.urls:
            relpath = f"{spec.folder}/{name}"
            try:
                out.append(Path(pooch.retrieve(url, known_hash=f"sha256:{registry()[relpath]}", fname=name,
                                               path=dest, downloader=downloader, progressbar=False)))
            except ValueError as exc:  # pooch: the download's hash differs from the registry's
                raise DataError(f"{url}: downloaded file does not match its registered checksum "
                                f"({' '.join(str(exc).split())[:160]}); nothing kept") from None
            except OSError as exc:  # requests' connection errors are OSErrors; their text runs to pages
                reason = "no network connection or the host is unknown" if "resol" in str(exc).lower() \
                    or "connect" in str(exc).lower() else " ".join(str(exc).split())[:160]
                raise NetworkError(f"{url}: cannot download {relpath} ({reason}); {spec.how_to_get}") from None
    finally:
        logger.setLevel(level)
    return out


def verify(assets: list[str] | None = None, progress: bool = False):
    """Check every registered file of ``assets`` (all by default).

    Returns a DataFrame with one row per asset: files expected, found and verified, and
    the first problem met. Never raises for a missing file: it is reported.
    """
    from tqdm import tqdm

    names = assets or list(ASSETS)
    rows = []
    for name in names:
        folder = ASSETS[name].folder + "/"
        files = [p for p in registry() if p.startswith(folder)]
        ok, problem = 0, ""
        for relpath in tqdm(files, desc=name, disable=not progress, leave=False):
            try:
                locate(relpath)
                ok += 1
            except DataError as exc:
                problem = problem or str(exc)
        rows.append({"asset": name, "files": len(files), "verified": ok, "problem": problem})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- helpers


def read_csv_checked(path: Path, required: list[str], **kwargs) -> pd.DataFrame:
    """Read a CSV (any line endings, UTF-8 or Latin-1) and check its columns."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    text = text.replace("\r\n", "\n").replace("\r", "\n")  # CR-only copies of OASIS.csv exist
    try:
        frame = pd.read_csv(io.StringIO(text), **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(map(str, frame.columns))})")
    return frame


def check_range(path: Path, frame: pd.DataFrame, column: str, low: float, high: float) -> None:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = frame[values.isna() | (values < low) | (values > high)]
    if len(bad):
        row = bad.index[0]
        raise DataError(
            f"{path}: column {column} has {len(bad)} value(s) outside [{low}, {high}] or not numbers "
            f"(first at data row {row + 1}: {frame.loc[row, column]!r})"
        )


def normalise(values, low: float, high: float, scale: str = "fixed") -> np.ndarray:
    """Map ratings onto [0, 1]: by the instrument's fixed range, or by observed min-max."""
    values = np.asarray(values, dtype=float)
    if scale == "fixed":
        return (values - low) / (high - low)
    if scale == "minmax":
        lo, hi = values.min(), values.max()
        return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    raise ValueError(f"scale must be one of {SCALES}, not {scale!r}")


def normalise_name(text: str) -> str:
    """Lower-case ASCII words only: for joining songs across sources by artist and title."""
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    text = re.sub(r"\(.*?\)|\[.*?\]|\bfeat\..*$|\bft\..*$", " ", text.lower())
    return " ".join(re.findall(r"[a-z0-9]+", text.replace("&", " and ")))


# --------------------------------------------------------------------------- loaders

OASIS_RANGE = (1.0, 7.0)
WARRINER_RANGE = (1.0, 9.0)


def load_images(scale: str = "fixed") -> pd.DataFrame:
    """The 900 OASIS images: ``image_id, theme, category, source, valence, arousal,
    valence_raw, arousal_raw, path`` (valence/arousal on [0, 1], raw on 1-7)."""
    path = asset_path("oasis", "OASIS.csv")
    frame = read_csv_checked(path, ["Theme", "Category", "Source", "Valence_mean", "Arousal_mean"])
    for col in ("Valence_mean", "Arousal_mean"):
        check_range(path, frame, col, *OASIS_RANGE)
    theme = frame["Theme"].astype(str).str.strip()  # some copies have 'War 2 '
    out = pd.DataFrame({
        "image_id": theme,
        "theme": theme,
        "category": frame["Category"].astype(str).str.strip().replace({"Scenery": "Scene"}),
        "source": frame["Source"].astype(str).str.strip(),
        "valence_raw": frame["Valence_mean"].astype(float),
        "arousal_raw": frame["Arousal_mean"].astype(float),
    })
    if out["image_id"].duplicated().any():
        raise DataError(f"{path}: duplicate Theme(s) {out.loc[out.image_id.duplicated(), 'image_id'].tolist()[:3]}")
    out["valence"] = normalise(out.valence_raw, *OASIS_RANGE, scale)
    out["arousal"] = normalise(out.arousal_raw, *OASIS_RANGE, scale)
    out["path"] = [locate(f"oasis/images/{t}.jpg", verify=False) for t in out.image_id]
    return out[["image_id", "theme", "category", "source", "valence", "arousal",
                "valence_raw", "arousal_raw", "path"]]


# The book publishes example images: no people, nothing explicit, gory or hateful.
SHOWABLE_CATEGORIES = ("Scene", "Object", "Animal")
SENSITIVE_THEMES = (r"(?i)nude|bdsm|dead|severed|tumor|injur|surgery|kkk|nazi|skinhead|shot|gun|war\b|blood|"
                    r"feces|vomit|dog attack|cockroach|snake|spider|roadkill|rotten|garbage|toilet|wound")


def showable(images: pd.DataFrame) -> pd.Series:
    """Mask of the images the book may show as examples."""
    return images.category.isin(SHOWABLE_CATEGORIES) & ~images.theme.str.contains(SENSITIVE_THEMES, regex=True)


def load_lexicon() -> pd.DataFrame:
    """Warriner norms: ``word, valence, arousal`` on their 1-9 scale (lower-case words)."""
    path = asset_path("lexicon", "Ratings_Warriner_et_al.csv")
    frame = read_csv_checked(path, ["Word", "V.Mean.Sum", "A.Mean.Sum"])
    for col in ("V.Mean.Sum", "A.Mean.Sum"):
        check_range(path, frame, col, *WARRINER_RANGE)
    return pd.DataFrame({
        "word": frame["Word"].astype(str).str.strip().str.lower(),
        "valence": frame["V.Mean.Sum"].astype(float),
        "arousal": frame["A.Mean.Sum"].astype(float),
    }).drop_duplicates("word").reset_index(drop=True)


def quadrant_of(valence, arousal) -> np.ndarray:
    """Russell quadrant of points on [0, 1]: Q1 +V+A, Q2 -V+A, Q3 -V-A, Q4 +V-A."""
    v = np.asarray(valence) >= 0.5
    a = np.asarray(arousal) >= 0.5
    return np.where(a, np.where(v, "Q1", "Q2"), np.where(v, "Q4", "Q3"))


def lexicon_table(lexicon: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """The lexicon as ``word -> (valence, arousal)``: what :func:`tag_va` looks words up in."""
    return dict(zip(lexicon.word, zip(lexicon.valence.astype(float), lexicon.arousal.astype(float))))


def tag_va(tags: str, lexicon: pd.DataFrame | dict) -> tuple[float, float, int]:
    """Mean Warriner valence and arousal (1-9) of ``;``-separated mood tags, and how many matched.
    ``lexicon``: the frame of :func:`load_lexicon`, or its :func:`lexicon_table` (build that once
    when scoring many songs: the catalog's 500 are then read in a tenth of a second, not two)."""
    table = lexicon if isinstance(lexicon, dict) else lexicon_table(lexicon)
    words = [t.strip().lower() for t in str(tags).split(";") if t.strip()]
    found = [table[w] for w in words if w in table]
    if not found:
        return float("nan"), float("nan"), 0
    va = np.array(found, dtype=np.float64)
    return float(va[:, 0].sum() / len(va)), float(va[:, 1].sum() / len(va)), len(found)


def lexicon_va(tags, lexicon: pd.DataFrame | None = None) -> tuple[float, float]:
    """Valence and arousal on [0, 1] (the catalog's fixed scale) of mood ``tags`` (a list, or one
    comma-separated string): the mean Warriner norms of the tags, as the catalog's VA is derived.
    A tag the lexicon lacks is an error naming it (a rated VA is never made from part of the tags)."""
    words = [t.strip() for t in (tags.split(",") if isinstance(tags, str) else tags)]
    words = [w for w in words if w]
    if not words:
        raise DataError("no mood tag given (e.g. --tags \"happy,calm\")")
    lexicon = load_lexicon() if lexicon is None else lexicon
    known = set(lexicon.word)
    unknown = [w for w in words if w.lower() not in known]
    if unknown:
        raise DataError(f"mood tag(s) not in the Warriner lexicon: {', '.join(repr(w) for w in unknown[:5])} "
                        f"(13,915 English lemmas, e.g. happy, calm, sad, angry, relaxed)")
    v, a, _ = tag_va(";".join(words), lexicon)
    return float(normalise(v, *WARRINER_RANGE)), float(normalise(a, *WARRINER_RANGE))


# Where the catalog's valence and arousal come from (the song index's va_source of its songs).
CATALOG_VA_SOURCE = "allmusic-tags"


def load_catalog(scale: str = "fixed") -> pd.DataFrame:
    """The 500 4Q clips of the mirror: ``song_id, artist, title, quadrant, genres, valence,
    arousal, valence_raw, arousal_raw, n_tags, tags, derived_quadrant, path, va_source``.

    Valence and arousal are derived as the dataset's authors did: the mean Warriner norms
    of the clip's AllMusic mood tags found in the lexicon (``MoodsFoundStr``), 1-9 -> [0, 1];
    ``va_source`` says so (:data:`CATALOG_VA_SOURCE`) to the song index.
    """
    catalog_path = asset_path("4q", "catalog_500.csv")
    catalog = read_csv_checked(catalog_path, ["Song", "Quadrant"], dtype=str)
    meta_path = asset_path("4q", "panda_dataset_taffc_metadata.csv")
    meta = read_csv_checked(meta_path, ["Song", "Artist", "Title", "Quadrant", "MoodsFoundStr", "GenresStr"],
                     dtype=str, keep_default_na=False)
    meta = meta.set_index("Song")
    unknown = sorted(set(catalog.Song) - set(meta.index))
    if unknown:
        raise DataError(f"{catalog_path}: song(s) not in {meta_path.name}: {unknown[:3]}")
    lexicon = lexicon_table(load_lexicon())
    songs = meta.to_dict("index")  # one conversion, not a row lookup per song
    rows = []
    for song, quadrant in zip(catalog.Song, catalog.Quadrant):
        m = songs[song]
        v, a, n = tag_va(m["MoodsFoundStr"], lexicon)
        if n == 0:
            raise DataError(f"{meta_path}: song {song} has no mood tag in the Warriner lexicon")
        rows.append({
            "song_id": song, "artist": m["Artist"], "title": m["Title"], "quadrant": quadrant,
            "genres": m["GenresStr"], "valence_raw": v, "arousal_raw": a, "n_tags": n,
            "tags": m["MoodsFoundStr"], "path": locate(f"4q/audio/{quadrant}/{song}.mp3", verify=False),
        })
    out = pd.DataFrame(rows)
    out["valence"] = normalise(out.valence_raw, *WARRINER_RANGE, scale)
    out["arousal"] = normalise(out.arousal_raw, *WARRINER_RANGE, scale)
    # Quadrant agreement is judged on the fixed scale: its midpoint is the lexicon's neutral 5.
    fixed_v = normalise(out.valence_raw, *WARRINER_RANGE)
    fixed_a = normalise(out.arousal_raw, *WARRINER_RANGE)
    out["derived_quadrant"] = quadrant_of(fixed_v, fixed_a)
    out["va_source"] = CATALOG_VA_SOURCE
    return out[["song_id", "artist", "title", "quadrant", "genres", "valence", "arousal", "valence_raw",
                "arousal_raw", "n_tags", "tags", "derived_quadrant", "path", "va_source"]]


def quadrant_agreement(catalog: pd.DataFrame) -> float:
    """Share of clips whose derived VA falls in their official quadrant."""
    return float((catalog.derived_quadrant == catalog.quadrant).mean())


def load_spotify(distinct: bool = True) -> pd.DataFrame:
    """The frozen Spotify snapshot, one row per distinct (artist, song): ``artist, title,
    year, genre, popularity, valence, energy`` plus ``arousal`` (= energy, as the paper).
    ``distinct=False`` keeps every row (a song that charted in two years can have two rows
    with slightly different features: :func:`find_rating` says so rather than pick one)."""
    path = asset_path("spotify", "top_hits_2000_2019.csv")
    frame = read_csv_checked(path, ["artist", "song", "year", "valence", "energy", "popularity", "genre"])
    for col in ("valence", "energy"):
        check_range(path, frame, col, 0.0, 1.0)
    frame = frame.rename(columns={"song": "title"})
    frame["key"] = [normalise_name(a) + " - " + normalise_name(t) for a, t in zip(frame.artist, frame.title)]
    if distinct:
        frame = frame.drop_duplicates("key")
    frame = frame.reset_index(drop=True)
    frame["arousal"] = frame["energy"].astype(float)
    return frame[["artist", "title", "year", "genre", "popularity", "valence", "energy", "arousal", "key"]]


def select_spotify_songs(n: int = 500, grid: int = 10, seed: int = config.SEED) -> pd.DataFrame:
    """The paper's '500 songs chosen to cover the VA plane', as a documented seeded rule.

    The VA square is cut into ``grid`` x ``grid`` cells; cells are visited round-robin and
    each visit takes one song at random from that cell, until ``n`` songs are chosen. Sparse
    cells are thus emptied first and dense ones thinned: the choice spreads over the plane
    instead of following the pop charts' mass of happy, energetic songs.
    """
    songs = load_spotify()
    if n > len(songs):
        raise DataError(f"asked for {n} songs, the Spotify snapshot has {len(songs)} distinct ones")
    rng = np.random.default_rng(seed)
    cell = (np.minimum((songs.valence * grid).astype(int), grid - 1) * grid
            + np.minimum((songs.arousal * grid).astype(int), grid - 1))
    pools = {c: list(rng.permutation(np.flatnonzero(cell.values == c))) for c in sorted(set(cell))}
    chosen: list[int] = []
    while len(chosen) < n:
        for c in list(pools):
            if pools[c] and len(chosen) < n:
                chosen.append(pools[c].pop())
    return songs.iloc[sorted(chosen)].reset_index(drop=True)


def load_pmemo() -> pd.DataFrame:
    """PMEmo static ratings: ``pmemo_id, artist, title, valence, arousal`` on [0, 1]."""
    path = asset_path("pmemo", "static_va.json")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    frame = pd.DataFrame(records)
    missing = [c for c in ("id", "title", "artist", "v", "a") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: records lack field(s) {', '.join(missing)}")
    for col in ("v", "a"):
        check_range(path, frame, col, 0.0, 1.0)
    return frame.rename(columns={"id": "pmemo_id", "v": "valence", "a": "arousal"})[
        ["pmemo_id", "artist", "title", "valence", "arousal"]]


# --------------------------------------------------------------------------- rated VA by artist and title

# Where a looked-up rating comes from (the song index's va_source), in order of preference: PMEmo
# asked listeners for valence and arousal themselves; Spotify's valence and energy are a stand-in
# (audio descriptors, energy read as arousal, as the paper does), so they answer only for songs
# PMEmo lacks.
RATING_SOURCES = ("pmemo", "spotify")
RATING_SOURCE_NAMES = {"pmemo": "PMEmo", "spotify": "the Spotify snapshot"}
_APOSTROPHES = re.compile(r"['\u2018\u2019\u02bc`\u00b4]")
# "(feat. X)", "[with X]" anywhere, or a trailing "feat. X": a credit, not a version of the song
_FEATURING = re.compile(r"[(\[]\s*(?:feat|ft|featuring|with)\b[^)\]]*[)\]]|\b(?:(?:feat|ft)\.|featuring\b).*$")
# Release labels of the same recording, in brackets or after " - ": dropped. Any other version
# word (remix, live, acoustic, a named edit) is kept: such a version is rated apart.
_SAME_RECORDING = re.compile(
    r"(?:[(\[]\s*|\s-\s+)(?:explicit|clean|bonus(?: track)?|original mix|radio edit|(?:main|album|single|radio) "
    r"version|(?:\d{4} )?remaster(?:ed)?(?: \d{4})?(?: version)?)\s*(?:[)\]]|$)")


def _rating_words(text: str) -> str:
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    text = _SAME_RECORDING.sub(" ", _FEATURING.sub(" ", _APOSTROPHES.sub("", text)))
    # accents dropped (Beyoncé = Beyonce); letters of any script kept (a Hangul name is no empty name)
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return " ".join(re.findall(r"[^\W_]+", unicodedata.normalize("NFC", text.replace("&", " and "))))


def rating_key(artist: str, title: str) -> str | None:
    """The key a song's rating is looked up by: artist and title in lower case, accents, punctuation
    and featured artists dropped, apostrophes joined (Don't = Don’t = Dont), a leading "The" of
    the artist dropped; None when either is left empty. Unlike :func:`normalise_name` (whose keys
    name acquired songs, and so stay as they are) it keeps version words in parentheses: a remix
    is rated apart from its original (PMEmo has both of "Dancing on My Own", far apart)."""
    who = re.sub(r"^the ", "", _rating_words(artist))
    what = _rating_words(title)
    return f"{who} - {what}" if who and what else None


@dataclass(frozen=True)
class SongRating:
    """A song's rated VA on [0, 1] found by artist and title; ``match`` says which row(s)."""

    source: str  # one of RATING_SOURCES
    valence: float
    arousal: float
    match: str


def rating_tables() -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The rating sources that can be read, each with a ``rating_key`` column, and one line per
    source that cannot (its file missing or altered): ratings are optional where they are looked up."""
    loaders = {"pmemo": load_pmemo, "spotify": lambda: load_spotify(distinct=False)}
    tables, problems = {}, []
    for source in RATING_SOURCES:
        try:
            table = loaders[source]()
        except DataError as exc:
            problems.append(str(exc))
            continue
        table["rating_key"] = [rating_key(a, t) for a, t in zip(table.artist, table.title)]
        tables[source] = table
    return tables, problems


def find_rating(artist: str, title: str, tables: dict[str, pd.DataFrame]) -> SongRating | None:
    """The rated VA of ``artist - title`` in ``tables`` (from :func:`rating_tables`), by exact
    :func:`rating_key`, from the first source of :data:`RATING_SOURCES` that has it; None when
    none has it. Rows of one source that match with different values are a DataError naming
    them (no silent choice between two ratings of a song)."""
    key = rating_key(artist, title)
    if key is None:
        return None
    for source in RATING_SOURCES:
        if source not in tables:
            continue
        table = tables[source]
        rows = table[table.rating_key == key]
        if rows.empty:
            continue
        values = rows[["valence", "arousal"]].astype(float).drop_duplicates()
        refs = [f"PMEmo song {r.pmemo_id}" if source == "pmemo" else f"Spotify {r.year}" for r in rows.itertuples()]
        shown = [f'{ref} "{r.artist} - {r.title}" (valence {r.valence:.3f}, arousal {r.arousal:.3f})'
                 for ref, r in zip(refs, rows.itertuples())]
        if len(values) > 1:
            raise DataError(f"{artist} - {title}: matches {len(rows)} songs of {RATING_SOURCE_NAMES[source]} with "
                            f"different ratings: {'; '.join(shown[:4])}; give the rating with --valence/--arousal, "
                            f"or --no-lookup for the VA predicted from the audio")
        first = rows.iloc[0]
        return SongRating(source, float(first.valence), float(first.arousal),
                          f'{", ".join(refs)} "{first.artist} - {first.title}"')
    return None
