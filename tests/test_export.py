"""`imuse export onnx` and the page's own code: the ONNX export checked against PyTorch on
real OASIS images, the song file, and the page's
preprocessing and ranking (book/_static/tryit/preprocess.js, run with Node) against PIL,
torchvision and ranking.rank_va."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imuse_lib import cli, data, export, media, recommend, report
from imuse_lib.errors import ExportError, ModelMismatchError
from imuse_lib.models.base import Backbone
from imuse_lib import image_path
from imuse_lib import image_view
from imuse_lib.index import editing as index_editing
from imuse_lib.index import files as index_files
from imuse_lib.index import reading as index_reading
from imuse_lib import ranking

import tryit_helpers as th

PREPROCESS_JS = th.PAGE_SOURCES / "preprocess.js"
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="Node.js runs the page's JavaScript here (apt-get install nodejs)")


# --------------------------------------------------------------------------- the export


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A real image path (MobileNetV2 + seeded factorised network), its index of the real
    catalog, and the page's assets exported and checked on 4 OASIS images."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("export")
    model = th.mobilenet_model()
    images = data.load_images().iloc[:12]
    index_path = th.random_index(model, tmp / "index.sqlite", data.load_catalog(), images)
    check = export.check_images(4)
    manifest = export.write_page_assets(tmp / "out", model, index_path, images=check)
    return model, index_path, tmp / "out", manifest, check


def test_export_matches_pytorch_on_real_images(exported):
    model, index_path, out, manifest, check = exported
    onnx_file = out / manifest["model_file"]
    assert onnx_file.name == f"model.{model.fingerprint[:16]}.onnx"
    result = manifest["check"]
    assert result["images"] == [p.name for p in check]
    assert result["max_abs_diff_onnx_vs_torch"] <= export.TOLERANCE
    assert result["max_abs_diff_torch_vs_recommend"] <= export.TOLERANCE
    # the file stands on its own: onnxruntime on a fresh crop gives what `imuse recommend` gives
    session = export.onnx_session(onnx_file)
    path = data.load_images().path.iloc[100]
    got = session.run(["va"], {"image": image_path.load_crop(path).unsqueeze(0).numpy()})[0][0]
    want = recommend.Recommender(model, index_reading.open_index(index_path)).image_point(path)[1]
    np.testing.assert_allclose(got, want, atol=export.TOLERANCE)
    assert np.ptp(np.array([session.run(["va"], {"image": image_path.load_crop(p).unsqueeze(0).numpy()})[0][0]
                            for p in check]), axis=0).min() > 0.01  # real, differing predictions


def test_onnx_file_is_valid_and_describes_itself(exported):
    import onnx

    model, _, out, manifest, _ = exported
    proto = onnx.load(str(out / manifest["model_file"]))
    onnx.checker.check_model(proto, full_check=True)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["imuse_fingerprint"] == model.fingerprint
    assert [i.name for i in proto.graph.input] == ["image"] and [o.name for o in proto.graph.output] == ["va"]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, image_view.CROP, image_view.CROP]
    assert {o.domain or "ai.onnx" for o in proto.opset_import} >= {"ai.onnx"}
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == export.OPSET


def test_song_file_holds_the_index_exactly(exported):
    model, index_path, out, manifest, _ = exported
    songs = json.loads((out / "songs.json").read_text(encoding="utf-8"))
    index = index_reading.open_index(index_path)
    assert songs["format"] == export.SONGS_FORMAT and songs["fingerprint"] == model.fingerprint
    assert songs["model_file"] == manifest["model_file"]
    assert songs["columns"] == ["song_id", "artist", "title", "valence", "arousal", "quadrant", "va_source"]
    rows = songs["songs"]
    assert [r[0] for r in rows] == list(index.songs.song_id)  # index order: the ranking's tie-break
    va = np.array([[r[3], r[4]] for r in rows], dtype=np.float32)
    assert np.array_equal(va, index.song_va)  # the page's Math.fround recovers the float32 values
    catalog = data.load_catalog().set_index("song_id")
    assert [r[5] for r in rows] == [catalog.quadrant[s] for s in index.songs.song_id]
    assert [r[6] for r in rows] == list(index.songs.va_source)  # where each song's VA comes from
    assert songs["max_image_pixels"] == media.MAX_IMAGE_PIXELS  # the page refuses what `imuse recommend` refuses
    assert (songs["resize"], songs["crop"]) == (256, 224)
    assert manifest["files"]["songs.json"]["bytes"] == (out / "songs.json").stat().st_size


def test_song_file_says_the_va_in_words_and_which_songs_are_rated(exported):
    out = exported[2]
    songs = json.loads((out / "songs.json").read_text(encoding="utf-8"))
    assert songs["va_words"] == report.va_words_spec()  # one home: report's rule, read by the page
    assert songs["va_predicted"] == index_files.PREDICTED  # the page counts the other songs as rated
    assert "quality" not in songs  # no profile given: no note, rather than a made-up one


def test_example_pictures_one_per_quadrant_as_their_original_files(exported):
    model, index_path, out, manifest, _ = exported
    songs = json.loads((out / "songs.json").read_text(encoding="utf-8"))
    examples = songs["examples"]
    chosen = recommend.example_images(export.N_EXAMPLES, protocol="paper")  # the untrained model has no split
    assert [e["name"] for e in examples] == list(chosen.image_id)
    assert sorted(e["quadrant"] for e in examples) == ["Q1", "Q2", "Q3", "Q4"]
    for e, path in zip(examples, chosen.path):
        assert (out / e["file"]).read_bytes() == Path(path).read_bytes()  # a click recommends for the OASIS file
        thumb = Image.open(out / e["thumbnail"])
        assert thumb.format == "JPEG" and max(thumb.size) == export.THUMBNAIL_PX == max(e["width"], e["height"])
        assert (out / e["thumbnail"]).stat().st_size < 30_000
        assert manifest["files"][e["file"]]["bytes"] == Path(path).stat().st_size
        assert data.quadrant_of(e["valence"], e["arousal"]) == e["quadrant"]
    assert sorted(p.name for p in (out / export.EXAMPLES_DIR).iterdir()) == sorted(
        Path(e[k]).name for e in examples for k in ("file", "thumbnail"))


def test_va_words_rule():
    assert report.va_words(0.643, 0.376) == "slightly pleasant and slightly calm"
    assert report.va_words(0.9, 0.1) == "clearly pleasant and clearly calm"
    assert report.va_words(0.2, 0.52) == "clearly unpleasant and neither excited nor calm"
    assert report.va_words(0.5, 0.5) == "neither pleasant nor unpleasant and neither excited nor calm"
    assert report.va_words(0.36, 0.8) == "slightly unpleasant and clearly excited"
    # each side of the centre as data.quadrant_of puts it (0.5 on the high side)
    for v, a in [(0.7, 0.7), (0.3, 0.7), (0.3, 0.3), (0.7, 0.3)]:
        q = str(data.quadrant_of(v, a))
        words = report.va_words(v, a)
        assert ("unpleasant" not in words) == (q in ("Q1", "Q4")) and ("calm" in words) == (q in ("Q3", "Q4"))


def _table2(folder: Path, rows: list[dict]) -> Path:
    import pandas as pd

    path = folder / "quick" / "table2.csv"
    path.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_measured_quality_comes_from_table2_or_not_at_all(tmp_path, monkeypatch):
    monkeypatch.setenv("IMUSE_RESULTS", str(tmp_path))
    assert export.measured_quality(None) is None and export.measured_quality("quick") is None  # no file: no note
    common = {"n_queries": 225, "n_candidates": 124, "nsg@10_lo": 0.2133, "nsg@10_hi": 0.3627}
    _table2(tmp_path, [{"config": "(none)", "split": "cold", "predictor": "image_agnostic", "nsg@10": 0.37772, **common},
                       {"config": "(none)", "split": "paper", "predictor": "image_agnostic", "nsg@10": 0.34, **common},
                       {"config": "deployed", "split": "cold", "predictor": "va_model", "nsg@10": 0.28940, **common}])
    q = export.measured_quality("quick")
    assert q == {"profile": "quick", "source": "results/quick/table2.csv", "split": "cold", "metric": "nsg@10",
                 "value": 0.289, "lo": 0.213, "hi": 0.363, "n_images": 225, "n_songs": 124, "image_agnostic": 0.378}
    # a table without the deployed model's row gives no note either
    (tmp_path / "quick" / "table2.csv").unlink()
    (tmp_path / "quick").rmdir()
    _table2(tmp_path, [{"config": "(none)", "split": "cold", "predictor": "image_agnostic", "nsg@10": 0.37, **common}])
    assert export.measured_quality("quick") is None


def test_export_with_a_profile_writes_the_quality_note(exported, tmp_path, monkeypatch):
    model, index_path, out, manifest, check = exported
    monkeypatch.setenv("IMUSE_RESULTS", str(tmp_path / "results"))
    _table2(tmp_path / "results", [{"config": "deployed", "split": "cold", "predictor": "va_model", "nsg@10": 0.3,
                                    "nsg@10_lo": 0.25, "nsg@10_hi": 0.35, "n_queries": 225, "n_candidates": 124}])
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    export.write_page_assets(copy, model, index_path, images=check, profile="quick")
    songs = json.loads((copy / "songs.json").read_text(encoding="utf-8"))
    assert songs["quality"]["value"] == 0.3 and songs["quality"]["image_agnostic"] is None


def test_songs_outside_the_catalog_have_no_quadrant():
    catalog = data.load_catalog()
    index = index_reading.SongIndex(path=Path("x"), meta={"fingerprint": "f"},
                                songs=catalog.iloc[:2][["song_id", "artist", "title"]].assign(
                                    song_id=[catalog.song_id.iloc[0], "my-own-song"],
                                    va_source=["allmusic-tags", "predicted"]),
                                song_va=np.array([[0.25, 0.5], [0.1, 0.9]], np.float32), song_vectors=None)
    rows = export.song_table(index)["songs"]
    assert rows[0][5] == catalog.quadrant.iloc[0] and rows[1][5] is None


def test_unchanged_export_is_reused_and_a_changed_index_is_not(exported, tmp_path):
    model, index_path, out, manifest, check = exported
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    onnx_file = copy / manifest["model_file"]
    mtime = onnx_file.stat().st_mtime_ns
    assert export.write_page_assets(copy, model, index_path, images=check) == manifest  # nothing redone
    changed = tmp_path / "index.sqlite"
    shutil.copyfile(index_path, changed)
    removed = index_reading.open_index(changed).songs.song_id.iloc[0]
    index_editing.remove_songs(changed, [removed])
    redone = export.write_page_assets(copy, model, changed, images=check)
    assert redone["n_songs"] == manifest["n_songs"] - 1 and redone["check"] == manifest["check"]
    assert onnx_file.stat().st_mtime_ns == mtime  # the model file is kept: only the songs changed
    songs = json.loads((copy / "songs.json").read_text(encoding="utf-8"))
    assert removed not in {r[0] for r in songs["songs"]}
    # a corrupted model file is noticed and exported again
    onnx_file.write_bytes(b"not onnx")
    again = export.write_page_assets(copy, model, changed, images=check)
    assert again["files"][manifest["model_file"]] == manifest["files"][manifest["model_file"]]


def test_check_catches_an_export_that_differs_from_pytorch(exported):
    model, index_path, out, manifest, check = exported
    tampered = th.mobilenet_model()
    with torch.no_grad():
        tampered.net.image_head[1].bias.add_(0.01)  # the module no longer matches the exported file
    with pytest.raises(ExportError, match=r"differs by .* \(ONNX vs PyTorch\)"):
        export.check_onnx(tampered, index_reading.open_index(index_path), out / manifest["model_file"], check[:1])


def test_joint_model_and_foreign_preprocessing_are_refused(exported):
    model = exported[0]
    from imuse_lib.network import IMUSENet

    with pytest.raises(ModelMismatchError, match="factorised"):
        image_path.image_pipeline(model.image_bb(), IMUSENet(1280, 16, factorised=False))
    odd = Backbone(name="odd", kind="image", dim=1280, weights={}, module=torch.nn.Identity(),
                   preprocessing={}, eval_transform=lambda img: img)
    with pytest.raises(ModelMismatchError, match="evaluation view"):
        image_path.image_pipeline(odd, model.net)


def test_cli_export_onnx(exported, tmp_path, capsys):
    model, index_path, out, manifest, check = exported
    model_path = tmp_path / "model.pt"
    from imuse_lib import training

    training.save_model(model_path, model.net, model.meta)  # the same fingerprint: the export is reused
    page = tmp_path / "page"
    shutil.copytree(out, page)
    code = cli.main(["export", "onnx", "--model", str(model_path), "--index", str(index_path), "--out", str(page),
                     "--check-images", str(len(check))])
    text = capsys.readouterr().out
    assert code == 0
    assert f"exported {manifest['model_label']} to {page}" in text
    assert f"check on {len(check)} OASIS images" in text and f"{manifest['model_file']}: 10." in text
    assert cli.main(["export", "onnx", "--index", str(index_path), "--check-images", "0",
                     "--model", str(model_path)]) == 2
    assert "--check-images must be at least 1" in capsys.readouterr().err


# --------------------------------------------------------------------------- the page's JavaScript


def _run_node(tmp_path: Path, script: str, payload) -> object:
    job = tmp_path / "job.json"
    job.write_text(json.dumps(payload))
    driver = tmp_path / "driver.js"
    driver.write_text(f"const pp = require({json.dumps(str(PREPROCESS_JS))});\n"
                      f"const fs = require('fs');\nconst job = JSON.parse(fs.readFileSync(process.argv[2]));\n"
                      + script)
    proc = subprocess.run([NODE, str(driver), str(job)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@needs_node
def test_page_preprocessing_is_pils_resize_and_crop_bit_for_bit(tmp_path):
    """preprocess.js's resizeCrop against torchvision Resize(256) + CenterCrop(224) on PIL:
    down- and up-scaling, odd sizes, extreme aspect ratios, crops on a .5 offset (Python's
    round half to even), images already at the output size, and real OASIS photographs."""
    rng = np.random.default_rng(0)
    pictures = []
    for w, h in [(500, 400), (400, 500), (256, 300), (300, 256), (224, 224), (1000, 37), (3001, 2001),
                 (257, 257), (513, 255), (1920, 1080), (256, 341), (7, 5)]:
        smooth = np.asarray(Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((w, h)))
        noise = rng.integers(-40, 40, (h, w, 3))
        pictures.append(Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8)))
    pictures += [Image.open(p).convert("RGB") for p in export.check_images(4)]
    jobs, want = [], []
    for i, img in enumerate(pictures):
        raw = tmp_path / f"img{i}.rgba"
        raw.write_bytes(np.asarray(img.convert("RGBA")).tobytes())
        jobs.append({"file": str(raw), "w": img.width, "h": img.height})
        want.append((image_path.load_crop(img).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    _run_node(tmp_path, """
