"""The one result shape every task writes (docs/ARCHITECTURE.md): per-host records inside a run record."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("ok", "changed", "failed", "unreachable", "skipped")


def new_run_id() -> str:
    """Same on every host of one invocation; sorts by time."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class HostResult:
    host: str
    task: str
    run_id: str
    status: str = "ok"
    changes: list[dict[str, Any]] = field(default_factory=list)
    handlers: list[dict[str, Any]] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    round_trips: int = 0
    warnings: list[str] = field(default_factory=list)
    controls: list[dict[str, Any]] | None = None

    def fail(self, kind: str, message: str, status: str = "failed") -> HostResult:
        self.status, self.error = status, {"kind": kind, "message": message}
        return self

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["controls"] is None:
            del d["controls"]
        return d


def exit_code(results: list[HostResult], *, pending_is_2: bool) -> int:
    """Terraform's detailed exit codes: 1 error on any host, else 2 pending/drift, else 0."""
    if any(r.status in ("failed", "unreachable") for r in results):
        return 1
    if pending_is_2 and any(r.status == "changed" for r in results):
        return 2
    return 0


@dataclass
class RunResult:
    task: str
    run_id: str
    started: str
    finished: str = ""
    exit_code: int = 0
    hosts: list[HostResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "run_id": self.run_id, "started": self.started, "finished": self.finished,
                "exit_code": self.exit_code, "hosts": [h.to_dict() for h in self.hosts]}


def show(value: Any) -> str:
    """expected/actual as one readable line: k=v pairs for mappings, <unset> for None."""
    if value is None:
        return "<unset>"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {show(v)}" if isinstance(v, dict | list) else f"{k}={'<unset>' if v is None else v}"
                         for k, v in value.items())
    if isinstance(value, list | tuple):
        return "; ".join(show(v) for v in value)
    return str(value)
