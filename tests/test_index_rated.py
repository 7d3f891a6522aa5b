"""Rated VA where a song has it (issue 21, item 2): the index stores where each song's VA comes
from, keeps the prediction beside a rating, and the recommender ranks with the rating and says so
(Python API, `imuse recommend` text and --json, the Try-it page's songs.json); schema version 2,
with a version-1 index refused by readers and migrated by `imuse index build`."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from types import SimpleNamespace

import numpy as np
import pytest

from imuse_lib import cli, config, data, deployed, export, metrics, recommend, training
from imuse_lib.errors import DataError, ImuseError
from imuse_lib.index import arrays as index_arrays
from imuse_lib.index import building as index_building
from imuse_lib.index import editing as index_editing
from imuse_lib.index import files as index_files
from imuse_lib.index import integrity as index_integrity
from imuse_lib.index import reading as index_reading

import recommend_fakes as fk


def rated_catalog(n_rated: int = 10):
    """The fake catalog with its first ``n_rated`` rows rated (AllMusic tags), the rest predicted."""
    catalog, sf_, images, if_ = fk.make_catalog()
    catalog["va_source"] = ["allmusic-tags"] * n_rated + ["predicted"] * (len(catalog) - n_rated)
    return catalog, sf_, images, if_


@pytest.fixture(params=[True, False], ids=["factorised", "joint"])
def built(request, tmp_path):
    model = fk.make_model(factorised=request.param)
    catalog, sf_, images, if_ = rated_catalog()
    path = index_building.build_index(model, tmp_path / "idx.sqlite", catalog, sf_, images, if_, progress=False)
    return SimpleNamespace(model=model, path=path, catalog=catalog, tmp=tmp_path)


@pytest.fixture
def query_image(tmp_path):
    return fk.write_image(tmp_path / "query.png", seed=5)


def test_va_source_round_trip_keeps_both_values(built):
    index = index_reading.open_index(built.path)
    assert index.meta["schema_version"] == "2" == str(index_files.SCHEMA_VERSION)
    songs = index.songs.set_index("song_id")
    cat = built.catalog.set_index("song_id")
    rated_ids = set(cat.index[cat.va_source == "allmusic-tags"])
    assert set(songs.index[songs.va_source == "allmusic-tags"]) == rated_ids
    assert (songs.va_source[~songs.index.isin(rated_ids)] == "predicted").all()
    # rated: both the rating and the prediction are stored; the rating is what is ranked with
    r = sorted(rated_ids)
    assert np.allclose(songs.loc[r, "true_valence"], cat.loc[r, "valence"])
    assert np.allclose(songs.loc[r, "true_arousal"], cat.loc[r, "arousal"])
    assert not np.allclose(songs.loc[r, "valence"], cat.loc[r, "valence"])  # the prediction differs
    assert songs.loc[sorted(set(songs.index) - rated_ids), "true_valence"].isna().all()
    pos = np.flatnonzero(index.songs.song_id.isin(rated_ids))
    assert index.song_rated.sum() == len(rated_ids) and index.song_rated[pos].all()
    assert np.allclose(index.song_va[pos], index.songs[["true_valence", "true_arousal"]].to_numpy()[pos])
    other = np.flatnonzero(~index.song_rated)
    assert np.allclose(index.song_va[other], index.songs[["valence", "arousal"]].to_numpy()[other])
    assert index_integrity.check_integrity(built.path) == []


def test_the_file_refuses_a_rating_without_its_source(built):
    """The schema's CHECK: a row is rated exactly when it names a source other than predicted."""
    with contextlib.closing(sqlite3.connect(built.path)) as conn:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE songs SET true_valence = NULL, true_arousal = NULL WHERE va_source != 'predicted'")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE songs SET va_source = 'user' WHERE va_source = 'predicted'")


