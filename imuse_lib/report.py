"""Presentation helpers for the book's chapters: one home for how a number, a box, a table or a
figure is shown to a reader.

Numbers by meaning
    :func:`fmt_metric` (3 decimals: MAP@k, MAE, RMSE, similarities), :func:`fmt_va` (2 decimals:
    valence and arousal on [0, 1]), :func:`fmt_seconds` (with a unit: ``"0.42 s"``, ``"4 min 05 s"``),
    :func:`fmt_interval` (compact: ``"0.412 (0.38-0.45)"``), :func:`fmt_percent`, :func:`fmt_count`;
    :func:`seconds_formatter` keeps one unit down a table column.
Glue
    :func:`glue` replaces ``myst_nb.glue(..., display=False)`` and the ad-hoc ``class Text(str)``:
    strings are glued as plain text (``{glue:text}`` shows no quotes), and ``fmt=`` glues a number
    already formatted by meaning, so the prose needs no format spec; a whole number is glued as a
    count with thousands separators (:func:`fmt_count`).
Boxes
    :func:`box` returns the HTML of a "what this shows" box; :func:`glue_box` glues it so that the
    chapter's first markdown cell can show it at the top (```` ```{glue} what_this_shows ``` ````)
    although its numbers are computed further down.
Tables
    :func:`table` formats a data frame by column meaning and hides the index; :func:`va_summary`
    is the narrow "mean ± sd, range" table of valence and arousal.
VA plane
    :func:`spread_examples` picks items spread over the valence-arousal plane to show;
    :func:`va_figure` draws queries and their recommended songs among all songs (plotly).
Forest plot
    :func:`forest_plot` draws paired differences (network minus baseline) with their intervals, one
    row per comparison and one panel per metric; :func:`forest_sentence` writes the one sentence
    the figure supports.
Static figures
    :func:`plotly_html` renders a plotly figure for the book: the live (JavaScript) figure plus a
    static PNG made with kaleido, shown when printing or when JavaScript is off.
"""

from __future__ import annotations

import ast
import base64
import html
import re
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from .errors import ImuseError

__all__ = ["PlainText", "fmt_metric", "fmt_va", "fmt_seconds", "fmt_interval", "fmt_percent", "fmt_count", "glue",
           "glue_md", "box", "glue_box", "spread_examples", "va_figure", "table", "va_summary", "forest_plot",
           "forest_sentence", "lower_is_better", "plotly_html", "READER_NAMES", "PREDICTOR_COLOURS", "reader_name",
           "reader_text", "predictor_colour", "predictor_palette", "facet_lines", "QUADRANT_WORDS",
           "VA_CENTRE", "VA_AXIS_WORDS", "VA_DEGREES", "va_axis_words", "va_words", "va_words_spec",
           "quadrant_comment", "static_png", "seconds_formatter", "BOX_CLASS", "STATIC_FIGURE_CLASS",
           "LIVE_FIGURE_CLASS"]

BOX_CLASS = "imuse-box"
STATIC_FIGURE_CLASS = "imuse-static-figure"
LIVE_FIGURE_CLASS = "imuse-live-figure"
MISSING = "n/a"


class PlainText(str):
    """A string that glues as plain text.

    myst-nb's ``{glue:text}`` reads the glued repr back with ``ast.literal_eval``: a bare
    ``1,000,000`` would come back as the tuple ``(1, 0, 0)``, ``1,024`` as ``(1, 24)`` and
    ``0.410`` as ``0.41``. Text that Python would read as a literal is therefore glued quoted
    (literal_eval gives the string back unchanged); other text, e.g. a sentence, as it is, so that
    ``{glue}`` shows it without quotes too."""

    def __repr__(self) -> str:
        text = str(self)
        try:
            value = ast.literal_eval(text)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            return text
        return text if isinstance(value, str) and value == text else repr(text)


# --------------------------------------------------------------------------- numbers by meaning


def _missing(x) -> bool:
    try:
        return x is None or (isinstance(x, float) or np.isscalar(x)) and bool(np.isnan(x))
    except TypeError:
        return False


def _fixed(x: float, digits: int) -> str:
    text = f"{float(x):.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # no "-0.000"


def fmt_metric(x, digits: int = 3) -> str:
    """A metric (MAP@k, MAE, RMSE, a similarity, a correlation): 3 decimals, ``"0.412"``."""
    return MISSING if _missing(x) else _fixed(x, digits)


