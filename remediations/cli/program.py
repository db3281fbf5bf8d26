"""The `wsguard` command: invoke's Program over an explicit Collection of the product's tasks.

`pip install .` (or pipx) gives `wsguard fix-nginx ...` anywhere; in a checkout, `invoke fix-nginx ...`
runs the same tasks (tasks.py adds the lab's). A bad flag value is one line, never a traceback.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

from invoke import Collection, Program
from invoke.exceptions import ParseError

from remediations.cli import fix_tasks, history_tasks, probe_tasks, schedule_tasks, verify_tasks

MODULES = (fix_tasks, verify_tasks, history_tasks, probe_tasks, schedule_tasks)


def collection() -> Collection:
    """Every product task, named as on the command line (fix-nginx, verify, rollback...)."""
    ns = Collection()
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
    return f"wsguard: {exc}\n  hint: `wsguard --help TASK` lists the task's flags and their types"


def _version() -> str:
    try:
        return version("wsguard")
    except PackageNotFoundError:
        return "unknown"


def main() -> None:
    WsguardProgram(name="wsguard", binary="wsguard", namespace=collection(), version=_version()).run()
