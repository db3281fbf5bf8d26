"""`invoke history` and `invoke rollback`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from invoke import Context, task

from remediations.cli.common import (
    COMMON_HELP,
    FLEET_HELP,
    connect_options,
    fail_on_error,
    finish,
    load_hosts,
    number,
    one_line,
    rollout,
    whole,
)

ROLLBACK_HELP = {**COMMON_HELP, **FLEET_HELP,
                 "run": "the run id to undo (default: on each host, the newest run that changed a file "
                        "and was not failed-and-restored)",
                 "check": "change nothing; report what would be restored (exit 2 if anything would)",
                 "diff": "print unified diffs (secret values masked)",
                 "force": "restore even over files edited since the run (they are overwritten)",
                 "lock_timeout": "seconds to wait for another run's host lock (default 30)"}
HISTORY_HELP = {**COMMON_HELP, "last": "show only the N newest runs of each host (default: all recorded)"}


def _connect(connect_timeout: str, timeout: str, forks: str, accept_new_host_keys: bool) -> Any:
    return connect_options(connect_timeout, timeout, forks, accept_new_host_keys)


def _emit(lines: list[str], status: str) -> None:
    from rich.console import Console
    from rich.text import Text

    from remediations.output.render import COLOURS

    out = sys.stdout
    if out.isatty():

        console = Console(file=out, highlight=False)
        console.print(Text(lines[0], style=COLOURS.get(status, "")))
        for line in lines[1:]:
            console.print(Text(line))
    else:
        out.write("\n".join(lines) + "\n")
        out.flush()


def _history_printer(as_json: bool) -> Callable[[Any], None] | None:
    from remediations.host.journal import table

    if as_json:
        return None

    def show(r: Any) -> None:
        runs = r.evidence.get("runs")
        if r.error or runs is None:
            _emit([f"{r.host}: {r.status}"] + ([f"  error: {r.error['message']}"] if r.error else []), r.status)
            return
        shown = f"{len(runs)} of {r.evidence['recorded']}" if len(runs) != r.evidence["recorded"] else len(runs)
        head = f"{r.host}: {shown} recorded run(s), newest first (keeps {r.evidence['keep']})"
        _emit([head] + (["  " + line for line in table(runs)] if runs else []), r.status)

    return show


def _rollback_lines(check: bool, diff: bool) -> Callable[[Any], list[str]]:
    from remediations.output.render import host_lines

    def lines_of(r: Any) -> list[str]:
        lines = host_lines(r, check=check, diff=diff)
        of = r.evidence.get("rolled_back")
        if r.evidence.get("rollback_of") and of:
            lines.insert(1, f"  rollback of run {r.evidence['rollback_of']} ({of.get('task')} at {of.get('time')})")
        return lines

    return lines_of


@task(help=HISTORY_HELP, auto_shortflags=False)
@fail_on_error
def history(c: Context, inventory: str | None = None, limit: str | None = None, last: str = "0", json: bool = False,
            connect_timeout: str = "10", timeout: str = "60", forks: str = "10",
            accept_new_host_keys: bool = False) -> None:
    """The runs each host's journal recorded, newest first (one round trip per host)."""
    from remediations.host.journal import read_runs, summary
    from remediations.host.transport import Transport
    from remediations.model.masking import Masker
    from remediations.model.results import HostResult
    from remediations.run.runner import run_hosts

    newest = whole("last", last)
    conn = _connect(connect_timeout, timeout, forks, accept_new_host_keys)
    hosts = load_hosts(inventory, limit)

    def per_host(t: Transport, result: HostResult, masker: Masker) -> HostResult:
        runs = [summary(m) for m in read_runs(t)]
        result.evidence.update(recorded=len(runs), keep=t.host.ws.journal_keep,
                               runs=runs[:newest] if newest else runs)
        return result

    run = run_hosts("history", hosts, conn, per_host,
                    pending_is_2=False, on_result=_history_printer(json))
    finish(run, as_json=json)


@task(help=ROLLBACK_HELP, auto_shortflags=False)
@fail_on_error
def rollback(c: Context, run: str | None = None, inventory: str | None = None, limit: str | None = None,
             check: bool = False, diff: bool = False, force: bool = False, json: bool = False,
             connect_timeout: str = "10", timeout: str = "60", forks: str = "10", accept_new_host_keys: bool = False,
             lock_timeout: str = "30", serial: str | None = None, canary: bool = False,
             max_fail_percent: str | None = None, shard: str | None = None) -> None:
    """Undo what a recorded run changed: old bytes and mode/owner back, validated, handlers re-run."""
    from remediations.fixes.rollback import Rollback
    from remediations.flows.rolling import rolling_fix
    from remediations.host.transport import Transport
    from remediations.model.masking import Masker
    from remediations.model.results import HostResult
    from remediations.run.transaction import Options, execute

    one_line("run", run)  # matched against the journal's run ids; a control character never is one
    conn = _connect(connect_timeout, timeout, forks, accept_new_host_keys)
    opts = Options(check=check, diff=diff, lock_timeout=number("lock_timeout", lock_timeout))
    plan = rollout(serial, canary, max_fail_percent, shard)
    hosts = load_hosts(inventory, limit, shard)

    def per_host(t: Transport, result: HostResult, masker: Masker) -> HostResult:
        return execute(t, Rollback(t.host, run_id=run or None, force=force), result.run_id, opts, result, masker)

    result = rolling_fix("rollback", hosts, conn, per_host, rollout=plan, check=check, diff=diff, as_json=json,
                       render=_rollback_lines(check, diff))
    finish(result, as_json=json, check=check)


TASKS = [history, rollback]