const out = [];
for (const j of job) {
  const b = fs.readFileSync(j.file);
  const r = pp.resizeCrop(new Uint8Array(b.buffer, b.byteOffset, b.length), j.w, j.h, 256, 224);
  fs.writeFileSync(j.file + ".out", Buffer.from(r.rgb.buffer));
  fs.writeFileSync(j.file + ".chw", Buffer.from(r.chw.buffer));
  out.push(r.offset);
}
console.log(JSON.stringify(out));
""", jobs)
    for job, img, expected in zip(jobs, pictures, want):
        got = np.frombuffer(Path(job["file"] + ".out").read_bytes(), np.uint8).reshape(224, 224, 3)
        assert np.array_equal(got, expected), f"{img.size}: {np.count_nonzero(got != expected)} values differ"
        chw = np.frombuffer(Path(job["file"] + ".chw").read_bytes(), np.float32).reshape(3, 224, 224)
        assert np.array_equal(chw, image_path.load_crop(img).numpy())  # ToTensor's float32 division too


@needs_node
def test_page_ranking_is_rank_va(tmp_path):
    """preprocess.js's rank against ranking.rank_va: the same order (ties by position) and the
    same Eq. 1 values, on float32 VA with exact duplicates."""
    rng = np.random.default_rng(3)
    va = rng.random((500, 2)).astype(np.float32)
    va[100:110] = va[5]  # ties: the lower position must come first
    va[300] = va[7]
    queries = np.vstack([rng.random((20, 2)), va[[5, 7]]]).astype(np.float32)
    payload = {"va": [float(x) for x in va.ravel()], "queries": [[float(q[0]), float(q[1])] for q in queries]}
    got = _run_node(tmp_path, """
