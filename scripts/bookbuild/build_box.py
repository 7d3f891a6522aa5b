"""The landing page's verdict (does the paper's claim hold, from this build's results) and its
build box: profile, commit, date, device, verified data, time by step, static images left out,
the "Try it" page's sizes and times, and each chapter's execution."""

from __future__ import annotations

import re
from pathlib import Path

from imuse_lib.profiles import profile_summary

from . import checks
from . import common
from .execution import stamp_path


def chapter_title(name: str) -> str:
    """The chapter's first heading, from its source notebook (the name when it has none)."""
    import nbformat

    path = common.NOTEBOOK_DIR / f"{name}.ipynb"
    if path.exists():
        for cell in nbformat.read(path, as_version=4).cells:
            m = re.search(r"^#\s+(.+)$", cell.source, re.M) if cell.cell_type == "markdown" else None
            if m:
                return m.group(1).strip()
    return name


def build_time(info: dict) -> str:
    """This build's wall time up to the pages, and what it covered."""
    from imuse_lib import report

    took = report.fmt_seconds(info["wall_s"])
    if not any(info["executed"].values()):
        return f"{took} (every notebook from the execution cache: their own times are below)"
    return f"{took} (data check and notebooks; the pages follow)"


def time_breakdown(setup: tuple, steps: dict[str, float], times: dict[str, float],
                   inside: dict[str, float]) -> list[str]:
    """One line per step of the build, in order: set-up (from its stamp), the builder's steps, each
    notebook executed and, within them, what the library recorded (feature stores, training runs,
    evaluation)."""
    from imuse_lib import report

    fmt = report.fmt_seconds
    seconds, when = setup
    lines = [f"set-up (make setup, {when}): {fmt(seconds)}" if seconds is not None else "set-up: not recorded"]
    for step, took in steps.items():
        lines.append(f"{step}: {fmt(took)}")
        if step == "notebooks":
            lines += [f"- {name}: {fmt(t) if t else 'cached'}" for name, t in times.items()]
            lines += [f"- within them, {part}: {fmt(t)}" for part, t in inside.items()]
    return lines


def static_left_out(names: list[str]) -> str:
    """Which figures have no static image and why ("" when every figure has one), from the stamps."""
    from imuse_lib import io

    counts, whys = [], set()
    for name in names:
        figures = (io.read_json(stamp_path(name)) if stamp_path(name).exists() else {}).get("figures") or {}
        lost = int(figures.get("figures", 0)) - int(figures.get("static", 0))
        if lost > 0:
            counts.append(f"{name} {lost}")
            whys.add(figures.get("left_out_why") or "?")
    if not counts:
        return ""
    return f"{', '.join(counts)} figure(s): {'; '.join(sorted(whys))}"


def static_row(names: list[str]) -> str:
    """The build box's line on the figures' static images (print, no JavaScript)."""
    left_out = static_left_out(names)
    if not left_out:
        return "| static images | every plotly figure has one (for print and readers without JavaScript) |\n"
    return (f"| static images | left out for {left_out}. The live figures are all there; the static ones "
            f"serve print and readers without JavaScript |\n")


def breakdown_row(info: dict) -> str:
    """The build box's line on where this build's time went, up to the pages."""
    if "steps" not in info:
        return ""
    lines = time_breakdown(info["setup"], info["steps"], {n: t for n, t in info.get("times", {}).items()},
                           info.get("inside", {}))
    return f"| time by step | {'<br>'.join(lines)} |\n"


def tryit_row(sizes: dict | None) -> str:
    """The build box's line on the "Try it" page: its assets' sizes, and its times in the browser
    when this model's page has been measured (``--browser-check``)."""
    from imuse_lib import io, report

    if not sizes:
        return "| Try it page | not built (no deployed model) |\n"
    size = report.fmt_bytes
    text = (f"{size(sizes['total'])} of assets (model {size(sizes['model'])}, runtime {size(sizes['runtime'])} "
            f"gzipped, songs {size(sizes['songs'])})")
    try:
        times = io.read_json(checks.TRYIT_TIMES)
        fingerprint = io.read_json(common.ROOT / "book" / "_static" / "tryit" / "model" / "manifest.json")["fingerprint"]
    except (OSError, ValueError, KeyError):
        times, fingerprint = None, None
    if times and times.get("fingerprint") == fingerprint:
        text += (f"; in headless Chromium on this machine: first result {report.fmt_seconds(times['first_ms'] / 1000)}"
                 f" (model load included), later pictures {report.fmt_seconds(times['later_median_ms'] / 1000)} (median of "
                 f"{times['images'] - 1})")
    else:
        text += "; its times in the browser are measured by `make book-check`"
    return f"| Try it page | {text} |\n"


