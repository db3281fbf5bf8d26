"""`invoke fix` (both), `invoke fix-rate-limit` and `invoke fix-nginx`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from invoke import Context

from remediations.cli.common import finish
from remediations.cli.flags import FLEET, Flag, RunFlags, flag_task

NO_RESTART = Flag("no_restart", bool, False, "edit .env only; the running service keeps its old values")


def _fix(task_name: str, make: Callable[[Any], Any], flags: RunFlags) -> None:
    from remediations.flows.per_host import remediation_fn
    from remediations.flows.rolling import rolling_fix

    run = rolling_fix(task_name, flags.hosts(), flags.connect(), remediation_fn(make, flags.transaction()),
                      rollout=flags.rollout(), check=flags.check, diff=flags.diff, as_json=flags.json)
    finish(run, as_json=flags.json)


@flag_task(*FLEET, own=[NO_RESTART])
def fix_rate_limit(c: Context, flags: RunFlags, no_restart: bool) -> None:
    """Set env_flags in the app's .env and recreate the service so the container holds them."""
    from remediations.fixes.ratelimit import RateLimitFix

    _fix("fix-rate-limit", lambda h: RateLimitFix(h, restart=not no_restart), flags)


@flag_task(*FLEET)
def fix_nginx(c: Context, flags: RunFlags) -> None:
    """Ensure the WebSocket location's directives; nginx -t; reload; restore on failure."""
    from remediations.fixes.nginx import NginxFix

    _fix("fix-nginx", NginxFix, flags)


@flag_task(*FLEET, own=[NO_RESTART])
def fix(c: Context, flags: RunFlags, no_restart: bool) -> None:
    """fix-rate-limit and fix-nginx as one transaction per host (one round trip when nothing changes)."""
    from remediations.fixes.combined import Combined
    from remediations.fixes.nginx import NginxFix
    from remediations.fixes.ratelimit import RateLimitFix

    _fix("fix", lambda h: Combined("fix", [RateLimitFix(h, restart=not no_restart), NginxFix(h)]), flags)


TASKS = [fix, fix_rate_limit, fix_nginx]
