"""Faults tried on the lab while wsguard works (issue 13): afterwards every managed file holds either
its old or its new bytes (sha256 checked against both), the journal is consistent, the lock is free
and the next run converges. Counted in the safety summary (tests/safety_summary.py).

Covered elsewhere and not repeated here: nginx -t failing for a cause outside the edit
(tests/test_fix_nginx.py::test_broken_conf_d_file_fails_with_nginx_error_and_restores, re-checked briefly
below), two fix-rate-limit controllers on one host (tests/test_fix_rate_limit.py::
test_two_concurrent_runs_never_interleave; the fix-nginx variant is here).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import safety_summary
from conftest import BIN, REPO, Lab
from remediations.checks import wsclient
from remediations.edit.envfile import set_flags
from remediations.model.inventory import load_inventory

APP = "/opt/wealth-coach-ai"
ENV = f"{APP}/.env"
SITE = "/etc/nginx/sites-available/api.wealthwarriorshub.test"
JOURNAL = "/var/lib/wsguard"


@pytest.fixture
def touched(lab: Lab) -> Iterator[set[str]]:
    """The hosts a test spoils, reset afterwards (only those: cheaper than `clean`)."""
    hosts: set[str] = set()
    yield hosts
    for h in sorted(hosts):
        lab.invoke("lab.fault", h, "restore")
        lab.reset(h, profile="seed")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cat(lab: Lab, host: str, path: str) -> bytes:
    """The bytes as the host sees them (through any mount made inside it)."""
    return base64.b64decode(lab.sh(host, f"base64 -w0 {path}").stdout)


def old_or_new(lab: Lab, host: str, path: str, old: bytes, new: bytes) -> bytes:
    data = cat(lab, host, path)
    if sha(data) not in (sha(old), sha(new)):
        safety_summary.lost(f"{host}:{path}", max(len(data), len(old)))
    assert sha(data) in (sha(old), sha(new)), f"{host}:{path} is neither the old nor the new bytes"
    return data


def new_env(lab: Lab, host: str, old: bytes) -> bytes:
    flags = load_inventory(lab.inventory).hosts[host].ws.env_flags
    return set_flags(old.decode(), flags).encode()


def wait_lock_free(lab: Lab, host: str, within: float = 30) -> float:
    """Seconds until no agent holds the host lock (a process whose client vanished ends by `timeout`)."""
    t0 = time.monotonic()
    while lab.sh(host, f"[ ! -e {JOURNAL}/lock ] || flock -n {JOURNAL}/lock true", check=False).returncode:
        assert time.monotonic() - t0 < within, f"{host}: the wsguard lock is still held after {within}s"
        time.sleep(0.2)
    return time.monotonic() - t0


def journal_consistent(lab: Lab, host: str) -> list[dict]:
    """Every manifest parses and its backups hold exactly the bytes it says were there before."""
    runs = lab.host(host).path(f"{JOURNAL}/runs")
    manifests = []
    for d in sorted(runs.iterdir()) if runs.exists() else []:
        m = json.loads((d / "manifest.json").read_text())
        for f in m["files"]:
            assert sha((d / f["backup"]).read_bytes()) == f["sha256_before"], (d, f)
        assert oct(d.stat().st_mode & 0o777) == "0o700"
        manifests.append(m)
    return manifests


def popen_fix(lab: Lab, task: str, host: str, *args: str, pause: str = "3") -> subprocess.Popen[str]:
    return subprocess.Popen([str(BIN / "invoke"), task, "--inventory", lab.inventory, "--limit", host, "--json",
                             *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "WSGUARD_TEST_PAUSE": pause})


def wait_uploaded(lab: Lab, host: str, path: str, p: subprocess.Popen[str] | None = None, within: float = 20) -> None:
    """Until the agent's temporary file (`.NAME.wsguard-RUNID`) is there: upload done, rename pending."""
    d, name = os.path.split(path)
    folder = lab.host(host).path(d)
    t0 = time.monotonic()
    while not any(p.name.startswith(f".{name}.wsguard-") for p in folder.iterdir()):
        assert time.monotonic() - t0 < within, "the agent never reached the rename"
        assert p is None or p.poll() is None, "the run ended before the rename: " + "".join(p.communicate())
        time.sleep(0.05)


