"""Run a per-host function over the selected hosts in a bounded pool; every failure becomes a result."""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from remediations.host.transport import Transport
from remediations.model.errors import HostKeyError, RemediationError, RemoteTimeout, UnreachableError
from remediations.model.inventory import Host
from remediations.model.masking import Masker
from remediations.model.results import HostResult, RunResult, exit_code, new_run_id, now_iso


@dataclass
class Connect:
    connect_timeout: float = 10
    timeout: float = 60
    accept_new_host_keys: bool = False
    forks: int = 10

    def transport(self, host: Host) -> Transport:
        return Transport(host, connect_timeout=self.connect_timeout, timeout=self.timeout,
                         accept_new_host_keys=self.accept_new_host_keys)


HostFn = Callable[[Transport, HostResult, Masker], HostResult]


def run_one(host: Host, task: str, run_id: str, conn: Connect, fn: HostFn) -> HostResult:
    result = HostResult(host=host.name, task=task, run_id=run_id)
    masker = Masker()
    t = conn.transport(host)
    try:
        t.connect()
        fn(t, result, masker)
    except (UnreachableError, RemoteTimeout) as exc:
        result.fail(exc.kind, masker(str(exc)), status="unreachable")
    except HostKeyError as exc:
        result.fail(exc.kind, str(exc))
    except RemediationError as exc:
        kind = getattr(exc, "kind", "error")
        result.fail(kind, masker(str(exc)))
        result.evidence.update(masker.deep(getattr(exc, "evidence", {}) or {}))  # type: ignore[call-overload]
    except Exception as exc:  # noqa: BLE001 - a bug must still end as one host's failure, not the run's
        detail = traceback.format_exc() if os.environ.get("WSGUARD_DEBUG") else f"{type(exc).__name__}: {exc}"
        result.fail("internal", masker(f"unexpected error: {detail}"))
    finally:
        result.round_trips = t.round_trips
        t.close()
    result.changes = masker.deep(result.changes)  # type: ignore[assignment]
    result.evidence = masker.deep(result.evidence)  # type: ignore[assignment]
    result.handlers = masker.deep(result.handlers)  # type: ignore[assignment]
    result.warnings = [masker(w) for w in result.warnings]
    if result.error:
        result.error = masker.deep(result.error)  # type: ignore[assignment]
    return result


def pool_size(conn: Connect, hosts: int) -> int:
    """Threads for a run: never more than --forks, never more than there are hosts (one at least)."""
    return max(1, min(conn.forks, hosts or 1))


def run_batch(pool: ThreadPoolExecutor, hosts: list[Host], task: str, run_id: str, conn: Connect, fn: HostFn,
              on_result: Callable[[HostResult], None] | None = None) -> list[HostResult]:
    """Run fn on every host of one batch in the (bounded) pool; return when all of them have ended.

    Every remote step is bounded by --connect-timeout/--timeout, so a dead host ends the batch late by
    at most its own timeout, never stalls it. Results come back in the hosts' order."""
    order = {h.name: i for i, h in enumerate(hosts)}
    out: list[HostResult] = []
    futures = [pool.submit(run_one, h, task, run_id, conn, fn) for h in hosts]
    for fut in as_completed(futures):
        r = fut.result()
        out.append(r)
        if on_result:
            on_result(r)
    out.sort(key=lambda r: order[r.host])
    return out


def run_hosts(task: str, hosts: list[Host], conn: Connect, fn: HostFn, *, pending_is_2: bool,
              on_result: Callable[[HostResult], None] | None = None, run_id: str | None = None) -> RunResult:
    """Every host at once (one batch, at most --forks in flight). Rolling runs: remediations.run.fleet."""
    run = RunResult(task=task, run_id=run_id or new_run_id(), started=now_iso())
    with ThreadPoolExecutor(max_workers=pool_size(conn, len(hosts)), thread_name_prefix="wsguard") as pool:
        run.hosts = run_batch(pool, hosts, task, run.run_id, conn, fn, on_result)
    run.finished = now_iso()
    run.exit_code = exit_code(run.hosts, pending_is_2=pending_is_2)
    return run