def fmt_va(x) -> str:
    """A valence or arousal value on [0, 1]: 2 decimals, ``"0.57"`` (ratings are not more precise)."""
    return MISSING if _missing(x) else _fixed(x, 2)


def fmt_bytes(n) -> str:
    """A size in decimal units: ``"17.1 MB"``, ``"40 kB"``, ``"512 B"``."""
    if _missing(n):
        return MISSING
    n = float(n)
    if n >= 1e6:
        return f"{n / 1e6:.1f} MB"
    return f"{n / 1e3:.0f} kB" if n >= 1e3 else f"{n:.0f} B"


def fmt_seconds(seconds) -> str:
    """A duration with its unit: ``"12 ms"``, ``"0.42 s"``, ``"12.3 s"``, ``"4 min 05 s"``, ``"2 h 03 min"``."""
    if _missing(seconds):
        return MISSING
    s = float(seconds)
    if s < 0:
        return "-" + fmt_seconds(-s)
    if s < 0.1:
        return f"{s * 1000:.0f} ms" if s >= 0.0095 else f"{s * 1000:.1f} ms"
    if s < 10:
        return f"{s:.2f} s"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        m, r = divmod(round(s), 60)
        return f"{m} min {r:02d} s"
    h, r = divmod(round(s / 60), 60)
    return f"{h} h {r:02d} min"


def seconds_formatter(values: Iterable[float]) -> Callable[[float], str]:
    """One unit for a whole column of durations, chosen by its largest value (a column that mixes
    "49 ms" and "18.9 s" is hard to scan): ms below 0.1 s, then s with 2 or 1 decimals, then
    :func:`fmt_seconds`'s minutes and hours."""
    finite = [abs(float(v)) for v in values if not _missing(v)]
    top = max(finite, default=0.0)
    if top < 0.1:
        return lambda x: MISSING if _missing(x) else f"{float(x) * 1000:.0f} ms"
    if top < 10:
        return lambda x: MISSING if _missing(x) else f"{_fixed(x, 2)} s"
    if top < 60:
        return lambda x: MISSING if _missing(x) else f"{_fixed(x, 1)} s"
    return fmt_seconds


def fmt_interval(estimate, low, high, fmt: Callable = fmt_metric, bound_digits: int | None = None) -> str:
    """An estimate and its interval, compact: ``"0.412 (0.38-0.45)"``.

    The bounds get one decimal fewer than the estimate (2 for a metric; they are less certain than
    its third decimal); a negative bound switches the dash to "to": ``"-0.012 (-0.03 to 0.01)"``.
    Without an interval (NaN bounds) only the estimate is shown."""
    est = fmt(estimate)
    if _missing(low) or _missing(high):
        return est
    if bound_digits is None:
        decimals = len(est.split(".")[1]) if "." in est else 0
        bound_digits = max(decimals - 1, 0) if decimals > 1 else decimals
    lo, hi = _fixed(low, bound_digits), _fixed(high, bound_digits)
    sep = " to " if lo.startswith("-") or hi.startswith("-") else "-"
    return f"{est} ({lo}{sep}{hi})"


def fmt_percent(x, digits: int = 0) -> str:
    """A share as a percentage: ``fmt_percent(0.4123) == "41%"``."""
    return MISSING if _missing(x) else f"{float(x) * 100:.{digits}f}%"


def fmt_count(n) -> str:
    """A count with thousands separators: ``"12,345"``."""
    return MISSING if _missing(n) else f"{int(n):,}"


# --------------------------------------------------------------------------- glue


def glue(name: str, value, fmt: Callable | None = None, display: bool = False) -> None:
    """Glue ``value`` under ``name`` for ``{glue:text}`name``` in the chapter's prose.

    ``fmt`` (e.g. :func:`fmt_metric`) glues the formatted text instead of the number, so that every
    page writes a metric the same way; a ``str`` is glued as plain text (no quotes). Numbers
    without ``fmt`` are glued as they are (``{glue:text}`name:.1%``` still works)."""
    from myst_nb import glue as _glue

    if fmt is None and isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        fmt = fmt_count  # a whole number glued into prose is a count: "13,500", as every table writes it
    if fmt is not None:
        value = PlainText(fmt(value))
    elif isinstance(value, str) and not isinstance(value, PlainText):
        value = PlainText(value)
    elif isinstance(value, np.generic):  # numpy scalars repr as np.float64(...) since numpy 2
        value = value.item()
    _glue(name, value, display=display)  # returns nothing: a glue as a cell's last line shows no echo


