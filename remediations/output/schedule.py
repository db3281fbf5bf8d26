"""`invoke schedule`: run verify on a timer (a systemd service + timer pair) or from cron.

What is scheduled is `wsguard verify --inventory ABS ... --report json:... --report prometheus:... --history ...`
(or `invoke -r REPO verify ...` in a checkout without the console script), with the absolute paths of THIS
installation (its wsguard or invoke, the inventory),
checked at schedule time so a typo fails now rather than at 3 am.

Defaults, for a controller run as root:
- JSON report:        /var/lib/wsguard-controller/last-verify.json  (StateDirectory=, created by systemd)
- compliance history: /var/lib/wsguard-controller/compliance.jsonl
- Prometheus report:  /var/lib/node_exporter/textfile_collector/wsguard.prom (node_exporter's textfile
  collector: run it with --collector.textfile.directory=/var/lib/node_exporter/textfile_collector)
- a webhook URL is a credential: it is never written into a (world-readable) unit; put
  WSGUARD_WEBHOOK=https://... in /etc/wsguard/wsguard.env (root, mode 0600), which the service reads.

The interval becomes `OnCalendar=` when it divides a minute, an hour or a day evenly (so `Persistent=true`
catches up a run missed while the machine was off), else `OnBootSec=` + `OnUnitActiveSec=`.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from remediations.model.errors import RemediationError
from remediations.output.reports import parse_specs

NAME = "wsguard-verify"
STATE_DIR = "/var/lib/wsguard-controller"
JSON_REPORT = f"{STATE_DIR}/last-verify.json"
HISTORY = f"{STATE_DIR}/compliance.jsonl"
PROM_REPORT = "/var/lib/node_exporter/textfile_collector/wsguard.prom"
ENV_FILE = "/etc/wsguard/wsguard.env"
UNIT_DIR = "/etc/systemd/system"
MIN_EVERY = 10
RUN_TIMEOUT = "10min"
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EVERY = re.compile(r"([0-9]+)([smhd])")


class ScheduleError(RemediationError):
    kind = "schedule"


# -- the interval -------------------------------------------------------------------------------

def parse_every(text: str) -> int:
    """`30s`, `15m`, `1h`, `1d` -> seconds; anything else is a clear error."""
    m = _EVERY.fullmatch((text or "").strip().lower())
    if not m:
        raise ScheduleError(f"bad --every {text!r}: give a whole number and a unit, s, m, h or d",
                            hint="e.g. --every 30s, --every 15m, --every 1h, --every 1d")
    seconds = int(m[1]) * UNITS[m[2]]
    if seconds < MIN_EVERY:
        raise ScheduleError(f"--every {text} is too often: the least is {MIN_EVERY}s",
                            hint="a verify run takes seconds per host; 15m is a common choice")
    return seconds


def human(seconds: int) -> str:
    for unit in ("d", "h", "m"):
        if seconds % UNITS[unit] == 0:
            return f"{seconds // UNITS[unit]}{unit}"
    return f"{seconds}s"


def on_calendar(seconds: int) -> str | None:
    """An OnCalendar= expression firing exactly every `seconds`, when the calendar can express it."""
    if seconds < 60 and 60 % seconds == 0:
        return f"*-*-* *:*:00/{seconds}"
    if seconds % 60 == 0 and seconds < 3600 and 60 % (seconds // 60) == 0:
        return f"*-*-* *:00/{seconds // 60}:00"
    if seconds % 3600 == 0 and seconds < 86400 and 24 % (seconds // 3600) == 0:
        return f"*-*-* 00/{seconds // 3600}:00:00"
    if seconds == 86400:
        return "*-*-* 00:00:00"
    return None


def cron_fields(seconds: int) -> str:
    """The five time fields of a crontab line, or a clear error when cron cannot keep the interval."""
    if seconds < 60 or seconds % 60:
        raise ScheduleError(f"cron cannot run every {human(seconds)}: its smallest step is a minute",
                            hint="use --kind systemd (the default) for intervals under a minute")
    minutes = seconds // 60
    if minutes < 60 and 60 % minutes == 0:
        return f"{'*' if minutes == 1 else f'*/{minutes}'} * * * *"
    if minutes % 60 == 0 and minutes < 1440 and 24 % (minutes // 60) == 0:
        hours = minutes // 60
        return f"0 {'*' if hours == 1 else f'*/{hours}'} * * *"
    if minutes == 1440:
        return "0 0 * * *"
    raise ScheduleError(f"cron cannot run every {human(seconds)} evenly: its fields restart each hour and day",
                        hint="use minutes dividing 60 (1m..30m), hours dividing 24 (1h..12h) or 1d; "
                             "or --kind systemd, which can")


# -- the command ----------------------------------------------------------------------------------

@dataclass
class Job:
    every: int
    command: tuple[str, ...]  # `wsguard`, or `invoke -r REPO` in a checkout without the console script
    docs: str | None  # the README of this installation, where there is one
    inventory: str
    limit: str | None = None
    remediate: bool = False
    reports: list[str] = field(default_factory=list)  # FMT:PATH
    history: str = HISTORY
    user: str = "root"

    def argv(self) -> list[str]:
        args = [*self.command, "verify", "--inventory", self.inventory]
        if self.limit:
            args += ["--limit", self.limit]
        for r in self.reports:
            args += ["--report", r]
        args += ["--history", self.history]
        if self.remediate:
            args.append("--remediate")
        return args

    def written_dirs(self) -> list[str]:
        """Directories the run writes (reports, history), outside the StateDirectory systemd manages."""
        paths = [r.partition(":")[2] for r in self.reports] + [self.history]
        dirs = [os.path.dirname(p) for p in paths if p and p != "-"]
        return [d for d in dict.fromkeys(dirs) if d != STATE_DIR and not d.startswith(STATE_DIR + "/")]


def installation() -> tuple[tuple[str, ...], str | None]:
    """What a scheduled run executes, as this installation is: the `wsguard` command of the venv (or PATH)
    that runs us, else `invoke -r REPO` in a checkout; and the README to point at, where there is one."""
    bindir = Path(sys.prefix) / "bin"
    readme = Path(__file__).resolve().parents[2] / "README.md"
    docs = str(readme) if readme.is_file() else None
    for name in ("wsguard", "invoke"):
        found = bindir / name if os.access(bindir / name, os.X_OK) else next(
            (Path(d) / name for d in os.environ.get("PATH", "").split(os.pathsep)
             if d and os.access(Path(d) / name, os.X_OK)), None)
        if found is None:
            continue
        if name == "wsguard":
            return (str(Path(os.path.abspath(found))),), docs
        repo = readme.parent
        if (repo / "tasks.py").is_file():
            return (str(Path(os.path.abspath(found))), "-r", str(repo)), docs
    raise ScheduleError("cannot find the wsguard command of this installation",
                        hint="install wsguard (pip install . or pipx install .), or run schedule from its checkout's "
                             "venv: .venv/bin/invoke schedule ...")


def check_reports(values: list[str] | None) -> list[str]:
    """--report values for a scheduled run: default json + prometheus files; paths must be absolute."""
    if not values:
        return [f"json:{JSON_REPORT}", f"prometheus:{PROM_REPORT}"]
    specs = parse_specs(values)
    for s in specs:
        if not s.to_stdout and not os.path.isabs(s.path):
            raise ScheduleError(f"--report {s.fmt}:{s.path}: a scheduled run needs an absolute path",
                                hint=f"e.g. --report {s.fmt}:{STATE_DIR}/verify.{s.fmt}")
    return [f"{s.fmt}:{s.path}" for s in specs]


# -- systemd ------------------------------------------------------------------------------------------

def systemd_quote(arg: str) -> str:
    """One ExecStart= argument: `%` (specifiers) and `$` (variables) escaped; quoted when needed."""
    arg = arg.replace("%", "%%").replace("$", "$$")
    if arg and not re.search(r"[\s\"'\\;]", arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def service_unit(job: Job) -> str:
    rw = " ".join(f"-{d}" for d in job.written_dirs())
    exec_start = " ".join(systemd_quote(a) for a in job.argv())
    docs = f"Documentation=file://{job.docs}\n" if job.docs else ""
    return f"""# {NAME}.service: written by `invoke schedule` (wsguard); started by {NAME}.timer.
