"""`invoke history` and `invoke rollback`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from invoke import Context, task

from remediations.cli.common import COMMON_HELP, fail_on_error, finish, load_hosts

ROLLBACK_HELP = {**COMMON_HELP,
                 "run": "the run id to undo (default: on each host, the newest run that changed a file "
                        "and was not failed-and-restored)",
                 "check": "change nothing; report what would be restored (exit 2 if anything would)",
                 "diff": "print unified diffs (secret values masked)",
                 "force": "restore even over files edited since the run (they are overwritten)",
                 "lock_timeout": "seconds to wait for another run's host lock (default 30)"}
HISTORY_HELP = {**COMMON_HELP, "last": "show only the N newest runs of each host (default: all recorded)"}


def _connect(connect_timeout: float, timeout: float, forks: int, accept_new_host_keys: bool) -> Any:
    from remediations.runner import Connect

    return Connect(float(connect_timeout), float(timeout), accept_new_host_keys, int(forks))


def _emit(lines: list[str], status: str) -> None:
    out = sys.stdout
    if out.isatty():
        from rich.console import Console
        from rich.text import Text

        from remediations.report import COLOURS

        console = Console(file=out, highlight=False)
        console.print(Text(lines[0], style=COLOURS.get(status, "")))
        for line in lines[1:]:
            console.print(Text(line))
    else:
        out.write("\n".join(lines) + "\n")
        out.flush()


def _history_printer(as_json: bool) -> Callable[[Any], None] | None:
    if as_json:
        return None
    from remediations.journal import table

    def show(r: Any) -> None:
        runs = r.evidence.get("runs")
        if r.error or runs is None:
            _emit([f"{r.host}: {r.status}"] + ([f"  error: {r.error['message']}"] if r.error else []), r.status)
            return
        shown = f"{len(runs)} of {r.evidence['recorded']}" if len(runs) != r.evidence["recorded"] else len(runs)
        head = f"{r.host}: {shown} recorded run(s), newest first (keeps {r.evidence['keep']})"
        _emit([head] + (["  " + line for line in table(runs)] if runs else []), r.status)

    return show


def _rollback_printer(as_json: bool, check: bool, diff: bool) -> Callable[[Any], None] | None:
    if as_json:
        return None
    from remediations.report import host_lines

    def show(r: Any) -> None:
        lines = host_lines(r, check=check, diff=diff)
        of = r.evidence.get("rolled_back")
        if r.evidence.get("rollback_of") and of:
            lines.insert(1, f"  rollback of run {r.evidence['rollback_of']} ({of.get('task')} at {of.get('time')})")
        _emit(lines, r.status)

    return show


@task(help=HISTORY_HELP, auto_shortflags=False)
@fail_on_error
def history(c: Context, inventory: str | None = None, limit: str | None = None, last: int = 0, json: bool = False,
            connect_timeout: float = 10, timeout: float = 60, forks: int = 10,
            accept_new_host_keys: bool = False) -> None:
    """The runs each host's journal recorded, newest first (one round trip per host)."""
    from remediations.journal import read_runs, summary
    from remediations.masking import Masker
    from remediations.results import HostResult
    from remediations.runner import run_hosts
    from remediations.transport import Transport

    if int(last) < 0:
        from remediations.errors import RemediationError

        raise RemediationError("--last must be 0 (all) or more")
    hosts = load_hosts(inventory, limit)

    def per_host(t: Transport, result: HostResult, masker: Masker) -> HostResult:
        runs = [summary(m) for m in read_runs(t)]
        result.evidence.update(recorded=len(runs), keep=t.host.ws.journal_keep,
                               runs=runs[: int(last)] if int(last) else runs)
        return result

    run = run_hosts("history", hosts, _connect(connect_timeout, timeout, forks, accept_new_host_keys), per_host,
                    pending_is_2=False, on_result=_history_printer(json))
    finish(run, as_json=json)


@task(help=ROLLBACK_HELP, auto_shortflags=False)
@fail_on_error
def rollback(c: Context, run: str | None = None, inventory: str | None = None, limit: str | None = None,
             check: bool = False, diff: bool = False, force: bool = False, json: bool = False,
             connect_timeout: float = 10, timeout: float = 60, forks: int = 10, accept_new_host_keys: bool = False,
             lock_timeout: float = 30) -> None:
    """Undo what a recorded run changed: old bytes and mode/owner back, validated, handlers re-run."""
    from remediations.masking import Masker
    from remediations.results import HostResult
    from remediations.rollback import Rollback
    from remediations.runner import run_hosts
    from remediations.transaction import Options, execute
    from remediations.transport import Transport

    hosts = load_hosts(inventory, limit)
    opts = Options(check=check, diff=diff, lock_timeout=float(lock_timeout))

    def per_host(t: Transport, result: HostResult, masker: Masker) -> HostResult:
        return execute(t, Rollback(t.host, run_id=run or None, force=force), result.run_id, opts, result, masker)

    result = run_hosts("rollback", hosts, _connect(connect_timeout, timeout, forks, accept_new_host_keys), per_host,
                       pending_is_2=check, on_result=_rollback_printer(json, check, diff))
    finish(result, as_json=json, check=check)


TASKS = [history, rollback]
