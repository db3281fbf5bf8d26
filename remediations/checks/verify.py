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
from dataclasses import dataclass, field
from typing import Any

from remediations.checks.controls.backend import testinfra_host
from remediations.checks.controls.catalog import (
    Context,
    VerifyOptions,
    facts_request,
    learn_secrets,
    run_control,
    selected,
)
from remediations.host.agent_call import call_agent
from remediations.host.transport import Transport
from remediations.model.errors import RemediationError
from remediations.model.facts import Facts
from remediations.model.inventory import Host
from remediations.model.masking import Masker
from remediations.model.results import HostResult, RunResult, exit_code
from remediations.run.runner import Connect, run_hosts, run_one

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
    facts = Facts.parse(call_agent(t, facts_request(t.host)))
    if facts.euid != 0:
        raise RemediationError(f"{t.host.name}: the controls need root there, and {t.host.user} is not root",
                               hint="set ansible_become: true for this host (sudo), or log in as root")
    ctx = Context(inv=t.host, host=testinfra_host(t), facts=facts, masker=m, options=options)
    learn_secrets(ctx)  # before any control builds a message
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
    """One host, for the pytest form (remediations/checks/controls/conftest.py)."""
    r = run_one(host, TASK, run_id, conn, per_host_fn(options, None))
    error_controls(r, options)
    return r


# -- --remediate, --history, --webhook: rounds around the plain verify --------------------------------

# Which fix repairs which control's drift. Other controls (nginx -t failing, a stopped container, the
# upgrade) have no automatic fix: a person must look, so --remediate leaves them as drift.
REMEDIES: dict[str, str] = {"env-flags": "fix-rate-limit", "runtime-env": "fix-rate-limit",
                            "nginx-directives": "fix-nginx", "nginx-loaded": "fix-nginx"}


class ChainMasker(Masker):
    """The maskers of several rounds as one (each knows the secrets its own round saw)."""

    def __init__(self, *maskers: Masker) -> None:
        self._chain = list(maskers)
        super().__init__()

    def __call__(self, text: str) -> str:
        for m in self._chain:
            text = m(text)
        return super().__call__(text)


@dataclass
class VerifyReport(RunResult):
    """The result shape, extended: `to_dict()` adds `extra` (new_drift, warnings, rounds, remediation)."""

    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, run: RunResult) -> VerifyReport:
        return cls(task=run.task, run_id=run.run_id, started=run.started, finished=run.finished,
                   exit_code=run.exit_code, hosts=run.hosts)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **self.extra}


@dataclass
class Rounds:
    """Everything one `invoke verify` produced: 1 or 2 verify rounds, the fixes between them, history notes."""

    rounds: list[RunResult]
    maskers: list[Masker]
    observations: list[Any]  # compliance.Observation per round (None without a history)
    remediation: list[RunResult] | None  # None: --remediate not asked
    history: str | None

    @property
    def final(self) -> RunResult:
        return self.rounds[-1]

    @property
    def remediation_failed(self) -> bool:
        return any(h.status in ("failed", "unreachable") for r in self.remediation or [] for h in r.hosts)

    @property
    def exit_code(self) -> int:
        return 1 if self.remediation_failed else self.final.exit_code

    def masker(self) -> Masker:
        return ChainMasker(*self.maskers)

    def round_doc(self, i: int) -> dict[str, Any]:
        doc = self.rounds[i].to_dict()
        obs = self.observations[i]
        if obs is not None:
            doc["new_drift"] = obs.to_list()
            doc["warnings"] = obs.warnings
        return doc

    def report(self) -> VerifyReport:
        """The final round in the result shape; with --remediate, `rounds` and `remediation` added.

        {task, run_id, started, finished, exit_code, hosts (the LAST round's), new_drift, warnings, history,
         remediate: true, rounds: [first round, second round], remediation: [fix runs]}
        """
        rep = VerifyReport.of(self.final)
        rep.exit_code = self.exit_code
        rep.extra["new_drift"] = [d for o in self.observations if o is not None for d in o.to_list()]
        rep.extra["warnings"] = [w for o in self.observations if o is not None for w in o.warnings]
        rep.extra["history"] = self.history
        if self.remediation is not None:
            rep.extra["remediate"] = True
            rep.extra["rounds"] = [self.round_doc(i) for i in range(len(self.rounds))]
            rep.extra["remediation"] = [r.to_dict() for r in self.remediation]
        return rep


