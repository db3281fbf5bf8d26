"""rollback: undo exactly what one recorded run changed on a host, as a run of its own.

A Remediation like the fixes, so it goes through the same `transaction.execute`: ONE facts round trip
brings the journal's manifests, the old bytes of the run to undo (`--run ID`, or by default the newest run
that changed files and was not failed-and-restored) and the current facts of the files it changed; the
plan is pure; ONE apply writes the old bytes back with the old mode/owner, validates as the original did
(`validate: nginx` -> nginx -t, restored on failure), re-runs the original's handlers and journals itself
(task "rollback", rollback_of set), so a rollback can be rolled back in turn.

Safety: a file goes back only if it still holds what the run left there (its sha256 "after"); a file
edited since makes the host refuse, naming the file, unless --force. A file already back as it was before
the run (bytes and mode/owner) is left alone and reported, so a rollback never rewrites what it need not.

compose_recreate after a .env rollback: the container must hold the flags as the RESTORED .env reads
them (remediations.edit.envfile.read_values on the old bytes). A flag key absent from the restored .env is
NOT checked in the container: docker-compose may still set it from `environment:` or a `${VAR:-default}`
in the compose file, which wsguard does not read, so requiring its absence could fail a correct rollback.
Such keys are listed in the evidence (`env_unchecked`) and kept in the handler spec (`flag_keys`), so a
rollback of this rollback checks them all again.
"""

from __future__ import annotations

import base64
import posixpath
from typing import Any

from remediations.edit.envfile import read_values
from remediations.edit.secrets import learn_env_text, learn_nginx
from remediations.fixes.plan import FileChange, Plan
from remediations.host.journal import LATEST_CHANGED, failed_and_restored, find_run
from remediations.model.errors import AgentError, JournalError
from remediations.model.facts import Facts, FileFact
from remediations.model.inventory import Host
from remediations.model.masking import Masker


class RollbackConflict(JournalError):
    """A file changed since the run being undone; nothing was written on that host."""


def _is_env_file(host: Host, path: str) -> bool:
    return path == host.ws.env_file or posixpath.basename(path).startswith(".env")


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _meta(f: FileFact | dict[str, Any]) -> tuple[Any, Any, Any]:
    if isinstance(f, FileFact):
        return f.mode, f.uid, f.gid
    return f.get("mode"), f.get("uid"), f.get("gid")  # a journal entry


def _octal(mode: Any) -> str:
    return oct(mode) if isinstance(mode, int) else "?"


