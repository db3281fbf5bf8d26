"""`invoke history` and `invoke rollback`."""

from __future__ import annotations

from typing import Any

from invoke import Context

from remediations.cli.common import finish
from remediations.cli.flags import FLEET, REMOTE, Flag, RunFlags, flag_task

LAST = Flag("last", int, 0, "show only the N newest runs of each host", default_help="all recorded")
ROLLBACK_OWN = [
    Flag("run", str, None, "the run id to undo", metavar="RUN_ID",
         default_help="on each host, the newest run that changed a file and was not failed-and-restored"),
    Flag("force", bool, False, "restore even over files edited since the run (they are overwritten)"),
]


def _show_history(r: Any) -> None:
    from remediations.host.journal import table
    from remediations.output.console import Printer

    runs = r.evidence.get("runs")
    if r.error or runs is None:
        Printer().block([f"{r.host}: {r.status}"] + ([f"  error: {r.error['message']}"] if r.error else []), r.status)
        return
    shown = f"{len(runs)} of {r.evidence['recorded']}" if len(runs) != r.evidence["recorded"] else len(runs)
    head = f"{r.host}: {shown} recorded run(s), newest first (keeps {r.evidence['keep']})"
    Printer().block([head] + (["  " + line for line in table(runs)] if runs else []), r.status)


def _rollback_lines(check: bool, diff: bool) -> Any:
    from remediations.output.render import host_lines

    def lines_of(r: Any) -> list[str]:
        lines = host_lines(r, check=check, diff=diff)
        of = r.evidence.get("rolled_back")
        if r.evidence.get("rollback_of") and of:
            lines.insert(1, f"  rollback of run {r.evidence['rollback_of']} ({of.get('task')} at {of.get('time')})")
        return lines

    return lines_of


@flag_task(*REMOTE, own=[LAST])
def history(c: Context, flags: RunFlags, last: int) -> None:
    """The runs each host's journal recorded, newest first (one round trip per host)."""
    from remediations.flows import per_host

    run = per_host.history(flags.hosts(), flags.connect(), last, on_result=None if flags.json else _show_history)
    finish(run, as_json=flags.json)


@flag_task(*FLEET, own=ROLLBACK_OWN, help={
    "check": "change nothing; report what would be restored (exit 2 if anything would)"})
def rollback(c: Context, flags: RunFlags, run: str | None, force: bool) -> None:
    """Undo what a recorded run changed: old bytes and mode/owner back, validated, handlers re-run."""
    from remediations.fixes.rollback import Rollback
    from remediations.flows.per_host import remediation_fn
    from remediations.flows.rolling import rolling_fix

    undo = remediation_fn(lambda h: Rollback(h, run_id=run or None, force=force), flags.transaction())
    result = rolling_fix("rollback", flags.hosts(), flags.connect(), undo, rollout=flags.rollout(), check=flags.check,
                         diff=flags.diff, as_json=flags.json, render=_rollback_lines(flags.check, flags.diff))
    finish(result, as_json=flags.json)


TASKS = [history, rollback]
