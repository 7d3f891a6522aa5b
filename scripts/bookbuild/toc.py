"""The table of contents: which executed notebooks the book lists, and a copy without missing pages."""

from __future__ import annotations

from pathlib import Path

from . import common


def toc_notebooks(toc: Path = common.TOC) -> list[str]:
    """Names (``01_data_selection``...) of the executed notebooks the toc lists, in order."""
    import yaml

    entries: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            file = node.get("file") or node.get("root")
            if isinstance(file, str):
                entries.append(file)
            for value in node.values():
                if isinstance(value, (list, dict)):
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(yaml.safe_load(toc.read_text(encoding="utf-8")))
    prefix = common.EXECUTED_DIR.relative_to(common.ROOT).as_posix() + "/"
    return [e[len(prefix):].removesuffix(".ipynb") for e in entries if e.startswith(prefix)]


def write_build_toc(names_missing: list[str]) -> Path:
    """A copy of _toc.yml without the pages whose notebooks are missing (--allow-missing only)."""
    import yaml

    toc = yaml.safe_load(common.TOC.read_text(encoding="utf-8"))
    drop = {f"{common.EXECUTED_DIR.relative_to(common.ROOT).as_posix()}/{n}" for n in names_missing}

    def prune(node):
        if isinstance(node, dict):
            return {k: prune(v) for k, v in node.items()}
        if isinstance(node, list):
            return [prune(x) for x in node if not (isinstance(x, dict) and x.get("file") in drop)]
        return node

    out = common.ROOT / "_build" / "_toc.partial.yml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(prune(toc), sort_keys=False))
    return out
