"""The SSH transport against hostile peers and leaks (issue 16): the sudo password only for sudo's own
prompt, bounded output, known_hosts markers (@revoked, @cert-authority), host certificates and jump hosts
from ~/.ssh/config. Everything runs against the lab's real sshd and sudo."""

from __future__ import annotations

import dataclasses
import json
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Lab
from remediations.host.transport import STDERR_TAIL, Transport
from remediations.model.errors import HostKeyError, JumpHostError, OutputLimitError, TransportError
from remediations.model.inventory import Host, load_inventory

attack = pytest.mark.safety("attack")


def lab_host(lab: Lab, name: str, inventory: str | Path | None = None, **changes: object) -> Host:
    host = load_inventory(inventory or lab.inventory).hosts[name]
    return dataclasses.replace(host, **changes) if changes else host


def private_inventory(lab: Lab, tmp_path: Path, known_text: str | None = None, user: str = "root") -> tuple[Path, Path]:
    """A copy of the lab inventory with its own known_hosts (the lab's lines, or known_text) and user."""
    known = tmp_path / "known_hosts"
    known.write_text(known_text if known_text is not None else (lab.dir / "ssh" / "known_hosts").read_text())
    text = Path(lab.inventory).read_text().replace(str(lab.dir / "ssh" / "known_hosts"), str(known))
    if user != "root":
        text = text.replace("ansible_user: root", f"ansible_user: {user}\n    ansible_become: true")
    inv = tmp_path / f"inventory-{user}.yml"
    inv.write_text(text)
    return inv, known


def known_line(lab: Lab, name: str) -> str:
    return next(line for line in (lab.dir / "ssh" / "known_hosts").read_text().splitlines()
                if line.startswith(name + ","))


def host_key(lab: Lab, name: str) -> str:
    """`type base64` of the host's real key."""
    return " ".join(known_line(lab, name).split()[1:3])


def host_fingerprint(lab: Lab, name: str) -> str:
    pub = lab.host(name).path("/etc/ssh/ssh_host_ed25519_key.pub")
    return subprocess.run(["ssh-keygen", "-lf", str(pub)], capture_output=True, text=True, check=True).stdout.split()[1]


class SshdLog:
    """What a lab host's sshd logged since this object was made."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.path = lab.host(name).path("/var/log/sshd.log")
        self.start = len(self.path.read_text())

    def since(self) -> str:
        return self.path.read_text()[self.start:]

    def settled(self) -> str:
        """The new lines once sshd logged how the connection ended (it writes them a moment later)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:
            text = self.since()
            if "[preauth]" in text or "Disconnected" in text or "closed" in text:
                return text
            time.sleep(0.1)
        return self.since()


def no_password(lab: Lab, what: str, text: str) -> None:
    assert lab.sudo_password not in text, f"the sudo password leaked in {what}"


# -- sudo: the password only for sudo's prompt ------------------------------------------------------


