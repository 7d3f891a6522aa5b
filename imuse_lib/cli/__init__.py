"""The ``imuse`` command line. Each command group lives in its own module and adds
its sub-commands through ``register(subparsers)``; every command function returns an
exit status. Errors the user can fix arrive as ``ImuseError`` and are printed as one line."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import ImuseError

# Command groups, in the order `imuse --help` lists them.
GROUPS = ["data", "features", "train", "recommend", "acquire"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imuse",
        description="IMUSE: music recommendation from affective image content (ICMLDE 2023 companion).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in GROUPS:
        importlib.import_module(f"{__name__}.{group}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ImuseError as exc:
        print(f"imuse: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("imuse: interrupted", file=sys.stderr)
        return 130
