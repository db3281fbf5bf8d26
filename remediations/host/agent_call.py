"""The agent call: one round trip that runs wsguard's host program (programs/agent.py) as root on a host.

The program's source and a JSON request travel on stdin under `timeout`; JSON comes back. Every request
carries the host's boundary (the files the agent may open as root, and how), so no caller can forget it.
"""

from __future__ import annotations

import getpass
import json
import posixpath
import socket
from typing import Any

from remediations.host import programs
from remediations.host.transport import Transport
from remediations.model.errors import AgentError, TransportError
from remediations.model.facts import Facts
from remediations.model.inventory import Host


def nginx_conf_root(site: str) -> str:
    """The tree a site may resolve into by default: /etc/nginx for a site under it, else the site's directory."""
    return "/etc/nginx" if site.startswith("/etc/nginx/") else posixpath.dirname(site)


def boundary(host: Host) -> dict[str, Any]:
    """What the agent may open as root on this host: the managed files, the trees each may resolve into
    (through symlinks) and the most bytes it reads of each. Everything else it refuses."""
    ws = host.ws
    extra = list(ws.allowed_paths)
    return {"files": {
        ws.env_file: {"what": ".env", "trees": [ws.app_dir, *extra], "max_bytes": ws.max_env_bytes,
                      "limit_var": "wsguard_max_env_bytes"},
        ws.nginx_site: {"what": "nginx site", "trees": [nginx_conf_root(ws.nginx_site), *extra],
                        "max_bytes": ws.max_site_bytes, "limit_var": "wsguard_max_site_bytes"},
    }}


def call_agent(t: Transport, request: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """One round trip: the agent's source and the request travel on stdin, JSON comes back. Every request
    carries the host's boundary, so no caller can forget it."""
    src, req = programs.source("agent"), json.dumps({**request, "boundary": boundary(t.host)}).encode()
    limit = t.timeout if timeout is None else timeout
    # `timeout` on the host too: a process whose client vanished must not run (and lock) for ever.
    argv = ["timeout", "-k", "5", str(max(1, int(limit))), *programs.argv("agent", src), str(len(req))]
    res = t.run(argv, stdin=src + req, timeout=limit + 10)
    if res.exit_code == 127 or b"python3: not found" in res.stderr or b"python3: command not found" in res.stderr:
        raise TransportError(f"{t.host.name}: python3 is not installed on the host",
                             hint="install python3 there (wsguard's agent needs only its standard library)")
    if res.exit_code == 124:
        raise AgentError(f"{t.host.name}: the remote step exceeded --timeout ({limit:g}s) and was stopped",
                         hint="raise --timeout; the host's journal records how far it got", kind="timeout")
    try:
        out: dict[str, Any] = json.loads(res.stdout.decode())
    except ValueError:
        err = res.stderr.decode("utf-8", "replace").strip()[-1000:]
        raise AgentError(f"{t.host.name}: the remote agent failed (exit {res.exit_code}): {err}",
                         kind="agent") from None
    if out.get("error") and request["op"] == "facts":
        e = out["error"]
        raise AgentError(f"{t.host.name}: {e['message']}", kind=e["kind"], evidence=e.get("evidence"))
    return out


def read_facts(t: Transport, request: dict[str, Any]) -> Facts:
    """One facts round trip (`request` without its "op"), parsed once; refused unless the agent ran as root."""
    facts = Facts.parse(call_agent(t, {**request, "op": "facts"}))
    require_root(t, facts)
    return facts


def require_root(t: Transport, facts: Facts) -> None:
    """The agent must run as root: a plain user reads nothing it needs (and finds no nginx on its PATH)."""
    euid = facts.euid
    if euid not in (None, 0):
        how = "with ansible_become" if t.host.become else "without ansible_become"
        raise TransportError(f"{t.host.name}: wsguard runs as {t.host.user} (uid {euid}) there, not root ({how})",
                             hint="set ansible_become: true for a user with sudo rights, or ansible_user: root")


def controller_identity() -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return {"user": user, "host": socket.gethostname()}


