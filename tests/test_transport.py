"""Transport over real SSH (issue 4): privilege, strict host keys, timeouts, round trips."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest

from conftest import Lab
from remediations.host.transport import Transport
from remediations.model.errors import HostKeyError, TransportError, UnreachableError
from remediations.model.inventory import load_inventory


def lab_host(lab: Lab, name: str, **changes: object):  # type: ignore[no-untyped-def]
    host = load_inventory(lab.inventory).hosts[name]
    return dataclasses.replace(host, **changes) if changes else host


def copy_inventory(lab: Lab, tmp_path: Path) -> tuple[Path, Path]:
    """A private copy of the lab inventory whose known_hosts the test may spoil."""
    known = tmp_path / "known_hosts"
    shutil.copy(lab.dir / "ssh" / "known_hosts", known)
    text = Path(lab.inventory).read_text().replace(str(lab.dir / "ssh" / "known_hosts"), str(known))
    inv = tmp_path / "inventory.yml"
    inv.write_text(text)
    return inv, known


@pytest.mark.parametrize("user", ["root", "deploy", "deploypw"])
def test_id_u_is_root_through_the_transport(lab: Lab, user: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if user == "deploypw":
        monkeypatch.setenv("WSGUARD_SUDO_PASSWORD", lab.sudo_password)
    host = lab_host(lab, "lab1", user=user, become=user != "root")
    with Transport(host, timeout=20) as t:
        r = t.run(["id", "-u"])
        assert (r.exit_code, r.stdout) == (0, b"0\n"), r.stderr
        # Payload bytes on stdin reach the command intact, after the sudo password line.
        r = t.run(["sha256sum"], stdin=b"payload\x00\xff")
        assert r.stdout.split()[0].decode() == hashlib.sha256(b"payload\x00\xff").hexdigest()
        assert t.round_trips == 2


def test_password_never_in_argv(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGUARD_SUDO_PASSWORD", lab.sudo_password)
    host = lab_host(lab, "lab1", user="deploypw", become=True)
    with Transport(host, timeout=20) as t:
        r = t.run(["sh", "-c", "cat /proc/*/cmdline 2>/dev/null | tr '\\0' ' '"])
    assert r.exit_code == 0
    assert lab.sudo_password.encode() not in r.stdout


def test_wrong_sudo_password_is_a_clear_error(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGUARD_SUDO_PASSWORD", "wrong-password")
    host = lab_host(lab, "lab1", user="deploypw", become=True)
    with Transport(host, timeout=20) as t, pytest.raises(TransportError, match="refused the password"):
        t.run(["id", "-u"])


def test_no_password_and_no_terminal_says_what_to_set(lab: Lab) -> None:
    host = lab_host(lab, "lab1", user="deploypw", become=True)
    with Transport(host, timeout=20) as t, pytest.raises(TransportError, match="WSGUARD_SUDO_PASSWORD"):
        t.run(["id", "-u"])


def test_changed_host_key_is_refused_with_fingerprint_while_others_proceed(lab: Lab, tmp_path: Path) -> None:
    inv, known = copy_inventory(lab, tmp_path)
    lines = known.read_text().splitlines()
    other_key = lines[1].split(" ", 1)[1]           # lab2's key, presented for lab1: a "changed" key
    known.write_text("\n".join([lines[0].split(" ", 1)[0] + " " + other_key, *lines[1:]]) + "\n")
    r = lab.invoke("fix-rate-limit", "--inventory", str(inv), "--limit", "lab1,lab2", "--check", "--json")
    doc = json.loads(r.stdout)
    by_host = {h["host"]: h for h in doc["hosts"]}
    assert by_host["lab1"]["status"] == "failed"
    assert by_host["lab1"]["error"]["kind"] == "host_key"
    assert "CHANGED" in by_host["lab1"]["error"]["message"] and "SHA256:" in by_host["lab1"]["error"]["message"]
    assert by_host["lab2"]["status"] == "changed"
    assert r.returncode == 1
    # --accept-new-host-keys never accepts a changed key.
    r = lab.invoke("fix-rate-limit", "--inventory", str(inv), "--limit", "lab1", "--check", "--accept-new-host-keys")
    assert r.returncode == 1 and "CHANGED" in r.stdout


def test_unknown_host_refused_then_accepted_once_with_the_flag(lab: Lab, tmp_path: Path) -> None:
    inv, known = copy_inventory(lab, tmp_path)
    known.write_text("".join(line + "\n" for line in known.read_text().splitlines() if not line.startswith("lab3,")))
    host = dataclasses.replace(load_inventory(inv).hosts["lab3"])
    with pytest.raises(HostKeyError, match="unknown host key") as exc:
        Transport(host).connect()
    assert "SHA256:" in str(exc.value) and "--accept-new-host-keys" in str(exc.value)
    with Transport(host, accept_new_host_keys=True) as t:
        assert t.run(["true"]).ok
    recorded = [line for line in known.read_text().splitlines() if line.startswith(lab.address("lab3"))]
    assert len(recorded) == 1
    with Transport(host) as t:  # now known: no flag needed
        assert t.run(["hostname"]).stdout == b"lab3\n"


def test_blackholed_host_times_out_instead_of_hanging(lab: Lab) -> None:
    host = lab_host(lab, "lab4")
    try:
        assert lab.invoke("lab.fault", "lab4", "blackhole").returncode == 0
        t0 = time.monotonic()
        with pytest.raises(UnreachableError, match="timed out"):
            Transport(host, connect_timeout=2, timeout=2).connect()
        assert time.monotonic() - t0 < 3 * 2
    finally:
        lab.invoke("lab.fault", "lab4", "restore")


def test_dead_link_during_a_command_fails_within_the_timeout(lab: Lab) -> None:
    host = lab_host(lab, "lab4")
    with Transport(host, connect_timeout=3, timeout=3) as t:
        try:
            assert lab.invoke("lab.fault", "lab4", "blackhole").returncode == 0
            t0 = time.monotonic()
            with pytest.raises((UnreachableError, TransportError)):
                t.run(["sleep", "1"])
            assert time.monotonic() - t0 < 3 * 3
        finally:
            lab.invoke("lab.fault", "lab4", "restore")


def test_round_trips_match_the_sessions_sshd_logged(clean: Lab) -> None:
    lab = clean
    log = lab.host("lab2").path("/var/log/sshd.log")
    for args, expected in ((["--check"], 1), ([], 2), ([], 1)):
        before = log.read_text().count("Starting session:")
        r = lab.invoke("fix-rate-limit", "--inventory", lab.inventory, "--limit", "lab2", "--json", *args)
        doc = json.loads(r.stdout)
        sessions = log.read_text().count("Starting session:") - before
        assert doc["hosts"][0]["round_trips"] == sessions == expected, (args, r.stdout)
