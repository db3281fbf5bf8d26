"""The transaction on a host, controller side: facts in one round trip, a pure plan, one apply.

facts -> plan (pure; --check stops here) -> apply: ONE remote agent process under `timeout` takes the
lock, journals the old bytes, writes atomically, validates, restores on failure, runs handlers and
confirms their effect. See remediations/host/programs/agent.py for the host side.
"""

from __future__ import annotations

from dataclasses import dataclass

from remediations.fixes.plan import Remediation
from remediations.host.agent_call import call_agent, controller_identity, read_facts
from remediations.host.transport import Transport
from remediations.model.errors import AgentError, RemoteTimeout, UnreachableError
from remediations.model.masking import Masker
from remediations.model.results import HostResult


@dataclass
class Options:
    check: bool = False
    diff: bool = False
    lock_timeout: float = 30
    pause_before_rename: float = 0.0   # test-only: widens the window for fault tests


def execute(t: Transport, rem: Remediation, run_id: str, opts: Options, result: HostResult,
            masker: Masker) -> HostResult:
    """Run one remediation on one connected host; fills `result` in the shape of docs/ARCHITECTURE.md."""
    facts = read_facts(t, rem.facts_request())
    plan = rem.plan(facts, masker)
    result.warnings += plan.warnings
    result.evidence.update(plan.evidence)
    if plan.nothing_to_do:
        result.evidence["nothing_to_do"] = list(plan.nothing_to_do)
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
        raise AgentError(f"{exc.message}; outcome unknown: the host may have applied run "
                         f"{run_id}", hint=f"`invoke history --limit {t.host.name}` reads what the host's journal "
                         "recorded for it once the host answers again", kind="unknown_outcome") from None
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
