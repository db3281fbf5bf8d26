"""verify --remediate: verify, the matching fix on the drifted hosts only, verify again; history and alerts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from remediations.checks import compliance
from remediations.checks.controls.catalog import VerifyOptions
from remediations.checks.verify import REMEDIES, Rounds, run
from remediations.checks.webhook import alerter
from remediations.fixes.nginx import NginxFix
from remediations.fixes.ratelimit import RateLimitFix
from remediations.flows.per_host import remediation_fn
from remediations.model.inventory import Host
from remediations.model.masking import Masker
from remediations.model.results import RunResult
from remediations.run.runner import Connect, run_hosts
from remediations.run.transaction import Options


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
    makers: dict[str, Callable[[Host], Any]] = {"fix-rate-limit": RateLimitFix, "fix-nginx": NginxFix}
    by_name = {h.name: h for h in hosts}
    opts = Options(lock_timeout=float(lock_timeout))
    runs = []
    for task, names in remediation_targets(run).items():
        runs.append(run_hosts(task, [by_name[n] for n in names], conn, remediation_fn(makers[task], opts),
                              pending_is_2=False))
    return runs


def run_rounds(hosts: list[Host], conn: Connect, options: VerifyOptions, *, remediate_drift: bool = False,
               history: str | None = None, webhook: str | None = None, lock_timeout: float = 30) -> Rounds:
    """verify -> (history, alert) -> with --remediate and fixable drift: fixes -> verify -> (history, alert)."""
    def observe(run: RunResult, masker: Masker, round_: int | None) -> Any:
        if history is None:
            return None
        alert = None
        if webhook:
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
