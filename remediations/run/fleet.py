"""Fleet runs: rolling batches, a health gate after each batch, a failure threshold, shards.

    --serial N | N% | A,B,...   batch sizes, as Ansible's `serial` (a list: the last size repeats;
                                N% of the selected hosts, rounded down, at least 1)
    --canary                    a first batch of exactly one host, then --serial (or all the rest)
    --max-fail-percent P        no new batch starts once the failed + unreachable hosts EXCEED P% of
                                the selected hosts (P=0: stop at the first failure). Not given: as
                                Ansible without max_fail_percentage, stop only when EVERY host of a
                                batch failed. Hosts never started are `skipped`, and the exit code is 1.
    --shard K/N                 the K-th of N disjoint, deterministic slices of the selection
                                (inventory.shard), applied before batching.

The health gate (rolling runs only: --serial or --canary) runs on each CHANGED host of a batch, on
the same connection, before the batch counts as done: the remediation's effects must be confirmed
(every handler reported ok: the container holds the flags after its recreate, nginx started new
workers after its reload) and a WebSocket upgrade through nginx, made on the host with the token
read there (the verify `ws-upgrade` control), must answer 101. A host that fails the gate is
`failed` (kind `gate`) with the gate's evidence. The next batch starts only after every host of the
current one has ended, all at most --forks at once, each remote step bounded by its timeout.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from remediations.host.transport import Transport
from remediations.model.errors import RemediationError
from remediations.model.inventory import Host
from remediations.model.masking import Masker
from remediations.model.results import HostResult, RunResult, exit_code, new_run_id, now_iso
from remediations.run.runner import Connect, HostFn, pool_size, run_batch

FAILED = ("failed", "unreachable")
_SIZE = re.compile(r"\s*([0-9]+)\s*(%?)\s*")


@dataclass(frozen=True)
class Size:
    """One batch size: a count of hosts, or a percentage of the selected hosts."""

    value: int
    percent: bool = False

    def hosts(self, total: int) -> int:
        n = total * self.value // 100 if self.percent else self.value
        return max(1, n)

    def __str__(self) -> str:
        return f"{self.value}{'%' if self.percent else ''}"


def parse_serial(spec: str | None) -> list[Size]:
    """`--serial`: "N", "N%" or a comma list of them ("1,2,25%"); empty/None means one batch of all."""
    if spec is None or not str(spec).strip():
        return []
    sizes = []
    for part in str(spec).split(","):
        m = _SIZE.fullmatch(part)
        if not m or int(m[1]) < 1 or (m[2] and int(m[1]) > 100):
            raise RemediationError(f"--serial must be N, N% or a comma list of them (N >= 1, N% <= 100%), "
                                   f"got {spec!r}", hint="e.g. --serial 2, --serial 25% or --serial 1,5,50%")
        sizes.append(Size(int(m[1]), bool(m[2])))
    return sizes


def parse_max_fail_percent(value: object) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        p = float(str(value).strip().rstrip("%"))
    except ValueError:
        p = float("nan")
    if not 0 <= p <= 100:
        raise RemediationError(f"--max-fail-percent must be a number from 0 to 100, got {value!r}",
                               hint="0 stops at the first failed host; 100 never stops")
    return p


def batches(hosts: Sequence[Host], serial: list[Size], canary: bool = False) -> list[list[Host]]:
    """Split the hosts, in their order, into rolling batches (pure; see the module's docstring)."""
    sizes = ([Size(1)] if canary else []) + (serial or [Size(100, percent=True)])
    out: list[list[Host]] = []
    i = 0
    while i < len(hosts):
        n = sizes[min(len(out), len(sizes) - 1)].hosts(len(hosts))
        out.append(list(hosts[i:i + n]))
        i += n
    return out


def stop_reason(results: Sequence[HostResult], batch: Sequence[HostResult], total: int,
                max_fail_percent: float | None) -> str | None:
    """Why no new batch may start (None: go on). `results`: every host ended so far."""
    failed = sum(r.status in FAILED for r in results)
    if max_fail_percent is None:
        if batch and all(r.status in FAILED for r in batch):
            return (f"every host of the batch failed ({len(batch)} of {len(batch)}); "
                    "give --max-fail-percent to choose another threshold")
        return None
    pct = 100.0 * failed / total if total else 0.0
    if pct > max_fail_percent:
        return f"{failed} of {total} host(s) failed ({pct:.0f}%), more than --max-fail-percent {max_fail_percent:g}"
    return None


# -- the health gate ------------------------------------------------------------------------------

Gate = Callable[[Transport, HostResult, Masker], None]


def gated(fn: HostFn, gate: Gate | None) -> HostFn:
    """fn, then the gate on the same connection when fn changed the host (never in check mode)."""
    if gate is None:
        return fn

    def run(t: Transport, result: HostResult, masker: Masker) -> HostResult:
        fn(t, result, masker)
        if result.status == "changed":
            gate(t, result, masker)
        return result

    return run


# -- the run --------------------------------------------------------------------------------------

@dataclass
class Rollout:
    """How a fleet run proceeds; the defaults are one batch of every host, no gate."""

    serial: list[Size] = field(default_factory=list)
    canary: bool = False
    max_fail_percent: float | None = None
    shard: str | None = None

    @property
    def rolling(self) -> bool:
        return bool(self.serial) or self.canary

    def describe(self) -> dict[str, Any]:
        return {"serial": [str(s) for s in self.serial] or None, "canary": self.canary,
                "max_fail_percent": self.max_fail_percent, "shard": self.shard}


class Progress(Protocol):
    """What a fleet run tells its display (remediations.output.render.FleetProgress)."""

    def batch(self, index: int, count: int, hosts: list[str], canary: bool) -> None: ...

    def host(self, result: HostResult) -> None: ...

    def stopped(self, reason: str, skipped: list[HostResult]) -> None: ...


@dataclass
class FleetRun(RunResult):
    """A RunResult with the rollout's record: {"fleet": {serial, canary, max_fail_percent, shard,
    batches: [[host, ...], ...] (as run), stopped: null | {after_batch, reason}}}."""

    fleet: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "fleet": self.fleet}


