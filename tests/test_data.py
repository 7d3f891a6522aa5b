"""The data layer on the real mirror, and its errors on missing or bad input."""

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from imuse_lib import data
from imuse_lib.cli import main
from imuse_lib.errors import DataError


def test_images(mirror):
    images = data.load_images()
    assert len(images) == 900 and images.image_id.is_unique
    assert images.valence.between(0, 1).all() and images.arousal.between(0, 1).all()
    # the published ranges: valence 1.11-6.49, arousal 1.69-5.72 on 1-7
    assert images.valence_raw.min() == pytest.approx(1.11, abs=0.01)
    assert images.arousal_raw.max() == pytest.approx(5.72, abs=0.01)
    assert set(images.category) == {"Animal", "Object", "Person", "Scene"}
    assert not images.image_id.str.endswith(" ").any()
    assert all(p.exists() for p in images.path)
    np.testing.assert_allclose(images.valence, (images.valence_raw - 1) / 6)


def test_minmax_scale_spans_unit_interval(mirror):
    images = data.load_images(scale="minmax")
    assert images.valence.min() == 0 and images.valence.max() == 1


def test_catalog(mirror):
    catalog = data.load_catalog()
    assert len(catalog) == 500 and catalog.song_id.is_unique
    assert catalog.quadrant.value_counts().eq(125).all()
    assert catalog.valence.between(0, 1).all() and catalog.arousal.between(0, 1).all()
    assert (catalog.n_tags >= 1).all()
    agreement = data.quadrant_agreement(catalog)
    assert 0.8 < agreement <= 1.0  # the authors assigned quadrants from the same tags


def test_tag_va_is_mean_of_warriner_means(mirror):
    lex = data.load_lexicon().set_index("word")
    v, a, n = data.tag_va("happy; Cheerful ; notaword", lex.reset_index())
    assert n == 2
    assert v == pytest.approx(lex.loc[["happy", "cheerful"]].valence.mean())
    assert a == pytest.approx(lex.loc[["happy", "cheerful"]].arousal.mean())


def test_quadrants():
    assert list(data.quadrant_of([0.9, 0.1, 0.1, 0.9], [0.9, 0.9, 0.1, 0.1])) == ["Q1", "Q2", "Q3", "Q4"]


def test_spotify_selection_covers_the_plane_and_is_seeded(mirror):
    chosen = data.select_spotify_songs(500, seed=1)
    assert len(chosen) == 500 and chosen.key.is_unique
    assert chosen.equals(data.select_spotify_songs(500, seed=1))
    everything = data.load_spotify()
    # spread wider than the charts: the chosen songs' valence spread exceeds all songs'
    assert chosen.valence.std() > everything.valence.std()


def test_pmemo(mirror):
    pmemo = data.load_pmemo()
    assert len(pmemo) == 767 and pmemo.valence.between(0, 1).all()


def test_verify_real_mirror(mirror):
    report = data.verify()
    assert (report.verified == report.files).all(), report.problem.tolist()
    assert report.files.sum() == len(data.registry())


def test_missing_mirror_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("IMUSE_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"oasis/OASIS\.csv: missing .*IMUSE_DATA"):
        data.load_images()


def test_corrupt_image_fails_its_checksum(fake_root):
    victim = fake_root / "oasis" / "images" / "Acorns 1.jpg"
    victim.unlink()
    victim.write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(DataError, match=r"Acorns 1\.jpg: checksum mismatch"):
        data.locate("oasis/images/Acorns 1.jpg")
    report = data.verify(["oasis"])
    assert report.verified[0] == 900 and "Acorns 1.jpg" in report.problem[0]


def test_csv_with_missing_column(tmp_path):
    bad = tmp_path / "OASIS.csv"
    bad.write_text("Theme,Category,Source,Valence_mean\nA,Object,Pixabay,4.0\n")
    with pytest.raises(DataError, match=r"OASIS\.csv: missing column\(s\) Arousal_mean"):
        data.read_csv_checked(bad, ["Theme", "Valence_mean", "Arousal_mean"])


def test_cr_only_line_endings_and_latin1(tmp_path):
    odd = tmp_path / "odd.csv"
    odd.write_bytes("Theme,Valence_mean\rCaf\xe9 1 ,4.5\r".encode("latin-1"))
    frame = data.read_csv_checked(odd, ["Theme", "Valence_mean"])
    assert frame.Theme[0] == "Café 1 " and frame.Valence_mean[0] == 4.5


def test_out_of_range_rating(tmp_path):
    frame = pd.DataFrame({"Valence_mean": [4.0, 7.5]})
    with pytest.raises(DataError, match=r"ratings\.csv: column Valence_mean has 1 value\(s\) outside \[1.0, 7.0\]"):
        data.check_range(tmp_path / "ratings.csv", frame, "Valence_mean", 1.0, 7.0)


def test_fetch_uses_pooch_with_the_registry_checksum(tmp_path, monkeypatch, mirror):
    monkeypatch.setenv("IMUSE_CACHE", str(tmp_path))
    calls = []

    def fake_download(url, output_file, pooch_obj):  # pooch's downloader signature, no network
        calls.append(url)
        shutil.copy(mirror / "spotify" / "top_hits_2000_2019.csv", output_file)

    [path] = data.fetch("spotify", downloader=fake_download)
    assert calls and calls[0].startswith("https://")
    assert path == tmp_path / "downloads" / "spotify" / "top_hits_2000_2019.csv"
    # downloaded files are found when the mirror is absent
    monkeypatch.setenv("IMUSE_DATA", str(tmp_path / "no-mirror"))
    assert data.locate("spotify/top_hits_2000_2019.csv") == path


def test_cli_exports(tmp_path, mirror):
    out = tmp_path / "pairs.csv"
    assert main(["pairs", "--seed", "1", "--split", "cold", "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["image_id", "song_id", "similarity", "group", "split"]
    assert len(frame) == 13_500 and set(frame.split) == {"train", "val", "test", "none"}
    assert main(["data", "catalog", "--out", str(tmp_path / "c.csv")]) == 0
    assert list(pd.read_csv(tmp_path / "c.csv").columns) == ["song_id", "artist", "title", "quadrant", "valence", "arousal"]
    assert main(["data", "images", "--out", str(tmp_path / "i.csv")]) == 0
    assert list(pd.read_csv(tmp_path / "i.csv").columns) == ["image_id", "theme", "category", "valence", "arousal"]


def test_cli_error_is_one_line_with_nonzero_exit(tmp_path):
    env_root = tmp_path / "nowhere"
    proc = subprocess.run([sys.executable, "-m", "imuse_lib", "data", "images", "--out", str(tmp_path / "x.csv")],
                          capture_output=True, text=True, env={"IMUSE_DATA": str(env_root), "PATH": "/usr/bin:/bin",
                                                               "IMUSE_CACHE": str(tmp_path / "c")})
    assert proc.returncode == 2
    assert proc.stderr.startswith("imuse: error: oasis/OASIS.csv: missing") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.csv").exists()
