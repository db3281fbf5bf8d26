"""`invoke diagnose`: what is cutting the WebSocket connections on a host, ranked, with evidence.

One facts round trip per host gathers the .env, the site, `nginx -T`, the backend container
(runtime env, restarts, start time), the backend's recent log lines and the nginx error log's tail
(remediations/host/programs/agent.py, `diagnose` key). Everything after that is pure: `analyze` turns the
facts into evidence and `rank` turns the evidence into causes, each naming the wsguard command that
fixes it. Secret values and token query parameters are masked before anything is shown.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from remediations.checks.logpatterns import (
    RE_CODE,
    RE_ERROR,
    RE_HEARTBEAT,
    RE_NGINX_TIME,
    RE_RATE,
    RE_SHUTDOWN,
    RE_UPSTREAM_DOWN,
    RE_UPSTREAM_TIMEOUT,
    starts,
)
from remediations.edit import nginx_effective
from remediations.edit.envfile import read_values
from remediations.edit.nginxconf import parse_directive
from remediations.edit.nginxplan import _ms as nginx_ms
from remediations.host.agent_call import call_agent
from remediations.host.transport import Transport
from remediations.model.facts import ContainerFact, DiagnoseFact, Facts, NginxFact, running_config_stale
from remediations.model.inventory import Host
from remediations.model.masking import Masker

ERROR_LOG = "/var/log/nginx/error.log"
DEFAULT_TAIL = 500
FALSE = {"false", "0", "no", "off", ""}
PING_KEYS = ("WS_PING_INTERVAL", "PING_INTERVAL", "WS_HEARTBEAT_INTERVAL")
RATE_KEYS = ("WS_RATE_LIMIT_ENABLED", "RATE_LIMIT_ENABLED")
# The settings of the WebSocket location that diagnose reports (values and defaults: nginx_effective).
WATCHED = ("proxy_read_timeout", "proxy_send_timeout", "proxy_http_version", "proxy_buffering",
           "proxy_socket_keepalive")



@dataclass
class Cause:
    id: str
    title: str
    score: int  # higher first; >= 100 means seen in the logs, below that the configuration alone
    fix: str
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # the log lines that show it (masked)


def _last(pattern: re.Pattern[str], lines: list[str], n: int = 5) -> list[str]:
    return [line for line in lines if pattern.search(line)][-n:]


def _closed_with(code: str, lines: list[str], n: int) -> list[str]:
    """The last n lines that quote close code `code`, read as log_evidence counts them."""
    return [line for line in lines if (m := RE_CODE.search(line)) and m[1] == code][-n:]


def since(nginx_error: list[str], started: float, utc_offset: int) -> list[str]:
    """nginx error-log lines written at or after `started` (epoch s); lines without a time are kept (pure)."""
    kept = []
    for line in nginx_error:
        m = RE_NGINX_TIME.match(line)
        if m is None or calendar.timegm(tuple(map(int, m.groups())) + (0, 0, 0)) - utc_offset >= int(started):
            kept.append(line)
    return kept


def log_evidence(backend: list[str], nginx_error: list[str]) -> dict[str, Any]:
    """Counts of what the log lines show (pure)."""
    codes = Counter(m[1] for line in backend for m in [RE_CODE.search(line)] if m)
    return {
        "backend_lines": len(backend),
        # the limiter's own lines; a close line that quotes its reason is counted as a close code
        "rate_limit_lines": sum(1 for line in backend if RE_RATE.search(line) and not RE_CODE.search(line)),
        "close_codes": dict(sorted(codes.items())),
        "heartbeat_lines": sum(1 for line in backend if RE_HEARTBEAT.search(line)),
        "shutdown_lines": sum(1 for line in backend if RE_SHUTDOWN.search(line)),
        "starts_in_log": starts(backend),
        "error_lines": sum(1 for line in backend if RE_ERROR.search(line)),
        "nginx_error_lines": len(nginx_error),
        "upstream_timed_out": sum(1 for line in nginx_error if RE_UPSTREAM_TIMEOUT.search(line)),
        "upstream_unreachable": sum(1 for line in nginx_error if RE_UPSTREAM_DOWN.search(line)),
    }


def seconds(value: str | None) -> float | None:
    if value is None:
        return None
    ms = nginx_ms(value)
    return None if ms is None else ms / 1000


def location_settings(dump: str, location: str) -> list[dict[str, Any]]:
    """The WebSocket location's effective settings, for each block of it in nginx's tree (pure).

    Values merge as nginx merges them (location, server, http in nginx.conf or any included file, then
    the default; proxy_set_header from the nearest level that sets any); `NAME_from` names the level,
    `NAME_at` the file and line as well.
    """
    found = []
    for lv in nginx_effective.load(dump).find(location):
        s: dict[str, Any] = {"file": lv.file, "line": lv.line, "location": location}
        for name in WATCHED:
            got = nginx_effective.setting(lv, name)
            s[name], s[name + "_from"], s[name + "_at"] = got.value, got.level, got.source
        lines = nginx_effective.headers(lv)
        hmap = {h.args[0].lower(): " ".join(h.args[1:]) for h in lines if h.args}
        s["upgrade_header"] = hmap.get("upgrade")
        s["connection_header"] = hmap.get("connection")
        s["headers_from"] = lines[0].source
        s["read_timeout_seconds"] = seconds(str(s["proxy_read_timeout"]).split()[0])
        found.append(s)
    return found


def _flag_on(env: dict[str, str | None], keys: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(key, value) of the first of `keys` set in env."""
    for k in keys:
        v = env.get(k)
        if v is not None and v.strip() != "":
            return k, v
    return None, None