# Runs `invoke verify` on the inventory below: reports, compliance history, new-drift alerts.
[Unit]
Description=wsguard compliance verify ({job.inventory})
{docs}Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
User={job.user}
ExecStart={exec_start}
# Exit 2 (drift found) is a finding, kept in the reports and the history; exit 1 (a host unreachable or
# an error, a remediation failed) leaves the unit failed, for `systemctl --failed` and OnFailure=.
SuccessExitStatus=2
TimeoutStartSec={RUN_TIMEOUT}
# The webhook URL (a credential) lives here, not in this world-readable unit: WSGUARD_WEBHOOK=https://...
EnvironmentFile=-{ENV_FILE}
Environment=PYTHONDONTWRITEBYTECODE=1
StateDirectory={os.path.basename(STATE_DIR)}
StateDirectoryMode=0700
UMask=0077

# Hardening. wsguard only reads its installation, inventory and ssh keys, and talks SSH (and HTTPS to
# the webhook); it writes the reports and the history, nothing else.
NoNewPrivileges=yes
ProtectSystem=strict
# StateDirectory= is writable by itself; other report directories are listed here ("-": the unit still
# starts when one is missing, and the report that cannot be written fails the run with a clear error).
{"ReadWritePaths=" + rw if rw else "# (no other directory is written)"}
# read-only, not yes: the installation, the inventory and the ssh keys and known_hosts often live
# under /root or /home (ProtectHome=yes would hide them); nothing there is written.
ProtectHome=read-only
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictSUIDSGID=yes
RestrictNamespaces=yes
RestrictRealtime=yes
LockPersonality=yes
# CPython, paramiko and cryptography need no writable+executable memory (checked under PR_SET_MDWE).
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
# root without capabilities: the files it reads (keys, inventory) and writes are root's own. If they
# belong to another user with mode 0600, add CAP_DAC_READ_SEARCH here (or run it as that User=).
CapabilityBoundingSet=
"""


def timer_unit(job: Job) -> str:
    cal = on_calendar(job.every)
    every = human(job.every)
    jitter = max(1, min(60, job.every // 10))
    if cal:
        when = (f"OnCalendar={cal}\n"
                "# A run missed while the machine was off (or the timer stopped) runs at the next start.\n"
                "Persistent=true")
    else:
        when = (f"# {every} does not divide a minute, an hour or a day: a monotonic timer keeps the interval.\n"
                f"# (Persistent= applies to OnCalendar= only; OnBootSec= runs it soon after a boot instead.)\n"
                f"OnBootSec={every}\nOnUnitActiveSec={every}")
    return f"""# {NAME}.timer: written by `invoke schedule` (wsguard): runs {NAME}.service every {every}.
