"""The stability probe: a real WebSocket held open, streamed to and idled, every disconnect explained.

A cycle streams (one chat message that makes the server send N chunks: surfaces a rate limiter), then
idles M seconds without sending anything and with client pings OFF (surfaces a proxy's read timeout);
cycles repeat until --duration. A disconnect is recorded with its close code, reason, the time since
connect and how long the connection had been silent, classified, and followed by a reconnect with
exponential backoff (1 s doubling to 30 s, reset once a connection is open again).

What nginx does on `proxy_read_timeout` was measured on the lab (nginx 1.22): it closes both TCP
connections WITHOUT a close frame, so the client sees 1006 after exactly the timeout of silence, the
backend logs `code=1006` too, and nginx's error log at its default level says nothing (its "upstream
timed out" line is logged at `info`).

Pure pieces (classify, summarize, verdict) are unit-tested; run_probe is the I/O shell.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from remediations.checks.wsclient import (
    Closed,
    ConnectionClosed,
    WSConnection,
    WSError,
    connect,
    mask_url,
    ping_intervals,
)
from remediations.edit.envfile import read_values
from remediations.edit.secrets import learn_env_text
from remediations.host.agent_call import call_agent
from remediations.model.facts import Facts, file_fact
from remediations.model.masking import Masker

DEFAULT_MESSAGE = '{"message": "wsguard probe", "chunks": {chunks}}'
BACKOFF_START, BACKOFF_MAX = 1.0, 30.0
NGINX_DEFAULT_READ_TIMEOUT = 60.0
CDN_IDLE_TIMEOUT = 100.0  # Cloudflare's proxy idle timeout for WebSockets
SILENT_AFTER = 1.0  # a drop after at least this much silence counts as an idle timeout
STREAM_QUIET = 1.5  # a stream without an end marker is over after this long without a message

FIXES = {
    "rate_limit": "invoke fix-rate-limit",
    "idle_timeout": "invoke fix-nginx",
    "heartbeat": "invoke diagnose",
    "server_restart": "invoke diagnose",
    "dropped": "invoke diagnose",
    "policy": "invoke diagnose",
    "server_close": "invoke diagnose",
    "other": "invoke diagnose",
}


@dataclass
class Disconnect:
    at: float  # seconds since the probe started
    code: int
    reason: str
    clean: bool  # a close frame arrived (False: reported as 1006)
    connected_for: float
    silence: float  # seconds without any frame either way before the close
    phase: str  # stream | idle
    cause: str = ""
    detail: str = ""


@dataclass
class ProbeConfig:
    url: str
    token: str | None = None
    message: str = DEFAULT_MESSAGE
    duration: float = 300.0
    stream: int = 30
    idle: float = 75.0
    connect_timeout: float = 10.0
    reply_timeout: float = 10.0  # the first reply to a chat message
    token_param: str = "token"  # noqa: S105 (a parameter name)
    token_header: str | None = None  # the host's ws_token_header: the token goes there, not in the URL


@dataclass
class ProbeRun:
    url: str  # masked
    duration: float
    elapsed: float = 0.0
    connected: float = 0.0  # seconds with an open connection
    connections: int = 0
    connect_failures: list[dict[str, Any]] = field(default_factory=list)
    disconnects: list[Disconnect] = field(default_factory=list)
    ping_intervals: list[float] = field(default_factory=list)
    pings: int = 0
    cycles: int = 0
    chunks: int = 0
    no_reply: int = 0  # chat messages that got no reply at all within reply_timeout
    interrupted: bool = False
    fatal: str | None = None  # why the probe gave up without ever connecting


# -- pure pieces -------------------------------------------------------------------------------

def _near(value: float, target: float, tolerance: float = 0.1) -> bool:
    return abs(value - target) <= max(1.0, target * tolerance)


def classify(code: int, reason: str, clean: bool, silence: float, phase: str = "idle") -> tuple[str, str]:
    """(cause, explanation) of one disconnect, from what the client saw."""
    r = reason.lower()
    if code == 1008:
        if "rate" in r or "limit" in r or "too many" in r:
            return "rate_limit", f"the server's rate limiter closed the connection (1008 {reason!r})"
        return "policy", f"the server closed for a policy violation (1008 {reason!r})"
    if code == 1006 or not clean:
        if silence >= SILENT_AFTER:
            s = f"{silence:.1f}s"
            if _near(silence, NGINX_DEFAULT_READ_TIMEOUT):
                where = "matches nginx's default proxy_read_timeout (60s)"
            elif _near(silence, CDN_IDLE_TIMEOUT):
                where = "matches a CDN's idle timeout (100s, e.g. Cloudflare)"
            else:
                where = "an idle timeout on the path (nginx proxy_read_timeout, a load balancer or a CDN)"
            return "idle_timeout", (f"dropped without a close frame after {s} of silence: {where}; "
                                    "raise the proxy's read timeout or have the server ping more often")
        return "dropped", (f"dropped without a close frame while active ({phase}): a network drop, a crashed "
                           "backend or a proxy restart")
    if code == 1011:
        return "heartbeat", (f"1011 {reason!r}: a heartbeat (ping) timeout or an internal server error; "
                             "check WS_PING_INTERVAL and the ping timeout against the path's latency")
    if code in (1001, 1012):
        return "server_restart", f"the server went away or restarted ({code} {reason!r})"
    if code in (1000, 1005):
        return "server_close", f"the server closed the connection normally ({code} {reason!r})"
    return "other", f"closed with {code} {reason!r}"


def summarize(run: ProbeRun) -> dict[str, Any]:
    """The evidence of one probe: numbers first, then the events."""
    by_code = Counter(str(d.code) for d in run.disconnects)
    by_cause = Counter(d.cause for d in run.disconnects)
    iv = run.ping_intervals
    pings: dict[str, Any] = {"count": run.pings}
    if iv:
        pings.update(interval_mean=round(statistics.fmean(iv), 2), interval_median=round(statistics.median(iv), 2),
                     interval_min=round(min(iv), 2), interval_max=round(max(iv), 2))
    elapsed = run.elapsed or 0.0
    return {
        "url": run.url,
        "verdict": verdict(run),
        "duration": run.duration,
        "elapsed": round(elapsed, 2),
        "connected_seconds": round(run.connected, 2),
        "connected_pct": round(100.0 * run.connected / elapsed, 1) if elapsed > 0 else 0.0,
        "connections": run.connections,
        "cycles": run.cycles,
        "chunks_received": run.chunks,
        "disconnects": len(run.disconnects),
        "disconnects_by_code": dict(sorted(by_code.items())),
        "disconnects_by_cause": dict(by_cause.most_common()),
        "first_disconnect_after": round(run.disconnects[0].at, 2) if run.disconnects else None,
        "pings": pings,
        "connect_failures": run.connect_failures,
        "no_reply": run.no_reply,
        "interrupted": run.interrupted,
        "fixes": sorted({FIXES[c] for c in by_cause}),
        "events": [{k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(d).items()}
                   for d in run.disconnects],
    }


def verdict(run: ProbeRun) -> str:
    """stable (exit 0), unstable (exit 2) or unreachable (exit 1: never connected)."""
    if run.connections == 0:
        return "unreachable"
    if run.disconnects or run.connect_failures:
        return "unstable"
    return "stable"


EXIT_CODES = {"stable": 0, "unstable": 2, "unreachable": 1}


def summary_lines(ev: dict[str, Any]) -> list[str]:
    """Human lines for one probe's evidence (masked already)."""
    lines = [f"  connected {ev['connected_pct']}% of {ev['elapsed']:.1f}s; {ev['connections']} connection(s), "
             f"{ev['cycles']} cycle(s), {ev['chunks_received']} chunk(s) received"]
    if ev["disconnects"]:
        codes = ", ".join(f"{c} x{n}" for c, n in ev["disconnects_by_code"].items())
        lines.append(f"  disconnects: {ev['disconnects']} ({codes}); first after {ev['first_disconnect_after']:.1f}s")
    else:
        lines.append("  disconnects: none")
    for e in ev["events"][:10]:
        lines.append(f"    +{e['at']:.1f}s {e['code']} {e['reason']!r} ({e['phase']}) after {e['connected_for']:.1f}s "
                     f"connected, {e['silence']:.1f}s silent -> {e['cause']}: {e['detail']}")
    if len(ev["events"]) > 10:
        lines.append(f"    ... {len(ev['events']) - 10} more")
    for f in ev["connect_failures"][:3]:
        lines.append(f"  reconnect failed at +{f['at']:.1f}s: {f['error']}")
    p = ev["pings"]
    if p.get("interval_mean") is not None:
        lines.append(f"  server pings: {p['count']} seen, every {p['interval_median']:.1f}s "
                     f"(min {p['interval_min']:.1f}s, max {p['interval_max']:.1f}s)")
    elif p["count"]:
        lines.append(f"  server pings: {p['count']} seen (too few for an interval)")
    else:
        lines.append("  server pings: none seen (an idle connection relies on the proxy's read timeout alone)")
    if ev["no_reply"]:
        lines.append(f"  {ev['no_reply']} chat message(s) got no reply: is --message the service's format?")
    for fix in ev["fixes"]:
        lines.append(f"  fix: {fix}")
    return lines


