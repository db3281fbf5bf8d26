"""The patterns that read backend and nginx log lines, for diagnose (counts, evidence) and monitor (line kinds).

One place, so that a line diagnose counts as a restart is the line monitor colours as one. "The lab
backend" is lab/backend/server.py, the stand-in for the chat backend; its lines look like
`2026-01-01T00:00:01.000Z disconnect conn=1 peer=... code=1008 reason='Rate limit exceeded'`.
"""

from __future__ import annotations

import re

# -- backend lines (`docker logs` of the backend container) ---------------------------------------

# A rate limiter's own line: the lab backend's `Rate limit exceeded conn=...`, limiters' "rate limited" /
# "rate limit reached", an access log's 429 `Too Many Requests`. Not `rate_limit_enabled=True` (the lab's
# settings line).
RE_RATE = re.compile(r"(?i)rate[ _-]?limit(?:ed\b|ing\b| exceeded| reached| hit)|too many (?:messages|requests)")
# A WebSocket close code: the lab backend's `code=1008`, also `close_code=1006`, `close code: 1001`, `code '1011'`.
RE_CODE = re.compile(r"(?i)\b(?:close[_ ]?)?code[=: ]\s*'?(\d{4})\b")
# A missed heartbeat: python websockets (the lab backend, uvicorn's websockets) closes with 1011 "keepalive
# ping timeout"; other servers say "ping timeout", "pong not received" or "heartbeat".
RE_HEARTBEAT = re.compile(r"(?i)keepalive ping timeout|ping timeout|pong (?:not )?received|heartbeat")
# The backend stopping: the lab backend's `SIGTERM received: shutting down`, uvicorn's `Shutting down`,
# gunicorn's `Shutting down: Master`, other servers' "received signal".
RE_SHUTDOWN = re.compile(r"(?i)shutting down|received signal|sigterm received")
# Anything that says it failed: log levels (uvicorn's `ERROR:`), exceptions, Python tracebacks.
RE_ERROR = re.compile(r"(?i)\b(?:error|exception|traceback)\b")
# A disconnect (monitor): the lab backend's `disconnect conn=...`, uvicorn's "connection closed", a closed
# line that quotes a 1xxx code.
RE_DISCONNECT = re.compile(r"(?i)disconnect|connection (?:closed|lost|reset)|\bclosed?\b.*\b1\d{3}\b")
# WebSocket traffic (monitor): the lab backend's `connect conn=...`, uvicorn's `"WebSocket /ws/..." [accepted]`,
# any line naming the /ws/ location.
RE_WEBSOCKET = re.compile(r"(?i)websocket|/ws/|\bconnect(?:ed|ion)?\b|\bconnect conn=|\bws\b")

# A start line is one a backend process prints once each time it starts, before it serves:
#   `settings: host=...` and `listening on 127.0.0.1:8000` (the lab backend, in that order),
#   `server listening on ...` (python websockets' own server), `Listening on TCP address ...` (daphne),
#   `Started server process [1]` and `Uvicorn running on http://...` (uvicorn),
#   ` * Running on http://...` (Flask/werkzeug, hypercorn).
# One start prints several of them, so starts() counts the most frequent marker, never their sum.
_START_MARKERS = (r"\bsettings:", r"\blistening on\b", r"started server process", r"running on (?:https?://|\d)")
START_MARKERS = tuple(re.compile(m, re.IGNORECASE) for m in _START_MARKERS)
RE_START = re.compile("|".join(_START_MARKERS), re.IGNORECASE)  # any marker: the line is a start line


def starts(lines: list[str]) -> int:
    """How many times the backend started in `lines` (pure)."""
    return max(sum(1 for line in lines if p.search(line)) for p in START_MARKERS)


# -- nginx error-log lines ------------------------------------------------------------------------

# The line's time, in the host's local time: `2026/01/01 00:00:09 [error] 7#7: ...`.
RE_NGINX_TIME = re.compile(r"^(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) ")
# nginx gave up waiting on the backend: `upstream timed out (110: ...) while proxying upgraded connection`
# is proxy_read_timeout cutting an idle WebSocket.
RE_UPSTREAM_TIMEOUT = re.compile(r"upstream timed out")
# nginx could not reach the backend (a 502): `connect() failed (111: Connection refused) while connecting to
# upstream`, `no live upstreams`, `upstream prematurely closed connection`.
RE_UPSTREAM_DOWN = re.compile(r"connect\(\) failed|no live upstreams|upstream prematurely closed")
# nginx's level tag (monitor): the levels that mean something failed, and the warning.
RE_NGINX_ERROR = re.compile(r"\[(?:error|crit|alert|emerg)\]")
RE_NGINX_WARN = re.compile(r"\[warn\]")
