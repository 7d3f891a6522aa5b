"""The book's presentation helpers (imuse_lib.report): numbers by meaning, glue, boxes, tables,
the forest plot and its sentence."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import nbformat  # noqa: E402
import numpy as np  # noqa: E402
import re

import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from imuse_lib import report  # noqa: E402
from imuse_lib.errors import ImuseError  # noqa: E402


def test_numbers_are_formatted_by_meaning():
    assert report.fmt_metric(0.41234) == "0.412"
    assert report.fmt_metric(-0.0001) == "0.000"  # never "-0.000"
    assert report.fmt_metric(np.float32(0.5)) == "0.500"
    assert report.fmt_metric(float("nan")) == report.fmt_metric(None) == "n/a"
    assert report.fmt_va(0.5671) == "0.57"
    assert [report.fmt_seconds(s) for s in (0.0123, 0.42, 12.34, 245, 7380)] == [
        "12 ms", "0.42 s", "12.3 s", "4 min 05 s", "2 h 03 min"]
    assert report.fmt_percent(0.4123) == "41%" and report.fmt_percent(0.4123, 1) == "41.2%"
    assert report.fmt_count(12345) == "12,345"


def test_intervals_are_compact():
    assert report.fmt_interval(0.4123, 0.3812, 0.4498) == "0.412 (0.38-0.45)"
    assert report.fmt_interval(-0.0123, -0.031, 0.0088) == "-0.012 (-0.03 to 0.01)"
    assert report.fmt_interval(0.4123, float("nan"), float("nan")) == "0.412"
    assert report.fmt_interval(0.5671, 0.51, 0.62, fmt=report.fmt_va) == "0.57 (0.5-0.6)"


def test_box_escapes_text_and_knows_bold_and_code():
    html = report.box(["**41%** of <songs>", "see `imuse train`"])
    assert report.BOX_CLASS in html and "What this shows" in html
    assert "<strong>41%</strong> of &lt;songs&gt;" in html and "<code>imuse train</code>" in html
    assert html.count("<li>") == 2
    assert "<ul>" not in report.box("one sentence")
    with pytest.raises(ImuseError, match="nothing to show"):
        report.box([])


def test_table_formats_by_column_and_refuses_unknown_columns():
    frame = pd.DataFrame({"config": ["a"], "MAE": [0.41234], "valence": [0.5671], "train_s": [245.0]})
    html = report.table(frame, metric=["MAE"], va=["valence"], seconds=["train_s"]).to_html()
    assert "0.412" in html and "0.41234" not in html and "0.57" in html and "4 min 05 s" in html
    times = report.table(pd.DataFrame({"error": [-0.049, 1.7, -0.2]}), seconds=["error"]).to_html()
    assert "-0.05 s" in times and "1.70 s" in times and "ms" not in times  # one unit per column
    with pytest.raises(ImuseError, match="no column 'RMSE'"):
        report.table(frame, metric=["RMSE"])
    with pytest.raises(ImuseError, match="no column 'notes'"):
        report.table(frame, wrap=["notes"])


def test_bytes_in_decimal_units():
    assert [report.fmt_bytes(n) for n in (17_060_000, 39_536, 512, None)] == ["17.1 MB", "40 kB", "512 B", report.MISSING]


def test_table_lets_named_text_columns_wrap():
    """A long description (a weights URL) may wrap and break anywhere; other columns stay on one line."""
    frame = pd.DataFrame({"config": ["a"], "features": ["https://example.org/" + "x" * 80], "MAE": [0.4]})
    html = report.table(frame, metric=["MAE"], wrap=["features"]).to_html()
    styled = re.findall(r"#(T_\w+_row0_col(\d))\s*\{([^}]*)\}", html)
    assert [c for _, c, css in styled if "white-space: normal" in css and "overflow-wrap: anywhere" in css] == ["1"]


def test_va_summary_is_narrow():
    frame = pd.DataFrame({"valence": [0.1, 0.5, 0.9], "arousal": [0.2, 0.4, 0.6], "kind": ["x", "x", "y"]})
    out = report.va_summary({"all": frame})
    assert list(out.columns) == ["set", "n", "valence mean ± sd", "valence range", "arousal mean ± sd", "arousal range"]
    assert out.iloc[0].tolist() == ["all", "3", "0.50 ± 0.40", "0.10-0.90", "0.40 ± 0.20", "0.20-0.60"]
    assert report.va_summary(frame, by="kind")["kind"].tolist() == ["x", "y"]


def _comparisons() -> pd.DataFrame:
    return pd.DataFrame([
        # MAE: lower is better, so a negative difference is a network win
        {"comparison": "joint vs ridge", "metric": "MAE", "diff": -0.020, "low": -0.030, "high": -0.010},
        {"comparison": "joint vs constant", "metric": "MAE", "diff": 0.015, "low": 0.005, "high": 0.025},
        {"comparison": "joint vs ridge", "metric": "MAP@10", "diff": 0.050, "low": 0.020, "high": 0.080},
        {"comparison": "joint vs constant", "metric": "MAP@10", "diff": 0.010, "low": -0.010, "high": 0.030},
    ])


def test_forest_sentence_reads_the_direction_of_each_metric():
    assert report.lower_is_better("MAE") and report.lower_is_better("rmse") and not report.lower_is_better("MAP@10")
    sentence = report.forest_sentence(_comparisons())
    assert sentence == ("Of 4 comparisons, the network is clearly better in 2, clearly worse in 1 "
                        "(MAE: joint vs constant) and within the noise (interval includes 0) in 1.")
    flipped = report.forest_sentence(_comparisons(), better={"MAE": True})  # told that higher MAE is better
    assert "clearly better in 2, clearly worse in 1 (MAE: joint vs ridge)" in flipped
    with pytest.raises(ImuseError, match="no column 'diff'"):
        report.forest_sentence(_comparisons().rename(columns={"diff": "d"}))


def test_forest_plot_has_a_panel_per_metric_and_a_row_per_comparison():
    import matplotlib.pyplot as plt

    fig = report.forest_plot(_comparisons(), title="network minus baselines")
    try:
        axes = fig.axes
        assert len(axes) == 2
        # first comparison on top: y positions run downwards
        labels = sorted(axes[0].get_yticklabels(), key=lambda t: -t.get_position()[1])
        assert [t.get_text() for t in labels] == ["joint vs ridge", "joint vs constant"]
        assert "lower is better" in axes[0].get_xlabel() and "higher is better" in axes[1].get_xlabel()
        lo, hi = axes[0].get_xlim()
        assert math.isclose(lo, -hi)  # zero in the middle
        # colours: MAE row 0 (ridge, better) green, row 1 (constant, worse) red
        colours = {tuple(np.round(matplotlib.colors.to_rgb(line.get_color()), 3)) for line in axes[0].lines
                   if line.get_marker() == "o"}
        assert {tuple(np.round(matplotlib.colors.to_rgb(report.VERDICT_COLOURS[v]), 3))
                for v in ("better", "worse")} == colours
    finally:
        plt.close(fig)


def test_glue_and_glue_box_in_a_real_kernel():
    """In a kernel, as the book runs them: strings glue without quotes, a formatted number as its
    text, the box as HTML; none of them echoes a value when it is a cell's last line."""
    from nbclient import NotebookClient

    import browser_helpers  # noqa: F401  (puts scripts/ on sys.path)
    from bookbuild import execution, presentation
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import numpy as np\n"
        "from imuse_lib import report\n"
        "report.glue('name', 'mobilenet_v2')\n"
        "report.glue('mae', 0.41234, fmt=report.fmt_metric)\n"
        "report.glue('n', np.int64(7))\n"
        "report.glue('pairs', 13500)\n"
        "report.glue('flag', True)\n"
        "report.glue_box(['**7** songs'])\n"
        "report.glue_md('finding', '**Read NSG@10 first.** It asks')")])
    with tempfile.TemporaryDirectory() as kdir, pytest.MonkeyPatch.context() as mp:
        for key, value in execution.kernel_env(Path(kdir)).items():  # the kernel the book uses: this venv
            mp.setenv(key, value)
        NotebookClient(nb, kernel_name=execution.KERNEL_NAME, timeout=120).execute()
    outputs = nb.cells[0].outputs
    assert all(o["output_type"] == "display_data" for o in outputs), outputs  # no echoed value
    records = {o["metadata"]["scrapbook"]["name"]: o["data"] for o in outputs}
    prefix = presentation.GLUE_PREFIX
    from myst_nb.core.variables import format_plain_text  # what {glue:text} shows

    assert records["name"][prefix + "text/plain"] == "mobilenet_v2"
    assert format_plain_text(records["mae"][prefix + "text/plain"], "") == "0.412"
    assert format_plain_text(records["n"][prefix + "text/plain"], "") == "7"
    assert format_plain_text(records["pairs"][prefix + "text/plain"], "") == "13,500"  # a count, as tables write it
    assert records["flag"][prefix + "text/plain"] == "True"
    assert report.BOX_CLASS in records["what_this_shows"][prefix + "text/html"]
    assert records["finding"][prefix + "text/markdown"] == "**Read NSG@10 first.** It asks"