# --------------------------------------------------------------------------- the verdict

PAPER_KEY = "chheda2023imuse"  # the paper's entry in book/references.bib
# The rows of the verdict's table: (predictor, what a reader calls it).
VERDICT_ROWS = [("random", "random ranking"),
                ("quadrant", "quadrant only (told the true quadrant)"),
                ("image_agnostic", "picture-blind (one song list for all)"),
                ("ridge", "ridge (frozen features)"), ("knn", "kNN (frozen features)"),
                ("joint", "the paper's network, reproduced"),
                ("va_model", "deployed VA model (Try it, `imuse recommend`)")]


def verdict_path() -> Path:
    return common.EXECUTED_DIR / "verdict.md"  # included by book/intro.md


def paper_doi(bib: Path | None = None) -> str:
    """The paper's DOI from its book/references.bib entry ("" when the entry records none: the
    verdict then cites the paper without a link rather than with an invented one)."""
    path = bib or common.ROOT / "book" / "references.bib"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    entry = re.search(r"@\w+\{" + re.escape(PAPER_KEY) + r",(.*?)\n\}", text, re.S)
    doi = re.search(r"\bdoi\s*=\s*[{\"]([^}\"]+)[}\"]", entry.group(1), re.I) if entry else None
    return doi.group(1).strip() if doi else ""


def short_answer(found, cold: str, paper: str) -> str:
    """The verdict's first sentence, from the numbers: does the reproduced network reach the
    paper's MAP@10, and does any learned model beat the picture-blind ranking on NSG@10?"""
    from imuse_lib.experiments import DEPLOYED, PAPER_TABLE2, PREDICTOR_NAMES
    from imuse_lib.experiments.findings import MAP_CLOSE

    published = PAPER_TABLE2["map@10"]
    ours = found.value("joint", paper, "map_a@10")
    m = found.margins
    m = m[(m.split == cold) & (m.baseline == "image_agnostic") & (m.metric == "nsg@10")
          & m.config.isin([found.main_config, DEPLOYED])]
    winners = [p for p in found.learned(cold) if (m[m.predictor == p].verdict == "win").any()]
    reaches = ours >= published - MAP_CLOSE
    number = (f"the reproduced network {'reaches' if reaches else 'stays below'} the paper's MAP@10 "
              f"({ours:.3f} against {published:.3f})")
    if not winners:
        return (f"**{'Its number, yes; its point, no' if reaches else 'No'}:** {number}, {'but' if reaches else 'and'} "
                f"on a metric that asks whether the right songs come first, no learned model here, the paper's "
                f"network included, beats a single song ranking that ignores the picture.")
    names = " and ".join(f"the {PREDICTOR_NAMES[p]}" for p in winners)
    return (f"**{'Yes' if reaches and 'joint' in winners else 'Partly'}:** {number}, and on a metric that asks "
            f"whether the right songs come first {names} beat{'s' if len(winners) == 1 else ''} a single song "
            f"ranking that ignores the picture.")


