"""`invoke verify`: compliance controls (testinfra on wsguard's transport); exit 0 compliant, 2 drift, 1 error."""

from __future__ import annotations

import os

from invoke import Context

from remediations.cli.flags import REMOTE, Flag, RunFlags, flag_task
from remediations.model.errors import RemediationError

OWN = [
    Flag("report", list, None, "repeatable; FMT: table|json|junit|prometheus; PATH - or absent is stdout",
         metavar="FMT[:PATH]", default_help="a table on stdout"),
    Flag("probe", bool, False, "also hold a real WebSocket through nginx: stream past the rate limit, then idle"),
    Flag("probe_chunks", int, 30, "chunks streamed by --probe (more than the old limit of 20 a minute)",
         maximum=100_000),
    Flag("probe_idle", float, 65.0, "seconds --probe stays idle (longer than nginx's default proxy_read_timeout)",
         maximum=86400),
    Flag("remediate", bool, False, "run the matching fix on drifted hosts only (env-flags/runtime-env: "
         "fix-rate-limit; nginx-directives/nginx-loaded: fix-nginx), then verify again; both rounds are reported"),
    Flag("history", str, None, "compliance history file, one JSON line per host per run", metavar="PATH",
         default_help="$WSGUARD_HISTORY, else ~/.local/state/wsguard/compliance.jsonl"),
    Flag("no_history", bool, False, "do not read or append the compliance history (no new-drift detection, "
         "no webhook)"),
    Flag("webhook", str, None, "POST a JSON summary of NEW drift here (once per drift, not again while it "
         "persists); a failure is a warning, never fatal", metavar="URL", default_help="$WSGUARD_WEBHOOK"),
]


@flag_task(*REMOTE, "lock_timeout", own=OWN, help={
    "json": "the same as --report json:- (one JSON document on stdout and nothing else there)",
    "lock_timeout": "with --remediate: seconds to wait for another run's host lock"})
def verify(c: Context, flags: RunFlags, report: list[str] | None, probe: bool, probe_chunks: int,
           probe_idle: float, remediate: bool, history: str | None, no_history: bool, webhook: str | None) -> None:
    """Check every host against the compliance controls; exit 0 compliant, 2 drift, 1 error."""
    from remediations.checks import compliance
    from remediations.checks.controls.catalog import VerifyOptions
    from remediations.checks.webhook import check_url
    from remediations.flows.remediate import run_rounds
    from remediations.output import reports
    from remediations.output.verify_report import emit

    specs = reports.parse_specs(report, as_json=flags.json)  # bad --report values fail before any connection
    options = VerifyOptions(probe=probe, probe_chunks=probe_chunks, probe_idle=probe_idle,
                            connect_timeout=flags.connect_timeout)
    hook = webhook or os.environ.get("WSGUARD_WEBHOOK") or None
    if hook:
        check_url(hook)
    if no_history and (history or webhook):
        raise RemediationError("--no-history cannot go with --history or --webhook (new drift is found in the history)")
    history_path = None if no_history else compliance.resolve_path(history)
    rounds = run_rounds(flags.hosts(), flags.connect(), options, remediate_drift=remediate, history=history_path,
                        webhook=hook if history_path else None, lock_timeout=flags.lock_timeout)
    emit(rounds, specs)
    if rounds.exit_code:
        raise SystemExit(rounds.exit_code)


TASKS = [verify]
