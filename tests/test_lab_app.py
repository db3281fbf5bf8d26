"""The lab's application (issue 3): a real docker-compose service on podman, and the disconnects."""

from __future__ import annotations

import json
import time

import pytest

from conftest import Lab
from remediations.checks import wsclient

APP = "/opt/wealth-coach-ai"


def ws_url(lab: Lab, host: str) -> str:
    return f"ws://{lab.address(host)}/ws/chat"


def container(lab: Lab, host: str) -> dict:
    out = lab.sh(host, "docker inspect wealth_coach_backend").stdout
    return dict(json.loads(out)[0])


def env_of(c: dict) -> dict[str, str]:
    return dict(e.split("=", 1) for e in c["Config"]["Env"] if "=" in e)


def test_stream_of_30_is_cut_with_1008_after_20(lab: Lab) -> None:
    with wsclient.connect(ws_url(lab, "lab1"), token=lab.token) as ws:
        got, closed = ws.chat("hello", 30)
    assert got == 20
    assert closed is not None and closed.code == 1008 and closed.reason == "Rate limit exceeded"
    logs = lab.sh("lab1", "docker logs wealth_coach_backend --tail=5").stdout
    assert "Rate limit exceeded" in logs
    assert lab.token not in logs


def test_wrong_token_is_refused(lab: Lab) -> None:
    with pytest.raises(wsclient.WSError) as exc:
        wsclient.connect(ws_url(lab, "lab1"), token="not-the-token")
    assert exc.value.status == 403


def test_idle_connection_is_closed_by_nginx_in_the_stock_profile(clean: Lab) -> None:
    lab = clean
    lab.reset("lab2", profile="stock")
    with wsclient.connect(ws_url(lab, "lab2"), token=lab.token) as ws:
        t0 = time.monotonic()
        closed = ws.idle(12)
        took = time.monotonic() - t0
    assert closed is not None, "nginx should have cut the idle connection after its 5 s read timeout"
    assert 4 <= took < 10
    assert closed.code == 1006 and not closed.clean
    # The same idle period is fine in the seed profile (86400 s read timeout).
    with wsclient.connect(ws_url(lab, "lab3"), token=lab.token) as ws:
        assert ws.idle(7) is None


def test_restart_keeps_the_old_env_and_up_recreates(clean: Lab) -> None:
    lab = clean
    before = container(lab, "lab3")
    lab.sh("lab3", f"echo WS_RATE_LIMIT_ENABLED=false >> {APP}/.env")
    lab.sh("lab3", f"cd {APP} && docker-compose restart backend")
    restarted = container(lab, "lab3")
    assert restarted["Id"] == before["Id"]
    assert "WS_RATE_LIMIT_ENABLED" not in env_of(restarted)
    lab.sh("lab3", f"cd {APP} && docker-compose up -d --no-deps backend")
    recreated = container(lab, "lab3")
    assert recreated["Id"] != before["Id"]
    assert env_of(recreated)["WS_RATE_LIMIT_ENABLED"] == "false"
    # And the backend really applies it: 30 chunks arrive through nginx.
    time.sleep(0.5)
    with wsclient.connect(ws_url(lab, "lab3"), token=lab.token) as ws:
        got, closed = ws.chat("hello", 30)
    assert (got, closed) == (30, None)


def test_compose_tools_work_on_the_host(lab: Lab) -> None:
    r = lab.sh("lab1", f"cd {APP} && docker-compose ps && docker ps --format '{{{{.Names}}}}' && "
                       "docker exec wealth_coach_backend python3 -c 'print(42)' && "
                       f"docker-compose logs --no-color --tail=3 backend && stat -c %a {APP}/.env")
    assert "wealth_coach_backend" in r.stdout and "Up" in r.stdout
    assert "42" in r.stdout.splitlines()
    assert r.stdout.strip().splitlines()[-1] == "600"
    # A real engine behind it: podman's Docker API on the host's own socket.
    assert "Podman Engine" in lab.sh("lab1", "docker version --format '{{json .Server}}'").stdout


def test_each_host_runs_its_own_container(lab: Lab) -> None:
    ids = {container(lab, h)["Id"] for h in ("lab1", "lab2", "lab3")}
    assert len(ids) == 3
    pids = {container(lab, h)["State"]["Pid"] for h in ("lab1", "lab2", "lab3")}
    assert len(pids) == 3


def test_env_file_holds_the_incident_settings(lab: Lab) -> None:
    env = lab.host("lab1").path(f"{APP}/.env").read_text()
    assert "RATE_LIMIT_ENABLED=true" in env
    assert f"WS_AUTH_TOKEN={lab.token}" in env and f"OPENAI_API_KEY={lab.secret}" in env