def _va_frame(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "valence": rng.random(n),
                         "arousal": rng.random(n)})


def test_spread_examples_reach_every_side_of_the_plane():
    items = _va_frame(200)
    shown = report.spread_examples(items, n=8)
    assert len(shown) == 8 and shown.image_id.is_unique
    assert list(shown.arousal) == sorted(shown.arousal, reverse=True)  # high arousal first
    centre = items[["valence", "arousal"]].mean()
    # one example in every quadrant around the centre, not eight near it
    sides = {(v > centre.valence, a > centre.arousal) for v, a in zip(shown.valence, shown.arousal)}
    assert len(sides) == 4
    assert (shown[["valence", "arousal"]] - centre).abs().max().min() > 0.2
    pd.testing.assert_frame_equal(shown, report.spread_examples(items, n=8))  # deterministic
    # the ellipse may be drawn around a larger set than the one picked from
    low = items[items.valence < 0.5]
    around_all = report.spread_examples(low, n=4, around=items)
    assert around_all.image_id.isin(low.image_id).all()
    assert set(around_all.image_id) != set(report.spread_examples(low, n=4).image_id)
    with pytest.raises(ImuseError, match="fewer than the 8"):
        report.spread_examples(items.head(5), n=8)


def test_va_figure_draws_songs_queries_and_their_top_songs():
    from types import SimpleNamespace

    songs = pd.DataFrame({"artist": ["a", "b", "c"], "title": ["x", "y", "z"], "valence": [0.1, 0.5, 0.9],
                          "arousal": [0.2, 0.6, 0.8]})
    top = songs.assign(similarity=[0.9, 0.8, 0.7]).head(2)
    res = SimpleNamespace(query_va=(0.3, 0.4), items=top)
    fig = report.va_figure(songs, [("img1", res, (0.35, 0.45)), ("yours", res, None)], "a title")
    names = [tr.name for tr in fig.data]
    assert names[0] == "all songs" and len(fig.data[0].x) == 3
    assert names.count("songs for img1") == 1 and "yours" in names
    assert len(fig.data) == 1 + 3 + 2  # all songs; songs, star, diamond; songs, star (no normative VA)
    star = next(tr for tr in fig.data if tr.name == "img1")
    assert (star.x[0], star.y[0]) == (0.3, 0.4) and star.marker.symbol == "star"
    assert "S = 0.900" in fig.data[1].text[0]
    assert fig.layout.title.text == "a title" and tuple(fig.layout.xaxis.range) == (0, 1)