def _inline(text: str) -> str:
    """Escape ``text`` for HTML, then turn ``**bold**`` and ```code``` into tags."""
    out = html.escape(str(text), quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)


def box(points: str | Iterable[str], title: str = "What this shows") -> str:
    """HTML of a short "what this shows" box: a paragraph (one string) or a list (several).
    ``**bold**`` and ```code``` are understood; everything else is escaped."""
    items = [points] if isinstance(points, str) else list(points)
    if not items:
        raise ImuseError("report.box: nothing to show (an empty list of points)")
    body = (f"<p>{_inline(items[0])}</p>" if len(items) == 1
            else "<ul>" + "".join(f"<li>{_inline(p)}</li>" for p in items) + "</ul>")
    return (f'<div class="admonition tip {BOX_CLASS}"><p class="admonition-title">{html.escape(title)}</p>'
            f"{body}</div>")


class _HTMLBox:
    """A box as a rich object: Jupyter and myst-nb show its HTML, its plain text is the title."""

    def __init__(self, markup: str, text: str):
        self.markup, self.text = markup, text

    def _repr_html_(self) -> str:
        return self.markup

    def __repr__(self) -> str:
        return self.text


def glue_box(points: str | Iterable[str], name: str = "what_this_shows", title: str = "What this shows") -> None:
    """Glue a :func:`box` under ``name``; show it where the chapter opens with

    ````md
    ```{glue} what_this_shows
    ```
    ````
    """
    from myst_nb import glue as _glue

    items = [points] if isinstance(points, str) else list(points)
    obj = _HTMLBox(box(items, title), f"{title}: " + " ".join(items))
    _glue(name, obj, display=False)


def glue_md(name: str, text: str) -> None:
    """Glue a paragraph of prose with **bold** as Markdown; show it with
    ```` ```{glue:md} name ```` and ``:format: myst``."""
    from IPython.display import Markdown
    from myst_nb import glue as _glue

    _glue(name, Markdown(text), display=False)


# --------------------------------------------------------------------------- names a reader sees

# The one mapping from code names (predictors, feature sources, columns of the results files) to
# the words a reader sees; :func:`table` applies it to every column heading and every text cell
# that is exactly a code name. The glossary page (book/glossary.md) defines the terms.
READER_NAMES = {
    # predictors, in the order of every table (learned first, then the baselines, the oracle last)
    "va_model": "deployed VA model", "joint": "joint network (the paper's)", "joint_tta": "joint, views averaged",
    "joint_item": "joint, item-weighted loss", "factorised": "factorised network", "ridge": "ridge", "knn": "kNN",
    "quadrant": "quadrant only", "image_agnostic": "image-agnostic", "lookup": "lookup (training labels)",
    "constant": "constant VA", "mean_similarity": "mean similarity", "random": "random", "oracle": "oracle",
    # feature sources and kernels
    "image_stats": "colour and texture statistics", "rbf": "RBF kernel",
    # columns of the results files
    "nsg@10": "NSG@10", "ndcg@10": "NDCG@10", "quadrant@10": "quadrant@10", "rev_nsg@10": "reverse NSG@10",
    "map_a@10": "MAP@10 (a)", "mae": "MAE", "rmse": "RMSE", "n_queries": "test queries",
    "n_candidates": "candidate songs", "true_valence": "tag valence", "true_arousal": "tag arousal",
    "image_id": "image", "song_id": "song",
}
# One colour per predictor, shared by the static (matplotlib) and interactive (plotly) figures.
PREDICTOR_COLOURS = {
    "va_model": "#1f77b4", "joint": "#d62728", "joint_tta": "#ff9896", "joint_item": "#e377c2",
    "factorised": "#9467bd", "ridge": "#2ca02c", "knn": "#17becf", "quadrant": "#bcbd22",
    "image_agnostic": "#ff7f0e", "lookup": "#8c564b", "constant": "#7f7f7f", "mean_similarity": "#c7c7c7",
    "random": "#000000", "oracle": "#aec7e8",
}


def reader_name(code) -> str:
    """The reader's name for a code name (:data:`READER_NAMES`); anything else unchanged."""
    return READER_NAMES.get(code, code) if isinstance(code, str) else code


