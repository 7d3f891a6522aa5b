"""Where a result comes from: the git commit of the code, the date, the device and the versions
of the packages that computed it. The book's pages and build box, and ``results.json``, say it
the same way."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from . import config


def git_commit(root: str | os.PathLike | None = None) -> str:
    """Short commit of the checkout at ``root`` (the project's), "+changes" when its tracked files
    differ from it; "unknown" outside git (e.g. an installed package)."""
    root = Path(root) if root is not None else config.PROJECT_ROOT
    try:
        head = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], cwd=root, capture_output=True,
                              text=True, timeout=30)
        if head.returncode:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty else "")


def utc_now() -> str:
    """The time now, to the minute, as the book shows it: ``2026-12-03 14:05 UTC``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def device_label(device: str = "auto") -> str:
    """The device ``device`` resolves to, named as the pages name it (``cpu (x86_64, 2 cores)``)."""
    from . import training

    return training.device_name(training.resolve_device(device))


def versions() -> dict[str, str]:
    """Versions of the packages that compute the numbers."""
    import numpy as np
    import pandas as pd
    import torch

    return {"torch": torch.__version__, "numpy": np.__version__, "pandas": pd.__version__,
            "python": platform.python_version()}