@pytest.mark.parametrize("text", ["1,000,000", "179,000", "1,024", "13,500", "0.410", "1.000", "3.15", "None",
                                  "mobilenet_v2", "the same", "4.33 s", "(a)", "'quoted'"])
def test_glued_text_reads_back_as_written(text):
    """{glue:text} reads a glued value with ast.literal_eval: "1,000,000" used to come back as the
    tuple (1, 0, 0) and "0.410" as 0.41. PlainText's repr survives that unchanged."""
    from myst_nb.core.variables import format_plain_text

    assert format_plain_text(repr(report.PlainText(text)), "") == text
    assert format_plain_text(repr(report.PlainText(report.fmt_count(1_000_000))), "") == "1,000,000"
    if " " in text and text != "4.33 s":
        assert repr(report.PlainText(text)) == text  # prose stays unquoted ({glue} shows it as is)


def test_table_shows_reader_names_and_no_index():
    frame = pd.DataFrame({"predictor": ["va_model", "joint_tta", "image_agnostic", "my own"],
                          "nsg@10": [0.2891, 0.2, 0.378, 0.1]})
    html = report.table(frame, metric=["nsg@10"]).to_html()
    assert "deployed VA model" in html and "joint, views averaged" in html and "image-agnostic" in html
    assert "va_model" not in html and "joint_tta" not in html and "image_agnostic" not in html
    assert "my own" in html and "NSG@10" in html and "0.289" in html and "0.2891" not in html
    assert 'class="row_heading' not in html  # no 0..n index column
    both = report.table(pd.DataFrame({"image_id": ["a"], "image": ["b"], "mae": [0.12345]}),
                        metric=["mae"]).to_html()  # no duplicate heading; formats follow the renaming
    assert ">image_id<" in both and ">image<" in both and ">MAE<" in both and "0.123" in both
    assert report.predictor_colour("va_model") == report.predictor_colour("deployed VA model")
    with pytest.raises(ImuseError, match="no colour for predictor 'nobody'"):
        report.predictor_colour("nobody")