# -- the I/O shell -------------------------------------------------------------------------------

def render_message(template: str, chunks: int) -> str:
    return template.replace("{chunks}", str(chunks))


class _Conn:
    """One open connection and the times of its last traffic."""

    def __init__(self, ws: WSConnection, t0: float) -> None:
        self.ws = ws
        self.opened = t0
        self.last_rx = t0
        self.last_tx = t0

    def last_activity(self) -> float:
        return max(self.last_rx, self.last_tx, self.ws.pings[-1] if self.ws.pings else 0.0)


def _end_marker(text: str) -> bool:
    try:
        msg = json.loads(text)
    except ValueError:
        return False
    return isinstance(msg, dict) and msg.get("type") in ("done", "end", "complete")


def _stream(c: _Conn, cfg: ProbeConfig, run: ProbeRun, deadline: float) -> None:
    """Send one chat message and read its stream to the end marker (or a quiet gap). Raises ConnectionClosed."""
    c.ws.send_text(render_message(cfg.message, cfg.stream))
    c.last_tx = time.monotonic()
    got = 0
    while True:
        now = time.monotonic()
        wait = (cfg.reply_timeout if got == 0 else STREAM_QUIET)
        wait = min(wait, max(deadline - now, 0.0) + STREAM_QUIET)
        text = c.ws.recv(wait)
        if text is None:
            if got == 0:
                run.no_reply += 1
            return
        c.last_rx = time.monotonic()
        if _end_marker(text):
            return
        got += 1
        run.chunks += 1