_PLAIN_CODE_NAMES = sorted((k for k in READER_NAMES if "_" in k or k == "rbf"), key=len, reverse=True)
_CODE_WORDS = re.compile(r"(?<![\w/.])(" + "|".join(map(re.escape, _PLAIN_CODE_NAMES)) + r")(?![\w/.])")


def predictor_palette(predictors: Iterable[str]) -> dict[str, str]:
    """``{name: colour}`` for the predictors in ``predictors`` (code or reader names), the one
    palette of every figure: ``palette=`` for seaborn, ``color_discrete_map=`` for plotly express."""
    return {p: predictor_colour(p) for p in dict.fromkeys(predictors)}


def facet_lines(frame: pd.DataFrame, x: str, y: str, colour: str, col: str, row: str | None = None,
                title: str = "", height_per_row: int = 300):
    """A plotly grid of line charts (one panel per ``col`` x ``row``), coloured by predictor with
    :func:`predictor_palette`: every panel keeps its own y scale and shows its y numbers, the legend
    sits below the panels (a legend beside them is clipped in a narrow column), the panel labels
    lose their ``metric=`` prefix."""
    import plotly.express as px

    rows = frame[row].nunique() if row else 1
    fig = px.line(frame, x=x, y=y, color=colour, facet_col=col, facet_row=row, markers=True,
                  color_discrete_map=predictor_palette(frame[colour]), labels={y: "", colour: ""}, title=title)
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    fig.update_layout(height=120 + height_per_row * rows, margin=dict(l=50, r=30, t=70, b=40),
                      legend=dict(orientation="h", yanchor="top", y=-0.12, xanchor="left", x=0))
    return fig


def reader_text(text: str) -> str:
    """``text`` with the code names that are plainly code (``image_stats``, ``rbf``, ``va_model``...)
    replaced by their reader names; ordinary words (``random``, ``joint``) and paths are left alone."""
    return _CODE_WORDS.sub(lambda m: READER_NAMES[m[1]], str(text))


def predictor_colour(predictor: str) -> str:
    """The one colour of ``predictor`` in every figure (a code name or its reader name)."""
    by_reader = {READER_NAMES[k]: c for k, c in PREDICTOR_COLOURS.items()}
    colour = PREDICTOR_COLOURS.get(predictor) or by_reader.get(predictor)
    if colour is None:
        raise ImuseError(f"report.predictor_colour: no colour for predictor {predictor!r} "
                         f"(known: {', '.join(PREDICTOR_COLOURS)})")
    return colour


# The four quadrants of the VA plane in words (Russell's circumplex; midpoint 0.5).
QUADRANT_WORDS = {"Q1": "happy, excited", "Q2": "tense, angry", "Q3": "sad, bored", "Q4": "calm, content"}

# A point of the VA plane in words, axis by axis: which side of the centre (the words of the
# glossary's VA: 0 unpleasant to 1 pleasant, 0 calm to 1 excited) and how far from it. The "Try
# it" page applies the same rule to the words export.py writes into songs.json (va_words_spec).
VA_CENTRE = 0.5
VA_AXIS_WORDS = {"valence": ("unpleasant", "pleasant"), "arousal": ("calm", "excited")}
# (distance from the centre below which the phrase applies, phrase); None: any distance.
VA_DEGREES = ((0.05, "neither {high} nor {low}"), (0.15, "slightly {word}"), (None, "clearly {word}"))


def va_axis_words(axis: str, value: float) -> str:
    """One axis of a VA point in words, e.g. ``slightly pleasant`` (see :data:`VA_DEGREES`)."""
    low, high = VA_AXIS_WORDS[axis]
    d = float(value) - VA_CENTRE
    word = high if d >= 0 else low  # the quadrant's side: data.quadrant_of puts 0.5 on the high side
    phrase = next(p for limit, p in VA_DEGREES if limit is None or abs(d) < limit)
    return phrase.format(word=word, low=low, high=high)


def va_words(valence: float, arousal: float) -> str:
    """A VA point in words, e.g. ``slightly pleasant and clearly calm``."""
    return f"{va_axis_words('valence', valence)} and {va_axis_words('arousal', arousal)}"


def va_words_spec() -> dict:
    """The rule of :func:`va_words` and :data:`QUADRANT_WORDS` as data, for the "Try it" page."""
    return {"centre": VA_CENTRE, "axes": {k: list(v) for k, v in VA_AXIS_WORDS.items()},
            "degrees": [[limit, phrase] for limit, phrase in VA_DEGREES], "quadrants": dict(QUADRANT_WORDS)}