def ping_interval(env: dict[str, str | None]) -> float | None:
    """The backend's server ping interval in seconds; None when off or not set."""
    _, v = _flag_on(env, PING_KEYS)
    try:
        f = float(v) if v is not None else 0.0
    except ValueError:
        return None
    return f if f > 0 else None


def _started(value: str | None) -> float | None:
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)", value or "")
    if not m:
        return None
    return dt.datetime.strptime(m[1], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC).timestamp()


def desired_read_timeout(host_directives: list[str]) -> float | None:
    for d in host_directives:
        name, args = parse_directive(d)
        if name == "proxy_read_timeout" and args:
            return seconds(args[0])
    return None


# -- the causes: one small rule each, judged on the evidence analyze() gathered ------------------

@dataclass(frozen=True)
class Evidence:
    """What a rule judges by: analyze()'s evidence, what the inventory wants, the masked log lines."""

    ev: dict[str, Any]
    env_flags: dict[str, str]
    want_read_timeout: float | None
    backend: list[str] = field(default_factory=list)
    nginx_error: list[str] = field(default_factory=list)

    @property
    def logs(self) -> dict[str, Any]:
        logs: dict[str, Any] = self.ev["logs"]
        return logs

    @property
    def tail(self) -> int:
        """How many backend log lines were read."""
        return int(self.logs["backend_lines"])

    def closes(self, *codes: str) -> int:
        """How many closes with one of `codes` the backend log shows."""
        return sum(int(self.logs["close_codes"].get(code, 0)) for code in codes)

    @property
    def container(self) -> dict[str, Any]:
        c: dict[str, Any] = self.ev.get("container") or {}
        return c

    @property
    def runtime(self) -> dict[str, str | None]:
        """The running container's environment; {} when it could not be read."""
        env: dict[str, str | None] = self.ev.get("container_env") or {}
        return env

    @property
    def file_env(self) -> dict[str, str | None]:
        env: dict[str, str | None] = self.ev.get("env_file_values") or {}
        return env

    @property
    def locations(self) -> list[dict[str, Any]]:
        locs: list[dict[str, Any]] = self.ev.get("nginx_locations") or []
        return locs

    @property
    def read_timeout(self) -> float | None:
        """The shortest proxy_read_timeout of the WebSocket location's files, in seconds."""
        timeouts = [s["read_timeout_seconds"] for s in self.locations if s.get("read_timeout_seconds") is not None]
        return min(timeouts) if timeouts else None

    @property
    def ping(self) -> float | None:
        ping: float | None = self.ev.get("ping_interval")
        return ping