def _idle(c: _Conn, seconds: float) -> None:
    """Send nothing for `seconds` (server pings are answered by the client). Raises ConnectionClosed."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if c.ws.recv(left) is not None:
            c.last_rx = time.monotonic()


def run_probe(cfg: ProbeConfig, on_event: Callable[[str], None] | None = None,
              masker: Masker | None = None) -> ProbeRun:
    """Hold a connection for cfg.duration seconds of stream/idle cycles; reconnect with backoff."""
    masker = masker or Masker()
    if cfg.token:
        masker.add([cfg.token])

    run = ProbeRun(url=masker(mask_url(cfg.url, cfg.token_param)), duration=cfg.duration)
    say = on_event or (lambda _msg: None)
    start = time.monotonic()
    deadline = start + cfg.duration
    backoff = BACKOFF_START
    c: _Conn | None = None
    try:
        while time.monotonic() < deadline:
            if c is None:
                try:
                    ws = connect(cfg.url, token=cfg.token, token_param=cfg.token_param,
                                 token_in_header=cfg.token_header,
                                 timeout=min(cfg.connect_timeout, max(deadline - time.monotonic(), 1.0)))
                except WSError as e:
                    msg = masker(e.message)
                    run.connect_failures.append({"at": round(time.monotonic() - start, 2), "error": msg,
                                                 "status": e.status})
                    say(f"connect failed: {msg}")
                    if run.connections == 0 and e.status in (400, 401, 403, 404, 405, 426):
                        run.fatal = msg  # no retry can fix a refused handshake
                        break
                    time.sleep(max(0.0, min(backoff, deadline - time.monotonic())))
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                backoff = BACKOFF_START
                run.connections += 1
                c = _Conn(ws, time.monotonic())
                say(f"connected ({run.connections})")
            phase = "stream"
            try:
                _stream(c, cfg, run, deadline)
                phase = "idle"
                left = deadline - time.monotonic()
                if left > 0:
                    _idle(c, min(cfg.idle, left))
                run.cycles += 1
            except ConnectionClosed as e:
                _record(run, c, e.closed, phase, start, say, masker)
                c = None
                time.sleep(max(0.0, min(backoff, deadline - time.monotonic())))
            except WSError as e:  # a send that failed oddly: treat as a drop
                _record(run, c, Closed(1006, "", False), phase, start, say, masker)
                c = None
                say(masker(e.message))
    except KeyboardInterrupt:
        run.interrupted = True
    finally:
        if c is not None:
            _collect(run, c)
            c.ws.close()
    run.elapsed = time.monotonic() - start
    return run


def _collect(run: ProbeRun, c: _Conn) -> None:
    run.connected += time.monotonic() - c.opened
    run.pings += len(c.ws.pings)
    run.ping_intervals += ping_intervals(c.ws.pings)


def _record(run: ProbeRun, c: _Conn, closed: Closed, phase: str, start: float,
            say: Callable[[str], None], masker: Masker) -> None:
    now = time.monotonic()
    silence = max(0.0, now - c.last_activity())
    reason = masker(closed.reason)
    cause, detail = classify(closed.code, reason, closed.clean, silence, phase)
    d = Disconnect(at=now - start, code=closed.code, reason=reason, clean=closed.clean,
                   connected_for=now - c.opened, silence=silence, phase=phase, cause=cause, detail=detail)
    run.disconnects.append(d)
    _collect(run, c)
    say(f"disconnect {d.code} {d.reason!r} after {d.connected_for:.1f}s ({d.silence:.1f}s silent) -> {cause}")


# -- hosts of an inventory, and the run record -----------------------------------------------------

def host_token(t: Any, masker: Masker) -> str | None:
    """The client token from the host's .env key `ws_token_key`, read over the transport (memory only)."""
    ws = t.host.ws
    if not ws.ws_token_key:
        return None
    facts = Facts.parse(call_agent(t, {"op": "facts", "files": [ws.env_file]}))
    f = file_fact(facts, ws.env_file, t.host.name, "the app's .env",
                  hint="set env_file (or app_dir) for this host, or pass --token-env")
    text = f.data.decode("utf-8", "replace")
    learn_env_text(masker, text)
    token = read_values(text).get(ws.ws_token_key)
    if token:
        masker.add([token])
    return token


