"""The ``imuse`` command line. Each command group lives in its own module and adds
its sub-commands through ``register(subparsers)``; every command function returns an
exit status.

Every command is guarded the same way: an expected failure (an ``ImuseError``, a file
system or SQLite error, a bad option) is printed as ONE line, ``imuse: error: ...``, and
exits 2; anything else is one line too, exit 1, and ``imuse --debug ...`` shows the
traceback. Numeric options take :func:`bounded_int` / :func:`bounded_float` types and free
text :func:`plain_text`, so a value out of range is refused with the accepted range.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import os
import signal
import sqlite3
import sys
import unicodedata
import warnings
import zipfile
from pathlib import Path

from ..errors import MAX_TEXT, DataError, ImuseError, printable, text_problem  # noqa: F401 (re-exported)

# Command groups, in the order `imuse --help` lists them.
GROUPS = ["data", "features", "train", "recommend", "acquire", "export"]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage is one `--help` away)."""

    def error(self, message):
        self.exit(2, f"imuse: error: {message} (see `{self.prog} --help`)\n")


def bounded_int(lo: int | None = None, hi: int | None = None, name: str = "value"):
    """An argparse type: an integer in [lo, hi]; the message states the range."""

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except (ValueError, AttributeError):
            raise argparse.ArgumentTypeError(f"expected an integer {_range(lo, hi)}, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{value} is out of range: expected an integer {_range(lo, hi)}")
        return value

    parse.__name__ = name  # argparse names the type in its messages
    return parse


def bounded_float(lo: float | None = None, hi: float | None = None, name: str = "value"):
    """An argparse type: a finite number in [lo, hi]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except (ValueError, TypeError):
            raise argparse.ArgumentTypeError(f"expected a number {_range(lo, hi)}, got {text!r}") from None
        if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"{text} is out of range: expected a number {_range(lo, hi)}")
        return value

    parse.__name__ = name
    return parse


def _range(lo, hi) -> str:
    def fmt(x):
        return str(x) if isinstance(x, int) else f"{x:g}"

    if lo is not None and hi is not None:
        return f"from {fmt(lo)} to {fmt(hi)}"
    return f"of at least {fmt(lo)}" if lo is not None else f"of at most {fmt(hi)}"


def plain_text(name: str = "text", max_len: int = MAX_TEXT):
    """An argparse type: printable text of 1..max_len characters, no control characters
    (tabs, newlines, terminal escapes would corrupt the tables and the terminal)."""

    def parse(text: str) -> str:
        problem = text_problem(text, max_len)
        if problem:
            shown = repr(text) if len(text) <= 40 else repr(text[:37]) + "..."
            raise argparse.ArgumentTypeError(f"{printable(shown)} {problem}; expected 1 to {max_len} printable characters")
        # one spelling per text: NFD "é" (e + accent, as macOS file names have it) and NFC "é"
        # print alike but would be two ids
        return unicodedata.normalize("NFC", text.strip())

    parse.__name__ = name
    return parse


def add_follow_symlinks(p) -> None:
    p.add_argument("--follow-symlinks", action="store_true",
                   help="when --out is a symbolic link, write its target (default: refuse)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="imuse",
        description="IMUSE: music recommendation from affective image content (ICMLDE 2023 companion).",
    )
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of a failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    sub.required = True
    for group in GROUPS:
        importlib.import_module(f"{__name__}.{group}").register(sub)
    return parser


_SIGNALLED: list[int] = []  # the signal that is ending this run, if any


def _terminate(signum, frame):
    """SIGTERM / SIGHUP unwind like Ctrl-C, so that `finally` blocks remove temporary files.
    Recorded too: Python wraps an exception raised inside some machinery (a class body's
    ``__set_name__``, a generator's close) in another one, which must still exit 128+N."""
    _SIGNALLED.append(signum)
    raise SystemExit(128 + signum)


# Python's own errors that mean a damaged input file, when the code that read it did not name it
_DAMAGED_FILE_ERRORS = (zipfile.BadZipFile, UnicodeDecodeError, EOFError)
_PACKAGE = str(Path(__file__).resolve().parent.parent)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Our own warnings as one ``imuse: warning:`` line; libraries' (PIL's "Corrupt EXIF data",
    numpy's overflow, torch's UserWarning) are dropped: the results are checked instead
    (non-finite values are refused), and ``--debug`` shows them."""
    if str(filename).startswith(_PACKAGE):
        print(f"imuse: warning: {_one_line(message)}", file=sys.stderr)


def _tolerant_streams() -> None:
    """Text that cannot be encoded (a file name with bytes that are not UTF-8) is written
    escaped instead of raising UnicodeEncodeError in the middle of a report."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            if getattr(stream, "errors", "strict") == "strict":
                stream.reconfigure(errors="backslashreplace")


def _one_line(exc: BaseException, limit: int | None = None) -> str:
    """The message on one line; ours are written to be read whole, others' are cut at ``limit``."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    _tolerant_streams()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    del _SIGNALLED[:]
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(sig, _terminate)
        except (ValueError, OSError):  # not the main thread (in-process callers): leave it
            pass
    try:
        with warnings.catch_warnings():
            if not args.debug:
                warnings.showwarning = _show_warning
            return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("imuse: interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        if _SIGNALLED:
            print(f"imuse: terminated by {signal.Signals(_SIGNALLED[0]).name}", file=sys.stderr)
            return 128 + _SIGNALLED[0]
        raise
    except Exception as exc:
        if _SIGNALLED:  # a SystemExit of _terminate, wrapped by Python in another exception
            print(f"imuse: terminated by {signal.Signals(_SIGNALLED[0]).name}", file=sys.stderr)
            return 128 + _SIGNALLED[0]
        if args.debug:
            raise
        if isinstance(exc, UnicodeEncodeError):
            bad = printable(exc.object[max(exc.start - 20, 0):exc.end + 20].encode("utf-8", "backslashreplace")
                            .decode("utf-8"))
            exc = DataError(f"{bad!r}: holds bytes that are not UTF-8 text (a file name or value from another "
                            f"encoding); rename the file or give the text with --title / --id")
        elif isinstance(exc, OSError):
            exc = DataError(f"{exc.filename or 'file'}: {exc.strerror or exc}")
        elif isinstance(exc, sqlite3.Error):
            exc = DataError(f"song index: {exc}")
        elif isinstance(exc, MemoryError):
            exc = ImuseError("out of memory; try a smaller input")
        elif isinstance(exc, _DAMAGED_FILE_ERRORS):
            exc = DataError(f"a file this command read is damaged or not what it should be ({type(exc).__name__}: "
                            f"{_one_line(exc, 200)}); `imuse --debug ...` shows which")
        elif isinstance(exc, RecursionError):
            exc = DataError("an input is nested too deeply to read (a JSON or config file?)")
        if isinstance(exc, ImuseError):
            print(f"imuse: error: {_one_line(exc)}", file=sys.stderr)
            return 2
        print(f"imuse: internal error: {type(exc).__name__}: {_one_line(exc, 300)} "
              f"(rerun with `imuse --debug ...` for the traceback, and please report it)", file=sys.stderr)
        return 1
