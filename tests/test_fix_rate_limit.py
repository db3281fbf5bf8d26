"""fix-rate-limit end to end on the lab (issue 5): .env edited in a transaction, container recreated."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

from conftest import Lab
from remediations.checks import wsclient

APP = "/opt/wealth-coach-ai"
ENV = f"{APP}/.env"


def fix(lab: Lab, *args: str, env: dict[str, str] | None = None, inventory: str | None = None) -> tuple[int, dict]:
    r = lab.invoke("fix-rate-limit", "--inventory", inventory or lab.inventory, "--json", *args, env=env)
    assert r.stdout.startswith("{"), r.stdout + r.stderr
    return r.returncode, json.loads(r.stdout)


def container(lab: Lab, host: str) -> dict:
    return dict(json.loads(lab.sh(host, "docker inspect wealth_coach_backend").stdout)[0])


def env_of(lab: Lab, host: str) -> dict[str, str]:
    return dict(e.split("=", 1) for e in container(lab, host)["Config"]["Env"] if "=" in e)


def sha(lab: Lab, host: str, path: str = ENV) -> str:
    return hashlib.sha256(lab.host(host).path(path).read_bytes()).hexdigest()


def test_first_run_fixes_and_the_stream_is_no_longer_cut(clean: Lab) -> None:
    lab = clean
    old_id = container(lab, "lab1")["Id"]
    code, doc = fix(lab, "--limit", "lab1")
    h = doc["hosts"][0]
    assert code == 0 and h["status"] == "changed", doc
    assert [c["path"] for c in h["changes"]] == [ENV]
    assert [x["name"] for x in h["handlers"]] == ["compose_recreate"] and h["handlers"][0]["status"] == "ok"
    text = lab.host("lab1").path(ENV).read_text()
    assert text.endswith("WS_RATE_LIMIT_ENABLED=false\nWS_MAX_MESSAGES_PER_MINUTE=1000\n")
    new = container(lab, "lab1")
    assert new["Id"] != old_id
    assert env_of(lab, "lab1")["WS_RATE_LIMIT_ENABLED"] == "false"
    with wsclient.connect(f"ws://{lab.address('lab1')}/ws/chat", token=lab.token) as ws:
        assert ws.chat("hello", 30) == (30, None)
    # Second run: nothing to do, the container is left alone, one round trip.
    code, doc = fix(lab, "--limit", "lab1")
    h = doc["hosts"][0]
    assert code == 0 and h["status"] == "ok" and h["changes"] == [] and h["round_trips"] == 1
    assert container(lab, "lab1")["Id"] == new["Id"]


def test_env_right_but_container_stale_is_recreated(clean: Lab) -> None:
    lab = clean
    lab.sh("lab2", f"printf 'WS_RATE_LIMIT_ENABLED=false\\nWS_MAX_MESSAGES_PER_MINUTE=1000\\n' >> {ENV} && "
                   f"cd {APP} && docker-compose restart backend")  # the runbook's fix: a restart
    assert "WS_RATE_LIMIT_ENABLED" not in env_of(lab, "lab2")
    before = sha(lab, "lab2")
    code, doc = fix(lab, "--limit", "lab2")
    h = doc["hosts"][0]
    assert code == 0 and h["status"] == "changed" and h["changes"] == []
    assert h["handlers"][0]["name"] == "compose_recreate" and h["handlers"][0]["status"] == "ok"
    assert "does not hold the flags" in h["handlers"][0]["reason"]
    assert sha(lab, "lab2") == before
    assert env_of(lab, "lab2")["WS_RATE_LIMIT_ENABLED"] == "false"


def test_check_changes_nothing_and_exits_2_then_0(clean: Lab) -> None:
    lab = clean
    path = lab.host("lab3").path(ENV)
    st = path.stat()
    before = sha(lab, "lab3")
    code, doc = fix(lab, "--limit", "lab3", "--check")
    assert code == 2 and doc["hosts"][0]["status"] == "changed"
    assert sha(lab, "lab3") == before and path.stat().st_mtime_ns == st.st_mtime_ns
    assert not lab.host("lab3").path("/var/lib/wsguard").exists()
    assert fix(lab, "--limit", "lab3")[0] == 0
    code, doc = fix(lab, "--limit", "lab3", "--check")
    assert code == 0 and doc["hosts"][0]["status"] == "ok"


def test_symlink_mode_owner_and_export_prefix_survive(clean: Lab) -> None:
    lab = clean
    lab.sh("lab1", f"mkdir -p {APP}/config && mv {ENV} {APP}/config/app.env && ln -s config/app.env {ENV} && "
                   f"echo 'export WS_RATE_LIMIT_ENABLED=true' >> {APP}/config/app.env && "
                   f"chown 1001:1002 {APP}/config/app.env && chmod 0640 {APP}/config/app.env")
    code, doc = fix(lab, "--limit", "lab1")
    assert code == 0, doc
    r = lab.sh("lab1", f"readlink {ENV}; stat -c '%a %u %g' {APP}/config/app.env; "
                       f"grep WS_RATE_LIMIT_ENABLED {APP}/config/app.env; ls -A {APP} {APP}/config")
    lines = r.stdout.splitlines()
    assert lines[0] == "config/app.env"
    assert lines[1] == "640 1001 1002"
    assert lines[2] == "export WS_RATE_LIMIT_ENABLED=false"
    assert not any(".wsguard-" in line for line in lines)


def test_mode_0600_kept_and_secret_never_shown(clean: Lab) -> None:
    lab = clean
    for args in (["--check", "--diff"], ["--diff"]):
        r = lab.invoke("fix-rate-limit", "--inventory", lab.inventory, "--limit", "lab2", *args)
        assert lab.secret not in r.stdout + r.stderr and lab.token not in r.stdout + r.stderr
        assert "OPENAI_API_KEY=***" in r.stdout or "--check" not in args
    r = lab.invoke("fix-rate-limit", "--inventory", lab.inventory, "--limit", "lab2", "--json", "--diff")
    assert lab.secret not in r.stdout and lab.token not in r.stdout
    assert lab.sh("lab2", f"stat -c '%a %U' {ENV}").stdout.strip() == "600 root"


def test_no_restart_edits_only_and_says_so(clean: Lab) -> None:
    lab = clean
    old_id = container(lab, "lab3")["Id"]
    r = lab.invoke("fix-rate-limit", "--inventory", lab.inventory, "--limit", "lab3", "--no-restart")
    assert r.returncode == 0
    assert "still runs with the OLD values" in r.stdout
    assert container(lab, "lab3")["Id"] == old_id
    assert "WS_RATE_LIMIT_ENABLED=false" in lab.host("lab3").path(ENV).read_text()


def sudo_inventory(lab: Lab, tmp_path: Path, user: str) -> str:
    text = Path(lab.inventory).read_text()
    text = text.replace("ansible_user: root", f"ansible_user: {user}\n    ansible_become: true")
    inv = tmp_path / f"{user}.yml"
    inv.write_text(text)
    return str(inv)


def test_deploy_and_deploypw_both_work(clean: Lab, tmp_path: Path) -> None:
    lab = clean
    code, doc = fix(lab, "--limit", "lab1", inventory=sudo_inventory(lab, tmp_path, "deploy"))
    assert code == 0 and doc["hosts"][0]["status"] == "changed", doc
    code, doc = fix(lab, "--limit", "lab2", inventory=sudo_inventory(lab, tmp_path, "deploypw"),
                    env={"WSGUARD_SUDO_PASSWORD": lab.sudo_password})
    assert code == 0 and doc["hosts"][0]["status"] == "changed", doc
    assert lab.sudo_password not in json.dumps(doc)
    assert env_of(lab, "lab2")["WS_RATE_LIMIT_ENABLED"] == "false"


def test_unreachable_host_reported_in_time_while_others_complete(clean: Lab) -> None:
    lab = clean
    try:
        assert lab.invoke("lab.fault", "lab4", "blackhole").returncode == 0
        t0 = time.monotonic()
        code, doc = fix(lab, "--limit", "lab3,lab4", "--connect-timeout", "2", "--timeout", "10")
        took = time.monotonic() - t0
    finally:
        lab.invoke("lab.fault", "lab4", "restore")
    by = {h["host"]: h for h in doc["hosts"]}
    assert code == 1
    assert by["lab4"]["status"] == "unreachable" and "timed out" in by["lab4"]["error"]["message"]
    assert by["lab3"]["status"] == "changed"
    assert took < 20


def test_two_concurrent_runs_never_interleave(clean: Lab) -> None:
    lab = clean
    results: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(name: str, env: dict[str, str], *args: str) -> None:
        results[name] = lab.invoke("fix-rate-limit", "--inventory", lab.inventory, "--limit", "lab1", "--json",
                                   *args, env=env)

    slow = threading.Thread(target=run, args=("slow", {"WSGUARD_TEST_PAUSE": "3"}))
    slow.start()
    time.sleep(1.5)
    # A second run that will not wait long for the lock fails, naming the holder's run id.
    run("impatient", {}, "--lock-timeout", "0.5")
    fast = threading.Thread(target=run, args=("patient", {}))
    fast.start()
    slow.join()
    fast.join()
    slow_doc = json.loads(results["slow"].stdout)
    impatient = json.loads(results["impatient"].stdout)["hosts"][0]
    assert impatient["status"] == "failed" and impatient["error"]["kind"] == "locked"
    assert slow_doc["run_id"] in impatient["error"]["message"]
    assert slow_doc["hosts"][0]["status"] == "changed"
    patient = json.loads(results["patient"].stdout)["hosts"][0]
    assert patient["status"] in ("changed", "ok") and patient["error"] is None
    # The journal shows one write of the file: the patient run found the bytes already right.
    runs = sorted(lab.host("lab1").path("/var/lib/wsguard/runs").iterdir())
    writes = [m for m in (json.loads((r / "manifest.json").read_text()) for r in runs) if m["files"]]
    assert len(writes) == 1 and writes[0]["run_id"] == slow_doc["run_id"]


def test_journal_manifest_matches_the_file_before_and_after(clean: Lab) -> None:
    lab = clean
    before = sha(lab, "lab2")
    code, doc = fix(lab, "--limit", "lab2")
    assert code == 0
    run_dir = lab.host("lab2").path(f"/var/lib/wsguard/runs/{doc['run_id']}")
    m = json.loads((run_dir / "manifest.json").read_text())
    f = m["files"][0]
    assert (f["path"], f["sha256_before"], f["sha256_after"]) == (ENV, before, sha(lab, "lab2"))
    assert hashlib.sha256((run_dir / f["backup"]).read_bytes()).hexdigest() == before
    assert m["task"] == "fix-rate-limit" and m["handlers_run"] == ["compose_recreate"]
    assert m["controller"]["user"]
    for p in (run_dir.parent.parent, run_dir):
        assert oct(p.stat().st_mode & 0o777) == "0o700"
    for p in run_dir.iterdir():
        assert oct(p.stat().st_mode & 0o777) == "0o600"
    assert os.stat(lab.host("lab2").path(ENV)).st_mode & 0o777 == 0o600