def quadrant_comment(image: str, image_quadrant: str, predicted_quadrant: str, song_quadrants: Iterable[str]) -> str:
    """One sentence on a picture whose top songs sit mostly outside its own quadrant, naming why:
    the model placed the picture in another quadrant, or its songs scatter although the picture's
    place is right. '' when most of its songs share its quadrant (nothing to explain)."""
    songs = list(song_quadrants)
    if not songs:
        return ""
    own = sum(q == image_quadrant for q in songs)
    if own * 2 > len(songs):
        return ""
    common = max(dict.fromkeys(songs), key=songs.count)
    where = f"{common} ({QUADRANT_WORDS.get(common, common)})"
    if predicted_quadrant != image_quadrant:
        why = (f"the model places the picture in {predicted_quadrant} "
               f"({QUADRANT_WORDS.get(predicted_quadrant, predicted_quadrant)}) instead")
    else:
        why = "the picture's predicted place is right, but the songs nearest it are labelled otherwise"
    share = "none" if own == 0 else f"only {own}"
    return (f"**{image}** is rated {image_quadrant} ({QUADRANT_WORDS.get(image_quadrant, image_quadrant)}), yet "
            f"{share} of its {len(songs)} songs are; most are {where}: {why}.")


# --------------------------------------------------------------------------- tables


def table(frame: pd.DataFrame, metric: Iterable[str] = (), va: Iterable[str] = (), seconds: Iterable[str] = (),
          percent: Iterable[str] = (), count: Iterable[str] = (), formats: Mapping[str, Callable] | None = None,
          index: bool = False, wrap: Iterable[str] = ()):
    """A pandas Styler that formats columns by meaning and hides the index (``index=True`` keeps it).
    Column headings and text cells that are code names get their reader names (:data:`READER_NAMES`).
    ``wrap``: text columns whose cells may wrap onto several lines (the book's stylesheet keeps
    cells on one line, so that a number and its interval stay together).

    Every named column must exist, so that a renamed column fails here rather than showing
    ``0.990000`` in the book."""
    fmts: dict = {}
    for cols, fn in ((metric, fmt_metric), (va, fmt_va), (percent, fmt_percent), (count, fmt_count)):
        fmts.update({c: fn for c in cols})
    for c in seconds:
        fmts[c] = seconds_formatter(frame[c]) if c in frame.columns else fmt_seconds
    fmts.update(formats or {})
    wrap = list(wrap)
    missing = [c for c in [*fmts, *wrap] if c not in frame.columns]
    if missing:
        raise ImuseError(f"report.table: no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))})")
    # reader names last, so that the column names above are the frame's own
    taken = set(frame.columns)  # a code name whose reader name is already a column keeps its code name
    renamed = {c: reader_name(c) for c in frame.columns if reader_name(c) not in taken}
    frame = frame.rename(columns=renamed)
    text_cols = [c for c in frame.columns
                 if pd.api.types.is_object_dtype(frame[c]) or pd.api.types.is_string_dtype(frame[c])]
    frame = frame.assign(**{c: frame[c].map(reader_name) for c in text_cols}) if text_cols else frame
    fmts = {renamed.get(c, c): fn for c, fn in fmts.items()}
    wrap = [renamed.get(c, c) for c in wrap]
    if index:
        frame = frame.rename(index=reader_name)
    styler = frame.style.format(fmts, na_rep=MISSING)
    if wrap:
        styler = styler.set_properties(subset=wrap, **{"white-space": "normal", "overflow-wrap": "anywhere",
                                                       "min-width": "12em"})
    return styler if index else styler.hide(axis="index")


def va_summary(frames: Mapping[str, pd.DataFrame] | pd.DataFrame, by: str | None = None,
               label: str = "set") -> pd.DataFrame:
    """A narrow summary of valence and arousal: one row per set (a mapping name -> frame, or the
    groups of ``frame`` by column ``by``), columns ``n``, ``valence``/``arousal`` as mean ± sd and
    their ranges, formatted with :func:`fmt_va`. Replaces a 10-column ``describe()``."""
    if isinstance(frames, pd.DataFrame):
        if by is None:
            raise ImuseError("report.va_summary: a single frame needs by= (the column to group on)")
        frames = dict(tuple(frames.groupby(by, sort=True)))
        label = by
    rows = []
    for name, frame in frames.items():
        missing = [c for c in ("valence", "arousal") if c not in frame.columns]
        if missing:
            raise ImuseError(f"report.va_summary: {name!r} has no column {missing[0]!r}")
        row = {label: name, "n": fmt_count(len(frame))}
        for dim in ("valence", "arousal"):
            col = frame[dim]
            row[f"{dim} mean ± sd"] = f"{fmt_va(col.mean())} ± {fmt_va(col.std())}"
            row[f"{dim} range"] = f"{fmt_va(col.min())}-{fmt_va(col.max())}"
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- forest plot