@attack
def test_a_password_for_a_nopasswd_user_is_never_sent(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    """deploy needs no password: the one in WSGUARD_SUDO_PASSWORD must not reach the command's stdin."""
    monkeypatch.setenv("WSGUARD_SUDO_PASSWORD", lab.sudo_password)
    host = lab_host(lab, "lab1", user="deploy", become=True)
    log = SshdLog(lab, "lab1")
    with Transport(host, timeout=20) as t:
        r = t.run(["cat"], stdin=b"payload\n")
        assert (r.exit_code, r.stdout) == (0, b"payload\n"), r.stderr
        r = t.run(["python3", "-I", "-c", "import sys; print(sys.stdin.read())"], stdin=b"print(1)")
        assert (r.exit_code, r.stdout, r.stderr) == (0, b"print(1)\n", b"")
        r = t.run(["id", "-u"])
        assert r.stdout == b"0\n" and b"wsguard-" not in r.stderr
        # The handshake adds no round trip: one sshd session per call.
        assert t.round_trips == 3
    assert log.since().count("Starting session:") == 3


@attack
def test_password_sudo_still_works_and_the_password_is_masked(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGUARD_SUDO_PASSWORD", lab.sudo_password)
    host = lab_host(lab, "lab1", user="deploypw", become=True)
    with Transport(host, timeout=20) as t:
        r = t.run(["cat"], stdin=b"payload\x00\xff")
        assert (r.exit_code, r.stdout, r.stderr) == (0, b"payload\x00\xff", b"")
        # Whatever echoes the password back (here the test hands it over itself), it is reported as ***.
        r = t.run(["sh", "-c", 'printf "%s" "$1"; printf "%s" "$1" >&2', "sh", lab.sudo_password])
        assert (r.stdout, r.stderr) == (b"***", b"***")
        assert t.round_trips == 2


@attack
def test_wrong_password_is_one_clear_line_without_waiting_for_sudo_retries(lab: Lab,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSGUARD_SUDO_PASSWORD", "wrong-password")
    host = lab_host(lab, "lab1", user="deploypw", become=True)
    with Transport(host, timeout=30) as t:
        t0 = time.monotonic()
        with pytest.raises(TransportError, match="sudo refused the password for deploypw") as exc:
            t.run(["cat"], stdin=b"payload")
        # sudo's second prompt is the answer: no third try, no sudo delay per try.
        assert time.monotonic() - t0 < 10
        assert "\n" not in exc.value.message and "wrong-password" not in str(exc.value)
        assert "WSGUARD_SUDO_PASSWORD" in str(exc.value.hint)
        assert t.round_trips == 1


@attack
def test_cli_with_a_password_for_nopasswd_sudo_leaks_it_nowhere(lab: Lab, tmp_path: Path) -> None:
    inv, _ = private_inventory(lab, tmp_path, user="deploy")
    hist = tmp_path / "history.jsonl"
    report = tmp_path / "verify.json"
    env = {"WSGUARD_SUDO_PASSWORD": lab.sudo_password, "WSGUARD_HISTORY": str(hist)}
    try:
        r = lab.invoke("fix-rate-limit", "--inventory", str(inv), "--limit", "lab2", "--json", "--diff", env=env)
        out = r.stdout + r.stderr
        no_password(lab, "fix-rate-limit --json", out)
        doc = json.loads(r.stdout)
        assert r.returncode == 0 and doc["hosts"][0]["status"] == "changed", out
        r = lab.invoke("verify", "--inventory", str(inv), "--limit", "lab2", "--report", "json",
                       "--report", f"junit:{tmp_path / 'verify.xml'}", "--report", f"json:{report}", env=env)
        out = r.stdout + r.stderr
        no_password(lab, "verify", out)
        assert r.returncode in (0, 2) and "Traceback" not in out and "SyntaxError" not in out, out
        doc = json.loads(report.read_text())
        assert doc["hosts"][0]["status"] != "error" and doc["hosts"][0]["controls"], doc
        for f in (report, tmp_path / "verify.xml", hist):
            no_password(lab, str(f), f.read_text())
    finally:
        lab.reset("lab2", profile="seed")


@attack
def test_cli_wrong_password_is_a_clear_error(lab: Lab, tmp_path: Path) -> None:
    inv, _ = private_inventory(lab, tmp_path, user="deploypw")
    r = lab.invoke("fix-rate-limit", "--inventory", str(inv), "--limit", "lab3", "--json",
                   env={"WSGUARD_SUDO_PASSWORD": "wrong-password"})
    doc = json.loads(r.stdout)
    err = doc["hosts"][0]["error"]
    assert r.returncode == 1 and err["message"].startswith("lab3: sudo refused the password for deploypw"), doc
    assert "Traceback" not in r.stdout + r.stderr and "wrong-password" not in r.stdout + r.stderr


# -- output bounded --------------------------------------------------------------------------------


def remote_processes(lab: Lab, name: str, tag: str) -> int:
    """Processes on the host whose command line holds tag (the pattern is spelled so it matches no shell
    that looks)."""
    pattern = tag[:-1] + f"[{tag[-1]}]"
    r = lab.sh(name, f"for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done 2>/dev/null "
                     f"| grep -c '{pattern}' || true")
    return int(r.stdout.strip() or 0)


@attack
@pytest.mark.parametrize("user", ["root", "deploy"])
def test_endless_output_is_cut_at_the_limit_and_the_remote_process_ends(lab: Lab, user: str) -> None:
    host = lab_host(lab, "lab4", user=user, become=user != "root")
    tag = f"wsguard-flood-{secrets.token_hex(4)}"
    with Transport(host, timeout=30) as t:
        t0 = time.monotonic()
        with pytest.raises(OutputLimitError) as exc:
            t.run(["timeout", "60", "sh", "-c", f"exec yes {tag}"], max_output=1 << 20)
        assert time.monotonic() - t0 < 20
        assert "lab4" in exc.value.message and "1 MiB" in exc.value.message
        # The connection stays usable for the next step.
        assert t.run(["true"]).ok
    deadline = time.monotonic() + 15
    while remote_processes(lab, "lab4", tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert remote_processes(lab, "lab4", tag) == 0, "the flooding process outlived its closed channel"


def test_output_up_to_the_limit_is_whole_and_stderr_keeps_its_tail(lab: Lab) -> None:
    host = lab_host(lab, "lab4")
    with Transport(host, timeout=30) as t:
        r = t.run(["head", "-c", str(1 << 20), "/dev/zero"], max_output=1 << 20)
        assert r.ok and r.stdout == b"\0" * (1 << 20)
        r = t.run(["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' e >&2; printf END >&2; printf done"])
        assert r.ok and r.stdout == b"done"
        assert len(r.stderr) == STDERR_TAIL and r.stderr.endswith(b"eeeEND")


# -- known_hosts markers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    key = tmp_path_factory.mktemp("ca") / "ca"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "wsguard-test-ca", "-f", str(key)],
                   check=True)
    return key


@attack
def test_cert_authority_lines_and_hashed_names_break_nothing(lab: Lab, tmp_path: Path, ca_key: Path) -> None:
    ca = ca_key.with_suffix(".pub").read_text().strip()
    line = known_line(lab, "lab1")
    _, known = private_inventory(lab, tmp_path, f"@cert-authority *.example.org {ca}\n{line}\n")
    host = lab_host(lab, "lab1", tmp_path / "inventory-root.yml")
    with Transport(host) as t:
        assert t.run(["hostname"]).stdout == b"lab1\n"
    # The same with hashed names (ssh-keygen -H), a comment and blank lines, the CA line last.
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(known)], check=True, capture_output=True)
    hashed = [x for x in known.read_text().splitlines() if x.startswith("|1|")]
    assert hashed and lab.address("lab1") not in known.read_text()
    known.write_text("# hashed\n\n" + "\n".join(hashed) + f"\n@cert-authority * {ca}\n")
    with Transport(host) as t:
        assert t.run(["hostname"]).stdout == b"lab1\n"


@attack
@pytest.mark.parametrize("listed", [True, False], ids=["known-and-revoked", "unknown-and-revoked"])
def test_a_revoked_key_is_refused_before_any_login_even_with_accept_new(lab: Lab, tmp_path: Path,
                                                                        listed: bool) -> None:
    name = "lab3"
    lines = (lab.dir / "ssh" / "known_hosts").read_text().splitlines()
    if not listed:
        lines = [x for x in lines if not x.startswith(name + ",")]
    inv, known = private_inventory(lab, tmp_path, "\n".join([*lines, f"@revoked * {host_key(lab, name)}"]) + "\n")
    before = known.read_text()
    host = lab_host(lab, name, inv)
    log = SshdLog(lab, name)
    with pytest.raises(HostKeyError, match="REVOKED") as exc:
        Transport(host, accept_new_host_keys=True).connect()
    msg = str(exc.value)
    assert host_fingerprint(lab, name) in msg and str(known) in msg and f"line {len(lines) + 1}" in msg
    after = log.settled()
    assert "Accepted publickey" not in after and "Starting session" not in after, after
    assert known.read_text() == before  # --accept-new-host-keys recorded nothing
    # Through the CLI: a clear error, the other host still done.
    r = lab.invoke("fix-rate-limit", "--inventory", str(inv), "--limit", f"{name},lab1", "--check", "--json",
                   "--accept-new-host-keys")
    doc = json.loads(r.stdout)
    by_host = {h["host"]: h for h in doc["hosts"]}
    assert by_host[name]["error"]["kind"] == "host_key" and "REVOKED" in by_host[name]["error"]["message"]
    assert by_host["lab1"]["status"] in ("changed", "ok") and r.returncode == 1


@pytest.mark.safety("bad_input")
def test_an_unreadable_revoked_line_refuses_rather_than_ignoring_it(lab: Lab, tmp_path: Path) -> None:
    inv, known = private_inventory(lab, tmp_path)
    known.write_text(known.read_text() + "@revoked * ssh-ed25519 AAAA-not-base64!\n")
    with pytest.raises(HostKeyError, match="cannot read this @revoked key"):
        Transport(lab_host(lab, "lab1", inv)).connect()


# -- host certificates (a real sshd that offers one) -----------------------------------------------


def restart_sshd(lab: Lab, name: str) -> None:
    """A new sshd with the host's current config; returns once it accepts connections (sshd daemonises
    before it listens, so its exit alone says nothing)."""
    lab.sh(name, "kill $(cat /run/sshd.pid); i=0; while [ -e /run/sshd.pid ] && [ $i -lt 50 ]; do "
                 "i=$((i+1)); sleep 0.1; done; /usr/sbin/sshd -f /etc/ssh/sshd_config -E /var/log/sshd.log")
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((lab.address(name), 22), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def cert_host(lab: Lab, ca_key: Path) -> Iterator[tuple[str, Path]]:
    """lab5 with a host certificate signed by ca_key; the test may restrict its HostKeyAlgorithms.
    Yields the host and its sshd_config; the original config comes back afterwards."""
    name = "lab5"
    ssh = lab.host(name).path("/etc/ssh")
    conf = ssh / "sshd_config"
    saved = conf.read_bytes()
    cert = ssh / "ssh_host_ed25519_key-cert.pub"
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca_key), "-I", name, "-h", "-n", f"{name},{lab.address(name)}",
                    "-V", "-5m:+1h", str(ssh / "ssh_host_ed25519_key.pub")], check=True, capture_output=True)
    conf.write_bytes(saved + b"HostCertificate /etc/ssh/ssh_host_ed25519_key-cert.pub\n")
    try:
        restart_sshd(lab, name)
        yield name, conf
    finally:
        conf.write_bytes(saved)
        cert.unlink(missing_ok=True)
        restart_sshd(lab, name)