def verdict_text(table2, margins, main_config: str, profile: str, repo_url: str = "", doi: str = "",
                 example: str = "") -> str:
    """The landing page's first screen (MyST): the short answer, the paper's MAP@10 against the
    reproduced one, what each predictor scores on NSG@10 (cold split, the metric the book trusts)
    and on MAP@10 (paper split), whether a learned model beats the picture-blind ranking, and the
    links to Try it, the paper and the code. Every number is read from ``table2`` / ``margins``."""
    from imuse_lib.experiments import PAPER_TABLE2, PREDICTOR_NAMES, Findings
    from imuse_lib.report import MISSING, fmt_metric

    found = Findings(table2, margins, main_config)
    splits = set(table2.split)
    cold = "cold" if "cold" in splits else "paper"
    paper = "paper" if "paper" in splits else cold
    rows, notes = [], []
    for pred, label in VERDICT_ROWS:
        if found.row(pred, cold) is None and found.row(pred, paper) is None:
            continue
        said = {split: found.averaged(pred, split) for split in dict.fromkeys((cold, paper))  # failed runs named
                if (r := found.row(pred, split)) is not None and r.get("kind") == "learned"
                and int(r.get("seeds", 1)) + int(r.get("failed_seeds", 0) or 0) > 1}
        if len(set(said.values())) == 1:
            notes.append(f"{PREDICTOR_NAMES[pred]}, {next(iter(said.values()))}"
                         + (" on both splits" if len(said) > 1 else f" on the {next(iter(said))} split"))
        elif said:
            notes.append(f"{PREDICTOR_NAMES[pred]}, " + "; ".join(f"{sp} split: {n}" for sp, n in said.items()))
        cells = [fmt_metric(found.value(pred, cold, "nsg@10")) if found.row(pred, cold) is not None else MISSING,
                 fmt_metric(found.value(pred, paper, "map_a@10")) if found.row(pred, paper) is not None else MISSING]
        rows.append(f"| {label} | {cells[0]} | {cells[1]} |")
    rows.append(f"| published: the paper's network (MobileNetV3 + SampleCNN) | {MISSING} | "
                f"{PAPER_TABLE2['map@10']:.3f} |")
    averaged = " ".join(f"{n[:1].upper()}{n[1:]}." for n in notes)  # which runs each mean averages
    blind = " ".join(x for x in (found.blind_sentence(cold), found.blind_sentence(paper) if paper != cold else "")
                     if x)
    paper_link = f"[doi:{doi}](https://doi.org/{doi})" if doi else ""
    code = f"[{repo_url}]({repo_url})" if repo_url else "the `imuse_lib` library and notebooks of this repository"
    return f"""## Does the paper's claim hold?

{short_answer(found, cold, paper)}

**Try it** with your own picture: {{doc}}`Try it <tryit>`. **The paper**: {{cite:t}}`{PAPER_KEY}`,
ICMLDE{(', ' + paper_link) if paper_link else ''}. **The code**: {code}.
{example}
{found.map_sentence(paper)}

| | NSG@10, {cold} split (trust this; random 0, oracle 1) | MAP@10 (a), {paper} split (the paper's metric) |
|---|---|---|
{chr(10).join(rows)}

{blind} {averaged}

NSG@10 asks whether the ten songs ranked first for a picture are closer to it in affect than the
average candidate song; the {cold} split holds out images and songs never seen in training, as a
deployed recommender meets them. MAP@10 ranks only each picture's own few test pairs, so a random
ranking already scores {fmt_metric(found.value("random", paper, "map_a@10"))} on it. Numbers: the
**{profile}** profile ({main_config}), from {{doc}}`the results chapter <_executed/04_results>`, which gives
their intervals.
"""


EXAMPLE_SONGS = 5  # songs shown beside the landing page's picture