def backend_down(e: Evidence) -> Cause | None:
    c = e.container
    if not (c.get("exists") is False or (c and not c.get("running", True))):
        return None
    return Cause("backend_down", "the backend container is not running", 300,
                 "docker-compose up -d (then `invoke fix-rate-limit` recreates it with the right env)",
                 f"container {e.ev.get('container_name')} is {c.get('status') or 'missing'}",
                 {"status": c.get("status")}, e.backend[-5:])


def rate_limit(e: Evidence) -> Cause | None:
    """Seen in the log (the limiter's lines, 1008 closes), else configured as in the incident."""
    n_rate, n_1008 = e.logs["rate_limit_lines"], e.closes("1008")
    runtime = e.runtime
    wrong = {k: runtime.get(k) for k, v in e.env_flags.items() if runtime.get(k) != v} if runtime else {}
    rk, rv = _flag_on(runtime, RATE_KEYS)
    enabled = None if rk is None else rv is not None and rv.strip().lower() not in FALSE
    evidence = {"rate_limit_lines": n_rate, "closes_1008": n_1008, "rate_limit_enabled": enabled,
                "enabled_by": rk, "runtime_flags": {k: runtime.get(k) for k in e.env_flags}, "want": e.env_flags}
    if n_rate or n_1008:
        return Cause("rate_limit", "the backend's rate limiter closes connections (1008)",
                     100 + n_rate + n_1008, "invoke fix-rate-limit",
                     f"{n_rate} rate-limit line(s) and {n_1008} 1008 close(s) in the last {e.tail} log lines",
                     evidence, _last(RE_RATE, e.backend) or _closed_with("1008", e.backend, 5))
    if wrong and enabled is not False:
        return Cause("rate_limit", "the backend runs with rate limiting as in the incident", 50,
                     "invoke fix-rate-limit",
                     "the running container does not hold the flags: "
                     + ", ".join(f"{k}={v if v is not None else '(unset)'} (want {e.env_flags[k]})"
                                 for k, v in wrong.items())
                     + f"; no rate-limit line in the last {e.tail} log lines", evidence)
    return None


def stale_container(e: Evidence) -> Cause | None:
    """The .env was fixed but the container still runs the old values."""
    runtime = e.runtime
    stale = {k: {"file": v, "running": runtime.get(k)} for k, v in e.file_env.items()
             if runtime and v is not None and runtime.get(k) != v}
    if not stale:
        return None
    return Cause("stale_container", "the .env was changed but the container still runs the old values", 90,
                 "invoke fix-rate-limit",
                 "differs between the .env and the running container: " + ", ".join(sorted(stale))
                 + " (a `docker-compose restart` keeps the old environment; it must be recreated)",
                 {"keys": stale})