@attack
def test_a_host_offering_only_a_certificate_is_refused(lab: Lab, tmp_path: Path, ca_key: Path,
                                                       cert_host: tuple[str, Path]) -> None:
    name, conf = cert_host
    ca = ca_key.with_suffix(".pub").read_text().strip()
    lines = (lab.dir / "ssh" / "known_hosts").read_text()
    inv, _ = private_inventory(lab, tmp_path, lines + f"@cert-authority * {ca}\n")
    host = lab_host(lab, name, inv)
    # With a certificate AND the plain key on offer, paramiko takes the plain key: verified as usual.
    with Transport(host) as t:
        assert t.run(["hostname"]).stdout == f"{name}\n".encode()
    conf.write_text(conf.read_text() + "HostKeyAlgorithms ssh-ed25519-cert-v01@openssh.com\n")
    restart_sshd(lab, name)
    log = SshdLog(lab, name)
    with pytest.raises(HostKeyError, match="host certificate") as exc:
        Transport(host, accept_new_host_keys=True).connect()
    assert "cannot verify SSH host certificates" in str(exc.value) and host_fingerprint(lab, name) in str(exc.value)
    after = log.settled()
    assert "Accepted publickey" not in after and "Starting session" not in after, after


# -- jump hosts from ~/.ssh/config -----------------------------------------------------------------


