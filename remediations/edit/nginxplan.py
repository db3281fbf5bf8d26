"""Decide what to write into a site's WebSocket location (pure: the caller fetches the facts).

The planner knows nginx semantics that the editor deliberately does not: equivalent spellings,
minimum versions, includes that already set a directive, and proxy_set_header inheritance.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from remediations.edit import nginx_effective
from remediations.edit.nginx_effective import Level, resolve_include
from remediations.edit.nginxconf import (
    ensure_directives_by_block,
    identity,
    location_blocks,
    parse_directive,
    render_directive,
    split_nginx_T,
    top_directives,
)
from remediations.edit.secrets import learn_nginx_secrets
from remediations.model.defaults import DEFAULT_NGINX_DIRECTIVES
from remediations.model.errors import AgentError, NginxConfError
from remediations.model.facts import Facts, FileFact, NginxFact, file_fact
from remediations.model.inventory import Host
from remediations.model.masking import Masker

# One list of defaults, kept with the inventory's other defaults.
DEFAULT_DIRECTIVES: list[str] = DEFAULT_NGINX_DIRECTIVES

# Directives newer than nginx 1.0; anything not listed is assumed to exist everywhere.
MIN_VERSION: dict[str, tuple[int, int, int]] = {
    "proxy_http_version": (1, 1, 4),
    "proxy_request_buffering": (1, 7, 11),
    "proxy_socket_keepalive": (1, 15, 6),
    "keepalive_time": (1, 19, 10),
}

# Directives whose first argument is an nginx time ("1d", "86400s", "86400", "1h30m").
TIME_DIRECTIVES = frozenset({
    "proxy_read_timeout", "proxy_send_timeout", "proxy_connect_timeout", "proxy_next_upstream_timeout",
    "keepalive_timeout", "keepalive_time", "send_timeout", "client_body_timeout", "client_header_timeout",
    "resolver_timeout", "lingering_time", "lingering_timeout", "grpc_read_timeout", "grpc_send_timeout",
    "grpc_connect_timeout", "fastcgi_read_timeout", "fastcgi_send_timeout", "fastcgi_connect_timeout",
    "uwsgi_read_timeout", "uwsgi_send_timeout", "uwsgi_connect_timeout",
})
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000,
            "w": 7 * 86_400_000, "M": 30 * 86_400_000, "y": 365 * 86_400_000}
_TIME = re.compile(r"(?:\d+(?:ms|[smhdwMy])?)+")
_PREFIX = "/etc/nginx"  # where nginx resolves relative include paths
_MAX_INCLUDE_DEPTH = 8


@dataclass
class NginxPlan:
    new_text: str  # what to write (== text when compliant)
    ensured: list[str] = field(default_factory=list)  # directives passed to ensure_directives
    kept_equivalent: list[tuple[str, str]] = field(default_factory=list)  # (desired, found)
    unsupported: list[tuple[str, str]] = field(default_factory=list)  # (directive, "needs nginx >= X.Y.Z")
    include_conflicts: list[str] = field(default_factory=list)
    copied_inherited: list[str] = field(default_factory=list)
    kept_inherited: list[tuple[str, str]] = field(default_factory=list)  # (desired, "value from level (file:line)")
    original: str = field(default="", repr=False)  # the input; set by plan_site for `changed`

    @property
    def changed(self) -> bool:
        return self.new_text != self.original


def _ms(value: str) -> int | None:
    """nginx time -> milliseconds (a bare number is seconds), None if it is not a time."""
    if not _TIME.fullmatch(value):
        return None
    return sum(int(n) * _UNIT_MS[u or "s"] for n, u in re.findall(r"(\d+)(ms|[smhdwMy])?", value))


def _equivalent(name: str, want: list[str], found: list[str]) -> bool:
    """Same effect, different spelling (the editor compares literally; only the planner knows these)."""
    if found == want:
        return True
    if name == "proxy_set_header" and len(want) == 2 and want[0].casefold() == "connection":
        # the map idiom from nginx's WebSocket docs: "upgrade" when the client asked for it
        return want[1].casefold() == "upgrade" and found[1:] == ["$connection_upgrade"]
    if name in TIME_DIRECTIVES and want and found:
        same_time = _ms(want[0]) is not None and _ms(want[0]) == _ms(found[0])
        return same_time and (len(want) == 1 or want[1:] == found[1:])  # keepalive_timeout's 2nd arg
    return False


def _expand(directives: list[tuple[str, list[str]]], included: Mapping[str, str],
            depth: int = 0) -> list[tuple[str, str, list[str]]]:
    """(file, name, args) for every directive reached through include, recursively."""
    out: list[tuple[str, str, list[str]]] = []
    for name, args in directives:
        if name != "include" or not args or depth >= _MAX_INCLUDE_DEPTH:
            continue
        for path in resolve_include(args[0], _PREFIX, included):
            try:
                inner = top_directives(included[path])
            except NginxConfError as e:
                raise NginxConfError(f"{path}: {e.message}", hint=e.hint) from None
            out += [(path, n, a) for n, a in inner]
            out += _expand(inner, included, depth + 1)
    return out


def plan_site(text: str, location: str, desired: list[str], *,
              nginx_version: tuple[int, int, int] | None = None,
              included: Mapping[str, str] | None = None, site_path: str = "site") -> NginxPlan:
    """Judge each matching location block on its own, then edit them all in one pass.

    A block is judged by what nginx gives it: its own directives, those of files it includes, and what
    it inherits from its server and the http block (when `included`, nginx -T's files, holds the file
    that includes the site).
    """
    included = included or {}
    own = location_blocks(text, location)  # raises LocationNotFound
    via_include = [_expand(block, included) for block in own]
    levels = site_levels(text, location, included, site_path)
    plan = NginxPlan(new_text=text, original=text)
    per_block: list[list[str]] = [[] for _ in own]
    inherited_headers: list[list[tuple[str, str]]] = [[] for _ in own]

    for d in desired:
        name, args = parse_directive(d)
        ident = identity(name, args)
        need = MIN_VERSION.get(name)
        if need and nginx_version and nginx_version < need:
            plan.unsupported.append((d, "needs nginx >= " + ".".join(map(str, need))))
            continue
        for i, (block, inc, level) in enumerate(zip(own, via_include, levels, strict=True)):
            # set by an included file: a second copy would fail nginx -t as "duplicate"
            hits = [(p, a) for p, n, a in inc if identity(n, a) == ident]
            if hits:
                for path, a in hits:
                    if not _equivalent(name, args, a):
                        _add(plan.include_conflicts,
                             f"{d}: {path} sets '{render_directive(name, a)}' (included in location {location}); "
                             f"not added, change it in {path}")
                continue
            found = next((a for n, a in block if identity(n, a) == ident), None)
            if found is not None and found != args and _equivalent(name, args, found):
                # compliant in another spelling: leave the user's text alone
                _add(plan.kept_equivalent, (d, render_directive(name, found)))
                continue
            if found is None:
                held = _inherited(level, name, args)
                if held and name == "proxy_set_header":
                    inherited_headers[i].append((d, held))  # kept unless the block gets a header of its own
                    continue
                if held:
                    _add(plan.kept_inherited, (d, held))
                    continue
            per_block[i].append(d)

    for i, (block, level) in enumerate(zip(own, levels, strict=True)):
        gets_header = any(parse_directive(d)[0] == "proxy_set_header" for d in per_block[i])
        for d, held in inherited_headers[i]:
            if gets_header:  # its first own header ends the inheritance: ensure this one too
                per_block[i].append(d)
            else:
                _add(plan.kept_inherited, (d, held))
        copies = _inherited_copies(block, level, per_block[i])
        for c in copies:
            _add(plan.copied_inherited, c)
        per_block[i] = copies + per_block[i]
    plan.ensured = [d for d in desired if any(d in ds for ds in per_block)]
    if any(per_block):
        plan.new_text = ensure_directives_by_block(text, location, per_block)
    return plan


def site_levels(text: str, location: str, included: Mapping[str, str], site_path: str) -> list[Level]:
    """The site's matching location blocks as levels of nginx's tree (file order). The site hangs where
    nginx includes it: under the level that includes the dump's file with the very same text."""
    tree = nginx_effective.load(_dump(included)) if included else None
    loaded = next((p for p, t in included.items() if t == text), None)
    outer = tree.outer.get(loaded) if tree and loaded else None
    files = {**included, site_path: text}
    prefix = posixpath.dirname(next(iter(included))) if included else _PREFIX
    return nginx_effective.standalone(text, site_path, outer, files, prefix).find(location)


