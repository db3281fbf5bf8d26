"""The one console printer: rich colours on a terminal, plain stable lines everywhere else.

Every task prints through here, with one palette: a word's colour means the same in every task's output
(green: all is well, yellow: something to look at, red: something failed, cyan: left alone).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

# One palette for the status words of every task (runs, controls, probe and diagnose verdicts, log kinds).
PALETTE = {
    # all is well
    "ok": "green", "pass": "green", "stable": "green", "clear": "green", "websocket": "green",
    # something to look at: a change made or pending, drift, instability, a likely cause
    "changed": "yellow", "fail": "yellow", "unstable": "yellow", "causes": "yellow", "disconnect": "yellow",
    "warn": "yellow",
    # something failed
    "failed": "red", "unreachable": "red", "error": "bold red", "timeout": "bold red", "heartbeat": "red",
    # left alone, or background
    "skipped": "cyan", "restart": "cyan", "info": "dim", "monitor": "bold blue",
    "rate_limit": "bold magenta",
}


class Printer:
    """Prints lines to one stream: on a terminal the first line of a block (or a whole line) styled by its
    status word, elsewhere the text as it is, flushed, never a control character."""

    def __init__(self, out: TextIO | None = None, *, console: Any = None, plain: bool = False) -> None:
        self.out = out or sys.stdout
        self.console = console  # a rich Console owned by someone else (a live progress display)
        if self.console is None and not plain and self.out.isatty():
            self.console = Console(file=self.out, highlight=False, soft_wrap=True)

    @property
    def rich(self) -> bool:
        return self.console is not None

    def block(self, lines: list[str], status: str | None = None) -> None:
        """A host's block: its first line styled by `status`, the rest plain."""
        if not lines:
            return
        if self.console is None:
            self.out.write("\n".join(lines) + "\n")
            self.out.flush()
            return
        self.console.print(Text(lines[0], style=PALETTE.get(status or "", "")))
        for line in lines[1:]:
            self.console.print(Text(line))

    def line(self, text: str, status: str | None = None) -> None:
        self.block([text], status)
