"""Bad input never ends in a traceback (issue 13): a clear error, exit 1, nothing written.

Through the real CLI (lab.invoke) where the input arrives from a user; the editors' own fuzz tests are
tests/test_envfile.py::test_fuzz_contract_or_envfile_error and
tests/test_nginxconf.py::test_fuzz_only_remediation_errors; a combined one is here.
Counted in the safety summary as bad inputs tried / clear errors.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import BIN, REPO, Lab
from remediations.edit.envfile import read_values, set_flags
from remediations.edit.nginxconf import ensure_directives
from remediations.model.errors import RemediationError
from remediations.output.reports import ReportError, parse_specs
from remediations.output.schedule import check_reports

APP_ENV = "/opt/wealth-coach-ai/.env"
# An inventory that loads, with one host nobody can reach (TEST-NET-1): a check that lets a bad value
# through would go on to connect, so these tests also fail (not hang) when a check is missing.
ONE_HOST = ("all:\n  vars:\n    nginx_site: /etc/nginx/sites-enabled/app\n{vars}"
            "  hosts:\n    web1:\n      ansible_host: 192.0.2.1\n")


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a task through the real CLI, as a user would; for the checks that come before any host."""
    env = {k: v for k, v in os.environ.items() if k not in ("WSGUARD_INVENTORY", "WSGUARD_WEBHOOK")}
    return subprocess.run([str(BIN / "invoke"), "-r", str(REPO), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env, stdin=subprocess.DEVNULL)


def one_host(tmp_path: Path, vars_yaml: str = "") -> str:
    inv = tmp_path / "inventory.yml"
    inv.write_text(ONE_HOST.format(vars=vars_yaml))
    return str(inv)


def clear_error(r, *needles: str) -> str:  # type: ignore[no-untyped-def]
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert "Traceback" not in out, out
    for n in needles:
        assert n in out, (n, out)
    return str(out)


def inventory_with(lab: Lab, tmp_path: Path, vars_yaml: str) -> str:
    inv = tmp_path / "inventory.yml"
    inv.write_text(Path(lab.inventory).read_text().replace("  vars:\n", "  vars:\n" + vars_yaml, 1))
    return str(inv)


@pytest.mark.safety("bad_input")
def test_malformed_inventory_yaml_names_file_and_line(lab: Lab, tmp_path: Path) -> None:
    inv = tmp_path / "broken.yml"
    inv.write_text("all:\n  hosts:\n    web1:\n      ansible_host: [10.0.0.1\n")
    r = lab.invoke("fix-rate-limit", "--inventory", str(inv), "--check")
    clear_error(r, str(inv), "line ", "invalid YAML")


@pytest.mark.safety("bad_input")
@pytest.mark.parametrize("limit", ["nosuchhost", "nosuchgroup*", "lab1,!nosuch"])
def test_unknown_host_or_group_in_limit(lab: Lab, limit: str) -> None:
    r = lab.invoke("fix-nginx", "--inventory", lab.inventory, "--limit", limit, "--check")
    clear_error(r, "matches no host")


@pytest.mark.safety("bad_input")
@pytest.mark.parametrize("vars_yaml, needles", [
    ("    env_flags:\n      'WS-RATE': 'false'\n", ["env_flags", "identifiers", "'WS-RATE'"]),
    ("    env_flags:\n      '1ABC': 'x'\n", ["env_flags", "'1ABC'"]),
    ("    env_flags:\n      WS_X: \"two\\nlines\"\n", ["env_flags", "single-line"]),
    ("    nginx_directives:\n      - \"proxy_read_timeout 1s;\\nproxy_pass x\"\n", ["nginx_directives", "single-line"]),
    ("    ws_location: 42\n", ["ws_location"]),
], ids=["flag-dash", "flag-digit", "value-newline", "directive-newline", "location-not-string"])
def test_bad_inventory_vars_name_file_and_key(lab: Lab, tmp_path: Path, vars_yaml: str, needles: list[str]) -> None:
    inv = inventory_with(lab, tmp_path, vars_yaml)
    r = lab.invoke("fix-rate-limit", "--inventory", inv, "--check")
    clear_error(r, inv, *needles)


@pytest.mark.safety("bad_input")
@pytest.mark.parametrize("value, why", [("x${HOME}y", "'${'")], ids=["dollar-brace"])
def test_flag_values_an_env_file_cannot_hold(lab: Lab, tmp_path: Path, value: str, why: str) -> None:
    inv = inventory_with(lab, tmp_path, f'    env_flags:\n      WS_X: "{value}"\n')
    before = hashlib.sha256(lab.host("lab1").path(APP_ENV).read_bytes()).hexdigest()
    r = lab.invoke("fix-rate-limit", "--inventory", inv, "--limit", "lab1")
    clear_error(r, "lab1: failed", "refusing to set WS_X", why)
    assert hashlib.sha256(lab.host("lab1").path(APP_ENV).read_bytes()).hexdigest() == before


@pytest.mark.safety("bad_input")
@pytest.mark.parametrize("directive, needle", [
    ("foo { bar;", "not valid nginx syntax"),
    ('proxy_read_timeout "unterminated', "not valid nginx syntax"),
    ("proxy_read_timeout 1s; # c", "not valid nginx syntax"),
], ids=["brace", "quote", "comment"])
def test_directives_that_are_not_nginx_syntax(lab: Lab, tmp_path: Path, directive: str, needle: str) -> None:
    inv = inventory_with(lab, tmp_path, f"    nginx_directives:\n      - {json.dumps(directive)}\n")
    r = lab.invoke("fix-nginx", "--inventory", inv, "--limit", "lab1", "--check")
    clear_error(r, "lab1", needle)


@pytest.mark.safety("bad_input")
def test_location_that_does_not_exist(lab: Lab, tmp_path: Path) -> None:
    inv = inventory_with(lab, tmp_path, "    ws_location: /nonexistent/\n")
    r = lab.invoke("fix-nginx", "--inventory", inv, "--limit", "lab1", "--check")
    clear_error(r, "lab1", "no `location /nonexistent/` block", "location /ws/")


@pytest.mark.safety("bad_input")
def test_env_file_dotenv_cannot_parse_names_the_line_and_writes_nothing(lab: Lab) -> None:
    host = "lab1"
    path = lab.host(host).path(APP_ENV)
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"BROKEN='never closed\nWS_RATE_LIMIT_ENABLED=true\n")
        before = path.read_bytes()
        r = lab.invoke("fix-rate-limit", "--inventory", lab.inventory, "--limit", host)
        clear_error(r, "lab1: failed", "python-dotenv cannot parse line 5")
        assert path.read_bytes() == before
        assert not lab.host(host).path("/var/lib/wsguard/runs").exists() or \
            not list(lab.host(host).path("/var/lib/wsguard/runs").iterdir())
    finally:
        path.write_bytes(original)