def test_catalog_va_source_is_the_allmusic_tags():
    catalog = data.load_catalog()
    assert (catalog.va_source == data.CATALOG_VA_SOURCE).all() and data.CATALOG_VA_SOURCE in index_files.VA_SOURCES
    # the catalog's VA is the lexicon mean of its tags: lexicon_va gives the same numbers
    row = catalog.iloc[0]
    assert np.allclose(data.lexicon_va(row.tags.replace(";", ",")), (row.valence, row.arousal))


def test_rated_va_outranks_a_far_prediction(built, query_image):
    """A song added with a rated VA equal to the image's predicted VA comes first, though its
    predicted VA is far from the image's."""
    clip = fk.write_tone(built.tmp / "far.wav", 440)
    _, predicted = built.model.music_side(built.model.embed_audio([clip]))  # None for the joint model
    # the image's VA in this song's pair (the joint model's depends on the song's vector): from a first add
    index_building.add_songs(built.path, built.model, [clip], song_ids=["ZZZ rated"], rated_va=[(0.0, 0.0)],
                             va_source="user")
    first = recommend.Recommender.load(built.model, built.path).recommend(query_image, top=100).items
    image_va = first.set_index("song_id").loc["ZZZ rated", ["image_valence", "image_arousal"]].to_numpy(float)
    index_editing.remove_songs(built.path, ["ZZZ rated"])
    index_building.add_songs(built.path, built.model, [clip], song_ids=["ZZZ rated"],
                             rated_va=[(float(image_va[0]), float(image_va[1]))], va_source="user")
    rec = recommend.Recommender.load(built.model, built.path)
    items = rec.recommend(query_image, top=len(rec.index)).items
    top = items.iloc[0]
    assert top.song_id == "ZZZ rated" and top.va_source == "user"
    assert top.similarity == pytest.approx(1.0, abs=1e-6)
    row = items.set_index("song_id").loc["ZZZ rated"]
    assert (row.valence, row.arousal) == pytest.approx((image_va[0], image_va[1]), abs=1e-6)
    if built.model.factorised:  # its prediction, stored beside it, would have ranked it elsewhere
        assert (row.predicted_valence, row.predicted_arousal) == pytest.approx(tuple(predicted[0]), abs=1e-5)
        far = 1 - np.hypot(*(predicted[0] - image_va))
        assert far < items.similarity.iloc[1]
    # every song: similarity is Eq. 1 between the image's VA and the VA it was ranked with
    want = 1 - np.hypot(items.image_valence - items.valence, items.image_arousal - items.arousal)
    assert np.allclose(items.similarity, want, atol=1e-5)
    rated = items.va_source != "predicted"
    assert np.allclose(items.valence[rated], items.true_valence[rated])


def test_add_refuses_bad_rated_values(built):
    clip = fk.write_tone(built.tmp / "c.wav", 330)
    for va, source, words in [([(1.5, 0.5)], "user", "[0, 1]"), ([(0.5, float("nan"))], "user", "[0, 1]"),
                              ([(0.5, 0.5)], None, "needs its source"), ([(0.5, 0.5)], "predicted", "needs its source"),
                              ([(0.5, 0.5), (0.2, 0.2)], "user", "one per song")]:
        with pytest.raises(ImuseError, match=words.replace("[", r"\[").replace("]", r"\]")):
            index_building.add_songs(built.path, built.model, [clip], rated_va=va, va_source=source)
    assert "c" not in set(index_reading.open_index(built.path).songs.song_id)  # nothing half-written


def test_lexicon_va_names_an_unknown_tag():
    v, a = data.lexicon_va("happy, calm")
    lex = data.load_lexicon().set_index("word")
    assert v == pytest.approx((lex.loc[["happy", "calm"], "valence"].mean() - 1) / 8)
    assert a == pytest.approx((lex.loc[["happy", "calm"], "arousal"].mean() - 1) / 8)
    with pytest.raises(DataError, match="'zzzqx'"):
        data.lexicon_va("happy,zzzqx")
    with pytest.raises(DataError, match="no mood tag"):
        data.lexicon_va(" , ")


