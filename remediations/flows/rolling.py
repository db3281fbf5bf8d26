"""The rolling fix: a changing task over the fleet in batches, each changed host passing the health gate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from remediations.checks.gate import health_gate
from remediations.output import render as report
from remediations.run import fleet


def rolling_fix(task: str, hosts: list[Any], conn: Any, fn: Any, *, rollout: Any, check: bool, diff: bool,
              as_json: bool, render: Callable[[Any], list[str]] | None = None) -> Any:
    """Run a changing task over the fleet with its display; the health gate checks changed hosts
    (rolling runs). `render`: a host's lines, when the task shows more than report.host_lines."""
    progress = report.FleetProgress(len(hosts), check=check, diff=diff, quiet=as_json, render=render)
    try:
        return fleet.run(task, hosts, conn, fn, pending_is_2=check, rollout=rollout,
                         gate=None if check else health_gate(conn.connect_timeout), progress=progress)
    finally:
        progress.close()
