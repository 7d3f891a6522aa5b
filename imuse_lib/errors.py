"""Errors that reach users as one clear line (the CLI prints ``imuse: error: <msg>``), and the
one check of free text (titles, artists, ids) that ends up in files, tables and messages."""

import unicodedata

MAX_TEXT = 200  # characters of a title, artist or id
# Unicode categories that corrupt a table or a terminal: controls (tab, newline, ESC of
# terminal escape codes), format characters (bidi overrides), line/paragraph separators.
CONTROL_CATEGORIES = ("Cc", "Cf", "Zl", "Zp", "Cs")  # Cs: lone surrogates, undecodable bytes of a file name


def text_problem(text: str, max_len: int = MAX_TEXT) -> str | None:
    """Why ``text`` cannot be a title/artist/id (empty, too long, control characters), or None."""
    if not str(text).strip():
        return "is empty"
    if len(text) > max_len:
        return f"is {len(text)} characters long (at most {max_len})"
    if any(unicodedata.category(c) == "Cs" for c in text):  # undecodable bytes of the command line
        return "holds bytes that are not UTF-8 text"
    bad = [c for c in text if unicodedata.category(c) in CONTROL_CATEGORIES]
    if bad:
        return f"holds control character(s) {', '.join(repr(c) for c in dict.fromkeys(bad))}"
    return None


def printable(text) -> str:
    """``text`` safe for a terminal: control characters shown escaped (data from older files)."""
    text = str(text)
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in CONTROL_CATEGORIES
                   else c for c in text)


class ImuseError(Exception):
    """Base class: the message alone must tell the user what is wrong and with what."""


class DataError(ImuseError):
    """A data file is missing, altered, unreadable or malformed."""


class MediaError(ImuseError):
    """An image or audio file cannot be decoded or is unusable (silent, too short...)."""


class WeightsError(ImuseError):
    """Pretrained weights that were asked for are not available."""


class ModelMismatchError(ImuseError):
    """A model, checkpoint or index does not match what it is used with."""


class NetworkError(ImuseError):
    """A remote service cannot be reached at all (no connection, no DNS): retrying is pointless."""


class CredentialsError(ImuseError):
    """A remote service needs credentials that are not set."""


class ExportError(ImuseError):
    """The model cannot be exported for the book's page, or the export does not match PyTorch."""


# Evaluation crops a model's metadata may ask for per clip: more would only burn memory and time
# (each crop is one backbone pass); the backbones use 1 to 16.
MAX_EVAL_CROPS = 256


def meta_int(value, key: str, lo: int, hi: int) -> int:
    """An integer ``key`` of a model's or checkpoint's metadata within [lo, hi], else one line
    (ModelMismatchError): an altered checkpoint asking for 10^9 evaluation crops or "abc"
    must not reach the code that allocates them."""
    try:
        number = int(value)
        if isinstance(value, float) and number != value:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise ModelMismatchError(f"model metadata: {key} is {str(value)[:40]!r}, not an integer; "
                                 f"the model file is altered or damaged") from None
    if not lo <= number <= hi:
        raise ModelMismatchError(f"model metadata: {key} is {number}, outside {lo}..{hi}; "
                                 f"the model file is altered or damaged")
    return number


def require_finite(what, *arrays) -> None:
    """MediaError naming ``what`` (the input) when a computed value (features, a prediction)
    is NaN or infinite: "valence nan" must never be printed as a result."""
    import numpy as np

    for arr in arrays:
        if arr is not None and not np.isfinite(np.asarray(arr, dtype=float)).all():
            raise MediaError(f"{what}: the model's output for this input is not a finite number (NaN or inf); "
                             f"the input holds values the network cannot take, or the model file is damaged")