def test_large_index_arrays_carry_the_ranking_va(tmp_path, monkeypatch, query_image):
    monkeypatch.setattr(index_arrays, "ARRAYS_MIN", 10)
    model = fk.make_model(factorised=True)
    catalog, sf_, images, if_ = rated_catalog()
    path = index_building.build_index(model, tmp_path / "big.sqlite", catalog, sf_, images, if_, progress=False)
    clip = fk.write_tone(tmp_path / "new.wav", 500)
    index_building.add_songs(path, model, [clip], rated_va=[(0.9, 0.1)], va_source="user")
    mapped = index_reading.open_index(path)
    assert isinstance(mapped.song_va, np.memmap)
    from_sql = index_reading.ranking_va(mapped.songs)
    assert np.array_equal(mapped.song_va, from_sql[0]) and np.array_equal(mapped.song_rated, from_sql[1])
    assert index_integrity.check_integrity(path) == []
    rec = recommend.Recommender(model, mapped).recommend(query_image, top=5)
    assert set(rec.items.va_source) <= set(index_files.VA_SOURCES)


# --------------------------------------------------------------------------- schema version 1


def _make_v1(path, fingerprint: str, model_label: str = "old") -> None:
    """An index as schema version 1 wrote it: no va_source; one catalog song, one added song."""
    v1 = index_files.SONGS_V1
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        conn.execute(v1)
        conn.execute(index_files.SCHEMA.split(";")[2])  # images: unchanged
        conn.executemany("INSERT INTO meta VALUES (?, ?)", [("schema_version", "1"), ("fingerprint", fingerprint),
                                                           ("model_label", model_label), ("music_dim", "128"),
                                                           ("image_dim_vec", "0")])
        vec = index_files.blob(np.full(128, 0.5, np.float32))
        conn.execute("INSERT INTO songs VALUES ('mine', 'Me', 'Mine', NULL, ?, 0.2, 0.3, NULL, NULL, 'then')", (vec,))
        conn.execute("INSERT INTO songs VALUES ('rated', 'Me', 'R', NULL, ?, 0.2, 0.3, 0.8, 0.9, 'then')", (vec,))
        conn.commit()


def test_a_version_1_index_is_refused_with_one_clear_line(tmp_path):
    path = tmp_path / "old.sqlite"
    _make_v1(path, "f" * 64)
    for read in (index_reading.open_index, index_files.read_meta, index_integrity.check_integrity):
        with pytest.raises(DataError) as err:
            read(path)
        assert "schema version '1'" in str(err.value) and "imuse index build" in str(err.value)


def test_build_migrates_a_version_1_index_keeping_added_songs(tmp_path):
    model = fk.make_model(factorised=True)
    path = tmp_path / "old.sqlite"
    _make_v1(path, model.fingerprint)
    catalog, sf_, images, if_ = rated_catalog()
    index_building.build_index(model, path, catalog, sf_, images, if_, progress=False)
    index = index_reading.open_index(path)
    assert index.meta["schema_version"] == "2"
    songs = index.songs.set_index("song_id")
    assert songs.loc["mine", "va_source"] == "predicted" and np.isnan(songs.loc["mine", "true_valence"])
    assert songs.loc["rated", "va_source"] == "user" and songs.loc["rated", "true_valence"] == pytest.approx(0.8)


