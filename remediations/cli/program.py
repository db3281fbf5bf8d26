"""The `wsguard` command: invoke's Program over an explicit Collection of the product's tasks.

`pip install .` (or pipx) gives `wsguard fix-nginx ...` anywhere; in a checkout, `invoke fix-nginx ...`
runs the same tasks (tasks.py adds the lab's). A bad flag value is one line, never a traceback.
"""

from __future__ import annotations

import os
import sys

from invoke import Program
from invoke.exceptions import ParseError

from remediations.cli import fix_tasks, history_tasks, probe_tasks, schedule_tasks, verify_tasks
from remediations.cli.flags import FlagCollection, FlagError

MODULES = (fix_tasks, verify_tasks, history_tasks, probe_tasks, schedule_tasks)


def collection() -> FlagCollection:
    """Every product task, named as on the command line (fix-nginx, verify, rollback...)."""
    ns = FlagCollection()
    for module in MODULES:
        for t in module.TASKS:
            ns.add_task(t)
    return ns


class WsguardProgram(Program):
    def parse_core(self, argv: list[str] | None) -> None:
        try:
            super().parse_core(argv)
        except ParseError as exc:
            sys.exit(_one_line(exc))

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            sys.exit(_one_line(exc))


def _one_line(exc: ParseError) -> str:
    if isinstance(exc, FlagError):  # already says what the flag takes and what it got
        return str(exc)
    return f"wsguard: {exc}\n  hint: `wsguard --help TASK` lists the task's flags and their types"


def _version() -> str:
    # Imported here: importlib.metadata is a fifth of `invoke --list`'s import time, and only wsguard asks.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wsguard")
    except PackageNotFoundError:
        return "unknown"


def main() -> None:
    try:
        WsguardProgram(name="wsguard", binary="wsguard", namespace=collection(), version=_version()).run()
    except BrokenPipeError:  # the reader went away (`wsguard --help | head`): stop quietly, as a Unix tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