const va = Float64Array.from(job.va, Math.fround);
console.log(JSON.stringify(job.queries.map(([v, a]) => {
  const r = pp.rank(va, v, a, 15);
  return [r.top, r.top.map((i) => r.sim[i])];
})));
""", payload)
    for q, (top, sims) in zip(queries, got):
        pos, sim = ranking.rank_va(q, va, 15)
        assert top == pos.tolist()
        assert sims == sim.tolist()  # bit for bit


@needs_node
def test_page_va_words_are_report_va_words(tmp_path):
    """preprocess.js's vaWords and quadrant, with the words songs.json carries, against
    report.va_words and data.quadrant_of: on a grid and at the limits of each phrase."""
    spec = report.va_words_spec()
    edges = [spec["centre"] + s * limit for limit, _ in spec["degrees"] if limit is not None for s in (-1, 1)]
    values = sorted({*np.linspace(0, 1, 41).round(6).tolist(), *edges, *(np.nextafter(e, 0.0) for e in edges)})
    points = [[v, a] for v in values for a in values[::3]]
    got = _run_node(tmp_path, """
console.log(JSON.stringify(job.points.map(([v, a]) => [pp.vaWords(job.spec, v, a), pp.quadrant(job.spec, v, a)])));
""", {"spec": spec, "points": points})
    for (v, a), (words, quadrant) in zip(points, got):
        assert words == report.va_words(v, a), (v, a)
        assert quadrant == str(data.quadrant_of(v, a)), (v, a)
