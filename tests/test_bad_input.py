"""Bad input never ends in a traceback (issue 13): a clear error, exit 1, nothing written.

Through the real CLI (lab.invoke) where the input arrives from a user; the editors' own fuzz tests are
tests/test_envfile.py::test_fuzz_contract_or_envfile_error and
tests/test_nginxconf.py::test_fuzz_only_remediation_errors; a combined one is here.
Counted in the safety summary as bad inputs tried / clear errors.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import Lab
from remediations.envfile import read_values, set_flags
from remediations.errors import RemediationError
from remediations.nginxconf import ensure_directives

APP_ENV = "/opt/wealth-coach-ai/.env"


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
@pytest.mark.parametrize("value, why", [("a\\0b", "NUL"), ("x${HOME}y", "'${'")], ids=["nul", "dollar-brace"])
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


NUMBER_TASKS = ["fix-rate-limit", "fix-nginx", "rollback", "history", "verify", "diagnose", "probe", "monitor"]


@pytest.mark.safety("bad_input")
@pytest.mark.parametrize("task", NUMBER_TASKS)
def test_bad_numbers_are_clear_errors(lab: Lab, task: str) -> None:
    for flag, value, needle in (("--timeout", "abc", "--timeout must be a number"),
                                ("--timeout", "-1", "--timeout must be at least"),
                                ("--connect-timeout", "nan", "--connect-timeout must be")):
        r = lab.invoke(task, "--inventory", lab.inventory, flag, value)
        clear_error(r, needle)
    if task != "monitor":  # monitor has no --forks
        clear_error(lab.invoke(task, "--inventory", lab.inventory, "--forks", "0"), "--forks must be at least 1")
        clear_error(lab.invoke(task, "--inventory", lab.inventory, "--forks", "1.5"), "--forks must be a whole number")


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
