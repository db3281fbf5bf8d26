"""Readers of the facts the agent returns (one JSON round trip per host): pure functions over that data.

Everything that interprets a fact lives here, so fixes, checks and planners read a fact the same way.
"""

from __future__ import annotations

import base64
from typing import Any

from remediations.model.errors import AgentError


def file_fact(facts: dict[str, Any], path: str, host: str, what: str, hint: str) -> dict[str, Any]:
    """The facts of one managed file, or a clear error naming the host and path."""
    f = next(f for f in facts["files"] if f["path"] == path)
    if f.get("refused"):
        raise AgentError(f"{host}: {f['error']}", kind="boundary")
    if f.get("error"):
        raise AgentError(f"{host}: cannot read {what} {path}: {f['error']}", hint=hint, kind="read")
    if not f["exists"]:
        raise AgentError(f"{host}: {what} {path} does not exist", hint=hint, kind="missing")
    return f


def content(f: dict[str, Any]) -> bytes:
    return base64.b64decode(f["content"])


def running_config_stale(ng: dict[str, Any]) -> str | None:
    """Why nginx's running config differs from the disk, or None when it does not."""
    if not ng.get("master"):
        return None
    rec = ng.get("reload_record") or {}
    if rec.get("workers") and sorted(rec["workers"]) == ng.get("workers"):
        if ng.get("dump_sha256") and rec.get("dump_sha256") != ng["dump_sha256"]:
            return "the configuration on disk differs from the one nginx loaded at its last confirmed reload"
        return None
    mtime, started = ng.get("config_mtime"), ng.get("workers_started")
    if mtime and started and mtime > started:
        return "a configuration file is newer than nginx's workers (never reloaded)"
    return None


def container_env(facts: dict[str, Any]) -> dict[str, str] | None:
    c = facts.get("container") or {}
    if not c.get("exists"):
        return None
    return dict(e.split("=", 1) for e in c.get("env", []) if "=" in e)
