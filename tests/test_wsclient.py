"""wsclient against the REAL lab backend, run by Debian's python3 + python3-websockets 10.4 on loopback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from remediations.checks.wsclient import Closed, WSConnection, WSError, connect, mask_url, ping_intervals

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "lab" / "backend" / "server.py"
PYTHON = "/usr/bin/python3"
TOKEN = "s3cr3t-lab-token-4242"  # noqa: S105 (loopback test server only)
LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S")


def _backend_python_ok() -> bool:
    try:
        probe = subprocess.run([PYTHON, "-c", "import websockets"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(
    not _backend_python_ok(),
    reason=f"{PYTHON} cannot import websockets (apt-get install python3-websockets)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Backend:
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/chat"

    def connect(self) -> WSConnection:
        return connect(self.url, token=TOKEN, timeout=5)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, needle: str, timeout: float = 3.0) -> str:
        deadline = time.monotonic() + timeout
        while needle not in (text := self.log()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return text


def _spawn(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = _free_port()
    log_path = tmp_path / f"backend-{port}.log"
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "WS_HOST": "127.0.0.1", "WS_PORT": str(port),
                "WS_AUTH_TOKEN": TOKEN, **env}
    with log_path.open("wb") as out:
        proc = subprocess.Popen([PYTHON, str(SERVER)], env=full_env, stdout=out, stderr=subprocess.STDOUT)
    return proc, port, log_path


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Callable[..., Backend]]:
    """Factory: backend(WS_X="...") starts a server and waits for /health; teardown ends it by PID."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**env: str) -> Backend:
        proc, port, log_path = _spawn(tmp_path, env)
        procs.append(proc)
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:  # noqa: S310
                    assert r.status == 200 and r.read().strip() == b"ok"
                    return Backend(proc, port, log_path)
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"backend did not come up:\n{log_path.read_text()}")
                time.sleep(0.05)

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def test_good_token_streams_five_chunks(backend: Callable[..., Backend]) -> None:
    with backend().connect() as ws:
        assert ws.status == 101 and TOKEN not in repr(ws)
        assert ws.chat("hello", 5) == (5, None)
        ws.send_text("not json")  # treated as {"message": "not json", "chunks": 5}
        texts = [ws.recv(5) for _ in range(6)]
    assert texts[0] == '{"type": "chunk", "index": 1, "text": "not json [1/5]"}'
    assert texts[-1] == '{"type": "done", "chunks": 5}'
    assert ws.closed == Closed(1000, "", True)


@pytest.mark.parametrize("token", ["wrong-token-123", None])
def test_wrong_or_missing_token_is_403(backend: Callable[..., Backend], token: str | None) -> None:
    b = backend()
    with pytest.raises(WSError) as err:
        connect(b.url, token=token, timeout=5)
    assert err.value.status == 403
    assert "wrong-token-123" not in str(err.value) and TOKEN not in str(err.value)
    if token:
        assert "token=***" in str(err.value)
    assert "refused /ws/chat" in b.wait_log("refused /ws/chat")


def test_rate_limit_closes_after_twenty_chunks(backend: Callable[..., Backend]) -> None:
    b = backend()
    with b.connect() as ws:
        count, closed = ws.chat("flood", 30)
        assert (count, closed) == (20, Closed(1008, "Rate limit exceeded", True))
        assert ws.chat("again", 1) == (0, closed)
    log = b.wait_log("Rate limit exceeded")
    assert re.search(r"Rate limit exceeded .*count=20 limit=20", log)


@pytest.mark.parametrize(
    "env",
    [{"WS_RATE_LIMIT_ENABLED": "false"}, {"RATE_LIMIT_ENABLED": "OFF"}, {"WS_RATE_LIMIT_ENABLED": "0"}],
)
def test_rate_limit_disabled_lets_all_through(backend: Callable[..., Backend], env: dict[str, str]) -> None:
    with backend(**env).connect() as ws:
        assert ws.chat("flood", 30) == (30, None)


def test_ws_variable_wins_over_generic_one(backend: Callable[..., Backend]) -> None:
    with backend(WS_RATE_LIMIT_ENABLED="true", RATE_LIMIT_ENABLED="false").connect() as ws:
        assert ws.chat("flood", 30)[0] == 20