def token_refusal(target: str, own: str | None, send_token_to: str | None = None) -> str | None:
    """Why a host's token must not go to `target`, or None when it may.

    A token goes only to the host of the host's own ws_url (over TLS when ws_url uses it), or to the
    host named by --send-token-to: a --url pointing elsewhere (a typo, a proxy, someone else's server)
    must not collect a valid credential.
    """
    to = urlsplit(target)
    where = (to.hostname or "").lower()
    if send_token_to and where == send_token_to.strip().lower():
        return None
    if not own:
        return (f"not sent to {where}: this host has no ws_url to compare with; "
                f"pass --send-token-to {where} to send it")
    mine = urlsplit(own)
    if where != (mine.hostname or "").lower():
        return (f"not sent to {where}: the token belongs to {mine.hostname} (this host's ws_url); "
                f"pass --send-token-to {where} to send it there")
    if mine.scheme == "wss" and to.scheme != "wss":
        return (f"not sent to {where} over {to.scheme}://: this host's ws_url uses wss:// and the token "
                f"would travel unencrypted; pass --send-token-to {where} to send it anyway")
    return None


def fill_result(result: Any, run: ProbeRun) -> Any:
    """A HostResult (the result shape of docs/ARCHITECTURE.md) from one probe; the numbers go in evidence."""
    result.evidence.update(summarize(run))
    if run.connections == 0:
        msg = run.fatal or (run.connect_failures[-1]["error"] if run.connect_failures else "no connection")
        result.fail("websocket", f"could not connect: {msg}")
    return result


def exit_code(results: list[Any]) -> int:
    """1 an error on any target, else 2 if any probe saw instability, else 0."""
    if any(r.status in ("failed", "unreachable") for r in results):
        return 1
    if any(r.evidence.get("verdict") == "unstable" for r in results):
        return 2
    return 0


def result_lines(r: Any) -> list[str]:
    ev = r.evidence
    head = f"{r.host} {ev.get('url', '')}".rstrip()
    if r.status == "skipped":
        return [f"{r.host}: skipped"] + [f"  {w}" for w in r.warnings]
    warnings = [f"  warning: {w}" for w in r.warnings]
    if r.error and not ev.get("connections"):
        return [f"{head}: COULD NOT CONNECT", f"  error: {r.error['message']}", *warnings]
    if r.error:
        return [f"{head}: ERROR", f"  error: {r.error['message']}", *warnings]
    return [f"{head}: {ev['verdict'].upper()}"] + summary_lines(ev) + warnings
