"""Attacks tried on the lab (issue 13): a changed host key, shell injection through flag values, secrets in
output, sudo passwords in process arguments, journal permissions. Counted in the safety summary as
attacks tried / refused. (A changed key given by a spoiled known_hosts file is also in tests/test_transport.py;
here the HOST's key really changes.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, REPO, Lab

APP = "/opt/wealth-coach-ai"
ENV = f"{APP}/.env"


@pytest.fixture
def reset_after(lab: Lab):  # type: ignore[no-untyped-def]
    """Reset only the hosts a test names (cheaper than `clean`, which resets all of them)."""
    hosts: set[str] = set()
    yield hosts
    for h in sorted(hosts):
        lab.reset(h, profile="seed")


def container_env(lab: Lab, host: str) -> dict[str, str]:
    env = json.loads(lab.sh(host, "docker inspect -f '{{json .Config.Env}}' wealth_coach_backend").stdout)
    return dict(e.split("=", 1) for e in env if "=" in e)


def restart_sshd(lab: Lab, host: str) -> None:
    lab.sh(host, "kill $(cat /run/sshd.pid); i=0; while [ -e /run/sshd.pid ] && [ $i -lt 50 ]; do "
                 "i=$((i+1)); sleep 0.1; done; /usr/sbin/sshd -f /etc/ssh/sshd_config -E /var/log/sshd.log")


@pytest.mark.safety("attack")
def test_changed_host_key_is_refused_with_its_fingerprint_and_nothing_runs(lab: Lab, tmp_path: Path) -> None:
    host = "lab4"
    keys = lab.host(host).path("/etc/ssh")
    saved = tmp_path / "keys"
    saved.mkdir()
    for f in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
        shutil.copy2(keys / f, saved / f)
    log = lab.host(host).path("/var/log/sshd.log")
    try:
        lab.sh(host, "rm -f /etc/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key.pub && "
                     "ssh-keygen -q -t ed25519 -N '' -f /etc/ssh/ssh_host_ed25519_key")
        restart_sshd(lab, host)
        new_fp = lab.sh(host, "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
        before = log.read_text()
        for task in ("fix-rate-limit", "fix-nginx", "history"):
            r = lab.invoke(task, "--inventory", lab.inventory, "--limit", host, "--accept-new-host-keys")
            out = r.stdout + r.stderr
            assert r.returncode == 1 and "Traceback" not in out, out
            assert "CHANGED" in out and new_fp in out, out
        after = log.read_text()[len(before):]
        assert "Accepted publickey" not in after and "Starting session" not in after, after
    finally:
        for f in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"):
            shutil.copy2(saved / f, keys / f)
        restart_sshd(lab, host)
    assert lab.invoke("history", "--inventory", lab.inventory, "--limit", host).returncode == 0


INJECTIONS = {
    "INJ_SUBST": "$(touch /tmp/pwned-subst)",
    "INJ_BACKTICK": "`touch /tmp/pwned-backtick`",
    "INJ_SEMI": "; rm -rf /tmp/canary; touch /tmp/pwned-semi",
    "INJ_QUOTES": "it's \"quoted\" \\ and 'single'",
    "INJ_AND": "x && touch /tmp/pwned-and | cat",
}


@pytest.mark.safety("attack")
def test_flag_values_are_written_literally_and_never_executed(lab: Lab, reset_after: set[str], tmp_path: Path) -> None:
    reset_after.add("lab1")
    host = "lab1"
    flags = "".join(f"      {k}: {json.dumps(v)}\n" for k, v in INJECTIONS.items())
    inv = tmp_path / "inventory.yml"
    inv.write_text(Path(lab.inventory).read_text().replace("  vars:\n", "  vars:\n    env_flags:\n" + flags, 1))
    lab.sh(host, "touch /tmp/canary")
    r = lab.invoke("fix-rate-limit", "--inventory", str(inv), "--limit", host, "--json", "--diff")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["hosts"][0]["status"] == "changed", r.stdout + r.stderr
    env = container_env(lab, host)
    for k, v in INJECTIONS.items():
        assert env[k] == v, (k, env.get(k))
    found = lab.sh(host, "ls /tmp /opt/wealth-coach-ai; ls / | grep pwned || true").stdout
    assert "pwned" not in found and "canary" in found
    assert not list(Path("/tmp").glob("pwned-*"))     # nor on the controller


def no_secret(lab: Lab, what: str, text: str) -> None:
    for name, value in (("OPENAI_API_KEY", lab.secret), ("token", lab.token), ("sudo password", lab.sudo_password)):
        assert value not in text, f"{name} leaked in {what}"


@pytest.mark.safety("attack")
def test_secrets_appear_in_no_output_report_or_log(lab: Lab, reset_after: set[str], tmp_path: Path) -> None:
    reset_after.add("lab2")
    inv = lab.inventory
    started = time.time() - 1
    hist = tmp_path / "compliance.jsonl"
    env = {"WSGUARD_HISTORY": str(hist)}
    files = {f"verify --report {fmt}": tmp_path / f"report.{fmt}" for fmt in ("json", "junit", "prometheus")}
    calls = [
        ["fix-rate-limit", "--limit", "lab2", "--diff"],
        ["fix-rate-limit", "--limit", "lab2", "--json", "--diff"],
        ["fix-nginx", "--limit", "lab2", "--diff"],
        ["history", "--limit", "lab2"],
        ["history", "--limit", "lab2", "--json"],
        ["rollback", "--limit", "lab2", "--diff", "--check"],
        ["rollback", "--limit", "lab2", "--diff", "--json"],
        ["verify", "--limit", "lab2", "--report", "table",
         *[a for fmt, p in zip(("json", "junit", "prometheus"), files.values(), strict=True)
           for a in ("--report", f"{fmt}:{p}")]],
        ["diagnose", "--limit", "lab2"],
        ["diagnose", "--limit", "lab2", "--json"],
        ["probe", "--limit", "lab2", "--duration", "2", "--stream", "3", "--idle", "0.5"],
        ["probe", "--limit", "lab2", "--duration", "2", "--stream", "3", "--idle", "0.5", "--json"],
        ["monitor", "--limit", "lab2", "--duration", "3", "--lines", "50", "--all"],
    ]
    for args in calls:
        r = lab.invoke(*args, "--inventory", inv, env=env, timeout=120)
        assert "Traceback" not in r.stdout + r.stderr, (args, r.stderr)
        assert r.returncode in (0, 2), (args, r.stdout + r.stderr)
        no_secret(lab, " ".join(args), r.stdout + r.stderr)
    for what, p in files.items():
        assert p.exists(), what
        no_secret(lab, what, p.read_text())
    if hist.exists():
        no_secret(lab, "the compliance history", hist.read_text())
    # Nor any file wsguard wrote on the controller meanwhile (a log, a cache, a state file).
    skip = {".git", ".venv", ".hypothesis", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".lab-cache"}
    for root in (REPO, Path.home() / ".local" / "state", Path.home() / ".cache"):
        for d, dirs, names in os.walk(root):
            dirs[:] = [x for x in dirs if x not in skip and not x.startswith(".lab")]
            for n in names:
                f = Path(d) / n
                try:
                    if f.stat().st_mtime >= started and f.stat().st_size < 10_000_000:
                        no_secret(lab, str(f), f.read_bytes().decode("utf-8", "replace"))
                except OSError:
                    continue


@pytest.mark.safety("attack")
def test_sudo_password_is_in_no_process_arguments_on_either_side(lab: Lab, reset_after: set[str],
                                                                  tmp_path: Path) -> None:
    reset_after.add("lab3")
    host = "lab3"
    inv = tmp_path / "deploypw.yml"
    inv.write_text(Path(lab.inventory).read_text().replace(
        "ansible_user: root", "ansible_user: deploypw\n    ansible_become: true"))
    p = subprocess.Popen([str(BIN / "invoke"), "fix-rate-limit", "--inventory", str(inv), "--limit", host, "--json"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "WSGUARD_TEST_PAUSE": "3", "WSGUARD_SUDO_PASSWORD": lab.sudo_password})
    samples = 0
    try:
        t0 = time.monotonic()
        folder = lab.host(host).path(APP)
        while not any(".wsguard-" in f.name for f in folder.iterdir()):
            assert p.poll() is None and time.monotonic() - t0 < 20, "the run never reached its pause"
            time.sleep(0.05)
        for _ in range(5):
            remote = lab.sh(host, "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null").stdout
            assert "sudo -k -S" in remote  # the agent's sudo really is running on the host now
            local = ""
            for f in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    local += f.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace") + "\n"
                except OSError:
                    continue
            assert lab.sudo_password not in remote and lab.sudo_password not in local
            samples += 1
            time.sleep(0.3)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert samples == 5 and p.returncode == 0, out + err
    assert lab.sudo_password not in out + err


@pytest.mark.safety("attack")
def test_journal_and_backups_are_root_only_and_env_keeps_0600(lab: Lab, reset_after: set[str]) -> None:
    reset_after.add("lab4")
    host = "lab4"
    for task in ("fix-rate-limit", "fix-nginx"):
        assert lab.invoke(task, "--inventory", lab.inventory, "--limit", host).returncode == 0
    root = lab.host(host).path("/var/lib/wsguard")
    seen = 0
    for p in [root, *root.rglob("*")]:
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (0, 0), p
        assert st.st_mode & 0o777 == (0o700 if p.is_dir() else 0o600), (p, oct(st.st_mode))
        seen += 1
    assert seen >= 7  # journal, runs, 2 run dirs with manifest + backup, lock, ...
    assert lab.sh(host, f"stat -c '%a %U' {ENV}").stdout.strip() == "600 root"
    # A plain user can read neither the journal nor the backups.
    r = lab.sh(host, "su deploy -s /bin/sh -c 'ls /var/lib/wsguard; cat /var/lib/wsguard/runs/*/*.orig'", check=False)
    assert r.returncode != 0 and lab.secret not in r.stdout