def idle_timeout(e: Evidence) -> Cause | None:
    """nginx's read timeout against the backend's ping interval, or nginx's own timeout lines."""
    read_to, ping, want = e.read_timeout, e.ping, e.want_read_timeout
    n_to, n_1006 = e.logs["upstream_timed_out"], e.closes("1006")
    too_short = read_to is not None and want is not None and read_to < want
    unkept = ping is None or (read_to is not None and ping >= read_to)
    if not ((too_short and unkept) or n_to):
        return None
    score = (100 + n_to + n_1006) if (n_to or n_1006) else 60
    pings = "the backend sends no pings" if ping is None else f"the backend pings every {ping:g}s"
    detail = (f"nginx closes a WebSocket silent for {read_to:g}s (proxy_read_timeout) and {pings}"
              if read_to is not None else "nginx logs upstream timeouts")
    detail += f"; {n_1006} 1006 close(s) in the backend log, {n_to} 'upstream timed out' line(s)"
    return Cause("idle_timeout", "idle connections are cut by nginx's proxy_read_timeout", score,
                 "invoke fix-nginx", detail,
                 {"proxy_read_timeout_seconds": read_to, "ping_interval": ping, "upstream_timed_out_lines": n_to,
                  "closes_1006": n_1006, "want_read_timeout_seconds": want},
                 _last(RE_UPSTREAM_TIMEOUT, e.nginx_error) + _closed_with("1006", e.backend, 3))


def upgrade_headers(e: Evidence) -> Cause | None:
    """The first WebSocket location that does not proxy the upgrade."""
    for s in e.locations:
        missing = []
        if str(s.get("proxy_http_version")) != "1.1":
            missing.append(f"proxy_http_version {s.get('proxy_http_version')} (want 1.1)")
        if not s.get("upgrade_header"):
            missing.append("proxy_set_header Upgrade")
        if not s.get("connection_header"):
            missing.append("proxy_set_header Connection")
        if missing:
            return Cause("upgrade_headers", "the WebSocket location does not proxy the upgrade", 70,
                         "invoke fix-nginx", f"{s['file']} location {s['location']}: " + ", ".join(missing),
                         {"location": s})
    return None


def heartbeat(e: Evidence) -> Cause | None:
    n_hb, n_1011 = e.logs["heartbeat_lines"], e.closes("1011")
    if not (n_hb or n_1011):
        return None
    return Cause("heartbeat", "clients miss the server's heartbeat (1011 ping timeout)", 100 + n_hb + n_1011,
                 "none in wsguard: raise the server's ping timeout or check the clients' network "
                 "(`invoke probe` reports the ping interval)",
                 f"{n_1011} 1011 close(s), {n_hb} heartbeat line(s)",
                 {"closes_1011": n_1011, "heartbeat_lines": n_hb, "ping_interval": e.ping},
                 _last(RE_HEARTBEAT, e.backend))


def restarts(e: Evidence) -> Cause | None:
    """Docker's restart count, the backend's shutdown lines, 1001/1012 closes, more than one start line."""
    count = int(e.container.get("restart_count") or 0)
    n_down = e.logs["shutdown_lines"]
    n_away = e.closes("1001", "1012")
    extra_starts = max(0, e.logs["starts_in_log"] - 1)
    if not (count or n_down or n_away or extra_starts):
        return None
    uptime = e.ev.get("uptime_seconds")
    return Cause("restarts", "the backend restarted while clients were connected", 80 + count + n_away,
                 "none in wsguard: find why it restarts (`invoke monitor` follows its log)",
                 f"restart count {count}, {n_down} shutdown line(s), {extra_starts} restart(s) in "
                 f"the log, {n_away} 1001/1012 close(s); up {uptime}s",
                 {"restart_count": count, "shutdown_lines": n_down, "closes_1001_1012": n_away,
                  "uptime_seconds": uptime}, _last(RE_SHUTDOWN, e.backend))


def upstream_unreachable(e: Evidence) -> Cause | None:
    n = e.logs["upstream_unreachable"]
    if not n:
        return None
    return Cause("upstream_unreachable", "nginx could not reach the backend (502s)", 30 + n,
                 "none in wsguard: is the backend listening? (`invoke monitor` follows both logs)",
                 f"{n} connect()-failed / upstream-closed line(s) in nginx's error log",
                 {"lines": n}, _last(RE_UPSTREAM_DOWN, e.nginx_error))


