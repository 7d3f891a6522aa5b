"""Every command under hostile but ordinary input: a table of bad inputs, each run through
``imuse`` in-process, must give exit 2, ONE line ``imuse: error: ...`` naming the value or
file (the expected phrase: anything else counts as a misleading message), no traceback,
and leave every file as it was (sha256 of the data, index, model and outputs before and
after; the data mirror by size and mtime). Devices, FIFOs and symlinks are made inside
tmp_path only. The tally printed at the end (``-s``) is the issue's closing-note count.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from imuse_lib import cli, config, recommend, training
from imuse_lib import deployed
from imuse_lib.index import building as index_building

import recommend_fakes as fk


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A saved joint model (default model), its index of the fake catalog, and hostile files."""
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("IMUSE_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("SPOTIPY_CLIENT_ID", raising=False)
    monkeypatch.delenv("SPOTIPY_CLIENT_SECRET", raising=False)
    model = fk.make_model(factorised=False)
    ckpt = training.save_model(tmp_path / "model.pt", model.net, model.meta)
    monkeypatch.setattr(training, "default_model_path", lambda: ckpt)
    fakes = {"image": fk.image_backbone, "audio": fk.audio_backbone}
    monkeypatch.setattr(deployed.DeployedModel, "_build", lambda self, which: fakes[which]())
    catalog, sf_, images, if_ = fk.make_catalog()
    index = index_building.build_index(deployed.load_deployed(), None, catalog, sf_, images, if_, progress=False)

    t = tmp_path
    fk.write_image(t / "photo.jpg")
    (t / "empty.png").write_bytes(b"")
    (t / "notes.jpg").write_text("not an image at all\n" * 20)
    (t / "notes.mp3").write_text("hello, this is text\n" * 50)
    (t / "folder").mkdir()
    Image.new("L", (20000, 1)).save(t / "wide.png")  # 99 bytes, 4 GB once resized
    jpg = (t / "photo.jpg").read_bytes()
    (t / "truncated.jpg").write_bytes(jpg[: len(jpg) // 3])
    os.symlink(t / "loop_b", t / "loop_a")
    os.symlink(t / "loop_a", t / "loop_b")
    os.symlink(t / "photo.jpg", t / "link.csv")
    os.mkfifo(t / "fifo")
    try:
        os.mknod(t / "full", stat.S_IFCHR | 0o666, os.makedev(1, 7))  # a /dev/full of our own
    except PermissionError:
        (t / "full").write_text("mknod needs root; a plain file stands in\n")
    fk.write_tone(t / "tone.wav", 440)
    fk.write_tone(t / "tone2.wav", 550)
    wave = np.sin(np.arange(16000) / 3).astype(np.float32) * 0.3
    sf.write(t / "cancel.wav", np.stack([wave, -wave], 1), 16000)
    sf.write(t / "silent.wav", np.zeros(16000, np.float32), 16000)
    (t / "songs.csv").write_text("artist,title\nAdele,Hello\n")
    (t / "binary.csv").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    (t / "bad.json").write_text("{not json")
    (t / "out.txt").write_text("a file, not a folder\n")
    # round two (issue 23)
    os.mkfifo(t / "fifo.npz")
    os.mkfifo(t / "fifo.pt")
    (t / "random.pt").write_bytes(bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)))
    buf = __import__("io").BytesIO()
    np.savez(buf, header=np.array('{"format": "imuse-va-model"}'), image_w=np.zeros((8, 2)))
    (t / "truncated.npz").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    crops = dict(model.meta, audio_features={"spec": {"eval_crops": 10**9}})
    training.save_model(t / "crops.pt", model.net, crops)
    (t / "index_copy.sqlite").write_bytes(Path(index).read_bytes())
    os.symlink(config.data_root() / "oasis" / "OASIS.csv", t / "to_oasis.csv")
    (t / "acq_in").mkdir()
    (t / "acq_in" / "catalog.csv").write_text("artist,title\nAdele,Hello\n")
    (t / "acq_old").mkdir()
    (t / "acq_old" / "catalog.csv").write_bytes(b"song_id,artist\n\xff\xfe\x00garbage\x00\n" * 3)
    (t / "acq_abs").mkdir()
    (t / "acq_abs" / "catalog.csv").write_text(",".join(["song_id", "artist", "title", "quadrant", "valence",
        "arousal", "energy", "features_source", "spotify_id", "youtube_id", "youtube_title", "chorus_start",
        "chorus_method", "duration", "path"]) + "\nS1,a,b,Q1,0.5,0.5,0.5,s,x,y,z,0,m,30,/etc/passwd\n")
    sf.write(t / "nan.wav", np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    sf.write(t / "huge.wav", np.full(16000, 1e30, np.float32) * np.sin(np.arange(16000)), 16000, subtype="FLOAT")
    (t / "undecodable").mkdir()
    fk.write_tone(t / "undecodable" / "tmp.wav", 440)
    os.rename(os.fsencode(t / "undecodable" / "tmp.wav"), os.fsencode(t / "undecodable") + b"/caf\xe9.wav")
    (t / "store" / "features" / "k1").mkdir(parents=True)
    (t / "store" / "features" / "k1" / "meta.json").write_bytes(b"\xff\xfe{garbage")
    hostile_indexes(t, Path(index))
    return t, index


def one_write_wal(db: Path, sql: str) -> bytes:
    """The ``-wal`` of ``db`` after one committed write (as a killed writer leaves it); the
    write is then checkpointed into ``db``."""
    import sqlite3

    from imuse_lib.index import files as index_files

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN IMMEDIATE")
    if conn.execute("PRAGMA application_id").fetchone()[0]:
        index_files.stamp_write(conn)
    conn.execute(sql)
    conn.execute("COMMIT")
    wal = Path(f"{db}-wal").read_bytes()
    conn.close()
    return wal


def hostile_indexes(t: Path, index: Path) -> None:
    """Song indexes in ``t/idx`` that must be refused, each unchanged (issue 23, items 1, 4-8)."""
    import sqlite3

    from imuse_lib.index import files as index_files

    d = t / "idx"
    d.mkdir()
    data = index.read_bytes()

    def copy(name: str, sql: str = "") -> Path:
        path = d / name
        path.write_bytes(data)
        if sql:
            with sqlite3.connect(path) as conn:
                conn.executescript(sql)
            conn.close()
        return path

    # another database's -wal beside the index (the issue: `index list` replayed it, 1.7 MB -> 8 kB)
    other = d / "other.sqlite"
    foreign = one_write_wal(other, "CREATE TABLE t (x); INSERT INTO t VALUES (1)".split(";")[0])
    copy("foreign.sqlite")
    (d / "foreign.sqlite-wal").write_bytes(foreign)
    other.unlink()
    (d / "garbage.sqlite-wal").write_bytes(b"\x00junk" * 100)
    copy("garbage.sqlite")
    copy("view.sqlite", "CREATE TABLE songs_real AS SELECT * FROM songs; DROP TABLE songs; "
                        "CREATE VIEW songs AS SELECT a.* FROM songs_real a, songs_real b, songs_real c;")
    copy("nometa.sqlite", "DROP TABLE meta;")
    copy("extra.sqlite", "CREATE TRIGGER t AFTER INSERT ON songs BEGIN DELETE FROM images; END;")
    (d / "truncated.sqlite").write_bytes(data[: len(data) // 3])
    (d / "zeroed.sqlite").write_bytes(bytes(len(data)))
    flipped = bytearray(data)
    for at in range(2 * 4096, len(flipped), 4096):  # every b-tree page's header after page 2
        flipped[at + 3:at + 5] = b"\xff\xff"  # an impossible cell count
    (d / "bitflip.sqlite").write_bytes(bytes(flipped))
    dim = int(index_files.read_meta(index)["music_dim"])
    copy("nan.sqlite")
    with sqlite3.connect(d / "nan.sqlite") as conn:
        conn.execute("UPDATE songs SET vector = ? WHERE song_id = 'S0001'",
                     (np.full(dim, np.nan, np.float32).tobytes(),))
    conn.close()
    generation = index_files.read_meta(index)["generation"]
    copy("fifoarr.sqlite")
    (d / "fifoarr.sqlite.arrays" / generation).mkdir(parents=True)
    os.mkfifo(d / "fifoarr.sqlite.arrays" / generation / "song_ids.npy")


def cases(t: Path, index: Path) -> list[tuple]:
    """(argv, phrase the one-line error must contain[, environment variables set for the run])."""
    photo, tone, idx, d = t / "photo.jpg", t / "tone.wav", ["--index", index], t / "idx"
    mirror = config.data_root()
    undecodable = os.fsdecode(os.fsencode(t / "undecodable") + b"/caf\xe9.wav")
    return [
        # round two (issue 23): outputs never replace inputs
        (["data", "catalog", "--out", mirror / "4q" / "catalog_500.csv"], "inside the data mirror"),
        (["data", "images", "--out", mirror / "oasis" / "OASIS.csv"], "inside the data mirror"),
        (["pairs", "--out", t / "to_oasis.csv", "--follow-symlinks"], "inside the data mirror"),
        (["pairs", "--out", index], "inside the song index folder"),
        (["pairs", "--out", t / "index_copy.sqlite"], "is a song index"),
        (["pairs", "--out", t / "model.pt"], "model or array archive"),
        (["data", "images", "--out", t / "truncated.npz"], "model or array archive"),
        (["acquire", t / "acq_in" / "catalog.csv", "--out", t / "acq_in"], "is this command's input"),
        (["acquire", t / "songs.csv", "--out", "-"], "not standard output"),
        (["export", "onnx", "--out", "-", "--no-check"], "not standard output"),
        (["export", "onnx", "--out", t / "out.txt", "--no-check"], "is a file, not a folder"),
        (["acquire", t / "songs.csv", "--out", mirror / "acquired"], "inside the data mirror"),
        # hangs: FIFOs where a model is read, an unreachable Ray cluster
        (["recommend", photo, "--model", t / "fifo.npz"], "FIFO"),
        (["recommend", photo, "--model", t / "fifo.pt"], "FIFO"),
        (["index", "add", tone, "--engine", "ray", "--ray-address", "garbage:1", *idx], "unknown host"),
        # environment values: checked at use, one line naming the variable
        (["recommend", photo], "IMUSE_IMAGE_MEMORY_MB='lots' is not a number", {"IMUSE_IMAGE_MEMORY_MB": "lots"}),
        (["recommend", photo], "IMUSE_IMAGE_MEMORY_MB='-1' is out of range", {"IMUSE_IMAGE_MEMORY_MB": "-1"}),
        (["recommend", photo], "IMUSE_IMAGE_MEMORY_MB='inf' is out of range", {"IMUSE_IMAGE_MEMORY_MB": "inf"}),
        (["recommend-images", tone], "IMUSE_MAX_AUDIO_SECONDS='nan' is out of range",
         {"IMUSE_MAX_AUDIO_SECONDS": "nan"}),
        (["recommend-images", tone], "IMUSE_MAX_AUDIO_SECONDS='1e400' is out of range",
         {"IMUSE_MAX_AUDIO_SECONDS": "1e400"}),
        (["recommend-images", tone], "IMUSE_AUDIO_MEMORY_MB='0' is out of range", {"IMUSE_AUDIO_MEMORY_MB": "0"}),
        (["index", "list"], "must be a folder, but a file is there", {"IMUSE_CACHE": str(t / "out.txt")}),
        # budgets in bytes of decoded data
        (["recommend-images", tone], "over the 1 MiB budget", {"IMUSE_AUDIO_MEMORY_MB": "1"}),
        (["recommend", photo], "over the 1 MiB budget", {"IMUSE_IMAGE_MEMORY_MB": "1"}),
        # non-finite numbers never pass
        (["recommend-images", t / "nan.wav"], "non-finite samples"),
        (["recommend-images", t / "huge.wav"], "far past full scale"),
        (["index", "add", t / "huge.wav", *idx], "far past full scale"),
        # internal errors that were exit 1
        (["recommend", photo, "--model", t / "truncated.npz"], "truncated.npz: not a readable IMUSE checkpoint"),
        (["recommend", photo, "--model", t / "random.pt"], "random.pt: not a readable IMUSE checkpoint"),
        (["recommend-images", tone, "--model", t / "crops.pt", *idx], "eval_crops is 1000000000"),
        (["acquire", t / "songs.csv", "--out", t / "acq_old", "--features", "snapshot"], "damaged acquisition catalog"),
        (["acquire", t / "songs.csv", "--out", t / "acq_abs", "--features", "snapshot"], "is not inside"),
        (["index", "add", tone, "--title", "caf\udce9", *idx], "not UTF-8"),
        (["index", "add", undecodable, *idx], "not UTF-8"),
        (["features", "--list"], "not UTF-8 text", {"IMUSE_CACHE": str(t / "store")}),
        # the index never changes under a reader (issue 23, items 1, 3-8): refused, named, left as it is
        (["index", "list", "--index", d / "foreign.sqlite"], "foreign.sqlite-wal: was written to another database"),
        (["recommend", photo, "--index", d / "foreign.sqlite"], "foreign.sqlite-wal: was written to another"),
        (["index", "remove", "S0001", "--index", d / "foreign.sqlite"], "foreign.sqlite-wal: was written to"),
        (["index", "add", tone, "--index", d / "foreign.sqlite"], "foreign.sqlite-wal: was written to"),
        (["index", "build", "--index", d / "foreign.sqlite"], "was written to another database"),
        (["index", "list", "--index", d / "garbage.sqlite"], "garbage.sqlite-wal: is not a SQLite write-ahead log"),
        (["index", "list", "--index", d / "view.sqlite"], "its view 'songs' is not in the song index schema"),
        (["recommend", photo, "--index", d / "view.sqlite"], "is not in the song index schema"),
        (["index", "list", "--index", d / "extra.sqlite"], "its trigger 't' is not in the song index schema"),
        (["index", "list", "--index", d / "nometa.sqlite"], "index build --replace-broken"),
        (["index", "build", "--index", d / "nometa.sqlite"], "pass --replace-broken"),
        (["index", "list", "--index", d / "truncated.sqlite"], "index build --replace-broken"),
        (["index", "build", "--index", d / "truncated.sqlite"], "pass --replace-broken"),
        (["index", "list", "--index", d / "zeroed.sqlite"], "index build --replace-broken"),
        (["index", "build", "--index", d / "zeroed.sqlite"], "pass --replace-broken"),
        (["index", "list", "--index", d / "bitflip.sqlite"], "index build --replace-broken"),
        (["index", "build", "--index", d / "bitflip.sqlite"], "bitflip.sqlite: exists and is not a sound"),
        (["index", "list", "--index", d / "nan.sqlite"], "songs S0001: vector holds a value that is not a finite"),
        (["recommend", photo, "--index", d / "nan.sqlite"], "nan.sqlite: the song index stores values that are not"),
        (["recommend", photo, "--index", d / "fifoarr.sqlite"], "song_ids.npy: is a FIFO"),
        (["index", "list", "--index", d / "fifoarr.sqlite"], "song_ids.npy: is a FIFO"),

        # recommend
        (["recommend", t / "missing.jpg"], "missing.jpg: file not found"),
        (["recommend", t / "empty.png"], "empty file"),
        (["recommend", t / "notes.jpg"], "not an image file"),
        (["recommend", t / "folder"], "is a directory"),
        (["recommend", t / "wide.png"], "budget"),
        (["recommend", t / "loop_a"], "symbolic link loop"),
        (["recommend", t / "fifo"], "FIFO"),
        (["recommend", t / "full"], "device" if stat.S_ISCHR(os.stat(t / "full").st_mode) else "not an image"),
        (["recommend", t / "truncated.jpg"], "truncated"),
        (["recommend", photo, "--top", "0"], "--top: 0 is out of range"),
        (["recommend", photo, "--top", "1000000000"], "--top: 1000000000 is out of range"),
        (["recommend", photo, "--threads", "100000"], "--threads: 100000 is out of range"),
        (["recommend", photo, "--threads", "many"], "--threads: expected an integer"),
        (["recommend", photo, "--model", t / "nomodel.pt"], "no trained model"),
        (["recommend", photo, "--model", t / "folder"], "is a directory"),
        (["recommend", photo, "--model", t / "notes.jpg"], "not a readable IMUSE checkpoint"),
        (["recommend", photo, "--index", t / "notes.jpg"], "not an IMUSE song index"),
        (["recommend", photo, "--index", t / "fifo"], "FIFO"),
        (["recommend", photo, "--index", t / "nowhere.sqlite"], "no song index there"),
        # recommend-images
        (["recommend-images", t / "notes.mp3"], "is a text file, not audio"),
        (["recommend-images", photo], "is an image file (JPEG), not audio"),
        (["recommend-images", t / "cancel.wav"], "cancel out"),
        (["recommend-images", t / "silent.wav"], "silent clip"),
        (["recommend-images", tone, "--max-audio-seconds", "0.5"], "--max-audio-seconds: 0.5 is out of range"),
        (["recommend-images", tone, "--top", "-3"], "--top: -3 is out of range"),
        # index add / remove / list / build
        (["index", "add", tone, "--title", "", *idx], "is empty"),
        (["index", "add", tone, "--title", "a\tb", *idx], "control character"),
        (["index", "add", tone, "--artist", "\x1b[31mred", *idx], "control character"),
        (["index", "add", tone, "--title", "line\nbreak", *idx], "control character"),
        (["index", "add", tone, "--id", "", *idx], "is empty"),
        (["index", "add", tone, "--title", "x" * 300, *idx], "300 characters"),
        (["index", "add", tone, "--id", "S0001", *idx], "already in the index"),
        (["index", "add", t / "notes.mp3", *idx], "is a text file"),
        (["index", "add", tone, t / "tone2.wav", "--title", "a", "--title", "b", "--title", "c", *idx],
         "3 --title value(s) for 2"),
        (["index", "remove", "no-such-song", *idx], "nothing removed"),
        (["index", "remove", "", *idx], "is empty"),
        (["index", "list", "--index", t / "missing.sqlite"], "no song index there"),
        (["index", "list", "--index", t / "folder"], "is a directory"),
        (["index", "build", "--index", t / "notes.jpg"], "refusing to replace"),
        (["index", "build", "--index", t / "folder"], "is a directory"),
        (["index", "build", "--index", t / "fifo"], "FIFO"),
        # pairs and data exports
        (["pairs", "--seed", "-1", "--out", t / "p.csv"], "--seed: -1 is out of range"),
        (["pairs", "--seed", "99999999999", "--out", t / "p.csv"], "out of range"),
        (["pairs", "--out", t / "folder"], "is a directory"),
        (["pairs", "--out", t / "out.txt" / "p.csv"], "is a file, not a folder"),
        (["pairs", "--out", t / "link.csv"], "is a symbolic link"),
        (["pairs", "--out", t / "fifo"], "FIFO"),
        (["pairs", "--out", t / "full"], "character device" if stat.S_ISCHR(os.stat(t / "full").st_mode)
         else "wrote"),
        (["pairs", "--split", "bogus", "--out", t / "p.csv"], "invalid choice"),
        (["pairs", "--out", t / "loop_a", "--follow-symlinks"], "symbolic link loop"),
        (["data", "catalog", "--out", t / "folder"], "is a directory"),
        (["data", "images", "--out", t / "link.csv"], "is a symbolic link"),
        (["data", "images", "--out", ""], "not a file path"),
        # acquire
        (["acquire", t / "songs.csv", "--out", t / "out.txt"], "is a file, not a folder"),
        (["acquire", t / "missing.csv", "--out", t / "acq"], "song list not found"),
        (["acquire", t / "binary.csv", "--out", t / "acq"], "binary.csv"),
        (["acquire", t / "songs.csv", "--out", t / "acq", "--limit", "0"], "--limit: 0 is out of range"),
        (["acquire", t / "songs.csv", "--out", t / "acq", "--clip-seconds", "-5"], "--clip-seconds: -5"),
        (["acquire", t / "songs.csv", "--out", t / "acq", "--sample-rate", "0"], "--sample-rate: 0"),
        (["acquire", t / "songs.csv", "--out", t / "acq", "--min-repeat", "nan"], "--min-repeat: nan"),
        (["acquire", t / "songs.csv", "--out", t / "acq"], "Spotify credentials missing"),
        # features, train, evaluate
        (["features"], "give --image-backbone"),
        (["features", "--image-backbone", "mobilenet_v2", "--views", "-1"], "--views: -1 is out of range"),
        (["features", "--audio-backbone", "musicnn", "--seed", "-3"], "--seed: -3 is out of range"),
        (["train", "--epochs", "0"], "--epochs: 0 is out of range"),
        (["train", "--jobs", "0"], "--jobs: 0 is out of range"),
        (["train", "--seeds", "a,b"], "--seeds"),
        (["train", "--seeds", "-1"], "--seeds"),
        (["train", "--config", t / "missing.json"], "no such config file"),
        (["evaluate", "--n-boot", "-5"], "--n-boot: -5 is out of range"),
        (["evaluate", "--config", t / "bad.json"], "not valid JSON"),
        # --config goes through the command line's checks: file, key and what is wrong
        *[(["train", "--config", settings_file(t, name, text)], phrase) for name, text, phrase in BAD_SETTINGS],
        (["evaluate", "--config", settings_file(t, "n_boot", '{"n_boot": 0}')], "n_boot: expected an integer"),
    ]


# Settings files the command line's own checks refuse (issue 23, item 10): name, JSON, phrase.
BAD_SETTINGS = [
    ("seeds_text", '{"seeds": "012"}', "seeds_text.json: seeds: expected a non-empty list of integers"),
    ("seeds_negative", '{"seeds": [-1]}', "seeds_negative.json: seeds: expected a non-empty list"),
    ("seeds_nan", '{"seeds": [NaN]}', "seeds_nan.json: seeds: expected"),
    ("seeds_huge", '{"seeds": [1e309]}', "seeds_huge.json: seeds: expected"),
    ("seeds_empty", '{"seeds": []}', "seeds_empty.json: seeds: expected a non-empty list"),
    ("seeds_float", '{"seeds": [1.0]}', "seeds_float.json: seeds: expected"),
    ("epochs_bool", '{"epochs": true}', "epochs_bool.json: epochs: expected an integer from 1 to 10000, got true"),
    ("epochs_zero", '{"epochs": 0}', "epochs_zero.json: epochs: expected an integer from 1 to 10000"),
    ("jobs_text", '{"jobs": "2"}', "jobs_text.json: jobs: expected an integer from 1 to 64"),
    ("profile", '{"profile": "full"}', "profile.json: unknown setting(s) profile"),
    ("split", '{"splits": ["bogus"]}', "split.json: splits: unknown split 'bogus'"),
    ("backbone", '{"image_backbones": "mobilenet_v2"}', "backbone.json: image_backbones: expected a non-empty list"),
    ("device", '{"device": 3}', "device.json: device: expected a device name"),
    ("nested", "[" * 100_000 + "]" * 100_000, "nested.json: nested too deeply"),
    ("array", "[1, 2]", "array.json: expected a JSON object of settings"),
]


def settings_file(t: Path, name: str, text: str) -> Path:
    path = t / f"{name}.json"
    path.write_text(text)
    return path


def snapshot(root: Path) -> dict:
    """sha256 of every regular file under ``root`` (links and special files by their target / kind)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            out[rel] = "link->" + os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            out[rel] = f"mode {stat.S_IFMT(st.st_mode):o}" if not stat.S_ISDIR(st.st_mode) else "dir"
    return out


def mirror_state(root: Path) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def test_bad_inputs_table(world, capsys, mirror):
    t, index = world
    table = cases(t, index)
    assert len(table) >= 100
    mirror_before = mirror_state(mirror)
    problems, tracebacks, misleading, changed = [], 0, 0, 0
    for argv, phrase, *env in table:
        argv = [str(a) for a in argv]
        before = snapshot(t)
        saved = {k: os.environ.get(k) for k in (env[0] if env else {})}
        os.environ.update(env[0] if env else {})
        try:
            rc = cli.main(argv)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        out, err = capsys.readouterr()
        after = snapshot(t)
        lines = err.strip().splitlines()
        where = " ".join(a.replace(str(t), "T") for a in argv)
        if os.environ.get("IMUSE_SHOW_ERRORS"):
            print(f"{where!r:.90}\n    -> {err.strip().replace(str(t), 'T')}", file=sys.__stderr__)
        if "Traceback" in err:
            tracebacks += 1
            problems.append(f"{where}: traceback")
        if rc != 2 or len(lines) != 1 or not lines[0].startswith("imuse: error: ") or phrase not in lines[0]:
            misleading += 1
            problems.append(f"{where}: rc {rc}, expected {phrase!r} in one line, got {err.strip()!r}")
        if before != after:
            changed += 1
            diff = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            problems.append(f"{where}: changed on disk: {diff[:4]}")
    mirror_changed = mirror_state(mirror) != mirror_before
    print(f"\nHOSTILE: {len(table)} bad inputs, {tracebacks} tracebacks, {misleading} misleading or not one "
          f"line, {changed} changed files on disk, data mirror changed: {mirror_changed}")
    assert not problems, "\n".join(problems)
    assert not mirror_changed


def test_debug_shows_the_traceback(world, capsys):
    t, _ = world
    with pytest.raises(Exception):
        cli.main(["--debug", "recommend", str(t / "notes.jpg")])
    capsys.readouterr()


def test_unexpected_errors_are_one_line_with_a_hint(world, capsys, monkeypatch):
    t, _ = world
    monkeypatch.setattr(recommend.Recommender, "load", classmethod(lambda cls, *a: 1 / 0))
    assert cli.main(["recommend", str(t / "photo.jpg")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: ZeroDivisionError" in err and "--debug" in err


def test_symlink_is_written_through_only_when_asked(world, capsys):
    t, _ = world
    target = t / "target.csv"
    target.write_text("old\n")
    (t / "via.csv").symlink_to(target)
    assert cli.main(["data", "catalog", "--out", str(t / "via.csv")]) == 2
    assert target.read_text() == "old\n"
    assert cli.main(["data", "catalog", "--out", str(t / "via.csv"), "--follow-symlinks"]) == 0
    assert (t / "via.csv").is_symlink() and target.read_text().startswith("song_id,artist,title")


def test_control_characters_from_old_files_are_printed_escaped(world, capsys):
    """Rows written before validation existed (or by hand) print escaped, never raw."""
    import sqlite3

    t, index = world
    with sqlite3.connect(index) as conn:
        conn.execute("UPDATE songs SET title = ? WHERE song_id = 'S0001'", ("evil\x1b[2J\ttitle",))
    conn.close()
    assert cli.main(["index", "list", "--index", str(index)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "evil\\x1b[2J\\ttitle"[:24] in out


def test_top_beyond_the_index_is_said(world, capsys):
    t, _ = world
    assert cli.main(["recommend", str(t / "photo.jpg"), "--top", "500", "--json"]) == 0
    out, err = capsys.readouterr()
    assert len(json.loads(out)) == 40 and "--top 500, but the index holds 40 songs" in err


def test_config_root_untouched(world):
    """The repository's own cache and results are never written by these tests."""
    assert str(config.cache_dir()).startswith(str(world[0]))


# --------------------------------------------------------------------------- round two (issue 23)


@pytest.mark.parametrize("value", ["lots", "nan", "-1", "inf", ""])
def test_help_never_tracebacks_on_bad_environment(value):
    """Environment values are read where they are used: a bad one never breaks `--help`."""
    import subprocess

    env = dict(os.environ, IMUSE_IMAGE_MEMORY_MB=value, IMUSE_MAX_AUDIO_SECONDS=value, IMUSE_AUDIO_MEMORY_MB=value)
    done = subprocess.run([sys.executable, "-m", "imuse_lib", "--help"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr and "usage: imuse" in done.stdout


def test_out_dash_is_standard_output(world, capsys):
    t, _ = world
    cwd = os.getcwd()
    os.chdir(t)
    try:
        assert cli.main(["data", "catalog", "--out", "-"]) == 0
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    assert out.startswith("song_id,artist,title") and len(out.splitlines()) == 501
    assert "wrote 500 songs to standard output" in err and not (t / "-").exists()


def test_a_signal_exits_128_plus_n_even_when_python_wraps_it(world, capsys, monkeypatch):
    """SIGTERM raised inside `__set_name__` came out as RuntimeError, exit 1, "please report it"."""
    import signal

    def command(args):
        class Owner:
            class Probe:
                def __set_name__(self, owner, name):
                    os.kill(os.getpid(), signal.SIGTERM)
            attr = Probe()
        return 0

    monkeypatch.setattr("imuse_lib.cli.data.cmd_verify", command)
    before = signal.getsignal(signal.SIGTERM)
    try:
        assert cli.main(["data", "verify"]) == 128 + signal.SIGTERM
    finally:
        signal.signal(signal.SIGTERM, before)
    err = capsys.readouterr().err
    assert err.strip() == "imuse: terminated by SIGTERM"


def test_library_warnings_stay_out_of_normal_output(world, capsys, monkeypatch):
    """PIL's "Corrupt EXIF data", numpy's overflow: not around a normal recommendation."""
    import warnings

    t, _ = world

    def noisy(args):
        warnings.warn("Corrupt EXIF data", UserWarning)  # stands in for PIL's, from a library file
        return 0

    noisy.__code__ = noisy.__code__.replace(co_filename=np.__file__)
    monkeypatch.setattr("imuse_lib.cli.data.cmd_verify", noisy)
    assert cli.main(["data", "verify"]) == 0
    assert "EXIF" not in capsys.readouterr().err


def test_acquire_does_not_echo_a_huge_field(world, capsys):
    t, _ = world
    (t / "huge.csv").write_text("artist,title\nAdele," + "x" * 1_000_000 + "\n")
    assert cli.main(["acquire", str(t / "huge.csv"), "--out", str(t / "acq_huge"), "--features", "snapshot",
                     "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert len(out) + len(err) < 2000 and "1,000,000 characters" in out
    assert (t / "acq_huge" / "skipped.csv").stat().st_size < 2000


def test_device_must_be_cpu_or_cuda():
    from imuse_lib.errors import ModelMismatchError

    for bad in ("meta", "garbage", "mps:0"):
        with pytest.raises(ModelMismatchError, match="device"):
            training.resolve_device(bad)
    assert training.resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize("side", ["image_side", "music_side"])
def test_a_nan_prediction_is_never_printed(world, capsys, monkeypatch, side):
    """"valence nan" was printed with exit 0; now one line naming the input, exit 2."""
    t, _ = world
    from imuse_lib.deployed import DeployedModel

    real = getattr(DeployedModel, side)

    def poisoned(self, feats):
        return tuple(None if x is None else np.full_like(x, np.nan) for x in real(self, feats))

    monkeypatch.setattr(DeployedModel, side, poisoned)
    query = t / ("photo.jpg" if side == "image_side" else "tone.wav")
    rc = cli.main(["recommend" if side == "image_side" else "recommend-images", str(query)])
    out, err = capsys.readouterr()
    assert rc == 2 and "nan" not in out.lower() and err.count("\n") == 1
    assert f"{query}: the model's output for this input is not a finite number" in err
