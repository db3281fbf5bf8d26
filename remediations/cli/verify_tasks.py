"""`invoke verify`: compliance controls (testinfra on wsguard's transport); exit 0 compliant, 2 drift, 1 error."""

from __future__ import annotations

from invoke import Context, task

from remediations.cli.common import COMMON_HELP, fail_on_error, load_hosts

VERIFY_HELP = {
    **COMMON_HELP,
    "report": "FMT[:PATH], repeatable: table|json|junit|prometheus; PATH - or absent is stdout "
              "(default: a table on stdout)",
    "json": "the same as --report json:- (one JSON document on stdout and nothing else there)",
    "probe": "also hold a real WebSocket through nginx: stream past the rate limit, then idle",
    "probe_chunks": "chunks streamed by --probe (default 30, more than the old limit of 20 a minute)",
    "probe_idle": "seconds --probe stays idle (default 65, longer than nginx's default proxy_read_timeout)",
}


@task(help=VERIFY_HELP, auto_shortflags=False, iterable=["report"])
@fail_on_error
def verify(c: Context, inventory: str | None = None, limit: str | None = None, report: list[str] | None = None,
           json: bool = False, probe: bool = False, probe_chunks: int = 30, probe_idle: float = 65.0,
           connect_timeout: float = 10, timeout: float = 60, forks: int = 10,
           accept_new_host_keys: bool = False) -> None:
    """Check every host against the compliance controls; exit 0 compliant, 2 drift, 1 error."""
    from remediations import reports
    from remediations import verify as verify_mod
    from remediations.controls.catalog import VerifyOptions
    from remediations.runner import Connect

    specs = reports.parse_specs(report, as_json=json)  # bad --report values fail before any connection
    hosts = load_hosts(inventory, limit)
    conn = Connect(float(connect_timeout), float(timeout), accept_new_host_keys, int(forks))
    options = VerifyOptions(probe=probe, probe_chunks=int(probe_chunks), probe_idle=float(probe_idle),
                            connect_timeout=float(connect_timeout))
    run, masker = verify_mod.run(hosts, conn, options)
    reports.emit(run, specs, masker)
    raise SystemExit(run.exit_code)


TASKS = [verify]
