"""First-chorus detection on constructed songs with a known structure, and on real 4Q clips."""

from __future__ import annotations

import numpy as np
import pytest

from imuse_lib.acquisition import chorus, youtube


def test_time_lag_matrix_definition():
    rng = np.random.default_rng(0)
    sim = rng.random((6, 6))
    lag = chorus.time_lag(sim)
    for row in range(6):
        for t in range(6):
            assert lag[row, t] == (sim[t, t - row] if t >= row else 0.0)


def test_self_similarity_range_and_diagonal():
    c = np.abs(np.random.default_rng(1).random((12, 40)))
    c /= c.max(0)
    sim = chorus.self_similarity(c)
    assert np.allclose(np.diag(sim), 1.0) and sim.min() >= 0.0 and np.allclose(sim, sim.T)


def test_synthetic_song_structure_is_known():
    y, sr, sections = chorus.synthetic_song(5)
    assert [s[0] for s in sections] == ["intro", "verse", "chorus", "verse", "chorus", "bridge", "chorus", "outro"]
    assert sections[-1][2] == pytest.approx(len(y) / sr, abs=0.01)
    assert chorus.first_chorus(sections) == sections[2][1]


def test_first_chorus_found_on_constructed_songs():
    # Held-out seeds (the detector's settings were chosen on seeds 100-139).
    result = chorus.agreement(range(0, 6), tolerance=2.0)
    assert result["agreement"] >= 5 / 6, result["table"]
    hits = result["table"][result["table"].hit]
    assert (hits.error.abs() < 2.0).all() and (result["table"].method == "repetition").all()


def test_detected_start_follows_the_structure():
    """Shifting the whole song by an added 10 s of intro shifts the detection by 10 s."""
    y, sr, sections = chorus.synthetic_song(3)
    pad = np.random.default_rng(0).standard_normal(10 * sr).astype(np.float32) * 0.05
    first = chorus.detect_chorus(y, sr).start
    shifted = chorus.detect_chorus(np.concatenate([pad, y]), sr).start
    assert abs(first - chorus.first_chorus(sections)) < 2.0
    assert shifted - first == pytest.approx(10.0, abs=1.0)


def test_no_repetition_falls_back_to_the_loudest_window():
    sr = 22050
    rng = np.random.default_rng(0)
    y = 0.01 * rng.standard_normal(60 * sr).astype(np.float32)
    y[35 * sr:45 * sr] *= 30  # a loud stretch, nothing repeated
    result = chorus.detect_chorus(y, sr, clip_length=10)
    assert result.method == "loudest" and result.repeats == 0
    assert result.start == pytest.approx(35.0, abs=0.2)


def test_clip_is_cut_inside_the_song():
    sr = 100
    y = np.arange(60 * sr, dtype=np.float32)
    assert chorus.cut_clip(y, sr, 10.0, 30.0)[0] == 10 * sr
    late = chorus.cut_clip(y, sr, 50.0, 30.0)
    assert len(late) == 30 * sr and late[-1] == y[-1]  # moved earlier to fit
    assert len(chorus.cut_clip(y[:20 * sr], sr, 5.0, 30.0)) == 20 * sr  # short song: whole


def test_runs_on_real_4q_clips(mirror):
    from imuse_lib import data

    catalog = data.load_catalog()
    for path in catalog.path.iloc[[0, 200, 400]]:
        y = youtube.decode_audio(path, 22050)
        result = chorus.detect_chorus(y, 22050, min_repeat=4.0, clip_length=10.0)
        duration = len(y) / 22050
        assert result.method in ("repetition", "loudest")
        assert 0.0 <= result.start < duration
        assert result.similarity.shape[0] == result.time_lag.shape[0] == len(result.coverage)
        assert len(chorus.cut_clip(y, 22050, result.start, 10.0)) == 10 * 22050


def test_first_chorus_found_on_collages_of_real_clips(mirror):
    from imuse_lib import data

    result = chorus.collage_agreement(data.load_catalog().path, n_songs=3, seed=1)
    assert result["agreement"] == 1.0, result["table"]


def test_collage_structure():
    sr = 1000
    clips = [np.full(25 * sr, k + 1, np.float32) for k in range(4)]
    y, _, sections = chorus.collage_song(clips, sr, seed=0)
    assert [s[0] for s in sections][:3] == ["intro", "verse", "chorus"]
    assert sections[-1][2] == pytest.approx(len(y) / sr)
    with pytest.raises(ValueError, match="four clips"):
        chorus.collage_song(clips[:3], sr, seed=0)
