"""The facts the agent returns (one JSON round trip per host), parsed once into typed records.

`Facts.parse` is the only code that reads the agent's JSON; fixes, checks and planners read these records,
so a fact means the same everywhere and a missing one has one default, decided here. The parsing is pure
(the round trip that fetches the JSON is host/agent_call.py), so plan fixtures build Facts from files.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from remediations.model.errors import AgentError


@dataclass(frozen=True)
class FileFact:
    """A managed file as the agent found it, inside the host's boundary (or why it did not read it)."""

    path: str
    exists: bool = False
    content: bytes | None = None
    sha256: str | None = None
    resolved: str | None = None  # where a symlink led, inside the boundary
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    error: str | None = None
    refused: bool = False  # outside the boundary: the agent did not open it

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> FileFact:
        raw = doc.get("content")
        return cls(path=doc["path"], exists=bool(doc.get("exists")),
                   content=base64.b64decode(raw) if raw is not None else None, sha256=doc.get("sha256"),
                   resolved=doc.get("resolved"), mode=doc.get("mode"), uid=doc.get("uid"), gid=doc.get("gid"),
                   error=doc.get("error"), refused=bool(doc.get("refused")))

    @property
    def data(self) -> bytes:
        """The bytes read (b"" for a file that does not exist)."""
        return self.content or b""


@dataclass(frozen=True)
class ContainerFact:
    exists: bool
    id: str | None = None
    running: bool = False
    status: str | None = None
    started_at: str | None = None
    restart_count: int = 0
    image: str | None = None
    env: tuple[str, ...] = ()  # KEY=value, as the engine reports Config.Env
    error: str | None = None

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> ContainerFact:
        return cls(exists=bool(doc.get("exists")), id=doc.get("id"), running=bool(doc.get("running")),
                   status=doc.get("status"), started_at=doc.get("started_at"),
                   restart_count=int(doc.get("restart_count") or 0), image=doc.get("image"),
                   env=tuple(doc.get("env") or ()), error=doc.get("error"))

    def env_map(self) -> dict[str, str]:
        return dict(e.split("=", 1) for e in self.env if "=" in e)


@dataclass(frozen=True)
class ReloadRecord:
    """What the journal recorded at nginx's last reload that wsguard confirmed."""

    workers: tuple[int, ...] = ()
    dump_sha256: str | None = None


@dataclass(frozen=True)
class NginxFact:
    installed: bool
    version: str = ""  # `nginx -v` as printed
    test_ok: bool = False
    test_error: str = ""
    dump: str = ""  # `nginx -T`: every file nginx loads, the main one first
    dump_sha256: str | None = None
    master: int | None = None
    workers: tuple[int, ...] = ()
    workers_started: float | None = None
    config_mtime: float | None = None
    reload_record: ReloadRecord | None = None

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> NginxFact:
        rec = doc.get("reload_record")
        return cls(installed=bool(doc.get("installed")), version=doc.get("version") or "",
                   test_ok=bool(doc.get("test_ok")), test_error=doc.get("test_error") or "",
                   dump=doc.get("dump") or "", dump_sha256=doc.get("dump_sha256"), master=doc.get("master"),
                   workers=tuple(sorted(doc.get("workers") or ())), workers_started=doc.get("workers_started"),
                   config_mtime=doc.get("config_mtime"),
                   reload_record=ReloadRecord(tuple(sorted(rec.get("workers") or ())), rec.get("dump_sha256"))
                   if isinstance(rec, Mapping) else None)


@dataclass(frozen=True)
class LogTail:
    lines: tuple[str, ...] = ()
    error: str | None = None

    @classmethod
    def parse(cls, doc: Mapping[str, Any] | None) -> LogTail:
        return cls(tuple((doc or {}).get("lines") or ()), (doc or {}).get("error"))


@dataclass(frozen=True)
class DiagnoseFact:
    """The bounded log tails diagnose asks for, and the host's clock."""

    now: float | None = None
    utc_offset: int = 0
    backend_logs: LogTail = field(default_factory=LogTail)
    nginx_error_log: LogTail = field(default_factory=LogTail)

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> DiagnoseFact:
        return cls(now=doc.get("now"), utc_offset=int(doc.get("utc_offset") or 0),
                   backend_logs=LogTail.parse(doc.get("backend_logs")),
                   nginx_error_log=LogTail.parse(doc.get("nginx_error_log")))


@dataclass(frozen=True)
class Facts:
    """One facts round trip. Parts the request did not ask for are None (container, nginx, diagnose) or
    empty (runs, pending: the journal's manifests, newest first, and the handlers a run left pending)."""

    euid: int | None = None
    files: tuple[FileFact, ...] = ()
    container: ContainerFact | None = None
    nginx: NginxFact | None = None
    runs: tuple[dict[str, Any], ...] = ()  # journal manifests (the journal's own documented shape)
    pending: Mapping[str, Any] = field(default_factory=dict)
    detail: str | None = None  # the run whose old bytes came along
    diagnose: DiagnoseFact | None = None

    @classmethod
    def parse(cls, doc: Mapping[str, Any]) -> Facts:
        return cls(euid=doc.get("euid"), files=tuple(FileFact.parse(f) for f in doc.get("files") or ()),
                   container=ContainerFact.parse(doc["container"]) if doc.get("container") is not None else None,
                   nginx=NginxFact.parse(doc["nginx"]) if doc.get("nginx") is not None else None,
                   runs=tuple(doc.get("runs") or ()), pending=dict(doc.get("pending") or {}),
                   detail=doc.get("detail"),
                   diagnose=DiagnoseFact.parse(doc["diagnose"]) if doc.get("diagnose") is not None else None)

    def file(self, path: str) -> FileFact | None:
        return next((f for f in self.files if f.path == path), None)

    def container_env(self) -> dict[str, str] | None:
        """The running container's environment; None when there is no container (or none was asked for)."""
        if self.container is None or not self.container.exists:
            return None
        return self.container.env_map()


def file_fact(facts: Facts, path: str, host: str, what: str, hint: str) -> FileFact:
    """The facts of one managed file, or a clear error naming the host and path."""
    f = facts.file(path)
    if f is None:
        raise AgentError(f"{host}: the agent returned no facts for {what} {path}", kind="agent")
    if f.refused:
        raise AgentError(f"{host}: {f.error}", kind="boundary")
    if f.error:
        raise AgentError(f"{host}: cannot read {what} {path}: {f.error}", hint=hint, kind="read")
    if not f.exists:
        raise AgentError(f"{host}: {what} {path} does not exist", hint=hint, kind="missing")
    return f


def running_config_stale(ng: NginxFact) -> str | None:
    """Why nginx's running config differs from the disk, or None when it does not."""
    if not ng.master:
        return None
    rec = ng.reload_record
    if rec and rec.workers and rec.workers == ng.workers:
        if ng.dump_sha256 and rec.dump_sha256 != ng.dump_sha256:
            return "the configuration on disk differs from the one nginx loaded at its last confirmed reload"
        return None
    if ng.config_mtime and ng.workers_started and ng.config_mtime > ng.workers_started:
        return "a configuration file is newer than nginx's workers (never reloaded)"
    return None
