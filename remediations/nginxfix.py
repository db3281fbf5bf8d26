"""fix-nginx: the WebSocket location's directives, validated by `nginx -t`, reloaded and confirmed.

The reload runs when the site changed, or when what nginx runs is not what is on disk (edited by hand,
never reloaded). That is judged from the journal's record of the last confirmed reload (`nginx -T`
sha256 and worker pids); only without a record, from process start times (one-second resolution).
"""

from __future__ import annotations

from typing import Any

from remediations.errors import NginxConfError
from remediations.inventory import Host
from remediations.masking import Masker
from remediations.nginxplan import parse_nginx_version, plan_site, split_nginx_T
from remediations.transaction import AgentError, FileChange, Plan, content, file_fact


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


def learn_nginx_secrets(masker: Masker, site: str, ng: dict[str, Any]) -> None:
    """The secret arguments of the site and of every file `nginx -T` showed (includes, snippets)."""
    masker.add_nginx(site)
    for loaded in split_nginx_T(ng.get("dump", "")).values():
        masker.add_nginx(loaded)


def site_plan(host: Host, facts: dict[str, Any], directives: list[str],
              masker: Masker | None = None) -> tuple[Any, dict[str, Any], str]:
    """The planner's verdict on the site (shared by fix-nginx and verify).

    The masker learns the secret arguments of the site and of every file nginx loads before anything
    is planned: a diff, a warning about a copied header or a control's report can quote any of them.
    """
    ws = host.ws
    f = file_fact(facts, ws.nginx_site, host.name, "the nginx site",
                  hint="set nginx_site for this host in the inventory to the site file that holds the location")
    try:
        text = content(f).decode("utf-8")
    except UnicodeDecodeError:
        raise NginxConfError(f"{host.name}: {ws.nginx_site} is not UTF-8 text") from None
    ng = facts.get("nginx") or {}
    if masker is not None:
        learn_nginx_secrets(masker, text, ng)
    if not ng.get("installed"):
        raise AgentError("nginx", f"{host.name}: nginx is not installed (nginx -v failed)",
                         hint="is this the right host? fix-nginx manages an installed nginx")
    included = split_nginx_T(ng.get("dump", "")) if ng.get("test_ok") else {}
    try:
        plan = plan_site(text, ws.ws_location, directives, nginx_version=parse_nginx_version(ng.get("version", "")),
                         included=included)
    except NginxConfError as exc:
        raise type(exc)(f"{host.name}: {ws.nginx_site}: {exc.message}", exc.hint) from None
    return plan, f, text


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
