"""Progress lines off a terminal, and the book's relay of them out of a notebook kernel."""

from __future__ import annotations

import io

import nbformat

from wspec import book
from wspec.progress import is_progress_line, progress_line, track


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()  # not a TTY: no escape codes, plain lines
    out = list(track(range(5), "spectra m", unit="clips", stream=stream, every_s=0.0))
    assert out == [0, 1, 2, 3, 4]
    lines = stream.getvalue().splitlines()
    assert all(is_progress_line(line) for line in lines)
    assert "\x1b" not in stream.getvalue() and "\r" not in stream.getvalue()
    # Start, after each of the first four items (every_s=0), and the end.
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == [
        "0/5",
        "1/5",
        "2/5",
        "3/5",
        "4/5",
        "5/5",
    ]
    assert "ETA" in lines[2] and "ETA" not in lines[-1]


def test_lines_are_rate_limited_and_can_be_switched_off() -> None:
    stream = io.StringIO()
    list(track(range(100), "x", stream=stream, every_s=3600.0))
    assert len(stream.getvalue().splitlines()) == 2  # start and end only
    quiet = io.StringIO()
    assert list(track([1, 2], "x", stream=quiet, enabled=False)) == [1, 2]
    assert quiet.getvalue() == ""


def test_eta_extrapolates_the_time_per_item() -> None:
    line = progress_line("attacks base", 10, 40, 125.0, "clips")
    assert line == "[wspec] attacks base: 10/40 clips (25 %), 2m05s elapsed, ETA 6m15s"
    assert progress_line("x", 0, 0, 0.0, "clips").endswith("0/0 clips, 0s elapsed")


def test_book_relays_progress_and_strips_it_from_the_page() -> None:
    terminal = io.StringIO()
    relay = book._ProgressRelay(terminal)
    relay.write("[wspec] spectra m: 1/2 clips (50 %), 3s elapsed, ETA 3s\nsome warning\n")
    assert terminal.getvalue() == "  [wspec] spectra m: 1/2 clips (50 %), 3s elapsed, ETA 3s\n"
    cell = nbformat.v4.new_code_cell("run()")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stderr", text="[wspec] a: 0/1 clips\n"),
        nbformat.v4.new_output("stream", name="stderr", text="[wspec] a: 1/1\nUserWarning: x\n"),
        nbformat.v4.new_output("stream", name="stdout", text="[wspec] printed on purpose\n"),
    ]
    book._without_progress(cell)
    assert [o["text"] for o in cell.outputs] == ["UserWarning: x\n", "[wspec] printed on purpose\n"]
