"""The CLI layer: flags declared once (remediations/cli/flags.py), typed in --help, a bad value one line under
`wsguard` and `invoke` alike, and the `wsguard` console script outside the checkout.

Every test but the last runs without a lab: a flag is refused while the command line is parsed, before
any inventory is read or host tried.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import fields
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from conftest import BIN, REPO, Lab
from remediations.cli.flags import FLEET, REMOTE, SHARED, Flag, FlagTask, RunFlags
from remediations.cli.program import collection
from remediations.flows import per_host
from remediations.model.errors import RemediationError
from remediations.model.results import HostResult

PROGRAMS = {"wsguard": [str(BIN / "wsguard")], "invoke": [str(BIN / "invoke"), "-r", str(REPO)]}


def run(program: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WSGUARD_INVENTORY", "WSGUARD_WEBHOOK")}
    return subprocess.run([*PROGRAMS[program], *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env=env, stdin=subprocess.DEVNULL)


# -- the table and the parse step -----------------------------------------------------------------

def test_run_flags_has_a_field_per_shared_row_in_order() -> None:
    assert [f.name for f in fields(RunFlags)] == list(SHARED)


def test_parse_types_the_values_and_fills_defaults() -> None:
    flags = RunFlags.parse({"forks": "4", "timeout": "2.5", "limit": "web*", "check": True})
    assert (flags.forks, flags.timeout, flags.limit, flags.check) == (4, 2.5, "web*", True)
    assert isinstance(flags.forks, int) and isinstance(flags.connect_timeout, float)
    assert (flags.connect_timeout, flags.lock_timeout, flags.json, flags.inventory) == (10.0, 30.0, False, None)
    assert RunFlags.parse({}) == RunFlags.parse({f.name: f.default for f in SHARED.values()})


@pytest.mark.parametrize(("values", "message"), [
    ({"forks": 0}, "--forks must be a whole number from 1 to 1000, got 0"),
    ({"forks": 2.5}, "--forks must be a whole number from 1 to 1000, got 2.5"),
    ({"timeout": float("inf")}, "--timeout must be a number from 0.1 to 86400, got inf"),
    ({"limit": "web1\nx"}, "--limit 'web1\\nx' holds a NUL, a newline or another control character"),
    ({"serial": "0"}, "--serial must be N, N% or a comma list of them"),
    ({"max_fail_percent": "101"}, "--max-fail-percent must be a number from 0 to 100"),
    ({"shard": "3/2"}, "bad shard '3/2'"),
])
def test_parse_refuses_a_bad_value(values: dict[str, Any], message: str) -> None:
    with pytest.raises(RemediationError) as caught:
        RunFlags.parse(values)
    assert message in caught.value.message


def test_help_says_the_default_once() -> None:
    assert SHARED["forks"].full_help == "hosts worked on at once (default 10)"
    assert SHARED["connect_timeout"].full_help == "seconds to connect to a host (default 10)"
    assert SHARED["check"].full_help == SHARED["check"].help  # a switch: no default shown
    assert Flag("x", int, 0, "n", default_help="all").full_help == "n (default: all)"


def test_every_task_argument_has_its_row() -> None:
    for name in collection().task_names:
        t = collection()[name]
        assert isinstance(t, FlagTask), name
        args = {a.name: a for a in t.get_arguments()}
        assert set(args) == set(t.flags), name
        for a in args.values():
            row = t.flags[a.name]
            assert a.kind is row.kind and a.help == row.full_help, (name, a.name)
    assert {"forks", "json"}.isdisjoint(collection()["monitor"].flags)  # monitor has neither
    assert set(FLEET) <= set(collection()["rollback"].flags) and set(REMOTE) <= set(collection()["verify"].flags)


# -- the command line -----------------------------------------------------------------------------

@pytest.mark.parametrize("program", PROGRAMS)
def test_help_names_each_flags_type(program: str) -> None:
    r = run(program, "--help", "fix-nginx")
    assert r.returncode == 0, r.stderr
    for spec in ("--forks=INT", "--timeout=FLOAT", "--connect-timeout=FLOAT", "--lock-timeout=FLOAT",
                 "--inventory=PATH", "--limit=PATTERN", "--shard=K/N"):
        assert spec in r.stdout, (spec, r.stdout)
    assert "STRING" not in r.stdout
    assert "--check " in r.stdout and "--check=" not in r.stdout  # a switch stays a switch


@pytest.mark.parametrize("program", PROGRAMS)
@pytest.mark.parametrize(("args", "line"), [
    (["fix", "--forks", "abc"], "error: --forks must be a whole number from 1 to 1000, got 'abc'"),
    (["fix-nginx", "--timeout", "1_000"], "error: --timeout must be a number from 0.1 to 86400, got '1_000'"),
    (["verify", "--probe-idle", "nan"], "error: --probe-idle must be a number from 0 to 86400, got 'nan'"),
    (["history", "--forks", "\u0661\u0662"],
     "error: --forks must be a whole number from 1 to 1000, got '\u0661\u0662'"),
], ids=["int", "float-underscore", "float-nan", "non-ascii-digits"])
def test_bad_value_is_one_line_and_exit_1(program: str, args: list[str], line: str) -> None:
    # The inventory does not exist: the value is refused while the command line is parsed.
    r = run(program, *args, "--inventory", "/nonexistent/inventory.yml")
    assert r.returncode == 1, r.stderr
    assert r.stderr.splitlines() == [line] and r.stdout == ""


def test_lab_flags_are_checked_too() -> None:
    r = run("invoke", "lab.up", "--hosts", "abc")
    assert r.returncode == 1 and r.stderr.splitlines() == ["error: --hosts must be a whole number from 1 to 244, "
                                                           "got 'abc'"], r.stderr


def test_unknown_flag_names_the_help() -> None:
    r = run("wsguard", "fix", "--nosuch")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == ["wsguard: No idea what '--nosuch' is!",
                                     "  hint: `wsguard --help TASK` lists the task's flags and their types"]


def test_version() -> None:
    r = run("wsguard", "--version", cwd=Path("/tmp"))
    assert r.returncode == 0 and r.stdout.strip() == f"wsguard {version('wsguard')}", r.stdout + r.stderr


# -- the per-host functions the CLI hands to the runner ----------------------------------------------

class _Host:
    name = "web1"

    class ws:  # noqa: N801 - stands in for the host's settings
        journal_keep = 5


class _Transport:
    host = _Host()


def test_remediation_fn_builds_the_hosts_remediation(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def execute(t: Any, rem: Any, run_id: str, opts: Any, result: HostResult, masker: Any) -> HostResult:
        seen.update(rem=rem, run_id=run_id, opts=opts)
        return result

    monkeypatch.setattr(per_host, "execute", execute)
    opts = RunFlags.parse({"check": True}).transaction()
    fn = per_host.remediation_fn(lambda h: ("fix-of", h.name), opts)
    fn(_Transport(), HostResult(host="web1", task="fix", run_id="r1"), None)  # type: ignore[arg-type]
    assert seen == {"rem": ("fix-of", "web1"), "run_id": "r1", "opts": opts} and opts.check


def test_history_fn_keeps_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(per_host, "read_runs", lambda t: [{"n": i} for i in range(4)])
    monkeypatch.setattr(per_host, "summary", lambda m: m)
    result = HostResult(host="web1", task="history", run_id="r1")
    per_host.history_fn(2)(_Transport(), result, None)  # type: ignore[arg-type]
    assert result.evidence == {"recorded": 4, "keep": 5, "runs": [{"n": 0}, {"n": 1}]}


# -- the console script, outside the checkout (needs the lab) --------------------------------------------

def test_console_script_runs_outside_the_checkout(lab: Lab) -> None:
    r = run("wsguard", "fix-nginx", "--inventory", lab.inventory, "--check", "--limit", "lab1", cwd=Path("/tmp"))
    assert r.returncode in (0, 2), r.stdout + r.stderr
    assert r.stdout.startswith("lab1: ") and "RECAP" in r.stdout and "Traceback" not in r.stderr, r.stdout