def _dump(files: Mapping[str, str]) -> str:
    return "".join(f"# configuration file {p}:\n{t}\n" for p, t in files.items())


def _inherited(level: Level, name: str, args: list[str]) -> str | None:
    """Where the location inherits an equivalent of `name args` from (its server, the http block...), or
    None: not inherited, only nginx's default, or set differently."""
    if any(d.name == name for d in level.directives):
        return None  # the block's own (or its includes'): not inherited
    if name == "proxy_set_header":
        same = [h for h in nginx_effective.headers(level)
                if h.file and identity(name, h.args) == identity(name, args) and _equivalent(name, args, h.args)]
        return f"{render_directive(name, same[-1].args)} from {same[-1].source}" if same else None
    got = nginx_effective.setting(level, name)
    if got.file is None or not _equivalent(name, args, got.args):
        return None
    return f"{render_directive(name, got.args)} from {got.source}"


def _add(items: list[Any], item: Any) -> None:
    if item not in items:
        items.append(item)


def _inherited_copies(block: list[tuple[str, list[str]]], level: Level, ensured: list[str]) -> list[str]:
    """Inherited proxy_set_header lines (from the server or the http block) to copy into a location
    that gets its first header of its own.

    nginx inherits proxy_set_header only into a location that has none of its own, so adding our first
    one would silently drop the Host / X-Forwarded-* headers set above it.
    """
    wanted = [parse_directive(d) for d in ensured]
    if not any(n == "proxy_set_header" for n, _ in wanted):
        return []
    if any(d.name == "proxy_set_header" for d in level.directives):
        return []  # has its own (or an included file's): inherits nothing, nothing to preserve
    taken = {identity(n, a) for n, a in wanted} | {identity(n, a) for n, a in block}
    copies: list[str] = []
    for a in (h.args for h in nginx_effective.headers(level) if h.file):  # not nginx's own defaults
        if identity("proxy_set_header", a) not in taken:
            taken.add(identity("proxy_set_header", a))
            copies.append(render_directive("proxy_set_header", a))
    return copies


