"""SSH to one host: fabric connections with strict host keys, sudo, timeouts and a round-trip count.

A round trip is one exec channel (or one SFTP batch); the transport counts them itself so that
`--json` can report them and tests can check them against sshd's own log.
Commands run through one exec channel with bytes on stdin. For password sudo the password is the
first line of that stdin (`sudo -S`), never an argument, and the payload follows it.
"""

from __future__ import annotations

import getpass
import os
import select
import shlex
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from remediations.errors import HostKeyError, RemoteTimeout, TransportError, UnreachableError

if TYPE_CHECKING:
    import paramiko

    from remediations.inventory import Host


@dataclass
class CommandResult:
    exit_code: int
    stdout: bytes
    stderr: bytes

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
        import paramiko
        from fabric import Connection

        h = self.host
        kwargs: dict[str, object] = {"banner_timeout": self.connect_timeout, "auth_timeout": self.connect_timeout}
        if h.key_file:
            kwargs.update(key_filename=h.key_file, look_for_keys=False, allow_agent=False)
        conn = Connection(h.address, user=h.user, port=h.port, connect_timeout=max(1, int(self.connect_timeout)),
                          connect_kwargs=kwargs)
        known = h.ws.known_hosts
        conn.client.set_missing_host_key_policy(_HostKeyPolicy(known, self.accept_new_host_keys))  # type: ignore[arg-type]
        if os.path.exists(known):
            conn.client.load_host_keys(known)
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
        transport = conn.client.get_transport()
        if transport is not None:
            # Detect a vanished peer in seconds, not hours.
            transport.set_keepalive(max(1, int(self.timeout // 4) or 1))
        self._conn = conn

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

    def wrap(self, argv: list[str], *, password: bool) -> str:
        line = " ".join(shlex.quote(a) for a in argv)
        if not self.needs_sudo:
            return line
        if password:
            # -k: always ask, so the first stdin line is always the password and never the payload.
            return f"sudo -k -S -p '' -- {line}"
        return f"sudo -n -- {line}"

    def run(self, argv: list[str], *, stdin: bytes = b"", timeout: float | None = None) -> CommandResult:
        """Run argv (quoted, as root where the host needs sudo) in ONE exec channel."""
        self.connect()
        password = self.sudo_password() if self.needs_sudo else None
        result = self._exec(self.wrap(argv, password=password is not None),
                            (password.encode() + b"\n" if password is not None else b"") + stdin, timeout)
        if self.needs_sudo and password is None and result.exit_code == 1 and b"password is required" in result.stderr:
            password = _password_cache.prompt(self.host)
            self._sudo_password = password
            result = self._exec(self.wrap(argv, password=True), password.encode() + b"\n" + stdin, timeout)
        if self.needs_sudo and password is not None and b"incorrect password" in result.stderr.lower():
            raise TransportError(f"{self.host.name}: sudo refused the password for {self.host.user}",
                                 hint="check WSGUARD_SUDO_PASSWORD")
        if self.needs_sudo and result.exit_code == 1 and b"not in the sudoers" in result.stderr:
            raise TransportError(f"{self.host.name}: {self.host.user} may not use sudo there",
                                 hint="give the user sudo rights, or log in as root (ansible_user)")
        return result

    def open_stream(self, argv: list[str]) -> paramiko.Channel:
        """Start argv (quoted, as root where the host needs sudo) in ONE exec channel and return it
        while the command runs, for output read as it comes (a follower). The caller closes the channel;
        wrap argv in `timeout` so the remote process ends even if the controller vanishes."""
        self.connect()
        assert self._conn is not None
        password = self.sudo_password() if self.needs_sudo else None
        transport = self._conn.client.get_transport()  # type: ignore[attr-defined]
        if transport is None or not transport.is_active():
            raise UnreachableError(f"{self.host.name}: the SSH connection is gone")
        self.round_trips += 1
        try:
            chan = transport.open_session(timeout=self.timeout)
            chan.exec_command(self.wrap(argv, password=password is not None))
            if password is not None:
                chan.sendall(password.encode() + b"\n")
            chan.shutdown_write()
        except Exception as exc:  # noqa: BLE001 - paramiko raises several kinds here
            raise UnreachableError(f"{self.host.name}: cannot open a channel: {exc}") from None
        return chan

    def _exec(self, command: str, stdin: bytes, timeout: float | None) -> CommandResult:
        assert self._conn is not None
        limit = self.timeout if timeout is None else timeout
        transport = self._conn.client.get_transport()  # type: ignore[attr-defined]
        if transport is None or not transport.is_active():
            raise UnreachableError(f"{self.host.name}: the SSH connection is gone")
        self.round_trips += 1
        try:
            chan = transport.open_session(timeout=limit)
        except Exception as exc:  # noqa: BLE001 - paramiko raises several kinds here
            raise UnreachableError(f"{self.host.name}: cannot open a channel: {exc}") from None
        deadline = time.monotonic() + limit
        out, err = bytearray(), bytearray()
        try:
            chan.settimeout(0.2)
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RemoteTimeout(f"{self.host.name}: a remote step took longer than {limit:g}s",
                                        hint="raise --timeout, or check the host's load and link")
                if not transport.is_active():
                    raise UnreachableError(f"{self.host.name}: the connection dropped during a remote step")
                select.select([chan], [], [], min(0.5, remaining))
            return CommandResult(chan.recv_exit_status(), bytes(out), bytes(err))
        except (OSError, EOFError) as exc:
            raise UnreachableError(f"{self.host.name}: the connection dropped: {exc}") from None
        finally:
            chan.close()


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
