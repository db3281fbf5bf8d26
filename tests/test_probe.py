"""The stability probe and the monitor: pure classification and summary, then against the lab."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from remediations.checks.probe import (
    DEFAULT_MESSAGE,
    Disconnect,
    ProbeRun,
    classify,
    exit_code,
    render_message,
    summarize,
    summary_lines,
    verdict,
)
from remediations.model.results import HostResult

# -- pure --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "reason", "clean", "silence", "cause", "words"), [
    (1008, "Rate limit exceeded", True, 0.0, "rate_limit", "rate limiter"),
    (1008, "too many messages", True, 0.0, "rate_limit", "rate limiter"),
    (1008, "forbidden origin", True, 0.0, "policy", "policy"),
    (1006, "", False, 60.2, "idle_timeout", "nginx's default proxy_read_timeout (60s)"),
    (1006, "", False, 100.4, "idle_timeout", "CDN"),
    (1006, "", False, 5.0, "idle_timeout", "5.0s of silence"),
    (1006, "", False, 0.1, "dropped", "while active"),
    (1011, "keepalive ping timeout", True, 0.0, "heartbeat", "heartbeat"),
    (1001, "server shutting down", True, 0.0, "server_restart", "restarted"),
    (1012, "", True, 0.0, "server_restart", "restarted"),
    (1000, "", True, 0.0, "server_close", "normally"),
    (4000, "app", True, 0.0, "other", "4000"),
])
def test_classify(code: int, reason: str, clean: bool, silence: float, cause: str, words: str) -> None:
    got, detail = classify(code, reason, clean, silence)
    assert got == cause
    assert words in detail


def _run(**kw: object) -> ProbeRun:
    run = ProbeRun(url="ws://h/ws/chat?token=***", duration=10, elapsed=10.0, connected=8.0, connections=2)
    for k, v in kw.items():
        setattr(run, k, v)
    return run


def test_summary_numbers_and_verdicts() -> None:
    d = [Disconnect(at=2.5, code=1008, reason="Rate limit exceeded", clean=True, connected_for=2.5, silence=0.0,
                    phase="stream", cause="rate_limit", detail="x"),
         Disconnect(at=9.0, code=1006, reason="", clean=False, connected_for=5.0, silence=5.0, phase="idle",
                    cause="idle_timeout", detail="y")]
    ev = summarize(_run(disconnects=d, pings=3, ping_intervals=[2.0, 2.1]))
    assert ev["verdict"] == "unstable"
    assert ev["connected_pct"] == 80.0
    assert ev["disconnects_by_code"] == {"1006": 1, "1008": 1}
    assert ev["disconnects_by_cause"] == {"rate_limit": 1, "idle_timeout": 1}
    assert ev["first_disconnect_after"] == 2.5
    assert ev["pings"] == {"count": 3, "interval_mean": 2.05, "interval_median": 2.05, "interval_min": 2.0,
                           "interval_max": 2.1}
    assert ev["fixes"] == ["invoke fix-nginx", "invoke fix-rate-limit"]
    text = "\n".join(summary_lines(ev))
    assert "1008 x1" in text and "every 2.0s" in text and "fix: invoke fix-rate-limit" in text
    assert verdict(_run()) == "stable"
    assert verdict(_run(connections=0)) == "unreachable"
    assert verdict(_run(connect_failures=[{"at": 1.0, "error": "HTTP 502", "status": 502}])) == "unstable"


def test_exit_code_precedence() -> None:
    def r(status: str = "ok", v: str | None = None) -> HostResult:
        h = HostResult(host="h", task="probe", run_id="x", status=status)
        if v:
            h.evidence["verdict"] = v
        return h

    assert exit_code([r(v="stable"), r(status="skipped")]) == 0
    assert exit_code([r(v="stable"), r(v="unstable")]) == 2
    assert exit_code([r(v="unstable"), r(status="failed", v="unreachable")]) == 1


def test_message_template() -> None:
    assert json.loads(render_message(DEFAULT_MESSAGE, 30)) == {"message": "wsguard probe", "chunks": 30}
    assert render_message("stream {chunks} please", 3) == "stream 3 please"


# -- against the lab ---------------------------------------------------------------------------

def _healthy(lab, name: str, timeout: float = 15) -> None:  # type: ignore[no-untyped-def]
    """Wait until the backend answers /health on the host itself (nginx's `location /` speaks HTTP/1.0)."""
    lab.sh(name, f"for i in $(seq {int(timeout * 10)}); do "
                 "curl -sf -o /dev/null http://127.0.0.1:8000/health && exit 0; sleep 0.1; done; exit 1",
           timeout=timeout + 5)


def _probe(lab, host: str, *args: str) -> tuple[int, dict, str]:  # type: ignore[no-untyped-def]
    p = lab.invoke("probe", "--inventory", lab.inventory, "--limit", host, "--json", *args, timeout=120)
    out = p.stdout + p.stderr
    assert lab.token not in out
    return p.returncode, json.loads(p.stdout)["hosts"][0], out


def test_rate_limit_found_diagnosed_and_fixed(clean) -> None:  # type: ignore[no-untyped-def]
    lab = clean
    _healthy(lab, "lab1")
    code, h, _ = _probe(lab, "lab1", "--stream", "30", "--idle", "1", "--duration", "3")
    ev = h["evidence"]
    assert code == 2, ev
    assert ev["verdict"] == "unstable"
    assert ev["disconnects_by_code"].get("1008", 0) >= 1
    assert ev["events"][0]["cause"] == "rate_limit"
    assert ev["fixes"] == ["invoke fix-rate-limit"]
    assert h["round_trips"] == 1  # the token, read on the host

    d = lab.invoke("diagnose", "--inventory", lab.inventory, "--limit", "lab1", "--json")
    assert d.returncode == 2, d.stdout + d.stderr
    assert lab.token not in d.stdout and lab.secret not in d.stdout
    dev = json.loads(d.stdout)["hosts"][0]
    assert dev["round_trips"] == 1
    first = dev["evidence"]["causes"][0]
    assert first["id"] == "rate_limit" and first["fix"] == "invoke fix-rate-limit"
    assert first["evidence"]["rate_limit_lines"] >= 1 and first["evidence"]["closes_1008"] >= 1
    assert any("Rate limit exceeded" in line for line in first["lines"])

    f = lab.invoke("fix-rate-limit", "--inventory", lab.inventory, "--limit", "lab1")
    assert f.returncode == 0, f.stdout + f.stderr
    _healthy(lab, "lab1")
    code, h, _ = _probe(lab, "lab1", "--stream", "30", "--idle", "1", "--duration", "3")
    assert code == 0, h["evidence"]
    assert h["evidence"]["verdict"] == "stable" and h["evidence"]["chunks_received"] >= 30

    d = lab.invoke("diagnose", "--inventory", lab.inventory, "--limit", "lab1", "--json")
    ids = [c["id"] for c in json.loads(d.stdout)["hosts"][0]["evidence"]["causes"]]
    assert "rate_limit" not in ids and "stale_container" not in ids
    assert d.returncode == 0, d.stdout


def test_idle_timeout_in_stock_profile_then_fix_nginx(clean) -> None:  # type: ignore[no-untyped-def]
    lab = clean
    lab.reset("lab2", profile="stock")
    _healthy(lab, "lab2")
    code, h, _ = _probe(lab, "lab2", "--stream", "3", "--idle", "7", "--duration", "8")
    ev = h["evidence"]
    assert code == 2, ev
    idle = [e for e in ev["events"] if e["cause"] == "idle_timeout"]
    assert idle and idle[0]["code"] == 1006 and not idle[0]["clean"]
    assert 4.5 <= idle[0]["silence"] <= 6.5  # the stock profile's proxy_read_timeout is 5 s
    assert ev["fixes"] == ["invoke fix-nginx"]

    d = lab.invoke("diagnose", "--inventory", lab.inventory, "--limit", "lab2", "--json")
    causes = {c["id"]: c for c in json.loads(d.stdout)["hosts"][0]["evidence"]["causes"]}
    assert causes["idle_timeout"]["evidence"]["proxy_read_timeout_seconds"] == 5
    assert causes["idle_timeout"]["evidence"]["closes_1006"] >= 1
    assert causes["idle_timeout"]["fix"] == "invoke fix-nginx"

    f = lab.invoke("fix-nginx", "--inventory", lab.inventory, "--limit", "lab2")
    assert f.returncode == 0, f.stdout + f.stderr
    code, h, _ = _probe(lab, "lab2", "--stream", "3", "--idle", "7", "--duration", "8")
    assert code == 0, h["evidence"]


def test_server_pings_reported(clean) -> None:  # type: ignore[no-untyped-def]
    lab = clean
    lab.sh("lab3", "cd /opt/wealth-coach-ai && printf 'WS_PING_INTERVAL=2\\n' >> .env "
                   "&& docker-compose up -d --no-deps backend >/dev/null 2>&1")
    _healthy(lab, "lab3")
    code, h, _ = _probe(lab, "lab3", "--stream", "1", "--idle", "7", "--duration", "7")
    pings = h["evidence"]["pings"]
    assert code == 0, h["evidence"]
    assert pings["count"] >= 2
    assert 1.5 <= pings["interval_median"] <= 2.5


def test_probe_by_url_token_env_and_unreachable(lab) -> None:  # type: ignore[no-untyped-def]
    url = f"ws://{lab.address('lab4')}/ws/chat"
    env = {"PROBE_TOKEN": lab.token}
    p = lab.invoke("probe", "--url", url, "--token-env", "PROBE_TOKEN", "--stream", "2", "--idle", "1",
                   "--duration", "2", env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "STABLE" in p.stdout and lab.token not in p.stdout + p.stderr
    bad = lab.invoke("probe", "--url", url + "?token=" + lab.token + "x", "--duration", "5", "--json")
    assert bad.returncode == 1
    assert lab.token not in bad.stdout + bad.stderr
    assert "HTTP 403" in json.loads(bad.stdout)["hosts"][0]["error"]["message"]
    closed = lab.invoke("probe", "--url", f"ws://{lab.address('lab4')}:9/ws/chat", "--duration", "2")
    assert closed.returncode == 1
    assert "COULD NOT CONNECT" in closed.stdout


def _followers(lab, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    left = []
    for pid in lab.m.host_pids(lab.host(name)):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "logs -f" in cmd or "tail -n" in cmd:
            left.append(f"{pid} {cmd}")
    return left


def test_monitor_two_hosts_leaves_nothing_behind(lab) -> None:  # type: ignore[no-untyped-def]
    from remediations.checks.wsclient import connect

    done = threading.Event()

    def traffic() -> None:
        # Until the monitor ends: on a loaded machine its followers may start late, and a line before
        # they start is never seen.
        while not done.wait(1.5):
            for name in ("lab4", "lab5"):
                with connect(f"ws://{lab.address(name)}/ws/chat", token=lab.token, timeout=5) as c:
                    c.chat("monitor test", 25)

    th = threading.Thread(target=traffic)
    th.start()
    try:
        p = lab.invoke("monitor", "--inventory", lab.inventory, "--limit", "lab4,lab5", "--duration", "6",
                       env={"COLUMNS": "200"}, timeout=60)
    finally:
        done.set()
        th.join()
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert any(line.startswith("lab4 ") and "backend" in line for line in out.splitlines()), out
    assert any(line.startswith("lab5 ") and "backend" in line for line in out.splitlines()), out
    assert "rate_limit" in out and lab.token not in out
    for name in ("lab4", "lab5"):
        assert _followers(lab, name) == []


def test_monitor_interrupted_stops_cleanly(lab) -> None:  # type: ignore[no-untyped-def]
    import signal
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    argv = [str(Path(sys.executable).parent / "invoke"), "monitor", "--inventory", lab.inventory, "--limit", "lab4"]
    proc = subprocess.Popen(argv,
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ})
    deadline = time.monotonic() + 10
    while not _followers(lab, "lab4") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _followers(lab, "lab4"), "the followers never started"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, out + err
    assert "interrupted" in out
    assert _followers(lab, "lab4") == []