def landing_example(model_dir: Path | None = None, top: int = EXAMPLE_SONGS, recommender=None) -> str:
    """One picture with its songs for the landing page (MyST, paths relative to book/): the first
    of the "Try it" page's example pictures (exported with its assets, so after install_tryit)
    and its ``top`` songs as `imuse recommend` ranks them with the deployed model and the default
    index, each with where its VA comes from. "" when the page's assets or the index are missing.
    ``recommender``: a loaded one (default: loaded here, not through ``recommend.recommend``,
    whose per-process cache would outlive this call)."""
    from imuse_lib import io, recommend, report
    from imuse_lib.errors import ImuseError

    model_dir = model_dir or common.ROOT / "book" / "_static" / "tryit" / "model"
    try:
        examples = io.read_json(model_dir / "songs.json").get("examples") or []
        if not examples:
            return ""
        ex = examples[0]
        rec = (recommender or recommend.Recommender.load()).recommend(model_dir / ex["file"], top=top)
    except (ImuseError, OSError, KeyError, ValueError):
        return ""
    v, a = (float(x) for x in rec.query_va)
    rows = [f"| {int(r['rank'])} | {_cell(r['artist'])} | {_cell(r['title'])} | "
            f"{'rated' if r.get('va_source', 'predicted') != 'predicted' else 'predicted from audio'} |"
            for r in rec.to_records()]
    thumb = Path("_static/tryit/model") / ex["thumbnail"]
    return f"""
**One picture, its songs.** The deployed model reads OASIS's *{ex['name']}* as {report.va_words(v, a)}
(valence {report.fmt_va(v)}, arousal {report.fmt_va(a)}); OASIS's raters found it
{report.va_words(float(ex['valence']), float(ex['arousal']))} ({report.fmt_va(ex['valence'])},
{report.fmt_va(ex['arousal'])}). The first of the Try-it page's examples, chosen by rule, not for
looking good; the model ranks first:

```{{image}} {thumb.as_posix()}
:alt: OASIS picture {ex['name']}, the landing page's example
:width: 160px
```

| rank | artist | title | VA of the song |
|---|---|---|---|
{chr(10).join(rows)}
"""


def _cell(text) -> str:
    """A value for a Markdown table cell (no pipe, no line break)."""
    return " ".join(str(text).replace("|", "/").split())


def write_verdict(profile: str, repo_url: str = "", out: Path | None = None) -> Path:
    """The verdict of ``profile``'s results (results/<profile>/table2.csv, margins.csv,
    results.json) written for book/intro.md; without results, a line that says how to make them."""
    from imuse_lib import experiments, io

    out = out or verdict_path()
    try:
        table2, margins = experiments.load_table2(profile), experiments.load_margins(profile)
        main_config = experiments.load_results(profile)["configs"][0]
        text = verdict_text(table2, margins, main_config, profile, repo_url, paper_doi(), landing_example())
    except Exception as exc:  # noqa: BLE001 - the landing page says what is missing instead of failing the build
        from imuse_lib.errors import ImuseError

        if not isinstance(exc, (ImuseError, KeyError, IndexError)):
            raise
        text = (f"## Does the paper's claim hold?\n\nNo results of the **{profile}** profile in this build "
                f"({exc}): `imuse train` and `imuse evaluate` write them, and the verdict appears here.\n")
    with io.atomic_path(out) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return out


def write_build_box(info: dict, names: list[str], out: Path = common.BUILD_BOX) -> Path:
    """The landing page's build box (MyST, included by book/intro.md): profile, commit, date,
    device, verified data and each chapter's execution time, all from this build; the verdict
    above it (:func:`write_verdict`) is written with it, beside ``out``."""
    from imuse_lib import io, report

    from .presentation import repository_setting

    write_verdict(info["profile"], repository_setting()[0], out.parent / "verdict.md")

    rows = []
    for name in names:
        stamp = io.read_json(stamp_path(name)) if stamp_path(name).exists() else {}
        seconds = stamp.get("seconds")
        took = report.fmt_seconds(seconds) if isinstance(seconds, (int, float)) else "?"
        when = "in this build" if info["executed"].get(name) else f"earlier (cached): {stamp.get('executed_at', '?')}"
        rows.append(f"| {{doc}}`{chapter_title(name)} <_executed/{name}>` | {took} | {when} |")
    text = f"""```{{admonition}} This edition
:class: note imuse-build-box

| | this edition |
|---|---|
| profile | **{info['profile']}**: {profile_summary(info['profile'])} |
| commit | `{info['commit']}` |
| built | {info['built']} |
| device | {info['device']} |
| data | {report.fmt_count(info['data_files'])} files of {info['data_assets']} data sets, SHA-256 checksums verified |
| build time | {build_time(info)} |
{breakdown_row(info)}{static_row(names)}{tryit_row(info.get('tryit'))}
| chapter | execution time | executed |
|---|---|---|
{chr(10).join(rows)}

`make book` builds the quick profile, `make book PROFILE=full` the full edition; the build time above is this edition's.
```
"""
    with io.atomic_path(out) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return out
