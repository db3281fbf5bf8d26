"""fix-nginx: the WebSocket location's directives, validated by `nginx -t`, reloaded and confirmed.

The reload runs when the site changed, or when what nginx runs is not what is on disk (edited by hand,
never reloaded). That is judged from the journal's record of the last confirmed reload (`nginx -T`
sha256 and worker pids); only without a record, from process start times (one-second resolution).
"""

from __future__ import annotations

from typing import Any

from remediations.edit.nginxplan import NginxPlan, site_plan
from remediations.fixes.plan import FileChange, Plan
from remediations.model.facts import Facts, NginxFact, running_config_stale
from remediations.model.inventory import Host
from remediations.model.masking import Masker


class NginxFix:
    task = "fix-nginx"

    def __init__(self, host: Host, directives: list[str] | None = None) -> None:
        self.host = host
        self.directives = list(directives if directives is not None else host.ws.nginx_directives)

    def facts_request(self) -> dict[str, Any]:
        return {"files": [self.host.ws.nginx_site], "nginx": True, "journal": {}}

    def plan(self, facts: Facts, masker: Masker) -> Plan:
        ws = self.host.ws
        sp, f, text = site_plan(self.host, facts, self.directives, masker)
        ng = facts.nginx
        assert ng is not None  # site_plan refused a host without nginx facts
        new = sp.new_text.encode("utf-8")
        plan = Plan(files=[FileChange(ws.nginx_site, f.data, new, f.sha256 or "", validate="nginx")])
        plan.warnings += [f"{d}: not written, {why}" for d, why in sp.unsupported]
        plan.warnings += sp.include_conflicts
        plan.warnings += [f"inherited from the server or http block, copied so it is not silently dropped: {d}"
                          for d in sp.copied_inherited]
        plan.evidence = {"nginx_site": ws.nginx_site, "resolved": f.resolved, "nginx_version": ng.version,
                         "kept_equivalent": [f"{found} (for {want})" for want, found in sp.kept_equivalent],
                         "kept_inherited": [f"{held} (for {want})" for want, held in sp.kept_inherited]}
        if not ng.master:
            plan.warnings.append("nginx is not running: nothing to reload")
            if not sp.changed:
                plan.nothing_to_do.append(self._in_place(sp))
            return plan
        if not ng.test_ok:
            plan.warnings.append(f"nginx -t fails before any edit: {ng.test_error[-300:]}")
        reasons = []
        if sp.changed:
            reasons.append("site changed")
        stale = running_config_stale(ng)
        if stale:
            reasons.append(stale)
        if "nginx_reload" in facts.pending:
            reasons.append("a previous run left the reload pending")
        if reasons:
            plan.handlers.append({"name": "nginx_reload", "method": ws.nginx_reload, "reason": "; ".join(reasons)})
        elif not sp.changed:
            plan.nothing_to_do.append(f"{self._in_place(sp)}; {running_config_basis(ng)}")
        return plan

    def _in_place(self, sp: NginxPlan) -> str:
        """How many of the directives the location holds; the warnings name the ones it cannot."""
        # Not written: too new for this nginx, or an included file sets it differently (the planner's words).
        absent = {d for d, _ in sp.unsupported}
        absent |= {d for d in self.directives if any(c.startswith(f"{d}: ") for c in sp.include_conflicts)}
        total = len(self.directives)
        held = sum(d not in absent for d in self.directives)
        where = f"location {self.host.ws.ws_location}"
        if held == total:
            said = f"the directive is in {where}" if total == 1 else f"the {total} directives are in {where}"
        else:
            said = f"{held} of the {total} directives are in {where} (the warnings say why not the others)"
        if sp.kept_equivalent:
            said += f", {len(sp.kept_equivalent)} of them in an equivalent spelling"
        if sp.kept_inherited:
            said += f", {len(sp.kept_inherited)} inherited ({'; '.join(held for _, held in sp.kept_inherited)})"
        return said


def running_config_basis(ng: NginxFact) -> str:
    """Why nginx is taken to run what is on disk: the test running_config_stale passed, in its order."""
    rec = ng.reload_record
    if rec and rec.workers and rec.workers == ng.workers:
        if ng.dump_sha256:
            return "nginx runs the configuration on disk"
        return "nginx -T gave nothing to compare with its last confirmed reload: taken as running what is on disk"
    if ng.config_mtime and ng.workers_started:
        return "nginx's workers started after the last change to its configuration files"
    return "nginx has no confirmed reload on record and no file times to compare: taken as running what is on disk"
