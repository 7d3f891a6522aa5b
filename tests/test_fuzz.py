"""Property-based fuzzing (Hypothesis) of what users type and feed: the song-list CSV
reader, the option types, the free-text check, the output-path check. Properties: a
parser either returns a well-formed value or raises its one-line error (never anything
else); accepted text never carries control characters; a rejected path is never touched."""

from __future__ import annotations

import argparse
import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imuse_lib import cli, io
from imuse_lib.acquisition import pipeline
from imuse_lib.cli import bounded_float, bounded_int, plain_text
from imuse_lib.errors import DataError, ImuseError, text_problem

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

CONTROL = ("Cc", "Cf", "Zl", "Zp")
cells = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


@FUZZ
@given(st.binary(max_size=600))
def test_songlist_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("fz") / "songs.csv"
    path.write_bytes(raw)
    try:
        songs = pipeline.read_songlist(path)
    except DataError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert len(songs) and songs.song_id.is_unique
    assert all(isinstance(v, str) and v.strip() for v in list(songs.artist) + list(songs.title))


@FUZZ
@given(st.lists(st.tuples(cells, cells), min_size=0, max_size=8),
       st.sampled_from(["artist,title", "Artist , Title,year", "title,artist", "name,song"]),
       st.sampled_from(["\n", "\r\n"]))
def test_songlist_rows(tmp_path_factory, rows, header, newline):
    import csv
    import io as stdio

    buf = stdio.StringIO()
    writer = csv.writer(buf, lineterminator=newline)
    writer.writerow([h.strip() for h in header.split(",")])
    for a, t in rows:
        writer.writerow([a, t] + (["1999"] if header.count(",") == 2 else []))
    path = tmp_path_factory.mktemp("fz") / "songs.csv"
    path.write_text(buf.getvalue(), encoding="utf-8")
    try:
        songs = pipeline.read_songlist(path)
    except DataError as exc:
        assert "\n" not in str(exc)
        return
    for value in list(songs.artist) + list(songs.title):  # cleaned: no control characters reach a table
        assert value == value.strip() and value
        assert not any(unicodedata.category(c) in ("Cc",) for c in value)


@FUZZ
@given(st.text(max_size=30), st.integers(-5, 5), st.integers(5, 50))
def test_bounded_int(text, lo, hi):
    parse = bounded_int(lo, hi)
    try:
        value = parse(text)
    except argparse.ArgumentTypeError as exc:
        assert "\n" not in str(exc) and f"from {lo} to {hi}" in str(exc)
        return
    assert isinstance(value, int) and lo <= value <= hi and value == int(text)


@FUZZ
@given(st.one_of(st.text(max_size=20), st.floats(allow_nan=True, allow_infinity=True).map(repr)))
def test_bounded_float(text):
    parse = bounded_float(1.0, 600.0)
    try:
        value = parse(text)
    except argparse.ArgumentTypeError as exc:
        assert "from 1 to 600" in str(exc)
        return
    assert 1.0 <= value <= 600.0


@FUZZ
@given(st.text(max_size=260))
def test_plain_text(text):
    parse = plain_text("title")
    try:
        value = parse(text)
    except argparse.ArgumentTypeError as exc:
        assert text_problem(text) is not None and "\n" not in str(exc)
        return
    assert text_problem(text) is None and 1 <= len(value) <= 200
    assert not any(unicodedata.category(c) in CONTROL for c in value)


@FUZZ
@given(st.lists(st.sampled_from(["--top", "--threads", "--json", "--index", "--model", "0", "-1", "3", "x",
                                 "1e9", "", "--", "--nope", "photo.jpg", "\t", "\x1b[0m"]), max_size=6))