# --------------------------------------------------------------------------- the command line and the page


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A saved factorised model as the default model, its index (some songs rated) in a private cache."""
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path / "cache"))
    model = fk.make_model(factorised=True)
    ckpt = training.save_model(tmp_path / "model.pt", model.net, model.meta)
    monkeypatch.setattr(training, "default_model_path", lambda: ckpt)
    fakes = {"image": fk.image_backbone, "audio": fk.audio_backbone}
    monkeypatch.setattr(deployed.DeployedModel, "_build", lambda self, which: fakes[which]())
    loaded = deployed.load_deployed()
    catalog, sf_, images, if_ = rated_catalog()
    index = index_building.build_index(loaded, None, catalog, sf_, images, if_, progress=False)
    return SimpleNamespace(tmp=tmp_path, index=index, model=loaded, image=fk.write_image(tmp_path / "photo.jpg"),
                           clip=fk.write_tone(tmp_path / "new.wav", 550))


def run(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, err, *words):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith("imuse: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in lines[-1], (w, lines[-1])


def test_cli_add_with_valence_arousal_then_recommend_says_rated(env, capsys):
    rec = recommend.Recommender.load(env.model, env.index)
    _, image_va = rec.image_point(env.image)
    rc, out, err = run(capsys, "index", "add", env.clip, "--id", "mine", "--valence", f"{image_va[0]:.6f}",
                       "--arousal", f"{image_va[1]:.6f}")
    assert rc == 0, err
    assert "added 1 song(s)" in out and "rated (given with --valence/--arousal)" in out
    rc, out, err = run(capsys, "recommend", env.image, "--top", 3, "--json")
    assert rc == 0, err
    records = json.loads(out)
    assert records[0]["song_id"] == "mine" and records[0]["va_source"] == "user"
    assert all("va_source" in r and "predicted_valence" in r for r in records)
    rc, out, err = run(capsys, "recommend", env.image, "--top", 12)
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[3].rstrip().endswith("VA") and "rated (given with --valence/--arousal)" in lines[4]
    sources = {r["va_source"] for r in json.loads(run(capsys, "recommend", env.image, "--top", 41, "--json")[1])}
    assert {"user", "allmusic-tags", "predicted"} <= sources
    assert "rated (AllMusic mood tags, Warriner lexicon)" in out or "predicted from audio" in out
    rc, out, _ = run(capsys, "index", "list", "--json")
    listed = {r["song_id"]: r for r in json.loads(out)}
    assert listed["mine"]["va_source"] == "user" and listed["mine"]["true_valence"] == pytest.approx(image_va[0], abs=1e-5)


def test_cli_add_with_tags(env, capsys):
    rc, out, err = run(capsys, "index", "add", env.clip, "--id", "tagged", "--tags", "happy,calm")
    assert rc == 0, err
    assert "rated (tags given with --tags, Warriner lexicon)" in out
    song = index_reading.open_index(env.index).songs.set_index("song_id").loc["tagged"]
    assert song.va_source == "user-tags"
    assert (song.true_valence, song.true_arousal) == pytest.approx(data.lexicon_va(["happy", "calm"]))


@pytest.mark.parametrize("argv, words", [
    (["--valence", "0.5"], ["--valence needs --arousal"]),
    (["--arousal", "0.5"], ["--arousal needs --valence"]),
    (["--valence", "1.5", "--arousal", "0.5"], ["--valence", "out of range", "from 0 to 1"]),
    (["--valence", "nan", "--arousal", "0.5"], ["--valence"]),
    (["--valence", "0.5", "--arousal", "0.5", "--tags", "happy"], ["not both"]),
    (["--valence", "0.5", "--arousal", "0.5", "--valence", "0.1", "--arousal", "0.1"], ["one per file"]),
    (["--tags", "happy,glorbish"], ["'glorbish'", "Warriner lexicon"]),
])
def test_cli_add_bad_rated_values_are_one_line_errors(env, capsys, argv, words):
    before = len(index_reading.open_index(env.index))
    rc, _, err = run(capsys, "index", "add", env.clip, *argv)
    one_line_error(rc, err, *words)
    assert len(index_reading.open_index(env.index)) == before  # nothing added


def test_export_carries_the_source_per_song(env):
    index = index_reading.open_index(env.index)
    table = export.song_table(index, catalog=rated_catalog()[0])
    assert table["columns"][-1] == "va_source" and table["format"].endswith("/2")
    rows = {r[0]: r for r in table["songs"]}
    songs = index.songs.set_index("song_id")
    for sid, row in rows.items():
        assert row[6] == songs.loc[sid, "va_source"]
        want = (songs.loc[sid, ["true_valence", "true_arousal"]] if row[6] != "predicted"
                else songs.loc[sid, ["valence", "arousal"]]).to_numpy(np.float32)
        assert np.array_equal(np.float32(row[3:5]), want)
    assert set(table["va_source"]) == {"allmusic-tags", "predicted"}
    assert table["va_source"]["predicted"] == index_files.VA_SOURCES["predicted"]


# --------------------------------------------------------------------------- scoring


def test_nsg_by_song_va_rated_is_the_oracle_when_the_image_is_exact():
    """With the images' true VA as their prediction, ranking by the songs' rated VA is the oracle
    (NSG 1); predicted song VA that is noise scores about 0; intervals hold their estimates."""
    rng = np.random.default_rng(0)
    image_va, song_va = rng.random((40, 2)), rng.random((30, 2))
    ev = metrics.EvalSet(image_va, song_va, np.arange(40), np.arange(30), np.array([0, 1]), np.array([0, 1]),
                         np.array([True, False]))
    out = metrics.nsg_by_song_va(ev, image_va, rng.random((30, 2)), n_boot=50, seed=1)
    assert out["rated"]["estimate"] == pytest.approx(1.0)
    assert abs(out["audio"]["estimate"]) < 0.3
    for arm in ("rated", "audio"):
        assert out[arm]["lo"] <= out[arm]["estimate"] <= out[arm]["hi"]
    assert out["rated - audio"]["verdict"] == "win" and out["rated - audio"]["lo"] > 0


def test_default_index_is_named_by_schema_and_keeps_the_older_defaults_added_songs(tmp_path, monkeypatch):
    """The default index of schema 2 sits beside schema 1's (which is left alone): a program that
    reads schema 2 never fails on an older default index; its first build keeps that one's added songs."""
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path / "cache"))
    model = fk.make_model(factorised=True)
    legacy = index_reading.legacy_default_path(model)
    assert index_reading.default_index_path(model).name == f"{model.fingerprint[:16]}.v2.sqlite"
    legacy.parent.mkdir(parents=True)
    _make_v1(legacy, model.fingerprint)
    before = legacy.read_bytes()
    with pytest.raises(DataError, match="no song index for this model yet"):
        recommend.Recommender.load(model, None)
    catalog, sf_, images, if_ = rated_catalog()
    path = index_building.build_index(model, None, catalog, sf_, images, if_, progress=False)
    assert path == index_reading.default_index_path(model) and legacy.read_bytes() == before
    index = index_reading.open_index(path)
    assert {"mine", "rated"} <= set(index.songs.song_id) and index.meta["added_kept"] == "2"


