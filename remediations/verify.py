"""`invoke verify`: run the compliance controls on every selected host and aggregate the results.

Per host: connect (strict host keys) -> ONE facts round trip -> testinfra host on the same transport
-> every control -> a HostResult whose `controls` hold {id, title, impact, status, expected, actual,
detail}. Host status: ok (compliant: every control passed or was skipped), changed (drift: a control
failed, i.e. a fix is pending), failed/unreachable (a control could not be checked, or the host could
not be reached). Exit codes as every task: 1 over 2 over 0.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from remediations.controls.backend import testinfra_host
from remediations.controls.catalog import (
    Context,
    VerifyOptions,
    facts_request,
    learn_secrets,
    run_control,
    selected,
)
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
    """One host, for the pytest form (remediations/controls/conftest.py)."""
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


def remediation_targets(run: RunResult) -> dict[str, list[str]]:
    """fix task -> the hosts whose verify found drift that fix repairs (in inventory order)."""
    out: dict[str, list[str]] = {}
    for h in run.hosts:
        for task in dict.fromkeys(REMEDIES[c["id"]] for c in h.controls or []
                                  if c["status"] == "fail" and c["id"] in REMEDIES):
            out.setdefault(task, []).append(h.host)
    return {t: out[t] for t in ("fix-rate-limit", "fix-nginx") if t in out}


def remediate(run: RunResult, hosts: list[Host], conn: Connect, lock_timeout: float = 30) -> list[RunResult]:
    """Run the matching fix on the drifted hosts only: one fix run (journaled, rollback-able) per fix task."""
    from remediations.nginxfix import NginxFix
    from remediations.ratelimit import RateLimitFix
    from remediations.transaction import Options, execute

    makers: dict[str, Callable[[Host], Any]] = {"fix-rate-limit": RateLimitFix, "fix-nginx": NginxFix}
    by_name = {h.name: h for h in hosts}
    opts = Options(lock_timeout=float(lock_timeout))
    runs = []
    for task, names in remediation_targets(run).items():
        make = makers[task]

        def per_host(t: Transport, result: HostResult, masker: Masker, make: Any = make) -> HostResult:
            return execute(t, make(t.host), result.run_id, opts, result, masker)

        runs.append(run_hosts(task, [by_name[n] for n in names], conn, per_host, pending_is_2=False))
    return runs


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


def run_rounds(hosts: list[Host], conn: Connect, options: VerifyOptions, *, remediate_drift: bool = False,
               history: str | None = None, webhook: str | None = None, lock_timeout: float = 30) -> Rounds:
    """verify -> (history, alert) -> with --remediate and fixable drift: fixes -> verify -> (history, alert)."""
    from remediations import compliance

    def observe(run: RunResult, masker: Masker, round_: int | None) -> Any:
        if history is None:
            return None
        alert = None
        if webhook:
            from remediations.webhook import alerter

            alert = alerter(webhook, masker)
        return compliance.observe(history, run, masker, alert=alert, round_=round_)

    first, m1 = run(hosts, conn, options)
    out = Rounds([first], [m1], [observe(first, m1, 1 if remediate_drift else None)],
                 [] if remediate_drift else None, history)
    if remediate_drift and remediation_targets(first):
        out.remediation = remediate(first, hosts, conn, lock_timeout)
        second, m2 = run(hosts, conn, options)
        out.rounds.append(second)
        out.maskers.append(m2)
        out.observations.append(observe(second, m2, 2))
    return out


def _notes(rounds: Rounds, i: int) -> list[str]:
    obs = rounds.observations[i]
    if obs is None:
        return []
    lines = [f"NEW DRIFT on {host}: {', '.join(ids)}" + (" (alert sent)" if obs.alerted else "")
             for host, ids in obs.new_drift.items()]
    return lines + [f"warning: {w}" for w in obs.warnings]


def _remediation_lines(rounds: Rounds) -> list[str]:
    from remediations.report import host_lines

    if not rounds.remediation:
        fixable = {c["id"] for h in rounds.rounds[0].hosts for c in h.controls or [] if c["status"] == "fail"}
        if fixable:
            return [f"remediation: nothing automatic for {', '.join(sorted(fixable))} (no fix repairs these)"]
        return ["remediation: nothing to remediate"]
    lines = []
    for r in rounds.remediation:
        lines.append(f"remediation: {r.task} run {r.run_id} on {', '.join(h.host for h in r.hosts)}")
        for h in r.hosts:
            lines += ["  " + line for line in host_lines(h, check=False, diff=False)]
    return lines


def emit(rounds: Rounds, specs: list[Any], out: TextIO | None = None, err: TextIO | None = None) -> None:
    """Every report of the run. The table shows each round (and the fixes between); other formats the
    final round in the result shape (JSON: with `rounds` and `remediation`). Notes about new drift and
    warnings go with a table on stdout, else to stderr (stdout then holds one report and nothing else)."""
    from remediations import reports

    out, err = out or sys.stdout, err or sys.stderr
    masker = rounds.masker()
    report = rounds.report()
    table_specs = [s for s in specs if s.fmt == "table"]
    notes_out = out if any(s.to_stdout for s in table_specs) else err
    two = len(rounds.rounds) > 1 or rounds.remediation is not None
    for spec in table_specs:
        if spec.to_stdout and out.isatty():
            for i, r in enumerate(rounds.rounds):
                reports.print_table_rich(r, out, rounds.maskers[i])
                out.write(masker("\n".join(_notes(rounds, i) + (_remediation_lines(rounds) if two and i == 0
                                                                    else [])) + "\n"))
            continue
        parts = []
        for i, r in enumerate(rounds.rounds):
            if two:
                parts.append(f"== round {i + 1}: verify{' after remediation' if i else ''} ==")
            parts.append(reports.render_table_plain(r).rstrip("\n"))
            parts += _notes(rounds, i)
            if two and i == 0:
                parts += _remediation_lines(rounds)
        if rounds.remediation_failed:
            parts.append("exit 1: a remediation failed")
        text = masker("\n".join(parts) + "\n")
        if spec.to_stdout:
            out.write(text)
            out.flush()
        else:
            reports.write_atomic(spec.path, text)
    if notes_out is err:
        notes = [n for i in range(len(rounds.rounds)) for n in _notes(rounds, i)]
        if rounds.remediation is not None and not table_specs:
            notes += _remediation_lines(rounds)
        if notes:
            err.write(masker("\n".join(notes) + "\n"))
            err.flush()
    reports.emit(report, [s for s in specs if s.fmt != "table"], masker, out)
