"""SSH to one host: fabric connections with strict host keys, sudo, timeouts and a round-trip count.

A round trip is one exec channel (or one SFTP batch); the transport counts them itself so that
`--json` can report them and tests can check them against sshd's own log.
Commands run through one exec channel with bytes on stdin. Under sudo the wrapped command first prints
a random per-call marker on stderr; the payload goes out only after it, so sudo never reads the payload
and the command never reads a password. The password (never an argument) goes out only when sudo
prints its own random prompt: a host that needs none never receives it.
"""

from __future__ import annotations

import functools
import getpass
import os
import secrets
import select
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from remediations.model.errors import (
    HostKeyError,
    JumpHostError,
    OutputLimitError,
    RemoteTimeout,
    TransportError,
    UnreachableError,
)

if TYPE_CHECKING:
    import paramiko

    from remediations.model.inventory import Host


MAX_OUTPUT = 256 * 1024 * 1024   # stdout bytes one command may send before its channel is closed
STDERR_TAIL = 1024 * 1024        # stderr bytes kept: the end, where the error is
_CHUNK = 65536
_DRAIN = 1.0  # seconds to wait for output still in flight after the exit status, when no EOF comes
_CERT = "-cert-v01@openssh.com"


@dataclass
class CommandResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    started: bool = True  # False: sudo ended without running the command (stderr says why)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def fingerprint(key: paramiko.PKey) -> str:
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def _known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


@dataclass
class KnownHosts:
    """A known_hosts file read as OpenSSH reads it, for paramiko (which refuses a file with markers)."""

    path: str
    entries: list[tuple[str, paramiko.PKey]] = field(default_factory=list)  # (name or |1| hash, key)
    revoked: dict[bytes, int] = field(default_factory=dict)                  # key blob -> line number


def load_known_hosts(path: str) -> KnownHosts:
    """Plain and hashed lines become host keys, `@revoked` keys are collected, `@cert-authority` lines
    and unknown markers are skipped. Lines paramiko cannot read are skipped as OpenSSH does, except a
    `@revoked` one: a revocation that cannot be read must not be ignored."""
    from paramiko.hostkeys import HostKeyEntry, InvalidHostKey
    from paramiko.ssh_exception import SSHException

    known = KnownHosts(path)
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return known
    except OSError as exc:
        raise HostKeyError(f"cannot read {path}: {exc.strerror}",
                           hint="check that file's permissions (wsguard_known_hosts in the inventory)") from None
    for n, raw in enumerate(text.splitlines(), 1):
        fields = raw.split()  # OpenSSH separates fields by any run of blanks; paramiko wants one
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else None
        if marker not in (None, "@revoked"):
            continue  # @cert-authority: paramiko cannot check host certificates (see _vet_host_key)
        try:
            entry = HostKeyEntry.from_line(" ".join(fields[:3]), n)
        except (InvalidHostKey, SSHException, ValueError, TypeError, IndexError):
            if marker == "@revoked":
                raise HostKeyError(f"{path} line {n}: cannot read this @revoked key",
                                   hint="fix or remove the line (a revocation wsguard cannot read would be "
                                        "ignored, so it refuses to connect)") from None
            continue
        if entry is None:
            continue  # a key type paramiko does not know: it can never negotiate it either
        if marker == "@revoked":
            # Stricter than OpenSSH, which applies the line to the hosts its pattern names: a revoked
            # key is refused for every host.
            known.revoked[entry.key.asbytes()] = n
        else:
            known.entries += [(name, entry.key) for name in entry.hostnames]
    return known


@functools.cache
def _vetting_transport() -> type[paramiko.Transport]:
    import paramiko

    class VettingTransport(paramiko.Transport):
        """Hands the host's key to a check when SSHClient asks for it: before paramiko compares it
        with known_hosts and before any authentication."""

        vet: Callable[[paramiko.Transport, paramiko.PKey], None] | None = None

        def get_remote_server_key(self) -> paramiko.PKey:
            key = super().get_remote_server_key()
            if self.vet is not None:
                self.vet(self, key)
            return key

    return VettingTransport