def run(task: str, hosts: list[Host], conn: Connect, fn: HostFn, *, pending_is_2: bool, rollout: Rollout,
        gate: Gate | None = None, progress: Progress | None = None, run_id: str | None = None) -> FleetRun:
    """Run fn over the hosts in rolling batches (one pool of at most --forks threads for the whole run)."""
    plan = batches(hosts, rollout.serial, rollout.canary)
    fn = gated(fn, gate if rollout.rolling else None)
    run_ = FleetRun(task=task, run_id=run_id or new_run_id(), started=now_iso())
    run_.fleet = {**rollout.describe(), "batches": [], "stopped": None}
    on_result = progress.host if progress else None
    with ThreadPoolExecutor(max_workers=pool_size(conn, max(map(len, plan), default=1)),
                            thread_name_prefix="wsguard") as pool:
        for i, batch in enumerate(plan):
            names = [h.name for h in batch]
            if progress:
                progress.batch(i + 1, len(plan), names, rollout.canary and i == 0)
            done = run_batch(pool, batch, task, run_.run_id, conn, fn, on_result)
            for r in done:
                r.evidence["batch"] = i + 1
            run_.hosts += done
            run_.fleet["batches"].append(names)
            reason = stop_reason(run_.hosts, done, len(hosts), rollout.max_fail_percent)
            rest = [h for b in plan[i + 1:] for h in b]
            if reason and rest:
                skipped = [skip(h, task, run_.run_id, f"not started: {reason} after batch {i + 1}") for h in rest]
                run_.hosts += skipped
                run_.fleet["stopped"] = {"after_batch": i + 1, "reason": reason}
                if progress:
                    progress.stopped(f"stopped after batch {i + 1} of {len(plan)}: {reason}", skipped)
                break
    run_.finished = now_iso()
    run_.exit_code = 1 if run_.fleet["stopped"] else exit_code(run_.hosts, pending_is_2=pending_is_2)
    return run_


def skip(host: Host, task: str, run_id: str, reason: str) -> HostResult:
    r = HostResult(host=host.name, task=task, run_id=run_id, status="skipped")
    r.evidence["skipped"] = reason
    return r
