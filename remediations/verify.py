"""`invoke verify`: run the compliance controls on every selected host and aggregate the results.

Per host: connect (strict host keys) -> ONE facts round trip -> testinfra host on the same transport
-> every control -> a HostResult whose `controls` hold {id, title, impact, status, expected, actual,
detail}. Host status: ok (compliant: every control passed or was skipped), changed (drift: a control
failed, i.e. a fix is pending), failed/unreachable (a control could not be checked, or the host could
not be reached). Exit codes as every task: 1 over 2 over 0.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from remediations.controls.backend import testinfra_host
from remediations.controls.catalog import Context, VerifyOptions, facts_request, run_control, selected
from remediations.errors import RemediationError
from remediations.inventory import Host
from remediations.masking import Masker
from remediations.results import HostResult, RunResult, exit_code
from remediations.runner import Connect, run_hosts, run_one
from remediations.transaction import call_agent
from remediations.transport import Transport

TASK = "verify"


class SharedMasker(Masker):
    """Every host's secrets, for a last pass over whole reports (belt and braces)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        super().__init__()

    def add(self, values: Any) -> None:
        with self._lock:
            super().add(values)


class _TeeMasker(Masker):
    """A host's masker that also tells the run's shared masker every secret it learns."""

    def __init__(self, host_masker: Masker, shared: Masker | None) -> None:
        self._host, self._shared = host_masker, shared
        super().__init__()

    def add(self, values: Any) -> None:
        values = [v for v in values if v]
        self._host.add(values)
        if self._shared is not None:
            self._shared.add(values)

    def __call__(self, text: str) -> str:
        return self._host(text)


def check_host(t: Transport, result: HostResult, masker: Masker, options: VerifyOptions,
               shared: Masker | None = None) -> HostResult:
    """Run every selected control on one connected host; fills result.controls and result.status."""
    m = _TeeMasker(masker, shared)
    facts = call_agent(t, facts_request(t.host))
    if facts.get("euid") != 0:
        raise RemediationError(f"{t.host.name}: the controls need root there, and {t.host.user} is not root",
                               hint="set ansible_become: true for this host (sudo), or log in as root")
    # Secrets the facts carry (the .env's and the container's) are known to the masker before any
    # control builds a message.
    ctx = Context(inv=t.host, host=testinfra_host(t), facts=facts, masker=m, options=options)
    try:
        ctx.env_values()
    except Exception:  # noqa: BLE001, S110 - env-flags reports it; here it only primes the masker
        pass
    from remediations.ratelimit import container_env

    m.add_env(container_env(facts) or {})
    controls = [run_control(c, ctx) for c in selected(options)]
    del ctx, facts  # the .env's bytes stay in memory no longer than the checks
    result.controls = controls
    result.evidence["summary"] = summary(controls)
    errors = [c["id"] for c in controls if c["status"] == "error"]
    drift = [c["id"] for c in controls if c["status"] == "fail"]
    if errors:
        result.fail("control_error", f"could not check: {', '.join(errors)}")
    elif drift:
        result.status = "changed"
    return result


def summary(controls: list[dict[str, Any]]) -> dict[str, int]:
    counts = {s: 0 for s in ("pass", "fail", "error", "skipped")}
    for c in controls:
        counts[c["status"]] += 1
    return counts


def error_controls(result: HostResult, options: VerifyOptions) -> None:
    """A host that could not be checked: every control in error, with the host's error as detail."""
    if result.controls is not None:
        return
    why = (result.error or {}).get("message", "not checked")
    result.controls = [{"id": c.id, "title": c.title, "impact": c.impact, "status": "error",
                        "expected": None, "actual": None, "detail": why} for c in selected(options)]
    result.evidence["summary"] = summary(result.controls)


def per_host_fn(options: VerifyOptions, shared: Masker | None) -> Callable[[Transport, HostResult, Masker], HostResult]:
    def fn(t: Transport, result: HostResult, masker: Masker) -> HostResult:
        return check_host(t, result, masker, options, shared)

    return fn


def run(hosts: list[Host], conn: Connect, options: VerifyOptions,
        on_result: Callable[[HostResult], None] | None = None) -> tuple[RunResult, Masker]:
    """Verify every host in a bounded pool; the run's exit code and a masker holding every secret seen."""
    shared = SharedMasker()

    def done(r: HostResult) -> None:
        error_controls(r, options)
        if on_result:
            on_result(r)

    run_ = run_hosts(TASK, hosts, conn, per_host_fn(options, shared), pending_is_2=True, on_result=done)
    for r in run_.hosts:
        error_controls(r, options)
    run_.exit_code = exit_code(run_.hosts, pending_is_2=True)
    return run_, shared


def verify_one(host: Host, conn: Connect, options: VerifyOptions, run_id: str) -> HostResult:
    """One host, for the pytest form (remediations/controls/conftest.py)."""
    r = run_one(host, TASK, run_id, conn, per_host_fn(options, None))
    error_controls(r, options)
    return r
