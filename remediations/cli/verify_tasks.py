"""`invoke verify`: compliance controls (testinfra on wsguard's transport); exit 0 compliant, 2 drift, 1 error."""

from __future__ import annotations

import os

from invoke import Context, task

from remediations.cli.common import (
    COMMON_HELP,
    connect_options,
    fail_on_error,
    load_hosts,
    number,
    one_line,
    whole,
)
from remediations.model.errors import RemediationError

VERIFY_HELP = {
    **COMMON_HELP,
    "report": "FMT[:PATH], repeatable: table|json|junit|prometheus; PATH - or absent is stdout "
              "(default: a table on stdout)",
    "json": "the same as --report json:- (one JSON document on stdout and nothing else there)",
    "probe": "also hold a real WebSocket through nginx: stream past the rate limit, then idle",
    "probe_chunks": "chunks streamed by --probe (default 30, more than the old limit of 20 a minute)",
    "probe_idle": "seconds --probe stays idle (default 65, longer than nginx's default proxy_read_timeout)",
    "remediate": "run the matching fix on drifted hosts only (env-flags/runtime-env: fix-rate-limit; "
                 "nginx-directives/nginx-loaded: fix-nginx), then verify again; both rounds are reported",
    "history": "compliance history file, one JSON line per host per run (default $WSGUARD_HISTORY, else "
               "~/.local/state/wsguard/compliance.jsonl)",
    "no_history": "do not read or append the compliance history (no new-drift detection, no webhook)",
    "webhook": "POST a JSON summary of NEW drift here (once per drift, not again while it persists; "
               "default $WSGUARD_WEBHOOK); a failure is a warning, never fatal",
    "lock_timeout": "with --remediate: seconds to wait for another run's host lock (default 30)",
}


@task(help=VERIFY_HELP, auto_shortflags=False, iterable=["report"])
@fail_on_error
def verify(c: Context, inventory: str | None = None, limit: str | None = None, report: list[str] | None = None,
           json: bool = False, probe: bool = False, probe_chunks: str = "30", probe_idle: str = "65",
           connect_timeout: str = "10", timeout: str = "60", forks: str = "10",
           accept_new_host_keys: bool = False, remediate: bool = False, history: str | None = None,
           no_history: bool = False, webhook: str | None = None, lock_timeout: str = "30") -> None:
    """Check every host against the compliance controls; exit 0 compliant, 2 drift, 1 error."""
    from remediations.checks import compliance
    from remediations.checks.controls.catalog import VerifyOptions
    from remediations.checks.webhook import check_url
    from remediations.flows.remediate import run_rounds
    from remediations.output import reports
    from remediations.output.verify_report import emit

    specs = reports.parse_specs(report, as_json=json)  # bad --report values fail before any connection
    # Every other flag is checked before the inventory is read, too.
    conn = connect_options(connect_timeout, timeout, forks, accept_new_host_keys)
    options = VerifyOptions(probe=probe, probe_chunks=whole("probe_chunks", probe_chunks),
                            probe_idle=number("probe_idle", probe_idle), connect_timeout=conn.connect_timeout)
    lock_seconds = number("lock_timeout", lock_timeout)
    one_line("history", history)
    hook = webhook or os.environ.get("WSGUARD_WEBHOOK") or None
    if hook:
        check_url(hook)
    if no_history and (history or webhook):
        raise RemediationError("--no-history cannot go with --history or --webhook (new drift is found in the history)")
    history_path = None if no_history else compliance.resolve_path(history)
    hosts = load_hosts(inventory, limit)
    rounds = run_rounds(hosts, conn, options, remediate_drift=remediate, history=history_path,
                                   webhook=hook if history_path else None, lock_timeout=lock_seconds)
    emit(rounds, specs)
    if rounds.exit_code:
        raise SystemExit(rounds.exit_code)


TASKS = [verify]
