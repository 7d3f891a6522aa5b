"""Reader-first presentation of the executed copies: code folded or removed by a rule that cell
tags override, the "numbers from" line under each chapter title (profile, date, commit,
Colab/Binder links), and the repository setting behind those links and the book's buttons."""

from __future__ import annotations

import os
import re
from pathlib import Path

from imuse_lib.profiles import profile_summary

from . import common
from .common import BuildError
from .execution import stamp_path


REPOSITORY_ENV = "IMUSE_REPOSITORY_URL"
# Tags with which a notebook says itself how a cell is shown; a cell carrying one is left alone.
# "show-input" is ours: keep the code visible (myst-nb ignores the tag itself).
VISIBILITY_TAGS = {"hide-input", "remove-input", "hide-cell", "remove-cell", "hide-output", "remove-output",
                   "show-input"}
GLUE_PREFIX = "application/papermill.record/"  # myst-nb's glue(display=False) records
AUTO_TAGS_KEY = "imuse_auto_tags"  # cell metadata: the tags the build added (re-derived every build)
PROVENANCE_KEY = "imuse_provenance"  # cell metadata marking the build's "numbers from" cell


def _visible_outputs(cell) -> list:
    """Outputs a reader sees: not glue records (display=False), not stderr (removed by the book)."""
    shown = []
    for out in cell.get("outputs", []):
        kind = out.get("output_type")
        if kind == "stream":
            if out.get("name") != "stderr" and out.get("text", "").strip():
                shown.append(out)
        elif kind in {"display_data", "execute_result"}:
            if any(not k.startswith(GLUE_PREFIX) for k in out.get("data", {})):
                shown.append(out)
        elif kind == "error":
            shown.append(out)
    return shown


def _only_boxes(outputs: list) -> bool:
    from imuse_lib import report

    return bool(outputs) and all(report.BOX_CLASS in "".join(o.get("data", {}).get("text/html", ""))
                                 for o in outputs)


def reader_tag(cell) -> str | None:
    """How the build shows a code cell whose tags do not say (the rule every chapter inherits):

    * the papermill-injected parameters: removed (the chapter's "numbers from" line names the profile);
    * the notebook's own parameters cell: code folded (it documents the parameters);
    * a cell that shows nothing (imports, glue helpers, glue-only computations) or only a
      "what this shows" box: code removed, it is plumbing;
    * any other cell: code folded behind "Show code cell source", output shown.
    """
    tags = set(cell.metadata.get("tags", []))
    if cell.cell_type != "code" or tags & VISIBILITY_TAGS:
        return None
    if "injected-parameters" in tags:
        return "remove-cell"
    if "parameters" in tags:
        return "hide-input"
    outputs = _visible_outputs(cell)
    if not outputs or _only_boxes(outputs):
        return "remove-input"
    return "hide-input"


def reader_first(nb) -> None:
    """Apply :func:`reader_tag` to every code cell; tags a previous build added are re-derived."""
    for cell in nb.cells:
        auto = set(cell.metadata.pop(AUTO_TAGS_KEY, []))
        tags = [t for t in cell.metadata.get("tags", []) if t not in auto]
        if tags:
            cell.metadata["tags"] = tags
        else:
            cell.metadata.pop("tags", None)
        tag = reader_tag(cell)
        if tag:
            cell.metadata["tags"] = tags + [tag]
            cell.metadata[AUTO_TAGS_KEY] = [tag]


AUTO_ALT_KEY = "imuse_auto_alt"  # cell metadata: the alt text the build wrote (re-derived every build)
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")


def figure_alt_texts(nb, chapter: str) -> None:
    """Alt text for every code cell that shows an image and whose author gave none
    (``metadata.mystnb.image.alt``): a sentence naming the chapter and the section the figure
    belongs to, instead of the image's file name (what myst-nb would use)."""
    section = ""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            headings = re.findall(r"^#{1,3}\s+(.+?)\s*$", cell.source, re.M)
            section = headings[-1] if headings else section
            continue
        options = cell.metadata.get("mystnb", {}).get("image", {})
        if cell.metadata.pop(AUTO_ALT_KEY, False):
            options.pop("alt", None)
        shows_image = any(m in out.get("data", {}) for out in cell.get("outputs", []) for m in IMAGE_MIMES)
        if not shows_image or options.get("alt"):
            if not options and "mystnb" in cell.metadata:
                cell.metadata["mystnb"].pop("image", None)
                if not cell.metadata["mystnb"]:
                    del cell.metadata["mystnb"]
            continue
        where = f'the section "{section}" of the chapter "{chapter}"' if section and section != chapter \
            else f'the chapter "{chapter}"'
        cell.metadata.setdefault("mystnb", {}).setdefault("image", {})["alt"] = \
            f"A figure of {where}; the text around it says what it shows."
        cell.metadata[AUTO_ALT_KEY] = True


def launch_links(name: str, repo_url: str, branch: str) -> list[tuple[str, str]]:
    """(label, URL) of the places a reader can run ``notebooks/<name>.ipynb``: Colab and Binder for
    a GitHub repository, the source file otherwise. None without a repository."""
    from urllib.parse import quote

    if not repo_url:
        return []
    path = f"notebooks/{name}.ipynb"
    m = re.match(r"https://github\.com/([^/\s]+)/([^/\s]+?)(?:\.git)?/?$", repo_url)
    if not m:
        return [("notebook source", f"{repo_url.rstrip('/')}/blob/{branch}/{path}")]
    owner, repo = m.groups()
    return [("Open in Colab", f"https://colab.research.google.com/github/{owner}/{repo}/blob/{branch}/{path}"),
            ("Launch on Binder", f"https://mybinder.org/v2/gh/{owner}/{repo}/{quote(branch, safe='')}"
                                 f"?labpath={quote(path, safe='')}"),
            ("notebook source", f"{repo_url.rstrip('/')}/blob/{branch}/{path}")]


