"""The landing page's build box: profile, commit, date, device, verified data, time by step,
static images left out, the "Try it" page's sizes and times, and each chapter's execution."""

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


def write_build_box(info: dict, names: list[str], out: Path = common.BUILD_BOX) -> Path:
    """The landing page's build box (MyST, included by book/intro.md): profile, commit, date,
    device, verified data and each chapter's execution time, all from this build."""
    from imuse_lib import io, report

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

`make book` builds the quick profile (minutes on a CPU); `make book PROFILE=full` builds the full edition.
```
"""
    with io.atomic_path(out) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return out