def nginx_not_reloaded(e: Evidence) -> Cause | None:
    stale = e.ev.get("nginx_stale")
    if not stale:
        return None
    return Cause("nginx_not_reloaded", "nginx runs an older configuration than the one on disk", 40,
                 "invoke fix-nginx", stale, {})


Rule = Callable[[Evidence], Cause | None]

# rank() sorts by score, highest first, and equal scores keep this order, which follows the scores the rules
# give: backend_down 300; rate_limit, idle_timeout and heartbeat 100 and more when the log shows them (else
# 50 and 60 on the configuration alone); stale_container 90, restarts 80 and more, upgrade_headers 70,
# upstream_unreachable 30 and more, nginx_not_reloaded 40.
CAUSES: tuple[Rule, ...] = (backend_down, rate_limit, idle_timeout, heartbeat, stale_container, restarts,
                            upgrade_headers, upstream_unreachable, nginx_not_reloaded)


def rank(ev: dict[str, Any], env_flags: dict[str, str], want_read_timeout: float | None,
         lines: dict[str, list[str]] | None = None) -> list[Cause]:
    """Likely causes, most likely first (pure: `ev` is what analyze() gathered)."""
    lines = lines or {}
    e = Evidence(ev, env_flags, want_read_timeout, lines.get("backend", []), lines.get("nginx_error", []))
    causes = [cause for rule in CAUSES if (cause := rule(e)) is not None]
    return sorted(causes, key=lambda c: -c.score)


def facts_request(host: Host, tail: int) -> dict[str, Any]:
    ws = host.ws
    return {"op": "facts", "files": [ws.env_file], "container": ws.backend_container, "nginx": True,
            "diagnose": {"container": ws.backend_container, "tail": tail, "error_log": ERROR_LOG,
                         "error_log_tail": tail}}


def analyze(host: Host, facts: Facts, masker: Masker) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Evidence (JSON-able, masked) and the masked log lines, from one facts answer."""
    ws = host.ws
    env_fact = facts.file(ws.env_file)
    file_env: dict[str, str | None] = {}
    env_note = None
    if env_fact and env_fact.exists:
        file_env = read_values(env_fact.data.decode("utf-8", "replace"))
    else:
        env_note = (env_fact.error if env_fact else None) or f"{ws.env_file} does not exist"
    runtime: dict[str, str | None] = dict(facts.container_env() or {})
    masker.add_env(file_env)
    masker.add_env(runtime)
    d = facts.diagnose or DiagnoseFact()
    bl, nl = d.backend_logs, d.nginx_error_log
    backend = [masker(x) for x in bl.lines]
    c = facts.container
    started = _started(c.started_at) if c and c.exists else None
    nginx_error = [masker(x) for x in nl.lines]
    # 502s logged before the current container started belong to its restart window, not to now.
    nginx_error = since(nginx_error, started, d.utc_offset) if started else nginx_error
    ng = facts.nginx or NginxFact(installed=False)
    locs: list[dict[str, Any]] = []
    if ng.installed and ng.test_ok:
        locs = location_settings(ng.dump, ws.ws_location)
    interesting = sorted({*ws.env_flags, *RATE_KEYS, *PING_KEYS, "WS_MAX_MESSAGES_PER_MINUTE"})
    ev: dict[str, Any] = {
        "container_name": ws.backend_container,
        "container": _container_evidence(c),
        "uptime_seconds": round(d.now - started) if started and d.now else None,
        "env_file": ws.env_file,
        "env_file_note": env_note,
        "env_file_flags": {k: file_env.get(k) for k in interesting if k in file_env},
        "container_env_flags": {k: runtime.get(k) for k in interesting if k in runtime},
        "env_file_values": file_env,  # dropped before output (masked, but it is the whole file)
        "container_env": runtime,  # dropped before output
        "ping_interval": ping_interval(runtime if runtime else file_env),
        "nginx_locations": locs,
        "nginx_test_ok": ng.test_ok if ng.installed else None,
        "nginx_test_error": ng.test_error or None,
        "nginx_stale": running_config_stale(ng) if ng.installed else None,
        "backend_log_error": bl.error,
        "nginx_error_log_error": nl.error,
        "logs": log_evidence(backend, nginx_error),
    }
    if ng.installed and not locs and ng.test_ok:
        ev["nginx_note"] = f"no `location {ws.ws_location}` in nginx -T (set ws_location in the inventory)"
    return ev, {"backend": backend, "nginx_error": nginx_error}


def _container_evidence(c: ContainerFact | None) -> dict[str, Any]:
    if c is None:
        return {}
    if not c.exists:
        return {"exists": False}
    return {"exists": True, "running": c.running, "status": c.status, "started_at": c.started_at,
            "restart_count": c.restart_count, "image": c.image}


def diagnose_host(t: Transport, tail: int, masker: Masker) -> dict[str, Any]:
    """One facts round trip, then the pure analysis: the host's evidence with its ranked causes."""
    return evaluate(t.host, Facts.parse(call_agent(t, facts_request(t.host, tail))), masker)