class Rollback:
    task = "rollback"

    def __init__(self, host: Host, run_id: str | None = None, force: bool = False) -> None:
        self.host = host
        self.run_id = run_id
        self.force = force

    def facts_request(self) -> dict[str, Any]:
        # detail_files: the agent adds the current facts of every file the detailed run changed.
        return {"files": [], "container": self.host.ws.backend_container,
                "journal": {"detail": self.run_id or LATEST_CHANGED, "detail_files": True}}

    # -- the plan (pure) --------------------------------------------------------------------------

    def plan(self, facts: Facts, masker: Masker) -> Plan:
        name = self.host.name
        runs = list(facts.runs)
        env = facts.container_env()
        if env is not None:
            masker.add_env(env)
        if self.run_id:
            run = find_run(runs, self.run_id)
            if run is None:
                raise JournalError(f"{name}: run {self.run_id} is not in this host's journal "
                    f"({len(runs)} run(s) recorded; it keeps the last {self.host.ws.journal_keep})",
                    hint=f"`invoke history --limit {name}` lists the runs this host recorded", kind="unknown_run")
        else:
            run = find_run(runs, facts.detail) if facts.detail else None
            if run is None:
                plan = Plan()
                plan.warnings.append("nothing to roll back: no recorded run changed a file on this host")
                plan.evidence = {"rollback_of": None}
                return plan
        return self._plan_run(run, facts, masker)

    def _plan_run(self, run: dict[str, Any], facts: Facts, masker: Masker) -> Plan:
        name, rid = self.host.name, run["run_id"]
        plan = Plan(rollback_of=rid)
        plan.evidence = {"rollback_of": rid, "rolled_back": {k: run.get(k) for k in ("task", "time", "status",
                                                                                    "controller", "rollback_of")},
                         "restored_files": [], "unchanged_files": []}
        if failed_and_restored(run):
            plan.warnings.append(f"run {rid} failed and its files were restored then: nothing of it is left to undo")
        if not run.get("files"):
            plan.warnings.append(f"run {rid} ({run.get('task')}) changed no file: nothing to roll back")
            return plan
        conflicts: list[str] = []
        restored_env: dict[str, str | None] | None = None
        for entry in run["files"]:
            path = entry["path"]
            if entry.get("old_content") is None:
                raise JournalError(f"{name}: the journal of run {rid} has no old bytes for {path}",
                                   hint="the run's backup is missing or unreadable in /var/lib/wsguard/runs",
                                   kind="journal")
            old = base64.b64decode(entry["old_content"])
            cur = facts.file(path)
            if cur is None or cur.error:
                why = cur.error if cur else "no facts came back"
                raise AgentError(f"{name}: cannot read {path}: {why}", kind="read")
            if not cur.exists:
                raise RollbackConflict(f"{name}: {path} no longer exists; run {rid} cannot be rolled back",
                                       hint="restore the file (or its symlink) first; --force cannot recreate it",
                                       kind="conflict")
            now, now_sha = cur.data, cur.sha256 or ""
            if _is_env_file(self.host, path):
                learn_env_text(masker, _text(now))
                learn_env_text(masker, _text(old))
                if path == self.host.ws.env_file:
                    restored_env = read_values(_text(old))
            elif entry.get("validate") == "nginx" or path == self.host.ws.nginx_site:
                learn_nginx(masker, _text(now))  # a diff of the site can quote its secrets too
                learn_nginx(masker, _text(old))
            if now_sha == entry["sha256_before"] and _meta(cur) == _meta(entry):
                plan.evidence["unchanged_files"].append(path)
                plan.warnings.append(f"{path} already holds what it held before run {rid}: left as it is")
                continue
            if now_sha != entry["sha256_after"]:
                conflicts.append(f"{path} changed since run {rid} (sha256 now {now_sha[:12]}, "
                                 f"the run left {entry['sha256_after'][:12]})")
            elif cur.resolved != entry.get("resolved"):
                conflicts.append(f"{path} now resolves to {cur.resolved}; "
                                 f"run {rid} wrote {entry.get('resolved')}")
            plan.files.append(FileChange(path, now, old, now_sha, validate=entry.get("validate"),
                                         mode=entry.get("mode"), uid=entry.get("uid"), gid=entry.get("gid")))
            plan.evidence["restored_files"].append({
                "path": path, "sha256_now": now_sha, "sha256_restored": entry["sha256_before"],
                "mode": _octal(entry.get("mode")), "uid": entry.get("uid"), "gid": entry.get("gid")})
        if conflicts and not self.force:
            raise RollbackConflict(f"{name}: rollback of run {rid} refused, nothing written: "
                                   + "; ".join(conflicts),
                                   hint="see what changed with --check --diff; --force restores the run's old "
                                        "bytes over those edits", kind="conflict")
        plan.warnings += [f"--force: {c}; overwritten with the bytes from before run {rid}" for c in conflicts]
        if plan.files:
            self._handlers(run, plan, restored_env)
        return plan

    def _handlers(self, run: dict[str, Any], plan: Plan, restored_env: dict[str, str | None] | None) -> None:
        rid = run["run_id"]
        specs: list[dict[str, Any]] = run.get("handler_specs") or []
        if not specs and run.get("status") not in ("ok", "failed"):
            plan.warnings.append(f"run {rid} recorded no handlers (it did not finish): none will run")
        for original in specs:
            spec = dict(original)
            spec["reason"] = f"rollback of {rid}"
            if spec["name"] == "compose_recreate":
                keys = list(spec.get("flag_keys") or spec.get("expect_env") or {})
                spec["flag_keys"] = keys
                if restored_env is None:
                    spec["expect_env"] = {}
                    plan.warnings.append(f"{self.host.ws.env_file} is not among the files run {rid} changed: "
                                         "the recreated container's env is not checked")
                    plan.evidence["env_unchecked"] = keys
                else:
                    spec["expect_env"] = {k: v for k in keys if (v := restored_env.get(k)) is not None}
                    plan.evidence["env_unchecked"] = [k for k in keys if k not in spec["expect_env"]]
                spec["reason"] += ": .env restored, the container must hold the old values"
            plan.handlers.append(spec)
