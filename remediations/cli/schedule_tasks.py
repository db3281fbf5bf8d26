"""`invoke schedule` (verify on a systemd timer or from cron) and `invoke compliance-history`."""

from __future__ import annotations

import json as json_mod
import os
import pwd
import sys
from dataclasses import replace

from invoke import Context

from remediations.cli.flags import Flag, RunFlags, flag_task

MAX_EVERY = 365 * 86400  # rarer is surely a typo; and a huge number must not reach systemd or cron

SCHEDULE_OWN = [
    Flag("every", str, "15m", "interval: a whole number and s, m, h or d (30s, 15m, 1h, 1d)", metavar="INTERVAL"),
    Flag("kind", str, "systemd", "systemd (a service + timer pair) or cron (a crontab line)", metavar="KIND"),
    Flag("remediate", bool, False, "the scheduled verify also runs the matching fixes on drifted hosts "
         "(verify --remediate)"),
    Flag("report", list, None, "repeatable, replacing the defaults", metavar="FMT:ABSPATH",
         default_help="json:/var/lib/wsguard-controller/last-verify.json and "
                      "prometheus:/var/lib/node_exporter/textfile_collector/wsguard.prom"),
    Flag("history", str, None, "compliance history of the scheduled runs", metavar="PATH",
         default_help="/var/lib/wsguard-controller/compliance.jsonl"),
    Flag("print_", bool, False, "show exactly what would be installed (the default)"),
    Flag("install", bool, False, "write it: the units to --unit-dir, atomically"),
    Flag("unit_dir", str, None, "where --install writes the units", metavar="DIR",
         default_help="/etc/systemd/system"),
]
HISTORY_OWN = [
    Flag("last", int, 0, "show only the N newest transitions of each host; the current state is always shown",
         default_help="all"),
    Flag("history", str, None, "the history file", metavar="PATH",
         default_help="$WSGUARD_HISTORY, else ~/.local/state/wsguard/compliance.jsonl"),
]


# Each text flag is one line (flags.py): they are written into a unit or a crontab line.
@flag_task("inventory", "limit", own=SCHEDULE_OWN, help={
    "inventory": "inventory file or dir, made absolute",
    "limit": "hosts or groups: names, globs, comma lists, !exclude (checked now against the inventory)"})
def schedule(c: Context, flags: RunFlags, every: str, kind: str, remediate: bool, report: list[str] | None,
             history: str | None, print_: bool, install: bool, unit_dir: str | None) -> None:
    """Run verify on a schedule: a systemd service + timer (default) or a crontab line; --print or --install."""
    from remediations.model.errors import InventoryError
    from remediations.model.inventory import resolve_inventory_path
    from remediations.output import schedule as sched

    if print_ and install:
        raise sched.ScheduleError("--print and --install do not go together", hint="--print first, then --install")
    if kind not in ("systemd", "cron"):
        raise sched.ScheduleError(f"--kind must be systemd or cron, not {kind!r}")
    seconds = _every(every)
    if kind == "cron":
        sched.cron_fields(seconds)  # an interval cron cannot keep fails before anything else
    if flags.inventory == "-":  # a timer has no stdin to read it from
        raise InventoryError("schedule needs an inventory file or directory, not - (standard input)",
                             hint="write the inventory to a file (e.g. `ansible-inventory -i SRC --list > "
                                  "inventory.json`) and pass that")
    inv = os.path.abspath(resolve_inventory_path(flags.inventory))
    replace(flags, inventory=inv).hosts()  # the inventory loads and --limit matches, now rather than at the first run
    command, docs = sched.installation()
    job = sched.Job(every=seconds, command=command, docs=docs, inventory=inv, limit=flags.limit, remediate=remediate,
                    reports=sched.check_reports(report),
                    history=os.path.abspath(history) if history else sched.HISTORY,
                    user=_user())
    if kind == "cron":
        if install:
            raise sched.ScheduleError(
                "--install is for systemd units: wsguard does not edit crontabs",
                hint="append the line to root's crontab: (crontab -l; invoke schedule --kind cron --print) | crontab -")
        sys.stdout.write(sched.cron_text(job))
        return
    files = sched.systemd_units(job, unit_dir or sched.UNIT_DIR)
    if not install:
        sys.stdout.write(sched.render(files))
        return
    for path in sched.install(files):
        print(f"wrote {path}")
    missing = [d for d in job.written_dirs() if not os.path.isdir(d)]
    for d in missing:
        print(f"note: {d} does not exist yet: create it, or that report fails each run", file=sys.stderr)
    print(f"next: systemctl daemon-reload && systemctl enable --now {sched.NAME}.timer\n"
          f"      systemctl list-timers {sched.NAME}.timer; journalctl -u {sched.NAME}.service\n"
          f"      invoke compliance-history --history {job.history}")


def _every(text: str) -> int:
    """--every, bounded both ways (parse_every refuses too often); its digits are counted first, so that
    thousands of them never reach int()."""
    from remediations.output import schedule as sched

    seconds = MAX_EVERY + 1 if sum(c.isdigit() for c in str(text)) > 8 else sched.parse_every(text)
    if seconds > MAX_EVERY:
        raise sched.ScheduleError(f"--every {text!r} is too long an interval: the most is 365d",
                                  hint="e.g. --every 15m, --every 1h, --every 1d")
    return seconds


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return "root"


@flag_task("json", own=HISTORY_OWN)
def compliance_history(c: Context, flags: RunFlags, last: int, history: str | None) -> None:
    """Per host: when drift appeared and cleared (from verify's compliance history), and the current state."""
    from remediations.checks import compliance

    doc = compliance.summary(compliance.resolve_path(history), last)
    if flags.json:
        sys.stdout.write(json_mod.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(compliance.render(doc))


TASKS = [schedule, compliance_history]
