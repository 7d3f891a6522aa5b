"""Errors that reach users as one clear line (the CLI prints ``imuse: error: <msg>``), and the
one check of free text (titles, artists, ids) that ends up in files, tables and messages."""

import unicodedata

MAX_TEXT = 200  # characters of a title, artist or id
# Unicode categories that corrupt a table or a terminal: controls (tab, newline, ESC of
# terminal escape codes), format characters (bidi overrides), line/paragraph separators.
CONTROL_CATEGORIES = ("Cc", "Cf", "Zl", "Zp")


def text_problem(text: str, max_len: int = MAX_TEXT) -> str | None:
    """Why ``text`` cannot be a title/artist/id (empty, too long, control characters), or None."""
    if not str(text).strip():
        return "is empty"
    if len(text) > max_len:
        return f"is {len(text)} characters long (at most {max_len})"
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
