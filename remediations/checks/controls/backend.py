"""testinfra on wsguard's own Transport: strict host keys, sudo (password sudo too) and timeouts.

testinfra's paramiko backend accepts any host key, has no password sudo and no timeout; this backend
sends every `host.run(...)` through `Transport.run`, so the controls trust a host exactly as the fixes
do and each command is one counted round trip. Build a host with `testinfra_host(transport)`.
"""

from __future__ import annotations

from typing import Any

import testinfra.host
from testinfra.backend.base import BaseBackend, CommandResult

from remediations.host.transport import Transport


class WsguardBackend(BaseBackend):
    """A testinfra backend whose run() is `Transport.run` (root through the transport's own sudo)."""

    NAME = "wsguard"

    def __init__(self, transport: Transport, **kwargs: Any) -> None:
        # sudo stays False here: the transport wraps commands in sudo itself (with -S for a password).
        super().__init__(transport.host.name, **kwargs)
        self.transport = transport

    def get_encoding(self) -> str:
        return "utf-8"  # no extra round trip to ask the host

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        """Run `command % quoted(args)` with /bin/sh on the host, bounded there by `timeout`.

        Extra keyword arguments: `stdin` (bytes sent on the command's stdin, never argv) and
        `timeout` (seconds; default the transport's --timeout).
        """
        cmd = self.get_command(command, *args)
        limit = float(kwargs.get("timeout") or self.transport.timeout)
        stdin: bytes = kwargs.get("stdin") or b""
        # `timeout` on the host as well: a process whose client vanished must not run for ever.
        argv = ["timeout", "-k", "5", str(max(1, int(limit))), "/bin/sh", "-c", cmd]
        res = self.transport.run(argv, stdin=stdin, timeout=limit + 10)
        return self.result(res.exit_code, self.encode(cmd), res.stdout, res.stderr)


def testinfra_host(transport: Transport) -> testinfra.host.Host:
    """A testinfra Host (host.run, host.file, host.process...) over a wsguard transport."""
    backend = WsguardBackend(transport)
    host = testinfra.host.Host(backend)
    backend.set_host(host)
    return host
