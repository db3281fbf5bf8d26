"""The transaction on a host, controller side: facts in one round trip, a pure plan, one apply.

facts -> plan (pure; --check stops here) -> apply: ONE remote agent process under `timeout` takes the
lock, journals the old bytes, writes atomically, validates, restores on failure, runs handlers and
confirms their effect. See remediations/remote/agent.py for the host side.
"""

from __future__ import annotations

import base64
import difflib
import getpass
import json
import posixpath
import socket
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from remediations.errors import RemediationError, RemoteTimeout, TransportError, UnreachableError
from remediations.inventory import Host
from remediations.masking import Masker
from remediations.results import HostResult
from remediations.transport import Transport

_BOOT = "import sys;exec(compile(sys.stdin.buffer.read(int(sys.argv[1])),'wsguard-agent','exec'))"


@cache
def agent_source() -> bytes:
    return (Path(__file__).parent / "remote" / "agent.py").read_bytes()


class AgentError(RemediationError):
    """The agent reported a failure on the host (kind as it named it)."""

    def __init__(self, kind: str, message: str, evidence: dict[str, Any] | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.kind = kind
        self.evidence = evidence or {}


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
    src, req = agent_source(), json.dumps({**request, "boundary": boundary(t.host)}).encode()
    limit = t.timeout if timeout is None else timeout
    # `timeout` on the host too: a process whose client vanished must not run (and lock) for ever.
    argv = ["timeout", "-k", "5", str(max(1, int(limit))), "python3", "-I", "-c", _BOOT, str(len(src)), str(len(req))]
    res = t.run(argv, stdin=src + req, timeout=limit + 10)
    if res.exit_code == 127 or b"python3: not found" in res.stderr or b"python3: command not found" in res.stderr:
        raise TransportError(f"{t.host.name}: python3 is not installed on the host",
                             hint="install python3 there (wsguard's agent needs only its standard library)")
    if res.exit_code == 124:
        raise AgentError("timeout", f"{t.host.name}: the remote step exceeded --timeout ({limit:g}s) and was stopped",
                         hint="raise --timeout; the host's journal records how far it got")
    try:
        out: dict[str, Any] = json.loads(res.stdout.decode())
    except ValueError:
        err = res.stderr.decode("utf-8", "replace").strip()[-1000:]
        raise AgentError("agent", f"{t.host.name}: the remote agent failed (exit {res.exit_code}): {err}") from None
    if out.get("error") and request["op"] == "facts":
        e = out["error"]
        raise AgentError(e["kind"], f"{t.host.name}: {e['message']}", e.get("evidence"))
    return out


def require_root(t: Transport, facts: dict[str, Any]) -> None:
    """The agent must run as root: a plain user reads nothing it needs (and finds no nginx on its PATH)."""
    euid = facts.get("euid")
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


@dataclass
class FileChange:
    path: str
    old: bytes
    new: bytes
    expect_sha256: str
    validate: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None

    @property
    def changed(self) -> bool:
        return self.old != self.new or self.mode is not None

    def diff(self, masker: Masker) -> str:
        old = self.old.decode("utf-8", "replace").splitlines(keepends=True)
        new = self.new.decode("utf-8", "replace").splitlines(keepends=True)
        text = "".join(difflib.unified_diff(old, new, f"a{self.path}", f"b{self.path}"))
        return masker(text)

    def request(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "expect_sha256": self.expect_sha256,
                             "content": base64.b64encode(self.new).decode(), "validate": self.validate}
        for k in ("mode", "uid", "gid"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


@dataclass
class Plan:
    files: list[FileChange] = field(default_factory=list)
    handlers: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    rollback_of: str | None = None

    @property
    def changed_files(self) -> list[FileChange]:
        return [f for f in self.files if f.changed]

    @property
    def pending(self) -> bool:
        return bool(self.changed_files or self.handlers)


class Remediation(Protocol):
    task: str

    def facts_request(self) -> dict[str, Any]: ...

    def plan(self, facts: dict[str, Any], masker: Masker) -> Plan: ...


@dataclass
class Options:
    check: bool = False
    diff: bool = False
    lock_timeout: float = 30
    pause_before_rename: float = 0.0   # test-only: widens the window for fault tests


def file_fact(facts: dict[str, Any], path: str, host: str, what: str, hint: str) -> dict[str, Any]:
    """The facts of one managed file, or a clear error naming the host and path."""
    f = next(f for f in facts["files"] if f["path"] == path)
    if f.get("refused"):
        raise AgentError("boundary", f"{host}: {f['error']}")
    if f.get("error"):
        raise AgentError("read", f"{host}: cannot read {what} {path}: {f['error']}", hint=hint)
    if not f["exists"]:
        raise AgentError("missing", f"{host}: {what} {path} does not exist", hint=hint)
    return f


def content(f: dict[str, Any]) -> bytes:
    return base64.b64decode(f["content"])


def execute(t: Transport, rem: Remediation, run_id: str, opts: Options, result: HostResult,
            masker: Masker) -> HostResult:
    """Run one remediation on one connected host; fills `result` in the shape of DESIGN.md."""
    facts = call_agent(t, {"op": "facts", **rem.facts_request()})
    require_root(t, facts)
    plan = rem.plan(facts, masker)
    result.warnings += plan.warnings
    result.evidence.update(plan.evidence)
    result.changes = [{"path": f.path, "diff": f.diff(masker) if opts.diff else None} for f in plan.changed_files]
    if not plan.pending:
        return result
    result.status = "changed"
    result.handlers = [{"name": h["name"], "status": "pending" if opts.check else "run", "reason": h.get("reason")}
                       for h in plan.handlers]
    if opts.check:
        return result
    request = {"op": "apply", "run_id": run_id, "task": rem.task, "controller": controller_identity(),
               "files": [f.request() for f in plan.changed_files], "handlers": plan.handlers,
               "lock_timeout": opts.lock_timeout, "keep": t.host.ws.journal_keep,
               "pause_before_rename": opts.pause_before_rename, "rollback_of": plan.rollback_of}
    try:
        out = call_agent(t, request, timeout=t.timeout + opts.lock_timeout)
    except (UnreachableError, RemoteTimeout) as exc:
        # The agent runs on under `timeout` and records its outcome in the host's journal: say so, never guess.
        raise AgentError("unknown_outcome", f"{exc.message}; outcome unknown: the host may have applied run "
                         f"{run_id}", hint=f"`invoke history --limit {t.host.name}` reads what the host's journal "
                         "recorded for it once the host answers again") from None
    reasons = {h["name"]: h.get("reason") for h in plan.handlers}
    result.handlers = [{"name": h["name"], "status": "ok" if h["ok"] else "failed", "reason": reasons.get(h["name"]),
                        "evidence": h.get("evidence"), "error": h.get("error")} for h in out.get("handlers", [])]
    if out.get("files"):
        result.evidence["files"] = out["files"]
    if out.get("error"):
        e = out["error"]
        result.evidence.update({k: v for k, v in (e.get("evidence") or {}).items()})
        written = bool(out.get("files"))
        result.status = "failed"
        result.error = {"kind": e["kind"], "message": e["message"], "files_written": written}
    return result