def ssh_home(tmp_path: Path, config: str) -> Path:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "config").write_text(config)
    return home


@attack
@pytest.mark.parametrize("directive,shown", [
    ("ProxyJump jumper@bastion.invalid:2222", "ProxyJump jumper@bastion.invalid:2222"),
    ("ProxyCommand nc %h %p", "ProxyCommand nc {address} 22"),
], ids=["proxyjump", "proxycommand"])
def test_a_jump_host_from_the_users_ssh_config_is_refused(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          directive: str, shown: str) -> None:
    name = "lab2"
    address = lab.address(name)
    home = ssh_home(tmp_path, f"Host {address}\n    {directive}\n")
    monkeypatch.setenv("HOME", str(home))
    log = SshdLog(lab, name)
    with pytest.raises(JumpHostError) as exc:
        Transport(lab_host(lab, name)).connect()
    msg = str(exc.value)
    assert name in msg and shown.format(address=address) in msg and "does not yet verify jump hosts' keys" in msg
    time.sleep(0.5)
    assert log.since() == ""  # not even a connection attempt
    # The same through the CLI, as a user would meet it.
    r = lab.invoke("verify", "--inventory", lab.inventory, "--limit", name, "--json", env={"HOME": str(home)})
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["hosts"][0]["error"]["kind"] == "jump_host", doc
    assert "Traceback" not in r.stdout + r.stderr


def test_proxyjump_none_connects_directly(lab: Lab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(ssh_home(tmp_path, "Host *\n    ProxyJump none\n")))
    with Transport(lab_host(lab, "lab2")) as t:
        assert t.run(["hostname"]).stdout == b"lab2\n"


@attack
@pytest.mark.parametrize("user,password", [("deploy", True), ("deploypw", True), ("deploypw", False)])
def test_streams_get_the_same_sudo_handshake(lab: Lab, monkeypatch: pytest.MonkeyPatch, user: str,
                                             password: bool) -> None:
    """open_stream (the monitor's followers): the command reads no password, and a refused sudo is an error."""
    monkeypatch.setenv("WSGUARD_SUDO_PASSWORD", lab.sudo_password if password else "wrong-password")
    host = lab_host(lab, "lab1", user=user, become=True)
    with Transport(host, timeout=20) as t:
        if user == "deploypw" and not password:
            with pytest.raises(TransportError, match="sudo refused the password"):
                t.open_stream(["cat"])
            return
        chan = t.open_stream(["sh", "-c", "id -u; cat; echo end"])
        try:
            data = b""
            while not data.endswith(b"end\n"):
                chunk = chan.recv(65536)
                assert chunk, data
                data += chunk
        finally:
            chan.close()
    assert data == b"0\nend\n"  # stdin was closed empty: no password reached cat
