"""The one console printer: plain, stable lines in a pipe; colours on a real terminal (a pty)."""

from __future__ import annotations

import io
import os
import pty

import pytest

from remediations.output.console import PALETTE, Printer


def test_plain_output_is_the_text_and_nothing_else() -> None:
    out = io.StringIO()
    p = Printer(out)
    p.block(["lab1: changed", "  edited /opt/app/.env"], "changed")
    p.line("lab2: ok", "ok")
    assert not p.rich
    assert out.getvalue() == "lab1: changed\n  edited /opt/app/.env\nlab2: ok\n"


def test_a_terminal_gets_the_status_colour_on_the_first_line_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm-256color")  # TERM=dumb or NO_COLOR rightly turn colours off
    monkeypatch.delenv("NO_COLOR", raising=False)
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty:
        p = Printer(tty)
        p.block(["lab1: failed", "  error: boom"], "failed")
        tty.flush()
        data = ""
        while data.count("\n") < 2:  # a pty may hand the bytes over in pieces
            data += os.read(master, 4096).decode()
    os.close(master)
    assert p.rich
    first, second = data.split("\n")[:2]
    assert "\x1b[31m" in first and "lab1: failed" in first  # red, as PALETTE says for failed
    assert "\x1b[" not in second and "error: boom" in second


def test_one_palette_means_the_same_in_every_task() -> None:
    # The words of runs, controls, probes and diagnose share their meaning: good, look, bad.
    assert PALETTE["ok"] == PALETTE["pass"] == PALETTE["stable"] == PALETTE["clear"] == "green"
    assert PALETTE["changed"] == PALETTE["fail"] == PALETTE["unstable"] == PALETTE["causes"] == "yellow"
    assert PALETTE["failed"] == PALETTE["unreachable"] == "red"