# --------------------------------------------------------------------------- rated VA looked up by artist and title


@pytest.fixture(scope="module")
def rating_tables():
    tables, problems = data.rating_tables()
    assert problems == [] and set(tables) == {"pmemo", "spotify"}
    return tables


@pytest.mark.parametrize("artist, title, source, valence, arousal, row", [
    ("The Weeknd", "I Feel It Coming", "pmemo", 0.650, 0.662, "PMEmo song 892"),  # in both: PMEmo wins
    ("weeknd", "  i feel it COMING ", "pmemo", 0.650, 0.662, "PMEmo song 892"),  # case, spaces, "The"
    ("Adam Wakefield", "I'm Sorry", "pmemo", 0.575, 0.562, "PMEmo song 14"),  # PMEmo spells it I’m
    ("Adam Wakefield", "Im Sorry", "pmemo", 0.575, 0.562, "PMEmo song 14"),  # apostrophes joined
    ("Major Lazer", "Cold Water", "pmemo", 0.650, 0.775, "PMEmo song 637"),  # "(feat. Justin Bieber & MØ)"
    ("Katy Perry", "Bon Appetit", "pmemo", 0.825, 0.863, "PMEmo song 499"),  # Bon Appétit
    ("Jon Bellion", "All Time Low", "pmemo", 0.738, 0.650, "PMEmo song 466"),  # "(explicit)"
    ("Calum Scott", "Dancing on My Own", "pmemo", 0.388, 0.275, "PMEmo song 105"),  # not its remix...
    ("Calum Scott", "Dancing On My Own (Ben Dooks Remix)", "pmemo", 0.825, 0.838, "PMEmo song 104"),  # ...rated apart
    ("방탄소년단", "Spring Day", "pmemo", 0.575, 0.662, "PMEmo song 1000"),  # a Hangul name is a name
    ("Taio Cruz", "Dynamite", "spotify", 0.816, 0.783, "Spotify 2010"),  # arousal = energy
    ("Beyonce", "Deja Vu", "spotify", 0.355, 0.746, "Spotify"),  # Beyoncé, "(feat. Jay-Z)"
    ("Anastacia", "I'm Outta Love", "spotify", 0.649, 0.716, "Spotify 1999"),  # "- Radio Edit"
    ("Jack U", "Where Are U Now", "spotify", None, None, "Spotify"),  # Jack Ü, "(with Justin Bieber)"
])
def test_find_rating_on_real_rows(rating_tables, artist, title, source, valence, arousal, row):
    found = data.find_rating(artist, title, rating_tables)
    assert found is not None and found.source == source and row in found.match
    if valence is not None:
        assert (found.valence, found.arousal) == pytest.approx((valence, arousal), abs=1e-9)
    if source == "spotify":  # the data layer's one mapping: valence, and energy as arousal
        sp = data.load_spotify(distinct=False)
        hit = sp[[data.rating_key(a, t) == data.rating_key(artist, title) for a, t in zip(sp.artist, sp.title)]]
        assert (found.valence, found.arousal) == (hit.valence.iloc[0], hit.energy.iloc[0])


