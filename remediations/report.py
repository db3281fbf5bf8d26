"""What a person (or a program) sees of a run: a line per host and a recap, or one JSON document."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import TextIO

from remediations.results import STATUSES, HostResult, RunResult

COLOURS = {"ok": "green", "changed": "yellow", "failed": "red", "unreachable": "red", "skipped": "cyan"}


def host_lines(r: HostResult, *, check: bool, diff: bool) -> list[str]:
    verb = {"changed": "would change" if check else "changed"}.get(r.status, r.status)
    lines = [f"{r.host}: {verb}"]
    for c in r.changes:
        lines.append(f"  {'would edit' if check else 'edited'} {c['path']}")
    for h in r.handlers:
        why = f" ({h['reason']})" if h.get("reason") else ""
        lines.append(f"  handler {h['name']}: {h['status']}{why}")
    for w in r.warnings:
        lines.append(f"  warning: {w}")
    if r.error:
        lines.append(f"  error: {r.error['message']}")
        for line in (r.evidence.get("logs") or [])[-10:]:
            lines.append(f"    | {line}")
    if diff:
        for c in r.changes:
            if c.get("diff"):
                lines.extend("  " + line for line in c["diff"].rstrip("\n").splitlines())
    return lines


def print_host(r: HostResult, *, check: bool, diff: bool, out: TextIO = sys.stdout) -> None:
    lines = host_lines(r, check=check, diff=diff)
    if out.isatty():
        from rich.console import Console
        from rich.text import Text

        console = Console(file=out, highlight=False)
        console.print(Text(lines[0], style=COLOURS.get(r.status, "")))
        for line in lines[1:]:
            console.print(Text(line))
    else:
        out.write("\n".join(lines) + "\n")
        out.flush()


def recap(run: RunResult) -> str:
    counts = Counter(r.status for r in run.hosts)
    parts = " ".join(f"{s}={counts.get(s, 0)}" for s in STATUSES)
    rts = " ".join(f"{r.host}={r.round_trips}" for r in run.hosts)
    return f"RECAP {run.task} run {run.run_id}: {parts}; round trips {rts}; exit {run.exit_code}"


def print_json(run: RunResult, out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(run.to_dict(), indent=2) + "\n")