class _HostKeyPolicy:
    """Refuse unknown keys unless trust-on-first-use was asked for; then record the key.

    A CHANGED key never reaches this policy: paramiko raises BadHostKeyException for it first.
    """

    _lock = threading.Lock()

    def __init__(self, known_hosts: str, accept_new: bool) -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        if not self.accept_new:
            raise HostKeyError(
                f"unknown host key for {hostname}: {key.get_name()} {fingerprint(key)} is not in {self.known_hosts}",
                hint="check the fingerprint with the host's admin, then rerun with --accept-new-host-keys "
                     "to record it (a changed key is never accepted that way)")
        with self._lock:
            path = Path(self.known_hosts)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


@dataclass(frozen=True)
class _Sudo:
    """One sudo call's markers: random per call, so no other output (a lecture, a PAM message, an
    earlier call) is taken for sudo's prompt or for the command's start."""

    prompt: bytes
    ready: bytes
    password: bytes | None

    @classmethod
    def new(cls, password: str | None) -> _Sudo:
        tag = secrets.token_hex(8)
        return cls(f"wsguard-sudo-{tag}".encode(), f"wsguard-ready-{tag}".encode(),
                   None if password is None else password.encode())

    def scrub(self, data: bytearray) -> bytes:
        out = bytes(data).replace(self.prompt, b"").replace(self.ready, b"")
        # Defence in depth: whatever echoed the password, it is not reported.
        return out.replace(self.password, b"***") if self.password else out


def _cut(buf: bytearray, marker: bytes) -> bool:
    i = buf.find(marker)
    if i < 0:
        return False
    del buf[i:i + len(marker)]
    return True


def _keep_tail(buf: bytearray, data: bytes) -> None:
    buf += data
    if len(buf) > STDERR_TAIL:
        del buf[:-STDERR_TAIL]


