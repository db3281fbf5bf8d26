"""The log patterns: the lines each backend or nginx prints, and the near misses they must not take (pure)."""

from __future__ import annotations

import pytest

from remediations.checks.diagnose import log_evidence
from remediations.checks.logpatterns import (
    RE_CODE,
    RE_DISCONNECT,
    RE_HEARTBEAT,
    RE_NGINX_ERROR,
    RE_NGINX_TIME,
    RE_NGINX_WARN,
    RE_RATE,
    RE_SHUTDOWN,
    RE_START,
    RE_UPSTREAM_DOWN,
    RE_UPSTREAM_TIMEOUT,
    START_MARKERS,
    starts,
)
from remediations.checks.monitor import kind_of

TS = "2026-01-01T00:00:00.000Z"
LAB_START = [f"{TS} settings: host=0.0.0.0 port=8000 auth_token=set rate_limit_enabled=True "
             "max_messages_per_minute=20 ping_interval=off websockets=10.4",
             f"{TS} listening on 0.0.0.0:8000"]
UVICORN_START = ["INFO:     Started server process [1]", "INFO:     Waiting for application startup.",
                 "INFO:     Application startup complete.",
                 "INFO:     Uvicorn running on http://0.0.0.0:8000 (Press CTRL+C to quit)"]
START_LINES = [*LAB_START, UVICORN_START[0], UVICORN_START[3], "INFO:websockets.server:server listening on [::]:8765",
               " * Running on http://127.0.0.1:5000", "Listening on TCP address 0.0.0.0:8000"]


@pytest.mark.parametrize("line", START_LINES)
def test_a_start_line_is_one_for_diagnose_and_monitor(line: str) -> None:
    assert RE_START.search(line)
    assert any(p.search(line) for p in START_MARKERS)
    assert kind_of("backend", line) == "restart"


@pytest.mark.parametrize("line", ["GET /listening-on 200", "the server is running on fumes",
                                  "connect conn=1 peer=127.0.0.1:5000"])
def test_not_a_start_line(line: str) -> None:
    assert not RE_START.search(line)
    assert not any(p.search(line) for p in START_MARKERS)


def test_one_start_counts_once_though_it_prints_several_markers() -> None:
    assert starts(LAB_START) == 1
    assert starts(UVICORN_START) == 1
    assert starts(LAB_START + [f"{TS} SIGTERM received: shutting down", f"{TS} stopped"] + LAB_START) == 2
    assert starts([]) == 0
    assert log_evidence(LAB_START * 3, [])["starts_in_log"] == 3


def test_rate_limit_lines() -> None:
    assert RE_RATE.search(f"{TS} Rate limit exceeded conn=1 peer=127.0.0.1:5000 count=20 limit=20")
    assert RE_RATE.search('INFO:     10.0.0.1:5000 - "GET /api HTTP/1.1" 429 Too Many Requests')
    assert RE_RATE.search("client rate-limited")
    assert not RE_RATE.search(LAB_START[0])  # rate_limit_enabled=True is a setting, not the limiter acting


def test_close_codes() -> None:
    def code(line: str) -> str | None:
        m = RE_CODE.search(line)
        return m[1] if m else None

    assert code(f"{TS} disconnect conn=1 peer=127.0.0.1:5000 code=1008 reason='Rate limit exceeded'") == "1008"
    assert code("closed close_code=1006") == "1006"
    assert code("close code: 1001") == "1001"
    assert code("code '1011'") == "1011"
    assert code("peer=127.0.0.1:51008") is None and code("exit code 1") is None


def test_heartbeat_shutdown_and_disconnect_lines() -> None:
    assert RE_HEARTBEAT.search("sent 1011 (internal error) keepalive ping timeout; no close frame received")
    assert not RE_HEARTBEAT.search(LAB_START[0])  # ping_interval=off
    assert RE_SHUTDOWN.search(f"{TS} SIGTERM received: shutting down")
    assert RE_SHUTDOWN.search("INFO:     Shutting down")
    assert RE_DISCONNECT.search(f"{TS} disconnect conn=2 peer=127.0.0.1:5001 code=1006 reason=''")
    assert RE_DISCONNECT.search("INFO:     connection closed")


def test_nginx_lines() -> None:
    timed_out = ("2026/01/01 00:00:09 [error] 7#7: *3 upstream timed out (110: Connection timed out) while "
                 "proxying upgraded connection, client: 10.0.0.1")
    refused = "2026/01/01 00:00:02 [error] 7#7: *1 connect() failed (111: Connection refused) while connecting"
    assert RE_UPSTREAM_TIMEOUT.search(timed_out) and not RE_UPSTREAM_DOWN.search(timed_out)
    assert RE_UPSTREAM_DOWN.search(refused) and not RE_UPSTREAM_TIMEOUT.search(refused)
    assert RE_UPSTREAM_DOWN.search("[error] 7#7: *5 no live upstreams while connecting to upstream")
    assert RE_UPSTREAM_DOWN.search("[error] 7#7: *6 upstream prematurely closed connection while reading")
    m = RE_NGINX_TIME.match(refused)
    assert m is not None and m.groups() == ("2026", "01", "01", "00", "00", "02")
    assert RE_NGINX_TIME.match("a line without a time") is None
    assert RE_NGINX_ERROR.search("[crit] 7#7: x") and not RE_NGINX_ERROR.search("[warn] 7#7: x")
    assert RE_NGINX_WARN.search("[warn] 7#7: x")
    assert kind_of("nginx", timed_out) == "timeout" and kind_of("nginx", "[warn] 7#7: x") == "warn"
    assert kind_of("nginx", "[notice] 7#7: signal process started") == "info"