@pytest.mark.parametrize("artist, title", [
    ("防弹少年团", "Spring Day"),  # another name in another script: not the Hangul one (ASCII folding made both "")
    ("Calum Scott", "Dancing on My Own (Live)"),  # a version neither source rates
    ("Taio Cruz", "Dynamite Remix"),
    ("Taio Cruz", ""), ("", "Dynamite"), ("!!!", "???"),  # nothing left to match
    ("Nobody Here", "No Such Song 1234"),
])
def test_find_rating_makes_no_guess(rating_tables, artist, title):
    assert data.find_rating(artist, title, rating_tables) is None


def test_find_rating_says_when_a_song_has_two_ratings(rating_tables):
    with pytest.raises(DataError) as err:  # two PMEmo entries, different listener ratings
        data.find_rating("DJ Khaled", "I Got the Keys", rating_tables)
    for words in ("matches 2 songs of PMEmo", "PMEmo song 179", "PMEmo song 185", "0.312", "0.475", "--no-lookup"):
        assert words in str(err.value)
    with pytest.raises(DataError, match="matches 2 songs of the Spotify snapshot"):  # charted in two versions
        data.find_rating("Drake", "Hotline Bling", rating_tables)
    # rows that agree are one rating, not an ambiguity (the song charted twice with the same features)
    same = data.find_rating("Ariana Grande", "Love Me Harder", rating_tables)
    assert same is not None and same.match.count("Spotify") == 2


@pytest.fixture
def real_clip():
    """A real 4Q clip from the mirror (Taio Cruz, "Dynamite"): the audio is embedded, the rating looked up."""
    return data.locate("4q/audio/Q1/MT0036368550.mp3", verify=False)


def _song(index_path, song_id):
    return index_reading.open_index(index_path).songs.set_index("song_id").loc[song_id]


