"""The host's journal, read from the controller: recorded runs (manifests) and what `history` shows of them.

The journal lives on each host (root-only /var/lib/wsguard/runs/RUN_ID/, written by the agent's `apply`):
a manifest per run (run id, time, task, controller, each file's path, resolved path, sha256 before/after,
mode/owner before/after, handler specs run/pending, status, rollback_of) and the old bytes of each file.
The old bytes never leave the host except in a rollback's own facts round trip, for the one run it undoes.
"""

from __future__ import annotations

from typing import Any

from remediations.host.agent_call import read_facts
from remediations.host.transport import Transport

# Mirrors remediations/host/programs/agent.py: the `detail` value that picks the newest run that changed files
# and was not failed-and-restored.
LATEST_CHANGED = "latest-changed"


def read_runs(t: Transport) -> list[dict[str, Any]]:
    """The host's recorded runs, newest first, in one facts round trip (manifests only, no old bytes)."""
    return list(read_facts(t, {"journal": {}}).runs)


def find_run(runs: list[dict[str, Any]], run_id: str) -> dict[str, Any] | None:
    return next((m for m in runs if m.get("run_id") == run_id), None)


def failed_and_restored(m: dict[str, Any]) -> bool:
    return m.get("status") == "failed" and bool(m.get("restored"))


def status_label(m: dict[str, Any]) -> str:
    if m.get("invalid"):
        return "unreadable: " + str(m["invalid"])  # listed by name, never skipped
    status = str(m.get("status") or "unknown")
    if failed_and_restored(m):
        return "failed (restored)"
    if status == "applying":
        return "interrupted"  # the agent never finished: killed by `timeout` or a lost host
    return status


def summary(m: dict[str, Any]) -> dict[str, Any]:
    """One run as `history` reports it (JSON and table): no old bytes, no backup names."""
    files = [{k: f.get(k) for k in ("path", "resolved", "sha256_before", "sha256_after", "mode", "uid", "gid",
                                    "mode_after", "uid_after", "gid_after", "validate")}
             for f in m.get("files") or []]
    return {"run_id": m.get("run_id"), "time": m.get("time"), "task": m.get("task"),
            "status": "unreadable" if m.get("invalid") else m.get("status"),
            "label": status_label(m), "restored": bool(m.get("restored")), "controller": m.get("controller") or {},
            "files": files, "handlers_run": m.get("handlers_run") or [],
            "handlers_pending": m.get("handlers_pending") or [], "rollback_of": m.get("rollback_of"),
            "error": {"kind": "journal", "message": m["invalid"]} if m.get("invalid") else m.get("error")}


def table(rows: list[dict[str, Any]]) -> list[str]:
    """A plain, stable table (same on a terminal and in a pipe), newest run first."""
    head = ("RUN ID", "TIME", "TASK", "STATUS", "HANDLERS", "ROLLBACK OF", "FILES")
    body = []
    for r in rows:
        handlers = list(r["handlers_run"]) + [f"{h}(pending)" for h in r["handlers_pending"]]
        body.append((r["run_id"] or "?", r["time"] or "?", r["task"] or "?", r["label"],
                     ",".join(handlers) or "-", r["rollback_of"] or "-",
                     ",".join(f["path"] for f in r["files"]) or "-"))
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
            for row in [head, *body]]