def evaluate(host: Host, facts: Facts, masker: Masker) -> dict[str, Any]:
    """Facts -> the evidence shown (pure): analyzed, ranked, masked; raw env values dropped."""
    ev, lines = analyze(host, facts, masker)
    causes = rank(ev, host.ws.env_flags, desired_read_timeout(host.ws.nginx_directives), lines)
    for k in ("env_file_values", "container_env"):
        ev.pop(k, None)
    ev["causes"] = [asdict(c) for c in causes]
    ev["recent"] = {"backend": [x for x in lines["backend"] if _interesting(x)][-15:],
                    "nginx_error": lines["nginx_error"][-10:]}
    return masker.deep(ev)  # type: ignore[return-value]


def _interesting(line: str) -> bool:
    return bool(RE_RATE.search(line) or RE_CODE.search(line) or RE_HEARTBEAT.search(line)
                or RE_SHUTDOWN.search(line) or RE_ERROR.search(line))


def report_lines(ev: dict[str, Any]) -> list[str]:
    """Human lines for one host's evidence (already masked)."""
    out = []
    for i, c in enumerate(ev.get("causes", []), 1):
        out.append(f"  {i}. {c['id']}: {c['title']}")
        out.append(f"     evidence: {c['detail']}")
        out.append(f"     fix: {c['fix']}")
        out.extend(f"     | {line}" for line in c["lines"][-3:])
    for s in ev.get("nginx_locations", []):
        out.append(f"  nginx {s['file']} location {s['location']}: proxy_read_timeout {s['proxy_read_timeout']} "
                   f"({s['proxy_read_timeout_at']}), proxy_http_version {s['proxy_http_version']}, "
                   f"Upgrade {'set' if s['upgrade_header'] else 'MISSING'}, proxy_buffering {s['proxy_buffering']}")
    c = ev.get("container") or {}
    ping = ev.get("ping_interval")
    out.append(f"  backend {ev['container_name']}: {c.get('status', 'missing')}, up {ev.get('uptime_seconds')}s, "
               f"restarts {c.get('restart_count', 0)}, ping interval {f'{ping:g}s' if ping else 'off'}")
    out.append(f"  .env flags: {_kv(ev.get('env_file_flags'))}; container env: {_kv(ev.get('container_env_flags'))}")
    lg = ev["logs"]
    out.append(f"  logs: {lg['backend_lines']} backend line(s) read, close codes {_kv(lg['close_codes']) or 'none'}; "
               f"{lg['nginx_error_lines']} nginx error line(s), {lg['upstream_timed_out']} upstream timed out")
    for k in ("env_file_note", "nginx_note", "nginx_test_error", "backend_log_error", "nginx_error_log_error"):
        if ev.get(k):
            out.append(f"  note: {ev[k]}")
    return out


def _kv(d: dict[str, Any] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (d or {}).items())