class _End:
    """Whether a command is over with all its output in: sshd may send the exit status before the last
    output, so also wait for EOF, or for a quiet moment (a background child may hold the pipes open)."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.exited = False

    def data(self) -> None:
        self.last = time.monotonic()

    def reached(self, chan: paramiko.Channel) -> bool:
        if not chan.exit_status_ready():
            return False
        if not self.exited:
            self.exited, self.last = True, time.monotonic()
        return bool(chan.eof_received or chan.closed) or time.monotonic() - self.last > _DRAIN


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


class Transport:
    """One SSH connection to one inventory host."""

    def __init__(self, host: Host, *, connect_timeout: float = 10, timeout: float = 60,
                 accept_new_host_keys: bool = False, sudo_password: str | None = None) -> None:
        self.host = host
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.accept_new_host_keys = accept_new_host_keys
        self._sudo_password = sudo_password
        self.round_trips = 0
        self._conn: object | None = None

    # -- connection ----------------------------------------------------------------------------

    @property
    def needs_sudo(self) -> bool:
        return self.host.user != "root" and self.host.become

    def connect(self) -> None:
        if self._conn is not None:
            return
        from fabric import Connection

        h = self.host
        known = load_known_hosts(h.ws.known_hosts)
        factory = functools.partial(self._transport_factory, known)
        kwargs: dict[str, object] = {"banner_timeout": self.connect_timeout, "auth_timeout": self.connect_timeout,
                                     "transport_factory": factory}
        if h.key_file:
            kwargs.update(key_filename=h.key_file, look_for_keys=False, allow_agent=False)
        conn = Connection(h.address, user=h.user, port=h.port, connect_timeout=max(1, int(self.connect_timeout)),
                          connect_kwargs=kwargs)
        self._refuse_jump_host(conn)
        conn.client.set_missing_host_key_policy(_HostKeyPolicy(known.path, self.accept_new_host_keys))  # type: ignore[arg-type]
        host_keys = conn.client.get_host_keys()
        for name, key in known.entries:
            host_keys.add(name, key.get_name(), key)
        try:
            self._open(conn, known.path)
        except BaseException:
            conn.client.close()  # a refused host leaves no transport thread behind
            raise
        transport = conn.client.get_transport()
        if transport is not None:
            # Detect a vanished peer in seconds, not hours.
            transport.set_keepalive(max(1, int(self.timeout // 4) or 1))
        self._conn = conn

    def _refuse_jump_host(self, conn: Any) -> None:
        """fabric builds a ProxyJump gateway from ~/.ssh/config that accepts ANY host key of the jump
        host (and runs a ProxyCommand as given): refuse until wsguard checks jump hosts' keys too."""
        h = self.host
        jump = str(conn.ssh_config.get("proxyjump") or "")
        if jump.lower() == "none":  # OpenSSH: ProxyJump none means connect directly
            conn.gateway = None
        if not conn.gateway:
            return
        how = f"ProxyJump {jump}" if jump and jump.lower() != "none" else \
            f"ProxyCommand {conn.ssh_config.get('proxycommand') or conn.gateway}"
        raise JumpHostError(
            f"{h.name} ({h.address}): your ssh config sends this host through a jump host ({how}); "
            "wsguard does not yet verify jump hosts' keys, so it does not connect",
            hint=f"let wsguard reach {h.address} directly: exclude it from that ProxyJump/ProxyCommand in "
                 "~/.ssh/config (or /etc/ssh/ssh_config), e.g. with `ProxyJump none` in a Host block for it")

    def _transport_factory(self, known: KnownHosts, sock: Any, **kwargs: Any) -> paramiko.Transport:
        t = _vetting_transport()(sock, **kwargs)
        t.vet = functools.partial(self._vet_host_key, known)  # type: ignore[attr-defined]
        return t

    def _vet_host_key(self, known: KnownHosts, t: paramiko.Transport, key: paramiko.PKey) -> None:
        """Refuse a revoked key or a certificate before paramiko's own checks and before authentication
        (so even --accept-new-host-keys never records them)."""
        h = self.host
        line = known.revoked.get(key.asbytes())
        if line is not None:
            raise HostKeyError(
                f"host key for {h.name} ({h.address}) is REVOKED: it presented {key.get_name()} {fingerprint(key)}, "
                f"marked @revoked in {known.path} line {line}",
                hint="do not use this host until its admin installs a new host key; check the new key's "
                     "fingerprint with them, then add it (keep the @revoked line)")
        # paramiko takes the key inside a host certificate as the host's key without checking the CA's
        # signature, the principals or the validity, so @cert-authority cannot be honoured: a certificate
        # is refused rather than half trusted. paramiko asks for plain host key algorithms first, so a
        # host with a certificate still shows its plain key; only one offering nothing else lands here.
        kind = str(getattr(t, "host_key_type", "") or key.get_name())
        if kind.endswith(_CERT) or getattr(key, "public_blob", None) is not None:
            raise HostKeyError(
                f"{h.name} ({h.address}) presented a host certificate ({kind}, key {fingerprint(key)}); "
                "wsguard cannot verify SSH host certificates",
                hint=f"put the host's plain public key in {known.path} (check its fingerprint with the host's "
                     "admin) and let its sshd offer a plain host key algorithm (HostKeyAlgorithms)")

    def _open(self, conn: Any, known: str) -> None:
        import paramiko

        h = self.host
        target = f"{h.user}@{h.address}:{h.port}"
        try:
            conn.open()
        except HostKeyError:
            raise
        except paramiko.BadHostKeyException as exc:
            raise HostKeyError(
                f"host key for {h.name} ({h.address}) CHANGED: presented {exc.key.get_name()} "
                f"{fingerprint(exc.key)}, {known} expects {fingerprint(exc.expected_key)}",
                hint="a changed key may mean an attack; if the host was rebuilt, remove its old line "
                     f"(ssh-keygen -R {_known_hosts_name(h.address, h.port)} -f {known}) "
                     "and verify the new one") from None
        except paramiko.AuthenticationException as exc:
            raise TransportError(f"authentication failed for {target}: {exc}",
                                 hint="check ansible_user and ansible_ssh_private_key_file in the inventory") from None
        except TimeoutError as exc:
            raise UnreachableError(f"{target}: connection timed out after {self.connect_timeout:g}s ({exc})",
                                   hint="is the host up and its port open? "
                                        "raise --connect-timeout for slow links") from None
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise UnreachableError(f"{target}: cannot connect: {exc or type(exc).__name__}",
                                   hint="check ansible_host/ansible_port and that sshd runs there") from None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()  # type: ignore[attr-defined]
            self._conn = None

    def __enter__(self) -> Transport:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ------------------------------------------------------------------------------

    def sudo_password(self) -> str | None:
        """The sudo password: WSGUARD_SUDO_PASSWORD, else one prompt per run on a terminal."""
        if self._sudo_password is None:
            self._sudo_password = _password_cache.get(self.host)
        return self._sudo_password

    def wrap(self, argv: list[str], sudo: _Sudo | None) -> str:
        """The command line for argv: as is, or under sudo behind a shell that announces its start."""
        line = " ".join(shlex.quote(a) for a in argv)
        if sudo is None:
            return line
        script = f'printf %s {shlex.quote(sudo.ready.decode())} >&2; exec "$@"'
        started = f"sh -c {shlex.quote(script)} sh {line}"
        if sudo.password is None:
            return f"sudo -n -- {started}"
        # -k: never lean on credentials an earlier session cached; -S: the prompt on stderr, the answer on stdin.
        return f"sudo -k -S -p {shlex.quote(sudo.prompt.decode())} -- {started}"

    def run(self, argv: list[str], *, stdin: bytes = b"", timeout: float | None = None,
            max_output: int = MAX_OUTPUT) -> CommandResult:
        """Run argv (quoted, as root where the host needs sudo) in ONE exec channel.

        More than max_output bytes on stdout close the channel with OutputLimitError; of stderr only
        the last STDERR_TAIL bytes are kept."""
        self.connect()
        password = self.sudo_password() if self.needs_sudo else None
        result = self._exec(argv, stdin, timeout, password, max_output)
        if self.needs_sudo and password is None and not result.started and b"password is required" in result.stderr:
            password = _password_cache.prompt(self.host)
            self._sudo_password = password
            result = self._exec(argv, stdin, timeout, password, max_output)
        self._sudo_refused(result, password)
        return result

    def _sudo_refused(self, result: CommandResult, password: str | None) -> None:
        """Raise the clear error for a sudo that did not start the command."""
        if result.started:
            return
        h = self.host
        if password is not None and b"incorrect password" in result.stderr.lower():
            raise TransportError(f"{h.name}: sudo refused the password for {h.user}",
                                 hint="check WSGUARD_SUDO_PASSWORD")
        if b"not in the sudoers" in result.stderr:
            raise TransportError(f"{h.name}: {h.user} may not use sudo there",
                                 hint="give the user sudo rights, or log in as root (ansible_user)")
        if result.exit_code == 127:
            raise TransportError(f"{h.name}: sudo is not installed there",
                                 hint="install sudo, or log in as root (ansible_user)")

    def open_stream(self, argv: list[str]) -> paramiko.Channel:
        """Start argv (quoted, as root where the host needs sudo) in ONE exec channel and return it
        while the command runs, for output read as it comes (a follower). The caller closes the channel;
        wrap argv in `timeout` so the remote process ends even if the controller vanishes."""
        self.connect()
        password = self.sudo_password() if self.needs_sudo else None
        sudo = _Sudo.new(password) if self.needs_sudo else None
        chan = self._channel(self.timeout)
        deadline = time.monotonic() + self.timeout
        try:
            chan.settimeout(0.2)
            chan.exec_command(self.wrap(argv, sudo))
            err = bytearray()
            if sudo is not None and not self._await_sudo(chan, sudo, err, deadline, self.timeout, _End()):
                result = CommandResult(chan.recv_exit_status(), b"", sudo.scrub(err), started=False)
                self._sudo_refused(result, password)
                why = result.stderr.decode("utf-8", "replace").strip().splitlines()
                raise TransportError(f"{self.host.name}: sudo did not start the command: "
                                     f"{why[-1] if why else f'exit {result.exit_code}'}",
                                     hint="set WSGUARD_SUDO_PASSWORD if sudo needs a password there")
            chan.shutdown_write()
            chan.settimeout(None)
        except TransportError:
            chan.close()
            raise
        except Exception as exc:  # noqa: BLE001 - paramiko raises several kinds here
            chan.close()
            raise UnreachableError(f"{self.host.name}: cannot start a remote command: {exc}") from None
        return chan

    def _channel(self, timeout: float) -> paramiko.Channel:
        """A new exec channel: one round trip."""
        assert self._conn is not None
        transport = self._conn.client.get_transport()  # type: ignore[attr-defined]
        if transport is None or not transport.is_active():
            raise UnreachableError(f"{self.host.name}: the SSH connection is gone")
        self.round_trips += 1
        try:
            chan: paramiko.Channel = transport.open_session(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - paramiko raises several kinds here
            raise UnreachableError(f"{self.host.name}: cannot open a channel: {exc}") from None
        return chan

    def _exec(self, argv: list[str], stdin: bytes, timeout: float | None, password: str | None,
              max_output: int) -> CommandResult:
        limit = self.timeout if timeout is None else timeout
        sudo = _Sudo.new(password) if self.needs_sudo else None
        chan = self._channel(limit)
        deadline = time.monotonic() + limit
        out, err = bytearray(), bytearray()
        try:
            chan.settimeout(0.2)
            chan.exec_command(self.wrap(argv, sudo))
            end = _End()
            started = sudo is None or self._await_sudo(chan, sudo, err, deadline, limit, end)
            if started and stdin:
                self._send(chan, stdin, deadline, limit)
            chan.shutdown_write()
            while True:
                idle = True
                if chan.recv_ready():
                    out += chan.recv(_CHUNK)
                    idle = False
                    end.data()
                    if len(out) > max_output:
                        raise OutputLimitError(
                            f"{self.host.name}: a remote command sent more than {_size(max_output)} of output; "
                            "wsguard closed its channel",
                            hint="the host may be broken or hostile: check what runs there "
                                 "(the limit keeps the controller's memory bounded)")
                if chan.recv_stderr_ready():
                    _keep_tail(err, chan.recv_stderr(_CHUNK))
                    idle = False
                    end.data()
                if idle and end.reached(chan):
                    break
                self._wait(chan, deadline, limit, idle)
            code = chan.recv_exit_status()
            if sudo is None:
                return CommandResult(code, bytes(out), bytes(err))
            return CommandResult(code, sudo.scrub(out), sudo.scrub(err), started)
        except (OSError, EOFError) as exc:
            raise UnreachableError(f"{self.host.name}: the connection dropped: {exc}") from None
        finally:
            chan.close()

    def _await_sudo(self, chan: paramiko.Channel, sudo: _Sudo, err: bytearray, deadline: float,
                    limit: float, end: _End) -> bool:
        """Answer sudo's prompt with the password, once, and wait for the command's start marker.
        False: sudo ended without starting it (its message is in err)."""
        answered = False
        while True:
            if chan.recv_stderr_ready():
                _keep_tail(err, chan.recv_stderr(_CHUNK))
                end.data()
                # The start marker first: once the command runs, nothing it prints is answered.
                if _cut(err, sudo.ready):
                    return True
                if _cut(err, sudo.prompt):
                    if answered or sudo.password is None:  # asked again: the password was wrong
                        raise TransportError(f"{self.host.name}: sudo refused the password for {self.host.user}",
                                             hint="check WSGUARD_SUDO_PASSWORD")
                    self._send(chan, sudo.password + b"\n", deadline, limit)
                    answered = True
                self._wait(chan, deadline, limit, idle=False)
                continue
            if end.reached(chan):
                return False
            self._wait(chan, deadline, limit, idle=True)

    def _send(self, chan: paramiko.Channel, data: bytes, deadline: float, limit: float) -> None:
        chan.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chan.sendall(data)
        except TimeoutError:
            raise RemoteTimeout(f"{self.host.name}: the host did not take its input within {limit:g}s",
                                hint="raise --timeout, or check the host's load and link") from None
        finally:
            chan.settimeout(0.2)

    def _wait(self, chan: paramiko.Channel, deadline: float, limit: float, idle: bool) -> None:
        """Raise if the step ran out of time or the link died; when idle, wait a little for data."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RemoteTimeout(f"{self.host.name}: a remote step took longer than {limit:g}s",
                                hint="raise --timeout, or check the host's load and link")
        transport = chan.get_transport()
        if transport is None or not transport.is_active():
            raise UnreachableError(f"{self.host.name}: the connection dropped during a remote step")
        if idle:
            select.select([chan], [], [], min(0.5, remaining))


class _PasswordCache:
    """One sudo password per run: from WSGUARD_SUDO_PASSWORD or asked once on a terminal."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._asked: str | None = None

    def get(self, host: Host) -> str | None:
        return os.environ.get("WSGUARD_SUDO_PASSWORD") or self._asked

    def prompt(self, host: Host) -> str:
        with self._lock:
            if self._asked is None:
                if not sys.stdin.isatty():
                    raise TransportError(f"{host.name}: sudo needs a password for {host.user}",
                                         hint="set WSGUARD_SUDO_PASSWORD (it is sent on stdin, never in argv); "
                                              f"if {host.user} has no sudo rights there, grant them or log in "
                                              "as root (ansible_user)")
                self._asked = getpass.getpass(f"sudo password for {host.user} (used for every host of this run): ")
            return self._asked


_password_cache = _PasswordCache()