def test_server_pings_are_seen_and_answered(backend: Callable[..., Backend]) -> None:
    with backend(WS_PING_INTERVAL="1").connect() as ws:
        assert ws.idle(3.5) is None
        assert len(ws.pings) >= 2
        assert all(0.7 < d < 1.5 for d in ping_intervals(ws.pings)), ping_intervals(ws.pings)
        assert ws.chat("still there", 2) == (2, None)


def test_no_pings_by_default(backend: Callable[..., Backend]) -> None:
    with backend().connect() as ws:
        assert ws.idle(1.2) is None and ws.pings == []


def test_sigterm_closes_with_1001_and_exits_0(backend: Callable[..., Backend]) -> None:
    b = backend()
    with b.connect() as ws:
        ws.chat("hi", 1)
        os.kill(b.proc.pid, signal.SIGTERM)
        assert ws.idle(3) == Closed(1001, "server shutting down", True)
    assert b.proc.wait(timeout=3) == 0
    assert "code=1001 reason='server shutting down'" in b.log()


def test_fail_on_start_exits_1(tmp_path: Path) -> None:
    proc, _, log_path = _spawn(tmp_path, {"WS_FAIL_ON_START": "1"})
    assert proc.wait(timeout=10) == 1
    assert "WS_FAIL_ON_START set: exiting" in log_path.read_text()


def test_killed_server_is_1006_unclean(backend: Callable[..., Backend]) -> None:
    b = backend()
    with b.connect() as ws:
        ws.chat("hi", 1)
        os.kill(b.proc.pid, signal.SIGKILL)
        assert ws.idle(3) == Closed(1006, "", False)


def test_log_lines_are_whole_and_never_show_the_token(backend: Callable[..., Backend]) -> None:
    b = backend(WS_API_KEY="another-secret-value")
    with b.connect() as ws:
        ws.chat("hi", 1)
    with pytest.raises(WSError):
        connect(b.url, token="bad-guess", timeout=5)  # noqa: S106
    b.wait_log("disconnect ")
    os.kill(b.proc.pid, signal.SIGTERM)
    assert b.proc.wait(timeout=3) == 0
    log = b.log()
    assert log.endswith("\n")
    lines = log.splitlines()
    assert all(LINE.match(line) for line in lines), log
    assert any(re.search(r" connect conn=1 peer=127\.0\.0\.1:\d+$", line) for line in lines), log
    disconnect = re.compile(r" disconnect conn=1 peer=127\.0\.0\.1:\d+ code=1000 reason=''$")
    assert any(disconnect.search(line) for line in lines), log
    assert "rate_limit_enabled=True" in log and "auth_token=set" in log
    for secret in (TOKEN, "another-secret-value", "bad-guess"):
        assert secret not in log


def test_connection_refused_is_wserror() -> None:
    with pytest.raises(WSError) as err:
        connect(f"ws://127.0.0.1:{_free_port()}/ws/chat", token=TOKEN, timeout=2)
    assert err.value.status is None and TOKEN not in str(err.value)


def test_helpers() -> None:
    assert ping_intervals([1.0, 2.0, 3.5]) == [1.0, 1.5]
    assert ping_intervals([]) == []
    assert mask_url("ws://h/ws/chat?a=1&token=xyz") == "ws://h/ws/chat?a=1&token=***"


def test_fragments_and_interleaved_ping_over_socketpair() -> None:
    """Protocol details the lab backend never exercises: fragmentation, a ping mid-message, masking."""
    client_sock, server_sock = socket.socketpair()
    ws = WSConnection(client_sock, "ws://test/", 101, {}, b"", 2.0)
    frames = [(0x01, b"hel"), (0x89, b"p1"), (0x80, b"lo")]  # text (not fin), ping, continuation (fin)
    server_sock.sendall(b"".join(bytes([b0, len(p)]) + p for b0, p in frames))
    assert ws.recv(2) == "hello"
    assert len(ws.pings) == 1
    pong = server_sock.recv(64)
    assert pong[0] == 0x8A and pong[1] == 0x80 | 2  # pong, masked, 2 bytes
    assert bytes(b ^ pong[2 + i % 4] for i, b in enumerate(pong[6:])) == b"p1"
    assert ws.recv(0.2) is None
    server_sock.close()
    assert ws.idle(1) == Closed(1006, "", False)