def provenance_html(profile: str, stamp: dict, links: list[tuple[str, str]]) -> str:
    """The line under a chapter's title: which profile, when and at which commit it was executed."""
    import html

    when = stamp.get("executed_at", "?")
    commit = stamp.get("commit", "?")
    seconds = stamp.get("seconds")
    took = f" in {fmt_seconds(seconds)}" if isinstance(seconds, (int, float)) else ""
    text = (f'Numbers on this page: <strong>{html.escape(profile)}</strong> profile '
            f'({html.escape(profile_summary(profile))}); executed {html.escape(when)}{took} at commit '
            f'<code>{html.escape(commit)}</code>.')
    if links:
        text += " " + " &middot; ".join(f'<a href="{html.escape(url)}">{html.escape(label)}</a>'
                                        for label, url in links)
    return f'<p class="imuse-provenance">{text}</p>'


def add_provenance(nb, markup: str) -> None:
    """Put ``markup`` in a markdown cell right after the chapter's title cell (replacing the one a
    previous build put there)."""
    import nbformat

    nb.cells = [c for c in nb.cells if not c.metadata.get(PROVENANCE_KEY)]
    cell = nbformat.v4.new_markdown_cell(markup)
    cell.id = "imuse-provenance"  # a fixed id: an unchanged line leaves the page unchanged (no rebuild)
    cell.metadata[PROVENANCE_KEY] = True
    first = nb.cells[0] if nb.cells else None
    at = 1 if first is not None and first.cell_type == "markdown" and first.source.lstrip().startswith("# ") else 0
    nb.cells.insert(at, cell)


def present(name: str, profile: str, repo_url: str, branch: str) -> bool:
    """Reader-first presentation of ``book/_executed/<name>.ipynb``; True when it changed."""
    import nbformat

    from imuse_lib import io

    path = common.EXECUTED_DIR / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    stamp = io.read_json(stamp_path(name)) if stamp_path(name).exists() else {}
    reader_first(nb)
    title = next((m[1] for c in nb.cells if c.cell_type == "markdown"
                  for m in [re.match(r"#\s+(.+)", c.source.lstrip())] if m), name)
    figure_alt_texts(nb, title.strip())
    add_provenance(nb, provenance_html(stamp.get("profile", profile), stamp, launch_links(name, repo_url, branch)))
    after = nbformat.writes(nb)
    if after == before:
        return False
    with io.atomic_path(path) as tmp:
        Path(tmp).write_text(after, encoding="utf-8")
    return True


def fmt_seconds(seconds: float) -> str:
    from imuse_lib import report

    return report.fmt_seconds(seconds)


def repository_setting(config_path: Path | None = None) -> tuple[str, str]:
    """(repository URL, branch): ``$IMUSE_REPOSITORY_URL`` or ``repository.url`` of _config.yml,
    the one setting behind the repository button and the launch links ("" when unset)."""
    import yaml

    config = yaml.safe_load((config_path or common.ROOT / "_config.yml").read_text(encoding="utf-8")) or {}
    repo = config.get("repository") or {}
    url = (os.environ.get(REPOSITORY_ENV) or repo.get("url") or "").strip()
    if url and not re.match(r"https://[^\s/]+/\S+$", url):
        raise BuildError(f"repository URL {url!r} (from {REPOSITORY_ENV} or _config.yml repository.url) is not "
                         f"an https:// address of a repository, e.g. https://github.com/OWNER/NAME")
    return url.rstrip("/"), str(repo.get("branch") or "main")


# The hosts whose kind sphinx-book-theme infers from their address; on any other a repository URL
# stops the theme ("Provider not recognized"), so such a repository gets its chapters' source links
# (launch_links) but no button.
THEME_REPOSITORY_HOSTS = ("github", "gitlab", "bitbucket")


def write_build_config(repo_url: str, out: Path = common.BUILD_CONFIG, source: Path | None = None) -> Path:
    """_config.yml with the repository setting applied: the repository button when a URL is set
    (on a host the theme knows, :data:`THEME_REPOSITORY_HOSTS`), none otherwise (a button to
    nowhere is worse than none)."""
    from urllib.parse import urlparse

    import yaml

    source = source or common.ROOT / "_config.yml"
    config = yaml.safe_load(source.read_text(encoding="utf-8"))
    if repo_url and not any(h in urlparse(repo_url).netloc.lower() for h in THEME_REPOSITORY_HOSTS):
        repo_url = ""
    config.setdefault("repository", {})["url"] = repo_url
    # Jupyter Book finds local extensions relative to the config file, which moves to _build/
    extensions = (config.get("sphinx") or {}).get("local_extensions") or {}
    for name, folder in extensions.items():
        extensions[name] = str((source.parent / folder).resolve())
    html = config.setdefault("html", {})
    html["use_repository_button"] = bool(repo_url)
    html["use_issues_button"] = bool(repo_url) and "github.com/" in repo_url
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("# Generated by scripts/build_book.py from _config.yml: do not edit.\n"
                   + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return out
