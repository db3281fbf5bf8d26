"""fix-nginx: the WebSocket location's directives, validated by `nginx -t`, reloaded and confirmed.

The reload runs when the site changed, or when what nginx runs is not what is on disk (edited by hand,
never reloaded). That is judged from the journal's record of the last confirmed reload (`nginx -T`
sha256 and worker pids); only without a record, from process start times (one-second resolution).
"""

from __future__ import annotations

from typing import Any

from remediations.edit.nginxplan import site_plan
from remediations.fixes.plan import FileChange, Plan
from remediations.model.facts import content, running_config_stale
from remediations.model.inventory import Host
from remediations.model.masking import Masker


class NginxFix:
    task = "fix-nginx"

    def __init__(self, host: Host, directives: list[str] | None = None) -> None:
        self.host = host
        self.directives = list(directives if directives is not None else host.ws.nginx_directives)

    def facts_request(self) -> dict[str, Any]:
        return {"files": [self.host.ws.nginx_site], "nginx": True, "journal": {}}

    def plan(self, facts: dict[str, Any], masker: Masker) -> Plan:
        ws = self.host.ws
        sp, f, text = site_plan(self.host, facts, self.directives, masker)
        ng = facts["nginx"]
        new = sp.new_text.encode("utf-8")
        plan = Plan(files=[FileChange(ws.nginx_site, content(f), new, f["sha256"], validate="nginx")])
        plan.warnings += [f"{d}: not written, {why}" for d, why in sp.unsupported]
        plan.warnings += sp.include_conflicts
        plan.warnings += [f"copied from the server block so it is not silently dropped: {d}"
                          for d in sp.copied_inherited]
        plan.evidence = {"nginx_site": ws.nginx_site, "resolved": f.get("resolved"), "nginx_version": ng.get("version"),
                         "kept_equivalent": [f"{found} (for {want})" for want, found in sp.kept_equivalent]}
        if not ng.get("master"):
            plan.warnings.append("nginx is not running: nothing to reload")
            return plan
        if not ng.get("test_ok"):
            plan.warnings.append(f"nginx -t fails before any edit: {ng.get('test_error', '')[-300:]}")
        reasons = []
        if sp.changed:
            reasons.append("site changed")
        stale = running_config_stale(ng)
        if stale:
            reasons.append(stale)
        if "nginx_reload" in (facts.get("pending") or {}):
            reasons.append("a previous run left the reload pending")
        if reasons:
            plan.handlers.append({"name": "nginx_reload", "method": ws.nginx_reload, "reason": "; ".join(reasons)})
        return plan