NUMBER_TASKS = ["fix-rate-limit", "fix-nginx", "fix", "rollback", "history", "verify", "diagnose", "probe",
                "monitor"]


@pytest.mark.safety("bad_input")
@pytest.mark.parametrize("task", NUMBER_TASKS)
def test_bad_numbers_are_clear_errors(tmp_path: Path, task: str) -> None:
    # The inventory does not exist: every flag must be checked before it is read.
    missing = str(tmp_path / "no-inventory.yml")
    for flag, value, needle in (("--timeout", "abc", "--timeout must be a number from 0.1 to 86400"),
                                ("--timeout", "-1", "--timeout must be a number from 0.1 to 86400"),
                                ("--connect-timeout", "nan", "--connect-timeout must be a number from 0.1 to 3600")):
        clear_error(cli(task, "--inventory", missing, flag, value), needle, repr(value))
    if task != "monitor":  # monitor has no --forks
        for value in ("0", "1.5", "1e3"):
            clear_error(cli(task, "--inventory", missing, "--forks", value),
                        "--forks must be a whole number from 1 to 1000", repr(value))


# The text of a number flag is a plain decimal: int() and float() would also take these.
NOT_PLAIN = ["1_000", "\u0661\u0662", "\uff11\uff10", " 1 0 ", "0x10"]


@pytest.mark.safety("bad_input")
@pytest.mark.parametrize(("task", "flag"), [("fix", "--timeout"), ("fix", "--forks"), ("rollback", "--lock-timeout"),
                                            ("diagnose", "--tail")])
def test_numbers_are_plain_decimals(tmp_path: Path, task: str, flag: str) -> None:
    for value in NOT_PLAIN:
        out = clear_error(cli(task, "--inventory", one_host(tmp_path), flag, value), f"{flag} must be", repr(value))
        assert len(out.strip().splitlines()) == 1, out


