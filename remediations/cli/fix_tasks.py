"""`invoke fix` (both), `invoke fix-rate-limit` and `invoke fix-nginx`."""

from __future__ import annotations

import os

from invoke import Context, task

from remediations.cli.common import (
    COMMON_HELP,
    FLEET_HELP,
    connect_options,
    fail_on_error,
    finish,
    load_hosts,
    number,
    rollout,
)

FIX_HELP = {**COMMON_HELP, **FLEET_HELP,
            "check": "change nothing; report what would change (exit 2 if anything would)",
            "diff": "print unified diffs (secret values masked)",
            "lock_timeout": "seconds to wait for another run's host lock (default 30)"}


def _run(task_name: str, make, inventory, limit, check, diff, json, connect_timeout, timeout, forks,
         accept_new_host_keys, lock_timeout, serial, canary, max_fail_percent, shard) -> None:  # type: ignore[no-untyped-def]
    from remediations.flows.rolling import rolling_fix
    from remediations.host.transport import Transport
    from remediations.model.masking import Masker
    from remediations.model.results import HostResult
    from remediations.run.transaction import Options, execute

    conn = connect_options(connect_timeout, timeout, forks, accept_new_host_keys)
    lock_timeout = number("lock_timeout", lock_timeout)
    plan = rollout(serial, canary, max_fail_percent, shard)
    hosts = load_hosts(inventory, limit, shard)
    # WSGUARD_TEST_PAUSE widens the window between upload and rename, for the fault tests only.
    opts = Options(check=check, diff=diff, lock_timeout=float(lock_timeout),
                   pause_before_rename=float(os.environ.get("WSGUARD_TEST_PAUSE", "0")))

    def per_host(t: Transport, result: HostResult, masker: Masker) -> HostResult:
        return execute(t, make(t.host), result.run_id, opts, result, masker)

    run = rolling_fix(task_name, hosts, conn, per_host, rollout=plan, check=check, diff=diff, as_json=json)
    finish(run, as_json=json, check=check)


@task(help={**FIX_HELP, "no_restart": "edit .env only; the running service keeps its old values"},
      auto_shortflags=False)
@fail_on_error
def fix_rate_limit(c: Context, inventory: str | None = None, limit: str | None = None, check: bool = False,
                   diff: bool = False, json: bool = False, no_restart: bool = False, connect_timeout: str = "10",
                   timeout: str = "60", forks: str = "10", accept_new_host_keys: bool = False,
                   lock_timeout: str = "30", serial: str | None = None, canary: bool = False,
                   max_fail_percent: str | None = None, shard: str | None = None) -> None:
    """Set env_flags in the app's .env and recreate the service so the container holds them."""
    from remediations.fixes.ratelimit import RateLimitFix

    _run("fix-rate-limit", lambda h: RateLimitFix(h, restart=not no_restart), inventory, limit, check, diff, json,
         connect_timeout, timeout, forks, accept_new_host_keys, lock_timeout, serial, canary, max_fail_percent, shard)


@task(help=FIX_HELP, auto_shortflags=False)
@fail_on_error
def fix_nginx(c: Context, inventory: str | None = None, limit: str | None = None, check: bool = False,
              diff: bool = False, json: bool = False, connect_timeout: str = "10", timeout: str = "60",
              forks: str = "10", accept_new_host_keys: bool = False, lock_timeout: str = "30",
              serial: str | None = None, canary: bool = False, max_fail_percent: str | None = None,
              shard: str | None = None) -> None:
    """Ensure the WebSocket location's directives; nginx -t; reload; restore on failure."""
    from remediations.fixes.nginx import NginxFix

    _run("fix-nginx", NginxFix, inventory, limit, check, diff, json, connect_timeout, timeout, forks,
         accept_new_host_keys, lock_timeout, serial, canary, max_fail_percent, shard)


@task(help={**FIX_HELP, "no_restart": "edit .env only; the running service keeps its old values"},
      auto_shortflags=False)
@fail_on_error
def fix(c: Context, inventory: str | None = None, limit: str | None = None, check: bool = False,
        diff: bool = False, json: bool = False, no_restart: bool = False, connect_timeout: str = "10",
        timeout: str = "60", forks: str = "10", accept_new_host_keys: bool = False, lock_timeout: str = "30",
        serial: str | None = None, canary: bool = False, max_fail_percent: str | None = None,
        shard: str | None = None) -> None:
    """fix-rate-limit and fix-nginx as one transaction per host (one round trip when nothing changes)."""
    from remediations.fixes.combined import Combined
    from remediations.fixes.nginx import NginxFix
    from remediations.fixes.ratelimit import RateLimitFix

    _run("fix", lambda h: Combined("fix", [RateLimitFix(h, restart=not no_restart), NginxFix(h)]), inventory,
         limit, check, diff, json, connect_timeout, timeout, forks, accept_new_host_keys, lock_timeout, serial,
         canary, max_fail_percent, shard)


TASKS = [fix, fix_rate_limit, fix_nginx]
