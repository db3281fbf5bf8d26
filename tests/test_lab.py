"""The lab's hosts (issue 2): real sshd and nginx on namespaced hosts, reached over real SSH."""

from __future__ import annotations

import hashlib
import subprocess
import time

from conftest import Lab


def ssh(lab: Lab, target: str, cmd: str, timeout: float = 30, input: str | None = None,
        extra: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-F", lab.ssh_config, "-o", "BatchMode=yes", *(extra or []), target, cmd],
                          capture_output=True, text=True, timeout=timeout, input=input)


def test_nginx_t_over_ssh_with_strict_host_keys(lab: Lab) -> None:
    r = ssh(lab, "root@lab1", "nginx -t && hostname")
    assert r.returncode == 0, r.stderr
    assert "syntax is ok" in r.stderr and r.stdout.strip() == "lab1"
    # The same host under its address is known too (known_hosts lists name and address).
    r = ssh(lab, f"root@{lab.address('lab1')}", "true", extra=["-o", "StrictHostKeyChecking=yes"])
    assert r.returncode == 0, r.stderr


def test_strict_host_key_checking_refuses_unknown_key(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    r = ssh(lab, "root@lab1", "true", extra=["-o", f"UserKnownHostsFile={empty}"])
    assert r.returncode != 0 and "Host key verification failed" in r.stderr


def test_deploy_sudo_without_password(lab: Lab) -> None:
    r = ssh(lab, "deploy@lab1", "id -un; sudo -n id -u")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["deploy", "0"]


def test_deploypw_sudo_needs_its_password(lab: Lab) -> None:
    r = ssh(lab, "deploypw@lab1", "sudo -n id -u")
    assert r.returncode != 0 and "password is required" in r.stderr
    r = ssh(lab, "deploypw@lab1", "sudo -k -S -p '' id -u", input=lab.sudo_password + "\n")
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr
    r = ssh(lab, "deploypw@lab1", "sudo -k -S -p '' id -u", input="wrong\n")
    assert r.returncode != 0


def test_hosts_are_isolated(lab: Lab) -> None:
    for name in ("lab1", "lab2"):
        lab.sh(name, f"echo {name} > /tmp/who && echo {name} > /etc/nginx/who")
    for name in ("lab1", "lab2"):
        assert lab.sh(name, "cat /tmp/who /etc/nginx/who").stdout.split() == [name, name]
        assert lab.sh(name, "hostname").stdout.strip() == name
    # Different host keys, different sshd processes, same paths.
    k1 = lab.sh("lab1", "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout
    k2 = lab.sh("lab2", "cat /etc/ssh/ssh_host_ed25519_key.pub").stdout
    assert k1 != k2
    assert lab.sh("lab1", "cat /run/sshd.pid").stdout != lab.sh("lab2", "cat /run/sshd.pid").stdout
    lab.sh("lab1", "rm /tmp/who /etc/nginx/who")
    lab.sh("lab2", "rm /tmp/who /etc/nginx/who")


def test_each_host_runs_the_incident_site(lab: Lab) -> None:
    site = "/etc/nginx/sites-enabled/api.wealthwarriorshub.test"
    r = lab.sh("lab3", f"readlink {site}; cat {site}")
    assert r.stdout.splitlines()[0] == "/etc/nginx/sites-available/api.wealthwarriorshub.test"
    assert "location /ws/" in r.stdout and "proxy_buffering off" in r.stdout
    assert "proxy_socket_keepalive" not in r.stdout and "keepalive_timeout" not in r.stdout
    assert "proxy_read_timeout 86400s" in r.stdout


def test_lab_exec_returns_the_command_status(lab: Lab) -> None:
    r = lab.invoke("lab.exec", "lab2", "echo out; echo err >&2; exit 7")
    assert r.returncode == 7
    assert r.stdout.strip() == "out" and "err" in r.stderr


def test_linkdown_makes_ssh_time_out_and_restore_brings_it_back(lab: Lab) -> None:
    try:
        assert lab.invoke("lab.fault", "lab4", "linkdown").returncode == 0
        t0 = time.monotonic()
        r = ssh(lab, "root@lab4", "true", extra=["-o", "ConnectTimeout=2"])
        assert r.returncode == 255 and "timed out" in r.stderr.lower()
        assert time.monotonic() - t0 < 10
    finally:
        assert lab.invoke("lab.fault", "lab4", "restore").returncode == 0
    r = ssh(lab, "root@lab4", "hostname")
    assert r.returncode == 0 and r.stdout.strip() == "lab4", r.stderr


def test_blackhole_and_drop_faults(lab: Lab) -> None:
    for kind in ("blackhole", "drop"):
        try:
            assert lab.invoke("lab.fault", "lab4", kind).returncode == 0
            r = ssh(lab, "root@lab4", "true", extra=["-o", "ConnectTimeout=2"])
            assert r.returncode == 255, (kind, r.stderr)
        finally:
            assert lab.invoke("lab.fault", "lab4", "restore").returncode == 0
        assert ssh(lab, "root@lab4", "true").returncode == 0


def test_reset_restores_the_initial_site_byte_for_byte(clean: Lab) -> None:
    lab = clean
    site = lab.host("lab2").path("/etc/nginx/sites-available/api.wealthwarriorshub.test")
    before = hashlib.sha256(site.read_bytes()).hexdigest()
    lab.sh("lab2", "printf '# hand edit\\n' >> /etc/nginx/sites-available/api.wealthwarriorshub.test; "
                   "touch /etc/nginx/conf.d/planted.conf")
    assert hashlib.sha256(site.read_bytes()).hexdigest() != before
    r = lab.invoke("lab.reset", "--host", "lab2")
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(site.read_bytes()).hexdigest() == before
    assert lab.sh("lab2", "ls /etc/nginx/conf.d").stdout.strip() == ""
    assert lab.sh("lab2", "nginx -t", check=False).returncode == 0


def test_status_lists_hosts_and_the_sudo_password(lab: Lab) -> None:
    r = lab.invoke("lab.status")
    assert r.returncode == 0
    for i in range(1, 4):
        assert f"lab{i}" in r.stdout
    assert "nginx=ok" in r.stdout and "backend=running" in r.stdout
    assert lab.sudo_password in r.stdout


def test_unknown_host_and_fault_are_clear_errors(lab: Lab) -> None:
    r = lab.invoke("lab.exec", "web9", "true")
    assert r.returncode == 1 and "unknown lab host" in r.stderr and "Traceback" not in r.stderr
    r = lab.invoke("lab.fault", "lab1", "meteor")
    assert r.returncode == 1 and "unknown fault" in r.stderr and "Traceback" not in r.stderr


def test_a_lab_id_held_by_another_checkout_is_refused(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The id is machine-wide: bringing up or tearing down a lab whose id another checkout's lab holds
    would take over or remove that lab's bridge and namespaces."""
    import pytest

    from lab import hosts
    from lab.errors import LabError

    other = tmp_path / "other-checkout" / ".lab-5"
    other.mkdir(parents=True)
    owner = tmp_path / "owner"
    monkeypatch.setattr(hosts, "OWNER", owner)
    owner.write_text(f"{other}\n")
    for action in (hosts.require_own_id, hosts.down, lambda: hosts.up(1)):
        with pytest.raises(LabError, match="is in use by the lab in"):
            action()
    owner.write_text(f"{hosts.lab_dir()}\n")  # our own: allowed
    hosts.require_own_id()
    other.rmdir()  # the other lab's directory is gone: a stale claim does not block
    owner.write_text(f"{other}\n")
    hosts.require_own_id()