def test_cli_add_looks_the_rating_up(env, capsys, real_clip):
    rc, out, err = run(capsys, "index", "add", real_clip, "--id", "dynamite", "--title", "Dynamite",
                       "--artist", "Taio Cruz")
    assert rc == 0 and err == "", err
    assert 'dynamite (VA: rated (Spotify valence/energy), matched Spotify 2010 "Taio Cruz - Dynamite")' in out
    song = _song(env.index, "dynamite")
    assert song.va_source == "spotify" and (song.true_valence, song.true_arousal) == pytest.approx((0.816, 0.783))
    rc, out, err = run(capsys, "index", "add", real_clip, "--id", "weeknd", "--title", "I Feel It Coming",
                       "--artist", "The Weeknd")
    assert rc == 0, err
    assert 'rated (PMEmo ratings), matched PMEmo song 892 "The Weeknd - I Feel It Coming"' in out
    song = _song(env.index, "weeknd")
    assert song.va_source == "pmemo" and (song.true_valence, song.true_arousal) == pytest.approx((0.650, 0.662))
    # the recommender ranks them with the rating and says where it comes from
    records = {r["song_id"]: r for r in json.loads(run(capsys, "recommend", env.image, "--top", 100, "--json")[1])}
    for sid, source, va in (("dynamite", "spotify", (0.816, 0.783)), ("weeknd", "pmemo", (0.650, 0.662))):
        r = records[sid]
        assert r["va_source"] == source and (r["valence"], r["arousal"]) == pytest.approx(va, abs=1e-6)
        assert (r["true_valence"], r["true_arousal"]) == pytest.approx(va, abs=1e-6)
        assert r["predicted_valence"] is not None
    assert "rated (PMEmo ratings)" in run(capsys, "recommend", env.image, "--top", 100)[1]


@pytest.mark.parametrize("argv, source, words", [
    (["--title", "No Such Song 1234", "--artist", "Taio Cruz"], "predicted",
     "(VA: predicted from audio; not in PMEmo or the Spotify snapshot)"),
    (["--title", "Dynamite", "--artist", "Taio Cruz", "--no-lookup"], "predicted", "(VA: predicted from audio)"),
    (["--title", "Dynamite"], "predicted", "(VA: predicted from audio)"),  # no artist: nothing to look up by
    (["--title", "Dynamite", "--artist", "Taio Cruz", "--valence", "0.1", "--arousal", "0.2"], "user",
     "(VA: rated (given with --valence/--arousal))"),
    (["--title", "Dynamite", "--artist", "Taio Cruz", "--tags", "sad"], "user-tags", "(VA: rated (tags given"),
])
def test_cli_add_without_a_looked_up_rating(env, capsys, real_clip, argv, source, words):
    rc, out, err = run(capsys, "index", "add", real_clip, "--id", "mine", *argv)
    assert rc == 0 and err == "", err
    assert words in out and "matched" not in out
    song = _song(env.index, "mine")
    assert song.va_source == source
    if source == "user":
        assert (song.true_valence, song.true_arousal) == pytest.approx((0.1, 0.2))


def test_cli_add_many_files_each_with_its_source(env, capsys, real_clip):
    rc, out, err = run(capsys, "index", "add", real_clip, real_clip, real_clip, "--id", "a", "--id", "b", "--id", "c",
                       "--title", "Dynamite", "--artist", "Taio Cruz", "--title", "Unheard Of 987",
                       "--artist", "Nobody", "--title", "Spring Day", "--artist", "방탄소년단")
    assert rc == 0, err
    assert "a (VA: rated (Spotify" in out and "b (VA: predicted from audio; not in" in out and "c (VA: rated (PMEmo" in out
    songs = index_reading.open_index(env.index).songs.set_index("song_id")
    assert list(songs.loc[["a", "b", "c"], "va_source"]) == ["spotify", "predicted", "pmemo"]
    assert np.isnan(songs.loc["b", "true_valence"]) and songs.loc["c", "true_valence"] == pytest.approx(0.575)