_LOWER_IS_BETTER = re.compile(r"(mae|rmse|mse|error|loss|distance)", re.I)


def lower_is_better(metric: str) -> bool:
    """Errors and losses (MAE, RMSE, ...) are better when lower; MAP@k, similarity, r when higher."""
    return bool(_LOWER_IS_BETTER.search(metric))


def _verdicts(frame: pd.DataFrame, metric: str, diff: str, low: str, high: str,
              better: Mapping[str, bool] | None) -> pd.Series:
    """"better", "worse" or "unclear" per row: the interval of network - baseline on one side of 0."""
    lower = frame[metric].map(lambda m: (not better[m]) if better and m in better else lower_is_better(str(m)))
    sign = np.where(lower, -1.0, 1.0)  # +: the network is better
    lo, hi = frame[low].to_numpy(float) * sign, frame[high].to_numpy(float) * sign
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    return pd.Series(np.select([lo > 0, hi < 0], ["better", "worse"], "unclear"), index=frame.index)


def _check_columns(frame: pd.DataFrame, cols: list[str], who: str) -> None:
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ImuseError(f"{who}: no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))})")
    if frame.empty:
        raise ImuseError(f"{who}: no comparison to show (empty frame)")


VERDICT_COLOURS = {"better": "#2a7d2e", "worse": "#b3261e", "unclear": "#6b6b6b"}