# Not finite, or past any sane bound: each would reach a timer, a sleep or a thread pool as it is.
HUGE = ["inf", "nan", "1e400", "99999999999999999999"]
FLAG_RANGES = [
    ("fix", "--timeout", "a number from 0.1 to 86400"),
    ("fix", "--connect-timeout", "a number from 0.1 to 3600"),
    ("fix", "--forks", "a whole number from 1 to 1000"),
    ("fix", "--lock-timeout", "a number from 0 to 86400"),
    ("fix-rate-limit", "--lock-timeout", "a number from 0 to 86400"),
    ("fix-nginx", "--lock-timeout", "a number from 0 to 86400"),
    ("rollback", "--lock-timeout", "a number from 0 to 86400"),
    ("history", "--last", "a whole number from 0 to 1000000"),
    ("compliance-history", "--last", "a whole number from 0 to 1000000"),
    ("verify", "--probe-chunks", "a whole number from 0 to 100000"),
    ("verify", "--probe-idle", "a number from 0 to 86400"),
    ("verify", "--lock-timeout", "a number from 0 to 86400"),
    ("verify", "--timeout", "a number from 0.1 to 86400"),
    ("probe", "--duration", "a number from 0.001 to 604800"),
    ("probe", "--stream", "a whole number from 0 to 100000"),
    ("probe", "--idle", "a number from 0 to 86400"),
    ("diagnose", "--tail", "a whole number from 0 to 1000000"),
    ("monitor", "--duration", "a number from 0 to 604800"),
    ("monitor", "--lines", "a whole number from 0 to 1000000"),
]


@pytest.mark.safety("bad_input")
@pytest.mark.parametrize(("task", "flag", "allowed"), FLAG_RANGES, ids=[f"{t}{f}" for t, f, _ in FLAG_RANGES])
def test_numbers_must_be_finite_and_in_range(tmp_path: Path, task: str, flag: str, allowed: str) -> None:
    inv = [] if task == "compliance-history" else ["--inventory", one_host(tmp_path)]
    history = ["--history", str(tmp_path / "h.jsonl")] if task in ("verify", "compliance-history") else []
    for value in HUGE:
        r = cli(task, *inv, *history, flag, value)
        out = clear_error(r, f"{flag} must be {allowed}, got {value!r}")
        assert len(out.strip().splitlines()) == 1, out  # one line: what is allowed, and what was given
    assert not (tmp_path / "h.jsonl").exists()


@pytest.mark.safety("bad_input")
@pytest.mark.parametrize("every", ["99999999999999999999d", "366d", "9" * 5000 + "s", "inf", "nan", "1e3m"])
def test_schedule_every_is_bounded(tmp_path: Path, every: str) -> None:
    units = tmp_path / "units"
    units.mkdir()
    r = cli("schedule", "--every", every, "--inventory", one_host(tmp_path), "--install", "--unit-dir", str(units))
    out = clear_error(r, "--every")
    assert "the most is 365d" in out or "give a whole number and a unit" in out, out
    assert not list(units.iterdir())


@pytest.mark.safety("bad_input")
def test_schedule_every_at_the_bound_is_accepted(tmp_path: Path) -> None:
    r = cli("schedule", "--every", "365d", "--inventory", one_host(tmp_path), "--print")
    assert r.returncode == 0 and "OnUnitActiveSec=" in r.stdout, r.stdout + r.stderr


@pytest.mark.safety("bad_input")
@pytest.mark.parametrize("value", ["json:/tmp/wsguard-report\nx.json", "junit:out\r.xml", "prometheus:\x1b[2Jx"],
                         ids=["newline", "cr", "escape"])
def test_report_path_on_one_line(tmp_path: Path, value: str) -> None:
    # The inventory does not exist and no report is written: the --report is refused before anything runs.
    r = cli("verify", "--inventory", str(tmp_path / "missing.yml"), "--report", value, cwd=tmp_path)
    clear_error(r, "--report", "the path holds a NUL, a newline or another control character")
    assert "inventory not found" not in r.stderr
    assert not list(tmp_path.iterdir())
    units = tmp_path / "units"
    units.mkdir()
    r = cli("schedule", "--inventory", one_host(tmp_path), "--report", value, "--install", "--unit-dir", str(units))
    clear_error(r, "the path holds a NUL, a newline or another control character")
    assert not list(units.iterdir())


@pytest.mark.safety("bad_input")
def test_report_path_with_a_nul_is_refused() -> None:
    # No command line can carry a NUL (execve ends each argument there): the parser itself is tried.
    for values in (["json:/tmp/a\0b.json"], ["table", "junit:x\0"]):
        with pytest.raises(ReportError, match="holds a NUL"):
            parse_specs(values)
        with pytest.raises(ReportError, match="holds a NUL"):
            check_reports(values)
    assert parse_specs(["json:/tmp/plain.json"])[0].path == "/tmp/plain.json"