def test_quadrant_comment_explains_a_picture_whose_songs_sit_elsewhere():
    said = report.quadrant_comment("Rollercoaster 2", "Q1", "Q4", ["Q4"] * 5)
    assert said == ("**Rollercoaster 2** is rated Q1 (happy, excited), yet none of its 5 songs are; most are "
                    "Q4 (calm, content): the model places the picture in Q4 (calm, content) instead.")
    said = report.quadrant_comment("x", "Q3", "Q3", ["Q4", "Q4", "Q3", "Q1", "Q4"])
    assert "only 1 of its 5 songs" in said and "labelled otherwise" in said
    assert report.quadrant_comment("Fire 5", "Q2", "Q2", ["Q2", "Q2", "Q2", "Q1", "Q2"]) == ""
    assert report.quadrant_comment("x", "Q2", "Q2", []) == ""


def test_reader_text_replaces_only_plain_code_names():
    label = "factorised VA model: images mobilenet_v2+image_stats (rbf), songs musicnn (rbf)"
    assert report.reader_text(label) == ("factorised VA model: images mobilenet_v2+colour and texture statistics "
                                         "(RBF kernel), songs musicnn (RBF kernel)")
    assert report.reader_text("random and joint beat va_model; results/va_model.npz") == \
        "random and joint beat deployed VA model; results/va_model.npz"


def test_facet_lines_share_the_palette_and_keep_every_axis_readable():
    rows = [{"k": k, "value": v * k, "predictor": report.reader_name(p), "metric": m, "split": sp}
            for k in (1, 2, 3) for p, v in (("joint", 0.1), ("ridge", 0.2), ("random", 0.05))
            for m in ("NSG@k", "MAP@k (a)") for sp in ("paper", "cold")]
    frame = pd.DataFrame(rows)
    fig = report.facet_lines(frame, "k", "value", "predictor", "metric", "split", title="t")
    colours = {t.name: t.line.color for t in fig.data}
    assert colours == {report.reader_name(p): report.predictor_colour(p) for p in ("joint", "ridge", "random")}
    yaxes = [a for a in fig.layout if a.startswith("yaxis")]
    assert len(yaxes) == 4 and all(fig.layout[a].showticklabels for a in yaxes)
    assert all(fig.layout[a].matches is None for a in yaxes)
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0  # below the panels
    assert not any("=" in a.text for a in fig.layout.annotations)
    assert report.predictor_palette(["joint", "joint", "random"]) == {"joint": report.PREDICTOR_COLOURS["joint"],
                                                                     "random": report.PREDICTOR_COLOURS["random"]}
