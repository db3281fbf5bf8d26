"""What a person (or a program) sees of a run: a line per host and a recap, or one JSON document."""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

from remediations.model.results import STATUSES, HostResult, RunResult
from remediations.output.console import Printer


def host_lines(r: HostResult, *, check: bool, diff: bool) -> list[str]:
    verb = {"changed": "would change" if check else "changed"}.get(r.status, r.status)
    lines = [f"{r.host}: {verb}"]
    # A failed apply leaves the old bytes (never written, or restored by the agent).
    failed_apply = r.status == "failed" and (r.error or {}).get("kind") != "gate"
    done = "would edit" if check else "kept the old bytes of" if failed_apply else "edited"
    for c in r.changes:
        lines.append(f"  {done} {c['path']}")
    for h in r.handlers:
        why = f" ({h['reason']})" if h.get("reason") else ""
        lines.append(f"  handler {h['name']}: {h['status']}{why}")
    # Why a fix (or a part of `fix`) had nothing to do here; masked with the rest of the evidence.
    lines += [f"  {why}" for why in r.evidence.get("nothing_to_do") or []]
    for w in r.warnings:
        lines.append(f"  warning: {w}")
    if r.status == "skipped" and r.evidence.get("skipped"):
        lines.append(f"  {r.evidence['skipped']}")
    gate = r.evidence.get("gate")
    if gate and gate.get("ws_upgrade"):
        up = gate["ws_upgrade"]
        lines.append(f"  health gate: {gate['status']} (ws-upgrade {up['status']}: {up['actual']})")
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
    Printer(out).block(host_lines(r, check=check, diff=diff), r.status)


class FleetProgress:
    """A fleet run as it goes: on a terminal, a live rich progress bar with the counts and each host's
    lines above it; otherwise plain, stable lines (never a control character). `quiet` (--json):
    nothing on stdout."""

    def __init__(self, total: int, *, check: bool, diff: bool, quiet: bool = False,
                 out: TextIO | None = None, render: Callable[[HostResult], list[str]] | None = None) -> None:
        self.out = out or sys.stdout
        self.render = render or (lambda r: host_lines(r, check=check, diff=diff))
        self.check, self.diff, self.quiet, self.total = check, diff, quiet, total
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._progress: Any = None
        self._task: Any = None
        if not quiet and self.out.isatty():
            console = Console(file=self.out, highlight=False)
            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TextColumn("{task.fields[counts]}"),
                                      console=console, transient=True)
            self._task = self._progress.add_task("starting", total=total, counts=self._counts())
            self._progress.start()

    def _counts(self) -> str:
        return " ".join(f"{s}={self.counts.get(s, 0)}" for s in STATUSES)

    def _emit(self, lines: list[str], status: str | None = None) -> None:
        if self.quiet:
            return
        # Above a live progress bar, through its own console; otherwise plain lines.
        Printer(self.out, console=self._progress.console if self._progress is not None else None,
                plain=self._progress is None).block(lines, status)

    def batch(self, index: int, count: int, hosts: list[str], canary: bool) -> None:
        with self._lock:
            if count > 1 or canary:
                label = f"batch {index}/{count}" + (" (canary)" if canary else "")
                self._emit([f"{label}: {len(hosts)} host(s): {', '.join(hosts)}"])
            else:
                label = "all hosts"
            if self._progress is not None:
                self._progress.update(self._task, description=label)

    def host(self, r: HostResult) -> None:
        with self._lock:
            self.counts[r.status] += 1
            self._emit(self.render(r), r.status)
            if self._progress is not None:
                self._progress.update(self._task, advance=1, counts=self._counts())

    def stopped(self, reason: str, skipped: list[HostResult]) -> None:
        with self._lock:
            self._emit([reason])
            for r in skipped:
                self.counts[r.status] += 1
                self._emit(self.render(r), r.status)
            if self._progress is not None:
                self._progress.update(self._task, advance=len(skipped), counts=self._counts())

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def recap(run: RunResult) -> str:
    counts = Counter(r.status for r in run.hosts)
    parts = " ".join(f"{s}={counts.get(s, 0)}" for s in STATUSES)
    rts = " ".join(f"{r.host}={r.round_trips}" for r in run.hosts)
    fleet = getattr(run, "fleet", None) or {}
    rolled = ""
    if fleet.get("serial") or fleet.get("canary"):
        rolled = f"; batches {len(fleet.get('batches') or [])}"
        if fleet.get("stopped"):
            rolled += f" (stopped after batch {fleet['stopped']['after_batch']})"
    return f"RECAP {run.task} run {run.run_id}: {parts}{rolled}; round trips {rts}; exit {run.exit_code}"


def print_json(run: RunResult, out: TextIO = sys.stdout) -> None:
    out.write(json.dumps(run.to_dict(), indent=2) + "\n")