@pytest.mark.safety("bad_input")
@pytest.mark.parametrize(("flag", "value"), [
    ("--limit", "web1\nExecStartPre=/bin/sh -c id"),
    ("--history", "/tmp/h\n[Service]"),
    ("--unit-dir", "/tmp/u\nx"),
], ids=["limit", "history", "unit-dir"])
def test_schedule_text_flags_on_one_line(tmp_path: Path, flag: str, value: str) -> None:
    r = cli("schedule", "--inventory", one_host(tmp_path), flag, value, "--print")
    clear_error(r, f"{flag} ", "holds a NUL, a newline or another control character")
    assert "ExecStart" not in r.stdout


@pytest.mark.safety("bad_input")
def test_rollback_run_id_on_one_line(tmp_path: Path) -> None:
    r = cli("rollback", "--inventory", one_host(tmp_path), "--run", "20240101T000000Z-abcdef\nx", "--check")
    clear_error(r, "--run ", "holds a NUL, a newline or another control character")


# Inventory values wsguard puts into a command line (ssh, docker, compose, the agent's argv), or that hold
# a NUL or a newline: refused when the inventory loads, before any host is contacted.
OPTION_LIKE = [
    ("compose_service", "--help", "does not start with '-'"),
    ("compose_service", "-d", "does not start with '-'"),
    ("backend_container", "--follow", "does not start with '-'"),
    ("ansible_user", "-oProxyCommand=id", "does not start with '-'"),
    ("ansible_host", "-oProxyCommand=id", "does not start with '-'"),
    ("ws_location", "--", "does not start with '-'"),
    ("env_file", "-rf", "does not start with '-'"),
    ("compose_service", "'web;id'", "compose service name"),
    ("backend_container", "'a b'", "container name"),
    ("app_dir", '"/opt/app\\0x"', "no NUL, newline"),
    ("nginx_site", '"/etc/nginx/x\\nserver {"', "no NUL, newline"),
    ("env_flags", '{WS_X: "a\\0b"}', "no NUL or other control character"),
    ("wsguard_max_env_bytes", ".inf", "a size in bytes from 1 to 1073741824"),
    ("wsguard_max_site_bytes", "99999999999999999999", "a size in bytes from 1 to 1073741824"),
    ("wsguard_journal_keep", ".nan", "a whole number of runs from 1 to 10000"),
    ("ansible_port", "99999999999999999999", "a whole-number port from 1 to 65535"),
    ("wsguard_allowed_paths", "[etc]", "absolute path"),
]


# Each case through one of these (in turn): the check is the inventory's, whichever task loads it.
LOADING = [["fix-rate-limit", "--check"], ["verify", "--no-history"], ["monitor", "--duration", "1"],
           ["fix-nginx", "--check"], ["history"], ["diagnose"]]


@pytest.mark.safety("bad_input")
@pytest.mark.parametrize(("i", "key", "value", "expected"), [(i, *c) for i, c in enumerate(OPTION_LIKE)],
                         ids=[f"{k}={v}" for k, v, _ in OPTION_LIKE])
def test_inventory_values_refused_at_load(tmp_path: Path, i: int, key: str, value: str, expected: str) -> None:
    inv = one_host(tmp_path, f"    {key}: {value}\n")
    task, *args = LOADING[i % len(LOADING)]
    out = clear_error(cli(task, "--inventory", inv, *args), inv, "group 'all'", f"{key}: expected", expected,
                      "hint: ")
    assert "192.0.2.1" not in out  # no host was tried


DIRECTIVES = ["proxy_read_timeout 86400s", "proxy_socket_keepalive on", "proxy_http_version 1.1",
              'proxy_set_header Connection "upgrade"']


@pytest.mark.safety("bad_input")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(env=st.text(max_size=200), flags=st.dictionaries(st.text(max_size=8), st.text(max_size=12), max_size=3),
       conf=st.one_of(st.text(max_size=200), st.lists(st.sampled_from(
           ["server {", "location /ws/ {", "}", ";", "#", "\n", '"', "'", "\\", " ", "proxy_pass x;"]),
           max_size=25).map("".join)),
       location=st.sampled_from(["/ws/", "/", "~ ^/x", ""]), directives=st.lists(
           st.one_of(st.sampled_from(DIRECTIVES), st.text(max_size=20)), max_size=3))
def test_fuzz_both_editors_contract_or_remediation_error(env: str, flags: dict[str, str], conf: str, location: str,
                                                         directives: list[str]) -> None:
    try:
        out = set_flags(env, flags)
    except RemediationError:
        pass
    else:
        values = read_values(out)
        assert all(values.get(k) == v for k, v in flags.items())
        assert set_flags(out, flags) == out
    try:
        new = ensure_directives(conf, location, directives)
    except RemediationError:
        pass
    else:
        assert isinstance(new, str)
        assert ensure_directives(new, location, directives) == new