def test_recommend_options_never_crash(capsys, argv):
    """Any argument salad for `imuse recommend`: exit 2 with one error line, or (valid) on to
    the file checks, which fail with one line too (no such image here)."""
    rc = cli.main(["recommend", *argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if rc != 0:
        assert rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("imuse: error: ")


@FUZZ
@given(st.text(st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00/"),
               min_size=0, max_size=30))
def test_output_path_names(tmp_path_factory, name):
    folder = tmp_path_factory.mktemp("out")
    try:
        path = io.check_output_path(folder / name) if name else io.check_output_path(name)
    except (DataError, ImuseError) as exc:
        assert "\n" not in str(exc)
        assert sorted(os.listdir(folder)) == []
        return
    except OSError:
        pytest.skip("name too long for this file system")
    assert Path(path).parent == folder or not name


# --------------------------------------------------------------------------- outputs never replace inputs

# Ways of writing a path that reaches an input: its own name, a detour through "..", a
# symbolic link to it, a link to its folder, a hard link, a relative path from elsewhere.
ROUTES = ("direct", "dotdot", "dot", "link", "dirlink", "hardlink", "relative", "double-slash")


def _route(base: Path, target: Path, route: str, tag: str) -> str:
    if route == "direct":
        return str(target)
    if route == "dotdot":
        return str(target.parent / "sub" / ".." / target.name)
    if route == "dot":
        return str(target.parent / "." / "." / target.name)
    if route == "double-slash":
        return str(target.parent) + "//" + target.name
    if route == "link":
        link = base / f"link-{tag}.csv"
        link.symlink_to(target)
        return str(link)
    if route == "dirlink":
        folder = base / f"dir-{tag}"
        folder.symlink_to(target.parent, target_is_directory=True)
        return str(folder / target.name)
    if route == "hardlink":
        hard = base / f"hard-{tag}.csv"
        os.link(target, hard)
        return str(hard)
    return os.path.relpath(target, base / "sub")  # relative to a working folder


@FUZZ
@given(st.sampled_from(ROUTES), st.text(st.characters(codec="utf-8", categories=["L", "N"]), min_size=1,
                                        max_size=12),
       st.booleans(), st.booleans())
def test_an_output_resolving_to_an_input_is_refused(tmp_path_factory, route, name, follow, exists):
    """Property: whatever the route to one of the command's inputs, :func:`io.check_output`
    refuses it and the input is untouched; an unrelated new path beside it is accepted."""
    base = tmp_path_factory.mktemp("out")
    (base / "sub").mkdir()
    data = base / "in" / f"{name}.csv"
    data.parent.mkdir()
    data.write_text("keep,me\n")
    out = _route(base, data, route, "t")
    cwd = os.getcwd()
    os.chdir(base / "sub")
    try:
        with pytest.raises(DataError) as info:
            io.check_output(out, follow_symlinks=follow, inputs=[data])
        assert "\n" not in str(info.value)
        # a link is refused as a link unless followed; every other route as the input it is
        assert ("symbolic link" in str(info.value)) if route == "link" and not follow else \
            "input" in str(info.value)
        other = base / "in" / (f"{name}-new.csv" if exists else f"{name}.out.csv")
        if exists:
            other.write_text("old output\n")
        assert io.check_output(str(other), inputs=[data]) == other
    finally:
        os.chdir(cwd)
    assert data.read_text() == "keep,me\n"


def test_dash_is_standard_output_or_refused():
    assert io.check_output("-", stdout=True) is None
    with pytest.raises(DataError, match="not standard output"):
        io.check_output("-")
    with pytest.raises(DataError, match="not standard output"):
        io.check_output_folder("-")


@FUZZ
@given(st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Cf", "Zl", "Zp"]), min_size=1,
               max_size=30))
def test_one_spelling_per_text(text):
    """NFC and NFD spellings of one title print alike: they must be one value (one id)."""
    parse = plain_text("title")
    try:
        nfc = parse(unicodedata.normalize("NFC", text))
    except argparse.ArgumentTypeError:
        return
    assert parse(unicodedata.normalize("NFD", text)) == nfc == unicodedata.normalize("NFC", nfc)