def test_cli_add_refuses_an_ambiguous_match(env, capsys, real_clip):
    before = len(index_reading.open_index(env.index))
    rc, _, err = run(capsys, "index", "add", real_clip, "--title", "I Got the Keys", "--artist", "DJ Khaled")
    one_line_error(rc, err, "DJ Khaled - I Got the Keys", "2 songs of PMEmo", "--valence/--arousal", "--no-lookup")
    assert len(index_reading.open_index(env.index)) == before  # nothing added
    rc, _, err = run(capsys, "index", "add", real_clip, "--title", "I Got the Keys", "--artist", "DJ Khaled",
                     "--no-lookup")
    assert rc == 0, err


def test_cli_add_without_the_rating_files_warns_and_goes_on(env, capsys, real_clip, monkeypatch, tmp_path):
    mirror = config.data_root()
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "spotify").symlink_to(mirror / "spotify")  # the Spotify snapshot only: no PMEmo
    monkeypatch.setenv("IMUSE_DATA", str(partial))
    rc, out, err = run(capsys, "index", "add", real_clip, "--id", "sp", "--title", "Dynamite", "--artist", "Taio Cruz")
    assert rc == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imuse: warning: rated VA not looked up in PMEmo: ")
    assert "pmemo/static_va.json: missing" in lines[0]
    assert _song(env.index, "sp").va_source == "spotify"  # the other source still answers
    monkeypatch.setenv("IMUSE_DATA", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    rc, out, err = run(capsys, "index", "add", real_clip, "--id", "none", "--title", "I Feel It Coming",
                       "--artist", "The Weeknd")
    assert rc == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imuse: warning: rated VA not looked up in PMEmo or the Spotify")
    assert "pmemo/static_va.json: missing" in lines[0] and "spotify/top_hits_2000_2019.csv: missing" in lines[0]
    assert "(VA: predicted from audio)" in out and _song(env.index, "none").va_source == "predicted"


def test_add_songs_takes_a_source_per_song(tmp_path, monkeypatch, query_image):
    """Rated and predicted songs added in one transaction: each stored and ranked with its own VA,
    in SQLite and in the memory-mapped arrays alike."""
    monkeypatch.setattr(index_arrays, "ARRAYS_MIN", 10)
    model = fk.make_model(factorised=True)
    catalog, sf_, images, if_ = rated_catalog()
    path = index_building.build_index(model, tmp_path / "big.sqlite", catalog, sf_, images, if_, progress=False)
    clips = [fk.write_tone(tmp_path / f"t{i}.wav", 300 + 90 * i) for i in range(3)]
    index_building.add_songs(path, model, clips, song_ids=["p", "r", "s"], rated_va=[None, (0.9, 0.1), (0.2, 0.3)],
                             va_source=["predicted", "pmemo", "spotify"])
    mapped = index_reading.open_index(path)
    assert isinstance(mapped.song_va, np.memmap)
    songs = mapped.songs.set_index("song_id")
    assert list(songs.loc[["p", "r", "s"], "va_source"]) == ["predicted", "pmemo", "spotify"]
    from_sql = index_reading.ranking_va(mapped.songs)
    assert np.array_equal(mapped.song_va, from_sql[0]) and np.array_equal(mapped.song_rated, from_sql[1])
    pos = {sid: i for i, sid in enumerate(mapped.songs.song_id)}
    assert mapped.song_va[pos["r"]] == pytest.approx((0.9, 0.1)) and not mapped.song_rated[pos["p"]]
    assert mapped.song_va[pos["p"]] == pytest.approx(tuple(songs.loc["p", ["valence", "arousal"]]))
    for va, source, words in [([None], ["pmemo"], "without a rated VA"), ([(0.5, 0.5)], ["predicted"], "needs its source"),
                              ([(0.5, 0.5)], ["user", "user"], "one per song")]:
        with pytest.raises(ImuseError, match=words):
            index_building.add_songs(path, model, clips[:1], song_ids=["x"], rated_va=va, va_source=source)