def forest_plot(frame: pd.DataFrame, label: str = "comparison", metric: str = "metric", diff: str = "diff",
                low: str = "low", high: str = "high", better: Mapping[str, bool] | None = None,
                title: str | None = None, width: float = 7.5):
    """A forest plot (matplotlib) of paired differences, network minus baseline.

    ``frame`` has one row per comparison: ``label`` (e.g. "joint vs ridge, paper split"),
    ``metric`` (e.g. "MAP@10", "MAE"), ``diff`` (network - baseline) and its interval
    ``low``-``high`` (e.g. a paired bootstrap). One panel per metric, each with its own x scale
    and a zero line; a point is green when its interval lies on the network's better side, red
    when on the worse side, grey when it includes 0. Whether lower is better is read from the
    metric's name (:func:`lower_is_better`) unless ``better`` maps metric -> higher-is-better.
    Returns the figure (``plt.show()`` it in a notebook); its width suits the book's column."""
    import matplotlib.pyplot as plt

    _check_columns(frame, [label, metric, diff, low, high], "report.forest_plot")
    verdict = _verdicts(frame, metric, diff, low, high, better)
    metrics = list(dict.fromkeys(frame[metric]))
    heights = [max(len(frame[frame[metric] == m]), 1) for m in metrics]
    fig, axes = plt.subplots(len(metrics), 1, figsize=(width, 0.9 + 0.32 * sum(heights) + 0.55 * len(metrics)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False, layout="constrained")
    for ax, m in zip(axes[:, 0], metrics):
        sub = frame[frame[metric] == m]
        y = np.arange(len(sub))[::-1]
        for yi, (_, row) in zip(y, sub.iterrows()):
            colour = VERDICT_COLOURS[verdict[row.name]]
            ax.plot([row[low], row[high]], [yi, yi], color=colour, lw=2, solid_capstyle="butt")
            ax.plot([row[diff]], [yi], "o", color=colour, ms=6)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, [str(v) for v in sub[label]], fontsize=9)
        ax.set_ylim(-0.6, len(sub) - 0.4)
        higher = better[m] if better and m in better else not lower_is_better(str(m))
        ax.set_xlabel(f"{m}: network - baseline ({'higher' if higher else 'lower'} is better, "
                      f"{'right' if higher else 'left'} of 0)", fontsize=9)
        lo, hi = ax.get_xlim()
        span = max(abs(lo), abs(hi))
        ax.set_xlim(-span, span)  # zero in the middle: the two sides read alike
        ax.axvspan(0 if higher else -span, span if higher else 0, color=VERDICT_COLOURS["better"], alpha=0.06, lw=0)
        ax.grid(axis="x", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def forest_sentence(frame: pd.DataFrame, label: str = "comparison", metric: str = "metric", diff: str = "diff",
                    low: str = "low", high: str = "high", better: Mapping[str, bool] | None = None,
                    network: str = "the network", max_named: int = 3) -> str:
    """The one sentence a forest plot supports, e.g. "Of 12 comparisons, the network is clearly
    better in 9, clearly worse in 1 (MAE: joint vs ridge, paper split) and within the noise in 2."

    "Clearly" means the interval of the difference excludes 0; up to ``max_named`` clear losses
    are named (they are what a reader should look at)."""
    _check_columns(frame, [label, metric, diff, low, high], "report.forest_sentence")
    verdict = _verdicts(frame, metric, diff, low, high, better)
    n = len(frame)
    counts = verdict.value_counts().reindex(["better", "worse", "unclear"], fill_value=0)
    parts = [f"clearly better in {counts['better']}"]
    worse = frame[verdict == "worse"]
    named = "; ".join(f"{r[metric]}: {r[label]}" for _, r in worse.head(max_named).iterrows())
    more = f" and {len(worse) - max_named} more" if len(worse) > max_named else ""
    parts.append(f"clearly worse in {counts['worse']}" + (f" ({named}{more})" if len(worse) else ""))
    parts.append(f"within the noise (interval includes 0) in {counts['unclear']}")
    noun = "comparison" if n == 1 else "comparisons"
    return f"Of {n} {noun}, {network} is {parts[0]}, {parts[1]} and {parts[2]}."


# --------------------------------------------------------------------------- static figures


def static_png(figure, width: int = 900, height: int | None = None, scale: float = 1.0,
               browser: str | None = None) -> bytes:
    """PNG bytes of a plotly figure (a ``go.Figure`` or its dict) with kaleido.

    kaleido 1.x drives a Chrome/Chromium that is already installed (Debian's ``chromium`` here); it
    downloads nothing and needs no network. ``browser``: that browser's path (else kaleido looks
    for one itself). Raises ImuseError in one line when it cannot run."""
    import os
    import warnings

    import plotly.io as pio

    height = height or int((figure.get("layout", {}) if isinstance(figure, dict) else figure.layout.to_plotly_json())
                           .get("height") or 500)
    saved = os.environ.get("BROWSER_PATH")
    if browser is not None:
        os.environ["BROWSER_PATH"] = str(browser)  # how kaleido's choreographer is told which browser
    try:
        with warnings.catch_warnings():  # plotly passes kopts={} also to a running kaleido server
            warnings.filterwarnings("ignore", message="The kopts argument is ignored")
            return pio.to_image(figure, format="png", width=width, height=height, scale=scale, validate=False)
    except Exception as exc:  # kaleido missing, no browser found, browser crashed
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImuseError(f"static image of a plotly figure failed ({type(exc).__name__}: {first}); kaleido needs "
                         f"Chrome or Chromium (`apt-get install chromium`)") from None
    finally:
        if browser is not None:
            if saved is None:
                os.environ.pop("BROWSER_PATH", None)
            else:
                os.environ["BROWSER_PATH"] = saved


def figure_title(figure: dict) -> str:
    """The title text of a plotly figure dict ('' when it has none)."""
    title = (figure.get("layout") or {}).get("title") or {}
    text = title.get("text", "") if isinstance(title, dict) else str(title)
    return " ".join(re.sub(r"<br\s*/?>", " ", re.sub(r"<(?!br)[^>]+>", "", text)).split())


PLOTLY_DIV_CLASS = "plotly-graph-div"  # what marks a page with a plotly figure (book/_ext/imuse_pages.py)
_INLINE_SCRIPT = re.compile(r"(<script(?: type=\"text/javascript\")?>)(.*?)(</script>)", re.S)


def _after_plotly_loads(live: str) -> str:
    """The figure's inline ``Plotly.newPlot`` call run on DOMContentLoaded: the book loads plotly.js
    with ``defer`` (the text paints first), and deferred scripts run before that event."""
    return _INLINE_SCRIPT.sub(lambda m: f'{m[1]}window.addEventListener("DOMContentLoaded", function () {{'
                                        f'{m[2]}}});{m[3]}', live)


def plotly_html(figure: dict, div_id: str, png: bytes | None, alt: str | None = None, height: int = 500) -> str:
    """The book's HTML for a plotly figure: the live figure (plotly.js is loaded, deferred, only by
    the pages that have a figure, from the book's _static) followed by its static PNG. The book's
    stylesheet shows the PNG instead of the live figure when printing, and a page without
    JavaScript shows only the PNG."""
    import plotly.io as pio

    live = pio.to_html(figure, include_plotlyjs=False, include_mathjax=False, full_html=False, validate=False,
                       config=figure.get("config") or {}, default_width="100%", default_height=height,
                       div_id=div_id)
    out = f'<div class="{LIVE_FIGURE_CLASS}">{_after_plotly_loads(live)}</div>'
    if png is not None:
        alt = alt or figure_title(figure) or "figure"
        data = base64.b64encode(png).decode()
        out += (f'<img class="{STATIC_FIGURE_CLASS}" alt="{html.escape(alt)} (static image)" '
                f'src="data:image/png;base64,{data}">')
    return out


# --------------------------------------------------------------------------- the VA plane


def spread_examples(items: pd.DataFrame, n: int = 8, spread: float = 1.8,
                    around: pd.DataFrame | None = None) -> pd.DataFrame:
    """``n`` rows of ``items`` (columns valence, arousal) spread over the VA plane: targets on an
    ellipse around the centre of ``around``'s ratings (default: the items'; e.g. all images when
    only the showable ones may be picked), ``spread`` standard deviations out, and for each the
    nearest row not already taken; sorted by arousal (high first), then valence."""
    if len(items) < n:
        raise ImuseError(f"report.spread_examples: {len(items)} items, fewer than the {n} asked for")
    ratings = (items if around is None else around)[["valence", "arousal"]]
    centre = ratings.mean().to_numpy()
    radius = ratings.std().to_numpy() * spread
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    targets = centre + radius * np.c_[np.cos(angles), np.sin(angles)]
    va = items[["valence", "arousal"]].to_numpy()
    chosen: list[int] = []
    for target in targets:
        order = np.argsort(((va - target) ** 2).sum(axis=1))
        chosen.append(next(i for i in order if i not in chosen))
    return items.iloc[chosen].sort_values(["arousal", "valence"], ascending=[False, True])


VA_PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def va_figure(songs: pd.DataFrame, queries, title: str):
    """Every song (grey, at its stored VA) and, per query ``(name, result, true_va)``, the query's
    predicted VA (a star), its normative VA when known (a hollow diamond) and its top songs
    (circles of the same colour). ``result`` has ``query_va`` and ``items`` (artist, title,
    similarity, valence, arousal), as ``Recommender.recommend`` returns."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=songs.valence, y=songs.arousal, mode="markers", name="all songs",
                             marker=dict(color="lightgrey", size=5),
                             text=songs.artist + " - " + songs.title, hoverinfo="text"))
    for k, (name, res, true_va) in enumerate(queries):
        c = VA_PALETTE[k % len(VA_PALETTE)]
        fig.add_trace(go.Scatter(x=res.items.valence, y=res.items.arousal, mode="markers", name=f"songs for {name}",
                                 marker=dict(color=c, size=9, line=dict(color="white", width=1)),
                                 text=[f"{a} - {t}<br>S = {s:.3f}" for a, t, s in
                                       zip(res.items.artist, res.items.title, res.items.similarity)],
                                 hoverinfo="text", legendgroup=name))
        fig.add_trace(go.Scatter(x=[res.query_va[0]], y=[res.query_va[1]], mode="markers", name=name,
                                 marker=dict(color=c, size=18, symbol="star", line=dict(color="black", width=1)),
                                 legendgroup=name, hovertext=f"{name} (predicted)", hoverinfo="text"))
        if true_va is not None:
            fig.add_trace(go.Scatter(x=[true_va[0]], y=[true_va[1]], mode="markers", showlegend=False,
                                     marker=dict(color=c, size=12, symbol="diamond-open", line=dict(width=2)),
                                     legendgroup=name, hovertext=f"{name} (normative)", hoverinfo="text"))
    fig.update_layout(title=title, xaxis=dict(title="valence", range=[0, 1]),
                      yaxis=dict(title="arousal", range=[0, 1], scaleanchor="x"), height=600)
    return fig