def converges(lab: Lab, task: str, host: str, path: str, new: bytes) -> None:
    """The next run takes the lock at once and converges; then a run finds nothing to do."""
    t0 = time.monotonic()
    r = lab.invoke(task, "--inventory", lab.inventory, "--limit", host, "--json", "--lock-timeout", "0.5")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["hosts"][0]["error"] is None, r.stdout + r.stderr
    assert time.monotonic() - t0 < 20
    assert cat(lab, host, path) == new
    r = lab.invoke(task, "--inventory", lab.inventory, "--limit", host, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["hosts"][0]["status"] == "ok", r.stdout
    d, name = os.path.split(path)
    assert not [p for p in lab.host(host).path(d).iterdir() if ".wsguard-" in p.name]


def container_env(lab: Lab, host: str) -> dict[str, str]:
    env = json.loads(lab.sh(host, "docker inspect -f '{{json .Config.Env}}' wealth_coach_backend").stdout)
    return dict(e.split("=", 1) for e in env if "=" in e)


@pytest.mark.safety("fault")
def test_link_down_between_upload_and_rename(lab: Lab, touched: set[str]) -> None:
    host = "lab2"
    touched.add(host)
    old = cat(lab, host, ENV)
    new = new_env(lab, host, old)
    p = popen_fix(lab, "fix-rate-limit", host, "--connect-timeout", "3", "--timeout", "6", "--lock-timeout", "1")
    try:
        wait_uploaded(lab, host, ENV, p)
        assert lab.invoke("lab.fault", host, "linkdown").returncode == 0
        t0 = time.monotonic()
        out, err = p.communicate(timeout=60)
        took = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
        lab.invoke("lab.fault", host, "restore")
    # The host fails within its timeout: the step's own (6 + lock 1) plus the transport's 10 s margin.
    assert took < 6 + 1 + 10 + 3, took
    doc = json.loads(out)
    h = doc["hosts"][0]
    assert p.returncode == 1 and h["status"] == "failed" and h["error"]["kind"] == "unknown_outcome", out
    assert f"outcome unknown: the host may have applied run {doc['run_id']}" in h["error"]["message"], out
    assert "Traceback" not in out + err
    # The agent kept running on the host (under `timeout`): it renamed or was stopped; never half a file.
    wait_lock_free(lab, host)
    old_or_new(lab, host, ENV, old, new)
    journal_consistent(lab, host)
    # What really happened is in the host's journal, and history reads it.
    r = lab.invoke("history", "--inventory", lab.inventory, "--limit", host, "--json")
    runs = {x["run_id"]: x for x in json.loads(r.stdout)["hosts"][0]["evidence"]["runs"]}
    assert runs[doc["run_id"]]["status"] in ("ok", "failed", "applying"), runs
    converges(lab, "fix-rate-limit", host, ENV, new)
    assert container_env(lab, host)["WS_RATE_LIMIT_ENABLED"] == "false"


@pytest.mark.safety("fault")
def test_controller_killed_mid_run(lab: Lab, touched: set[str]) -> None:
    host = "lab3"
    touched.add(host)
    old = cat(lab, host, ENV)
    new = new_env(lab, host, old)
    p = popen_fix(lab, "fix-rate-limit", host)
    try:
        wait_uploaded(lab, host, ENV, p)
        os.kill(p.pid, signal.SIGKILL)  # our own controller, by its PID
        p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == -signal.SIGKILL
    wait_lock_free(lab, host)
    old_or_new(lab, host, ENV, old, new)
    runs = journal_consistent(lab, host)
    assert len(runs) == 1 and runs[0]["files"][0]["sha256_before"] == sha(old)
    converges(lab, "fix-rate-limit", host, ENV, new)
    assert container_env(lab, host)["WS_RATE_LIMIT_ENABLED"] == "false"


@pytest.mark.safety("fault")
def test_disk_full_names_host_and_path_and_keeps_the_old_file(lab: Lab, touched: set[str]) -> None:
    host = "lab1"
    touched.add(host)
    old = cat(lab, host, ENV)
    earlier = {m["run_id"] for m in journal_consistent(lab, host)}
    lab.sh(host, f"cp -a {APP} /tmp/app-copy && mount -t tmpfs -o size=8k tmpfs {APP} && cp -a /tmp/app-copy/. {APP}/"
                 f" && (dd if=/dev/zero of={APP}/fill bs=1k count=64 2>/dev/null; true)")
    try:
        assert cat(lab, host, ENV) == old
        r = lab.invoke("fix-rate-limit", "--inventory", lab.inventory, "--limit", host)
        assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
        assert f"{host}: failed" in r.stdout
        assert f"cannot write {ENV}: No space left on device" in r.stdout, r.stdout
        assert "the old file is intact" in r.stdout and "free space" in r.stdout
        old_or_new(lab, host, ENV, old, old)
        assert cat(lab, host, ENV) == old
        assert ".wsguard-" not in lab.sh(host, f"ls -A {APP}").stdout
        # The journal claims no change that never happened.
        assert not [m for m in journal_consistent(lab, host) if m["files"] and m["run_id"] not in earlier]
    finally:
        lab.sh(host, f"umount {APP}", check=False)


@pytest.mark.safety("fault")
def test_read_only_file_system(lab: Lab, touched: set[str]) -> None:
    host = "lab4"
    touched.add(host)
    old = cat(lab, host, ENV)
    earlier = {m["run_id"] for m in journal_consistent(lab, host)}
    lab.sh(host, f"mount --bind {APP} {APP} && mount -o remount,bind,ro {APP}")
    try:
        r = lab.invoke("fix-rate-limit", "--inventory", lab.inventory, "--limit", host)
        assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr
        assert f"{host}: failed" in r.stdout
        assert f"cannot write {ENV}: Read-only file system" in r.stdout and "remount it read-write" in r.stdout
        assert cat(lab, host, ENV) == old
        assert not [m for m in journal_consistent(lab, host) if m["files"] and m["run_id"] not in earlier]
    finally:
        lab.sh(host, f"umount {APP}", check=False)


@pytest.mark.safety("fault")
def test_nginx_t_failing_elsewhere_restores_the_site(lab: Lab, touched: set[str]) -> None:
    """A brief re-check of tests/test_fix_nginx.py's broken conf.d case, counted in the summary."""
    host = "lab5"
    touched.add(host)
    old = cat(lab, host, SITE)
    lab.sh(host, "echo 'this is not nginx;' > /etc/nginx/conf.d/broken.conf")
    r = lab.invoke("fix-nginx", "--inventory", lab.inventory, "--limit", host, "--json")
    h = json.loads(r.stdout)["hosts"][0]
    assert r.returncode == 1 and h["error"]["kind"] == "validate" and "broken.conf" in h["error"]["message"]
    assert "restored" in h["error"]["message"]
    old_or_new(lab, host, SITE, old, old)


@pytest.mark.safety("fault")
def test_backend_that_does_not_come_back_is_reported_and_service_restored(
        lab: Lab, touched: set[str], tmp_path: Path) -> None:
    host = "lab1"
    touched.add(host)
    inv = tmp_path / "inventory.yml"
    inv.write_text(Path(lab.inventory).read_text().replace(
        "  vars:\n", "  vars:\n    env_flags:\n      WS_RATE_LIMIT_ENABLED: 'false'\n      WS_FAIL_ON_START: '1'\n", 1))
    old = cat(lab, host, ENV)
    r = lab.invoke("fix-rate-limit", "--inventory", str(inv), "--limit", host, "--json")
    h = json.loads(r.stdout)["hosts"][0]
    assert r.returncode == 1 and h["status"] == "failed" and h["error"]["kind"] == "handler", r.stdout
    assert any("WS_FAIL_ON_START set: exiting" in line for line in h["evidence"]["logs"])
    # The agent put the old .env back and recreated the backend from it.
    assert cat(lab, host, ENV) == old
    assert h["evidence"]["service_restored"] == [{"name": "compose_recreate", "ok": True}]
    r = lab.invoke("rollback", "--inventory", lab.inventory, "--limit", host)
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    state = lab.sh(host, "docker inspect -f '{{.State.Running}}' wealth_coach_backend").stdout.strip()
    assert state == "true"
    assert "WS_FAIL_ON_START" not in container_env(lab, host)
    with wsclient.connect(f"ws://{lab.address(host)}/ws/chat", token=lab.token) as ws:  # a 101 upgrade
        assert ws.chat("back?", 3) == (3, None)


@pytest.mark.safety("fault")
def test_two_fix_nginx_controllers_are_serialised(lab: Lab, touched: set[str]) -> None:
    host = "lab2"
    touched.add(host)
    old = cat(lab, host, SITE)
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(name: str, pause: str) -> None:
        results[name] = lab.invoke("fix-nginx", "--inventory", lab.inventory, "--limit", host, "--json",
                                   env={"WSGUARD_TEST_PAUSE": pause})

    first = threading.Thread(target=run, args=("first", "3"))
    first.start()
    wait_uploaded(lab, host, SITE)
    run("second", "0")
    first.join()
    one, two = (json.loads(results[n].stdout) for n in ("first", "second"))
    assert one["hosts"][0]["status"] == "changed" and two["hosts"][0]["error"] is None, (one, two)
    new = cat(lab, host, SITE)
    assert new != old
    old_or_new(lab, host, SITE, old, new)
    manifests = journal_consistent(lab, host)
    writes = [m for m in manifests if m["files"]]
    # One write, by the first run; the second waited for the lock and found the bytes already right.
    assert [m["run_id"] for m in writes] == [one["run_id"]]
    assert not [m for m in manifests if m["run_id"] == two["run_id"] and m["files"]]
    assert lab.sh(host, "nginx -t", check=False).returncode == 0
