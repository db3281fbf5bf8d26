"""Fleet runs (issue 11): bounded parallelism, rolling batches, health gates, failure thresholds, shards.

Unit tests for the batch arithmetic and the pool's bound; lab tests through the real CLI.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass

import pytest

from conftest import Lab
from remediations.model.errors import RemediationError
from remediations.model.inventory import Host, WsVars, shard
from remediations.model.masking import Masker
from remediations.model.results import HostResult
from remediations.run import fleet
from remediations.run.runner import Connect

APP = "/opt/wealth-coach-ai"
ENV = f"{APP}/.env"
SITE = "/etc/nginx/sites-enabled/api.wealthwarriorshub.test"
LABS = [f"lab{i}" for i in range(1, 6)]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n


def fake_hosts(n: int) -> list[Host]:
    return [Host(name=f"h{i}", address=f"h{i}", port=22, user="root", key_file=None, become=False, groups=("all",),
                 vars={}, ws=WsVars(nginx_site="/etc/nginx/sites-enabled/app")) for i in range(1, n + 1)]


def sizes(n: int, serial: str | None, canary: bool = False) -> list[int]:
    return [len(b) for b in fleet.batches(fake_hosts(n), fleet.parse_serial(serial), canary)]


# -- unit: batch computation ----------------------------------------------------------------------

def test_serial_counts_percentages_lists_and_canary() -> None:
    assert sizes(5, None) == [5]
    assert sizes(5, "2") == [2, 2, 1]
    assert sizes(5, "10") == [5]
    assert sizes(10, "25%") == [2, 2, 2, 2, 2]           # 25% of 10 = 2.5, rounded down (Ansible)
    assert sizes(3, "10%") == [1, 1, 1]                  # at least one host a batch
    assert sizes(5, "100%") == [5]
    assert sizes(10, "1,3,50%") == [1, 3, 5, 1]          # a list; the last size repeats
    assert sizes(5, "2", canary=True) == [1, 2, 2]
    assert sizes(5, None, canary=True) == [1, 4]
    assert sizes(1, "3", canary=True) == [1]
    assert sizes(0, "2") == []
    hosts = fake_hosts(7)
    flat = [h.name for b in fleet.batches(hosts, fleet.parse_serial("3"), True) for h in b]
    assert flat == [h.name for h in hosts]               # inventory order, every host once


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "2,", "150%", "0%", "1.5"])
def test_bad_serial_is_a_readable_error(bad: str) -> None:
    with pytest.raises(RemediationError, match="--serial"):
        fleet.parse_serial(bad)


@pytest.mark.parametrize("bad", ["-1", "101", "x"])
def test_bad_max_fail_percent(bad: str) -> None:
    with pytest.raises(RemediationError, match="--max-fail-percent"):
        fleet.parse_max_fail_percent(bad)


def result(name: str, status: str) -> HostResult:
    return HostResult(host=name, task="t", run_id="r", status=status)


def test_stop_when_failures_exceed_the_percentage() -> None:
    ok, bad, gone = result("a", "changed"), result("b", "failed"), result("c", "unreachable")
    assert fleet.stop_reason([ok, bad], [ok, bad], 5, 0) is not None          # 20% > 0
    assert fleet.stop_reason([ok, bad], [ok, bad], 5, 20) is None             # 20% does not EXCEED 20
    assert fleet.stop_reason([ok, bad, gone], [gone], 5, 20) is not None      # unreachable counts
    assert fleet.stop_reason([ok, bad, gone], [gone], 5, 100) is None
    # Not given: as Ansible, only a batch where every host failed stops the run.
    assert fleet.stop_reason([ok, bad], [ok, bad], 5, None) is None
    assert fleet.stop_reason([ok, bad, gone], [bad, gone], 5, None) is not None


@dataclass
class FakeTransport:
    host: Host
    round_trips: int = 0

    def connect(self) -> None: ...

    def close(self) -> None: ...


class FakeConnect(Connect):
    def transport(self, host: Host) -> FakeTransport:  # type: ignore[override]
        return FakeTransport(host)


def test_the_pool_is_bounded_by_forks_and_batches_do_not_overlap() -> None:
    lock, live, seen = threading.Lock(), [0], {"max": 0, "threads": set()}
    order: list[tuple[str, str]] = []

    def fn(t: FakeTransport, r: HostResult, m: Masker) -> HostResult:
        with lock:
            live[0] += 1
            seen["max"] = max(seen["max"], live[0])
            seen["threads"].add(threading.get_ident())
            order.append(("start", t.host.name))
        time.sleep(0.05)
        with lock:
            live[0] -= 1
            order.append(("end", t.host.name))
        r.status = "changed"
        return r

    hosts = fake_hosts(12)
    before = threading.active_count()
    run = fleet.run("t", hosts, FakeConnect(forks=3), fn, pending_is_2=False,  # type: ignore[arg-type]
                    rollout=fleet.Rollout(fleet.parse_serial("5")))
    assert seen["max"] <= 3 and len(seen["threads"]) <= 3
    assert threading.active_count() <= before + 0  # the pool is gone after the run
    assert [len(b) for b in run.fleet["batches"]] == [5, 5, 2]
    assert [r.host for r in run.hosts] == [h.name for h in hosts]
    # No host of batch 2 starts before every host of batch 1 ended.
    first_start_b2 = min(i for i, (ev, h) in enumerate(order) if ev == "start" and h in run.fleet["batches"][1])
    last_end_b1 = max(i for i, (ev, h) in enumerate(order) if ev == "end" and h in run.fleet["batches"][0])
    assert last_end_b1 < first_start_b2
    assert run.exit_code == 0


def test_a_failed_gate_fails_the_host_and_stops_the_rollout() -> None:
    def fn(t: FakeTransport, r: HostResult, m: Masker) -> HostResult:
        r.status = "changed"
        return r

    def gate(t: object, r: HostResult, m: Masker) -> None:
        if r.host == "h2":
            r.evidence["gate"] = {"status": "fail"}
            r.fail("gate", "h2: health gate: no 101")

    run = fleet.run("t", fake_hosts(6), FakeConnect(forks=2), fn, pending_is_2=False,  # type: ignore[arg-type]
                    rollout=fleet.Rollout(fleet.parse_serial("2"), max_fail_percent=0), gate=gate)  # type: ignore[arg-type]
    assert [r.status for r in run.hosts] == ["changed", "failed", "skipped", "skipped", "skipped", "skipped"]
    assert run.hosts[1].error == {"kind": "gate", "message": "h2: health gate: no 101"}
    assert run.fleet["stopped"]["after_batch"] == 1 and run.exit_code == 1
    # Without --serial/--canary there is one batch and no gate.
    run = fleet.run("t", fake_hosts(3), FakeConnect(forks=2), fn, pending_is_2=False,  # type: ignore[arg-type]
                    rollout=fleet.Rollout(), gate=gate)
    assert [r.status for r in run.hosts] == ["changed"] * 3


# -- lab: through the real CLI --------------------------------------------------------------------

def invoke_json(lab: Lab, task: str, *args: str, timeout: float = 300) -> tuple[int, dict, float]:
    t0 = time.monotonic()
    r = lab.invoke(task, "--inventory", lab.inventory, "--json", *args, timeout=timeout)
    took = time.monotonic() - t0
    assert r.stdout.startswith("{"), r.stdout + r.stderr
    return r.returncode, json.loads(r.stdout), took


def statuses(doc: dict) -> dict[str, str]:
    return {h["host"]: h["status"] for h in doc["hosts"]}


def sha(lab: Lab, host: str, path: str) -> str:
    return hashlib.sha256(lab.host(host).path(path).read_bytes()).hexdigest()


def test_five_hosts_with_two_forks_all_change_and_the_recap_counts(clean: Lab) -> None:
    lab = clean
    r = lab.invoke("fix-rate-limit", "--inventory", lab.inventory, "--forks", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not CONTROL.search(r.stdout + r.stderr) and "\x1b" not in r.stdout + r.stderr  # not a TTY: plain
    recap = [line for line in r.stdout.splitlines() if line.startswith("RECAP")]
    assert len(recap) == 1 and "ok=0 changed=5 failed=0 unreachable=0 skipped=0" in recap[0], r.stdout
    assert all(f"{h}: changed" in r.stdout for h in LABS)
    # Idempotent: a second run finds nothing to do.
    code, doc, _ = invoke_json(lab, "fix-rate-limit", "--forks", "2")
    assert code == 0 and set(statuses(doc).values()) == {"ok"}


def test_a_blackholed_host_is_unreachable_within_its_timeout_and_the_others_change(clean: Lab) -> None:
    lab = clean
    lab.invoke("lab.fault", "lab3", "blackhole").check_returncode()
    try:
        code, doc, took = invoke_json(lab, "fix-nginx", "--connect-timeout", "2", "--timeout", "10", "--forks", "5")
    finally:
        lab.invoke("lab.fault", "lab3", "restore").check_returncode()
    st = statuses(doc)
    assert st == {"lab1": "changed", "lab2": "changed", "lab3": "unreachable", "lab4": "changed",
                  "lab5": "changed"}, doc
    assert code == 1
    assert doc["hosts"][2]["error"]["kind"] in ("unreachable", "timeout")
    assert took < 30, f"a dead host stalled the run: {took:.1f}s"


def test_serial_with_max_fail_0_stops_after_the_first_broken_batch(clean: Lab) -> None:
    lab = clean
    lab.sh("lab1", f"echo WS_FAIL_ON_START=1 >> {ENV}")  # the recreate fails: the backend exits at start
    before = {h: sha(lab, h, ENV) for h in LABS[2:]}
    mtimes = {h: lab.host(h).path(ENV).stat().st_mtime_ns for h in LABS[2:]}
    code, doc, _ = invoke_json(lab, "fix-rate-limit", "--serial", "2", "--max-fail-percent", "0")
    assert code == 1
    st = statuses(doc)
    assert st == {"lab1": "failed", "lab2": "changed", "lab3": "skipped", "lab4": "skipped", "lab5": "skipped"}
    assert doc["fleet"]["batches"] == [["lab1", "lab2"]]
    assert doc["fleet"]["stopped"]["after_batch"] == 1
    assert "more than --max-fail-percent 0" in doc["fleet"]["stopped"]["reason"]
    lab1 = doc["hosts"][0]
    assert lab1["handlers"][0]["status"] == "failed" and "not running" in lab1["error"]["message"]
    assert doc["hosts"][1]["evidence"]["gate"]["ws_upgrade"]["status"] == "pass"
    for h in doc["hosts"][2:]:
        assert h["round_trips"] == 0 and "not started" in h["evidence"]["skipped"]
    # The skipped hosts were never touched.
    assert {h: sha(lab, h, ENV) for h in LABS[2:]} == before
    assert {h: lab.host(h).path(ENV).stat().st_mtime_ns for h in LABS[2:]} == mtimes
    assert not lab.host("lab3").path("/var/lib/wsguard").exists()


def test_a_host_failing_the_gate_is_failed_with_the_gates_evidence(clean: Lab) -> None:
    lab = clean
    lab.sh("lab2", "nginx -s stop")  # the fix itself works; the upgrade through nginx cannot
    code, doc, _ = invoke_json(lab, "fix-rate-limit", "--serial", "2", "--max-fail-percent", "0")
    assert code == 1
    assert statuses(doc) == {"lab1": "changed", "lab2": "failed", "lab3": "skipped", "lab4": "skipped",
                             "lab5": "skipped"}
    h = doc["hosts"][1]
    assert h["error"]["kind"] == "gate" and "health gate" in h["error"]["message"]
    gate = h["evidence"]["gate"]
    assert gate["status"] == "fail" and gate["effects"] == {"compose_recreate": "ok"}
    assert gate["ws_upgrade"]["status"] == "fail" and "refused" in gate["ws_upgrade"]["actual"]
    assert lab.token not in json.dumps(doc)


def test_canary_makes_the_first_batch_exactly_one_host(clean: Lab) -> None:
    lab = clean
    code, doc, _ = invoke_json(lab, "fix-nginx", "--canary", "--serial", "2")
    assert code == 0, doc
    assert doc["fleet"]["batches"] == [["lab1"], ["lab2", "lab3"], ["lab4", "lab5"]]
    assert [h["evidence"]["batch"] for h in doc["hosts"]] == [1, 2, 2, 3, 3]
    assert all(h["evidence"]["gate"]["status"] == "pass" for h in doc["hosts"])
    assert all(h["evidence"]["gate"]["effects"] == {"nginx_reload": "ok"} for h in doc["hosts"])
    # And in plain output the batches are announced in stable lines.
    lab.reset("lab1")
    r = lab.invoke("fix-nginx", "--inventory", lab.inventory, "--canary", "--limit", "lab1,lab2")
    assert "batch 1/2 (canary): 1 host(s): lab1\n" in r.stdout, r.stdout
    assert "\x1b" not in r.stdout and not CONTROL.search(r.stdout)
    assert re.search(r"RECAP fix-nginx run \S+: ok=1 changed=1 failed=0 unreachable=0 skipped=0; batches 2;",
                     r.stdout), r.stdout


@pytest.mark.parametrize("n", [2, 3, 5])
def test_shards_are_disjoint_and_cover_the_selection(lab: Lab, n: int) -> None:
    seen: list[str] = []
    for k in range(1, n + 1):
        code, doc, _ = invoke_json(lab, "fix-nginx", "--check", "--shard", f"{k}/{n}")
        assert code in (0, 2), doc
        names = [h["host"] for h in doc["hosts"]]
        assert names == [h.name for h in shard(lab_hosts(lab), f"{k}/{n}")]
        assert doc["fleet"]["shard"] == f"{k}/{n}"
        seen += names
    assert sorted(seen) == LABS  # disjoint (no repeats) and covering


def lab_hosts(lab: Lab) -> list[Host]:
    from remediations.model.inventory import load_inventory

    return load_inventory(lab.inventory).select(None)


def test_bad_fleet_flags_are_errors_not_tracebacks(lab: Lab) -> None:
    for args, word in ((["--serial", "0"], "--serial"), (["--max-fail-percent", "120"], "--max-fail-percent"),
                       (["--shard", "3/2"], "shard")):
        r = lab.invoke("fix-nginx", "--inventory", lab.inventory, "--check", *args)
        assert r.returncode == 1 and word in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_rollback_rolls_out_in_batches_too(clean: Lab) -> None:
    lab = clean
    code, doc, _ = invoke_json(lab, "fix-nginx", "--limit", "lab1,lab2,lab3")
    assert code == 0, doc
    code, doc, _ = invoke_json(lab, "rollback", "--limit", "lab1,lab2,lab3", "--canary")
    assert code == 0, doc
    assert doc["fleet"]["batches"] == [["lab1"], ["lab2", "lab3"]]
    assert all(h["status"] == "changed" and h["evidence"]["gate"]["status"] == "pass" for h in doc["hosts"])
