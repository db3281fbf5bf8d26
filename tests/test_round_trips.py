"""Round trips (issue 12): the bounds of docs/ARCHITECTURE.md ("Round trips"), checked against each host's own sshd log.

A no-change run or `--check` gathers every fact in ONE round trip; a changing run is facts + one apply
(handlers run inside the same remote process): 2. `--json` reports the transport's own count, and sshd
(LogLevel VERBOSE) logs "Starting session:" for every session it starts, so the two must agree.
tests/test_transport.py covers fix-rate-limit check -> change -> rerun on one host; this file covers
fix-nginx the same way, check mode on a compliant host for both tasks, and several hosts at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from conftest import Lab

# Round trips allowed by docs/ARCHITECTURE.md, and what wsguard's design actually needs.
MAX_NO_CHANGE = 1
MAX_CHANGE = 3
EXPECTED = {"check": 1, "change": 2, "no-change": 1}


def sessions(lab: Lab, name: str) -> int:
    return lab.host(name).path("/var/log/sshd.log").read_text(errors="replace").count("Starting session:")


def run_counted(lab: Lab, task: str, names: list[str], *args: str) -> tuple[dict, dict[str, int]]:
    """Run a task on hosts; return its JSON and, per host, how many sessions sshd started meanwhile."""
    before = {n: sessions(lab, n) for n in names}
    r = lab.invoke(task, "--inventory", lab.inventory, "--limit", ",".join(names), "--json", *args)
    assert r.stdout, r.stderr
    doc = json.loads(r.stdout)
    return doc, {n: sessions(lab, n) - before[n] for n in names}


@pytest.fixture
def hosts(lab: Lab) -> Iterator[list[str]]:
    """Two hosts of the lab, reset before and after (only these two: the lab may be large)."""
    names = ["lab3", "lab4"]
    lab.reset(*names, profile="seed")
    yield names
    lab.reset(*names, profile="seed")


def assert_counts(doc: dict, logged: dict[str, int], status: str, expected: int, bound: int) -> None:
    by_host = {h["host"]: h for h in doc["hosts"]}
    assert set(by_host) == set(logged)
    for name, n in logged.items():
        h = by_host[name]
        assert h["status"] == status, h
        assert h["round_trips"] == n, f"{name}: --json says {h['round_trips']}, sshd logged {n} sessions"
        assert n <= bound, f"{name}: {n} round trips, the bound is {bound}"
        assert n == expected, f"{name}: {n} round trips, expected {expected}"


def test_fix_nginx_check_change_rerun_round_trips(lab: Lab, hosts: list[str]) -> None:
    doc, logged = run_counted(lab, "fix-nginx", hosts, "--check")
    assert doc["exit_code"] == 2
    assert_counts(doc, logged, "changed", EXPECTED["check"], MAX_NO_CHANGE)
    assert all(h["handlers"] and h["handlers"][0]["status"] == "pending" for h in doc["hosts"])

    doc, logged = run_counted(lab, "fix-nginx", hosts)
    assert doc["exit_code"] == 0
    assert_counts(doc, logged, "changed", EXPECTED["change"], MAX_CHANGE)
    # The reload (nginx -t, reload, confirmed new workers) ran in the apply's round trip.
    assert all([x["name"] for x in h["handlers"]] == ["nginx_reload"] and h["handlers"][0]["status"] == "ok"
               for h in doc["hosts"])

    doc, logged = run_counted(lab, "fix-nginx", hosts)
    assert doc["exit_code"] == 0
    assert_counts(doc, logged, "ok", EXPECTED["no-change"], MAX_NO_CHANGE)


@pytest.mark.parametrize("task", ["fix-rate-limit", "fix-nginx"])
def test_check_on_compliant_hosts_is_one_round_trip(lab: Lab, hosts: list[str], task: str) -> None:
    doc, _ = run_counted(lab, task, hosts)
    assert doc["exit_code"] == 0 and all(h["status"] == "changed" for h in doc["hosts"])

    doc, logged = run_counted(lab, task, hosts, "--check")
    assert doc["exit_code"] == 0
    assert_counts(doc, logged, "ok", EXPECTED["check"], MAX_NO_CHANGE)


def test_fix_rate_limit_change_on_several_hosts_counts_per_host(lab: Lab, hosts: list[str]) -> None:
    # Hosts worked on at once each keep their own count (the single-host sequence is in test_transport.py).
    doc, logged = run_counted(lab, "fix-rate-limit", hosts)
    assert doc["exit_code"] == 0
    assert_counts(doc, logged, "changed", EXPECTED["change"], MAX_CHANGE)
    assert all([x["name"] for x in h["handlers"]] == ["compose_recreate"] and h["handlers"][0]["status"] == "ok"
               for h in doc["hosts"])