[Unit]
Description=wsguard compliance verify every {every}

[Timer]
{when}
# A small, stable per-machine delay, so a fleet of controllers does not all connect at :00.
RandomizedDelaySec={jitter}s
FixedRandomDelay=yes
AccuracySec=1s
Unit={NAME}.service

[Install]
WantedBy=timers.target
"""


def systemd_units(job: Job, unit_dir: str = UNIT_DIR) -> dict[str, str]:
    return {os.path.join(unit_dir, f"{NAME}.service"): service_unit(job),
            os.path.join(unit_dir, f"{NAME}.timer"): timer_unit(job)}


# -- cron ---------------------------------------------------------------------------------------------

def cron_line(job: Job) -> str:
    """A user crontab line (five time fields, then the command); `%` escaped, every argument shell-quoted."""
    command = " ".join(shlex.quote(a) for a in job.argv()).replace("%", "\\%")
    return f"{cron_fields(job.every)} {command}"


def cron_text(job: Job) -> str:
    return (f"# wsguard compliance verify every {human(job.every)} (add to root's crontab: crontab -e)\n"
            f"# a webhook: put a line WSGUARD_WEBHOOK=https://... above it (root's crontab is mode 0600)\n"
            f"{cron_line(job)}\n")


# -- writing ----------------------------------------------------------------------------------------

def render(files: dict[str, str]) -> str:
    """What --print shows: each file with its path, as `head` shows several files."""
    return "\n".join(f"==> {path} <==\n{text}" for path, text in files.items())


def install(files: dict[str, str]) -> list[str]:
    """Write every file atomically (temp file in the same directory, fsync, rename, fsync the directory)."""
    staged: list[tuple[str, str]] = []
    try:
        for path, text in files.items():
            directory = os.path.dirname(path)
            try:
                os.makedirs(directory, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
            except OSError as exc:
                raise ScheduleError(f"cannot write {path}: {exc.strerror}",
                                    hint="run as root, or pass --unit-dir DIR") from None
            staged.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
        for tmp, path in staged:
            os.replace(tmp, path)
        for directory in dict.fromkeys(os.path.dirname(p) for p in files):
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return list(files)