def parse_nginx_version(s: str) -> tuple[int, int, int] | None:
    """'nginx version: nginx/1.22.1' (or openresty/1.21.4.1) -> (1, 22, 1); None if absent."""
    m = re.search(r"(?:nginx|openresty)/(\d+)\.(\d+)\.(\d+)", s)
    return (int(m[1]), int(m[2]), int(m[3])) if m else None


def site_plan(host: Host, facts: Facts, directives: list[str],
              masker: Masker | None = None) -> tuple[NginxPlan, FileFact, str]:
    """The planner's verdict on the site (shared by fix-nginx and verify).

    The masker learns the secret arguments of the site and of every file nginx loads before anything
    is planned: a diff, a warning about a copied header or a control's report can quote any of them.
    """
    ws = host.ws
    f = file_fact(facts, ws.nginx_site, host.name, "the nginx site",
                  hint="set nginx_site for this host in the inventory to the site file that holds the location")
    try:
        text = f.data.decode("utf-8")
    except UnicodeDecodeError:
        raise NginxConfError(f"{host.name}: {ws.nginx_site} is not UTF-8 text") from None
    ng = facts.nginx or NginxFact(installed=False)
    if masker is not None:
        learn_nginx_secrets(masker, text, ng.dump)
    if not ng.installed:
        raise AgentError(f"{host.name}: nginx is not installed (nginx -v failed)",
                         hint="is this the right host? fix-nginx manages an installed nginx", kind="nginx")
    included = split_nginx_T(ng.dump) if ng.test_ok else {}
    try:
        plan = plan_site(text, ws.ws_location, directives, nginx_version=parse_nginx_version(ng.version),
                         included=included, site_path=ws.nginx_site)
    except NginxConfError as exc:
        raise type(exc)(f"{host.name}: {ws.nginx_site}: {exc.message}", hint=exc.hint) from None
    return plan, f, text
