"""`invoke schedule` (issue 9): systemd units that systemd-analyze accepts, the crontab line, --every."""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from remediations.output import schedule as sched

REPO = Path(__file__).resolve().parents[1]
# The console script `pip install` puts beside the venv's python: what a scheduled run executes.
WSGUARD = Path(sys.executable).parent / "wsguard"
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                           reason="systemd-analyze missing (apt-get install systemd)")


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small inventory of its own (no lab needed: schedule only loads it)."""
    d = tmp_path_factory.mktemp("inv")
    p = d / "inventory.yml"
    p.write_text("all:\n  vars:\n    nginx_site: /etc/nginx/sites-enabled/app\n  children:\n    web:\n"
                 "      hosts:\n        web1: {ansible_host: 192.0.2.1}\n        web2: {ansible_host: 192.0.2.2}\n")
    return str(p)


def schedule(*args: str) -> subprocess.CompletedProcess[str]:
    invoke = Path(sys.executable).parent / "invoke"
    return subprocess.run([str(invoke), "schedule", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "WSGUARD_INVENTORY": ""})


def split_print(text: str) -> dict[str, str]:
    """--print output (`==> PATH <==` headers, as `head` prints several files) -> {path: text}."""
    parts = re.split(r"^==> (.+) <==\n", text, flags=re.M)
    assert parts[0] == "", parts[0]
    return {parts[i]: parts[i + 1].rstrip("\n") + "\n" for i in range(1, len(parts), 2)}


def directives(unit: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


def calendar_step(expr: str) -> float:
    """Seconds between the next elapses of an OnCalendar expression, as systemd computes them."""
    out = subprocess.run([str(SYSTEMD_ANALYZE), "calendar", "--iterations=4", expr], capture_output=True,
                         text=True, check=True, env={**os.environ, "TZ": "UTC"}).stdout
    times = [dt.datetime.strptime(m, "%Y-%m-%d %H:%M:%S")
             for m in re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", out)]
    steps = {(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)}
    assert len(times) == 4 and len(steps) == 1, out
    return steps.pop()


def timespan(value: str) -> float:
    out = subprocess.run([str(SYSTEMD_ANALYZE), "timespan", value], capture_output=True, text=True,
                         check=True).stdout
    return int(re.search(r"μs: (\d+)", out)[1]) / 1e6  # type: ignore[index]


@needs_systemd_analyze
@pytest.mark.parametrize(("every", "seconds"), [("30s", 30), ("15m", 900), ("1h", 3600), ("6h", 21600),
                                                ("1d", 86400), ("45m", 2700), ("90s", 90)])
def test_print_passes_systemd_analyze_and_the_timer_keeps_the_interval(inventory: str, tmp_path: Path,
                                                                        every: str, seconds: int) -> None:
    r = schedule("--every", every, "--inventory", inventory, "--limit", "web*,!web2", "--print")
    assert r.returncode == 0, r.stderr
    files = split_print(r.stdout)
    assert set(files) == {"/etc/systemd/system/wsguard-verify.service", "/etc/systemd/system/wsguard-verify.timer"}
    for path, text in files.items():
        (tmp_path / Path(path).name).write_text(text)
    v = subprocess.run([str(SYSTEMD_ANALYZE), "verify", str(tmp_path / "wsguard-verify.service"),
                        str(tmp_path / "wsguard-verify.timer")], capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr
    assert not v.stderr.strip(), v.stderr  # not even a warning
    timer = directives(files["/etc/systemd/system/wsguard-verify.timer"])
    if "OnCalendar" in timer:
        assert calendar_step(timer["OnCalendar"][0]) == seconds
        assert timer["Persistent"] == ["true"]
    else:
        assert timespan(timer["OnUnitActiveSec"][0]) == timespan(timer["OnBootSec"][0]) == seconds
    assert timer["AccuracySec"] and 0 < timespan(timer["RandomizedDelaySec"][0]) <= min(60, seconds / 10 + 1)
    assert timer["Unit"] == ["wsguard-verify.service"]

    svc = directives(files["/etc/systemd/system/wsguard-verify.service"])
    argv = shlex.split(svc["ExecStart"][0])
    assert argv[0] == str(WSGUARD) and os.access(argv[0], os.X_OK)
    assert argv[1] == "verify"
    assert argv[argv.index("--inventory") + 1] == inventory and os.path.isabs(inventory)
    assert argv[argv.index("--limit") + 1] == "web*,!web2"
    assert f"json:{sched.JSON_REPORT}" in argv and f"prometheus:{sched.PROM_REPORT}" in argv
    assert argv[argv.index("--history") + 1] == sched.HISTORY
    for k, v_ in {"Type": "oneshot", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
                  "ProtectHome": "read-only", "PrivateTmp": "yes", "ProtectKernelTunables": "yes",
                  "ProtectKernelModules": "yes", "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes",
                  "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes"}.items():
        assert svc[k] == [v_], k
    assert svc["TimeoutStartSec"] and svc["StateDirectory"] == ["wsguard-controller"]
    assert svc["ReadWritePaths"] == ["-/var/lib/node_exporter/textfile_collector"]


@needs_systemd_analyze
def test_a_broken_unit_fails_systemd_analyze(inventory: str, tmp_path: Path) -> None:
    """The check above has teeth: an ExecStart that does not exist is refused."""
    r = schedule("--inventory", inventory, "--print")
    files = split_print(r.stdout)
    for path, text in files.items():
        (tmp_path / Path(path).name).write_text(text.replace(str(WSGUARD), "/nonexistent/wsguard"))
    v = subprocess.run([str(SYSTEMD_ANALYZE), "verify", str(tmp_path / "wsguard-verify.service")],
                       capture_output=True, text=True, timeout=60)
    assert v.returncode != 0


def test_install_writes_the_units_print_shows(inventory: str, tmp_path: Path) -> None:
    unit_dir = tmp_path / "units"
    args = ["--every", "1h", "--inventory", inventory, "--remediate", "--report", "json:/srv/reports/v.json",
            "--report", "prometheus:/srv/prom/wsguard.prom", "--unit-dir", str(unit_dir)]
    printed = schedule(*args, "--print")
    assert printed.returncode == 0, printed.stderr
    r = schedule(*args, "--install")
    assert r.returncode == 0, r.stderr
    written = {str(p): p.read_text() for p in sorted(unit_dir.iterdir())}
    assert written == split_print(printed.stdout)
    assert sorted(os.path.basename(p) for p in written) == ["wsguard-verify.service", "wsguard-verify.timer"]
    assert all(oct(os.stat(p).st_mode & 0o777) == "0o644" for p in written)
    svc = directives(written[str(unit_dir / "wsguard-verify.service")])
    argv = shlex.split(svc["ExecStart"][0])
    assert "--remediate" in argv and "json:/srv/reports/v.json" in argv
    assert sorted(svc["ReadWritePaths"][0].split()) == ["-/srv/prom", "-/srv/reports"]
    # Installing again is idempotent and leaves no temporary file behind.
    assert schedule(*args, "--install").returncode == 0
    assert sorted(p.name for p in unit_dir.iterdir()) == ["wsguard-verify.service", "wsguard-verify.timer"]


_CRON_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]


def cron_field_ok(field: str, lo: int, hi: int) -> bool:
    for part in field.split(","):
        m = re.fullmatch(r"(\*|\d+(?:-\d+)?)(?:/(\d+))?", part)
        if not m:
            return False
        if m[1] != "*" and not all(lo <= int(x) <= hi for x in m[1].split("-")):
            return False
        if m[2] is not None and not 1 <= int(m[2]) <= hi:
            return False
    return True


@pytest.mark.parametrize(("every", "fields"), [("15m", "*/15 * * * *"), ("1m", "* * * * *"), ("60m", "0 * * * *"),
                                               ("2h", "0 */2 * * *"), ("1d", "0 0 * * *")])
def test_cron_line_is_five_valid_fields_and_an_absolute_command(inventory: str, every: str, fields: str) -> None:
    r = schedule("--kind", "cron", "--every", every, "--inventory", inventory, "--limit", "web1")
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line and not line.startswith("#")]
    assert len(lines) == 1, r.stdout
    parts = lines[0].split(None, 5)
    assert " ".join(parts[:5]) == fields
    assert all(cron_field_ok(f, lo, hi) for f, (lo, hi) in zip(parts[:5], _CRON_RANGES, strict=True))
    assert "%" not in parts[5].replace("\\%", "")  # cron turns a bare % into a newline
    argv = shlex.split(parts[5])
    assert os.path.isabs(argv[0]) and os.access(argv[0], os.X_OK)
    assert argv[0] == str(WSGUARD) and argv[1] == "verify"
    assert os.path.isabs(argv[argv.index("--inventory") + 1])


@pytest.mark.parametrize(("args", "message"), [
    (["--every", "15"], "bad --every '15'"),
    (["--every", "15 minutes"], "bad --every"),
    (["--every", "-5m"], "bad --every"),
    (["--every", "1.5h"], "bad --every"),
    (["--every", "0m"], "too often"),
    (["--every", "5s"], "too often"),
    (["--kind", "cron", "--every", "30s"], "cron cannot run every 30s"),
    (["--kind", "cron", "--every", "45m"], "cron cannot run every 45m evenly"),
    (["--kind", "cron", "--every", "5h"], "cron cannot run every 5h evenly"),
    (["--kind", "cron", "--every", "2d"], "cron cannot run every 2d evenly"),
    (["--kind", "launchd"], "--kind must be systemd or cron"),
    (["--print", "--install"], "do not go together"),
    (["--report", "json:relative.json"], "needs an absolute path"),
    (["--limit", "nosuch"], "matches no host"),
])
def test_bad_values_are_clear_errors(inventory: str, args: list[str], message: str) -> None:
    r = schedule("--inventory", inventory, *args)
    assert r.returncode == 1
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""


def test_interval_helpers() -> None:
    assert [sched.parse_every(v) for v in ("30s", "15m", "1h", "1d", " 2H ")] == [30, 900, 3600, 86400, 7200]
    assert sched.on_calendar(45 * 60) is None and sched.on_calendar(7 * 86400) is None
    assert sched.human(5400) == "90m" and sched.human(90) == "90s"
    assert sched.systemd_quote("a b%$") == '"a b%%$$"' and sched.systemd_quote("web*,!db") == "web*,!db"


def test_an_inventory_on_stdin_cannot_be_scheduled() -> None:
    """A timer has no stdin: `--inventory -` (fine for a one-off run) is refused with what to do instead."""
    r = schedule("--inventory", "-", "--every", "5m", "--print")
    assert r.returncode == 1 and "not - (standard input)" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""
