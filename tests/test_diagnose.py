"""diagnose: log evidence, nginx effective settings and ranking (pure), then one lab host end to end."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from remediations.checks.diagnose import (
    CAUSES,
    Evidence,
    evaluate,
    heartbeat,
    idle_timeout,
    location_settings,
    log_evidence,
    ping_interval,
    rank,
    rate_limit,
    restarts,
    upgrade_headers,
)
from remediations.checks.monitor import kind_of
from remediations.model.facts import Facts
from remediations.model.inventory import load_inventory
from remediations.model.masking import Masker

BACKEND = [
    "2026-01-01T00:00:00.000Z settings: host=127.0.0.1 rate_limit_enabled=True max_messages_per_minute=20",
    "2026-01-01T00:00:00.100Z listening on 127.0.0.1:8000",
    "2026-01-01T00:00:01.000Z connect conn=1 peer=127.0.0.1:5000",
    "2026-01-01T00:00:01.002Z Rate limit exceeded conn=1 peer=127.0.0.1:5000 count=20 limit=20",
    "2026-01-01T00:00:01.003Z disconnect conn=1 peer=127.0.0.1:5000 code=1008 reason='Rate limit exceeded'",
    "2026-01-01T00:00:09.000Z disconnect conn=2 peer=127.0.0.1:5001 code=1006 reason=''",
]
NGINX_ERR = [
    '2026/01/01 00:00:09 [info] 7#7: *3 upstream timed out (110: Connection timed out) while proxying upgraded '
    'connection, client: 10.0.0.1, request: "GET /ws/chat?token=abcdef123456 HTTP/1.1"',
    "2026/01/01 00:00:02 [error] 7#7: *1 connect() failed (111: Connection refused) while connecting to upstream",
]
SITE = """server {
    listen 80;
    proxy_read_timeout 30s;
    proxy_set_header Host $host;
    location / { proxy_pass http://127.0.0.1:8000; }
    location /ws/ {
        proxy_pass http://127.0.0.1:8000;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        proxy_read_timeout 5s;
    }
}
"""
BARE = """server {
    listen 80;
    proxy_set_header Upgrade $http_upgrade;
    location /ws/ { proxy_pass http://127.0.0.1:8000; }
}
"""


def _dump(**files: str) -> str:
    return "".join(f"# configuration file /etc/nginx/{name}:\n{text}\n" for name, text in files.items())


def test_log_evidence_counts() -> None:
    ev = log_evidence(BACKEND, NGINX_ERR)
    assert ev["rate_limit_lines"] == 1  # not the settings line, not the close line that quotes the reason
    assert ev["close_codes"] == {"1006": 1, "1008": 1}
    assert ev["upstream_timed_out"] == 1 and ev["upstream_unreachable"] == 1
    assert ev["starts_in_log"] == 1 and ev["shutdown_lines"] == 0


def test_location_settings_effective_values() -> None:
    [s] = location_settings(_dump(**{"nginx.conf": "events {}\n", "sites-enabled/a": SITE}), "/ws/")
    assert s["proxy_read_timeout"] == "5s" and s["proxy_read_timeout_from"] == "location"
    assert s["read_timeout_seconds"] == 5
    assert s["proxy_send_timeout"] == "60s" and s["proxy_send_timeout_from"] == "default"
    assert s["upgrade_header"] == "$http_upgrade" and s["connection_header"] == "upgrade"
    [b] = location_settings(_dump(**{"sites-enabled/b": BARE}), "/ws/")
    assert b["proxy_read_timeout_from"] == "default" and b["read_timeout_seconds"] == 60
    assert b["upgrade_header"] == "$http_upgrade"  # inherited: the location sets no header of its own
    assert b["connection_header"] is None and b["proxy_http_version"] == "1.0"


def _ev(**kw: object) -> dict:
    ev = {"logs": log_evidence([], []), "container": {"exists": True, "running": True, "restart_count": 0},
          "container_env": {}, "env_file_values": {}, "nginx_locations": [], "ping_interval": None,
          "uptime_seconds": 100, "container_name": "backend"}
    ev.update(kw)
    return ev


FLAGS = {"WS_RATE_LIMIT_ENABLED": "false", "WS_MAX_MESSAGES_PER_MINUTE": "1000"}
GOOD_ENV = {**FLAGS, "RATE_LIMIT_ENABLED": "true"}


def test_rank_orders_causes_and_names_fixes() -> None:
    locs = location_settings(_dump(**{"sites-enabled/a": SITE}), "/ws/")
    ev = _ev(logs=log_evidence(BACKEND, NGINX_ERR), container_env={"RATE_LIMIT_ENABLED": "true"},
             env_file_values={"RATE_LIMIT_ENABLED": "true"}, nginx_locations=locs)
    causes = rank(ev, FLAGS, 86400, {"backend": BACKEND, "nginx_error": NGINX_ERR})
    ids = [c.id for c in causes]
    assert ids[:2] == ["rate_limit", "idle_timeout"] or ids[:2] == ["idle_timeout", "rate_limit"]
    assert set(ids) >= {"rate_limit", "idle_timeout", "upstream_unreachable"}
    by = {c.id: c for c in causes}
    assert by["rate_limit"].fix == "invoke fix-rate-limit" and by["rate_limit"].score >= 100
    assert by["idle_timeout"].fix == "invoke fix-nginx"
    assert by["idle_timeout"].evidence["proxy_read_timeout_seconds"] == 5


def test_rank_nothing_when_fixed_and_pings_keep_it_alive() -> None:
    locs = location_settings(_dump(**{"sites-enabled/a": SITE}), "/ws/")
    ev = _ev(container_env=GOOD_ENV, env_file_values=GOOD_ENV, nginx_locations=locs, ping_interval=2.0)
    assert rank(ev, FLAGS, 86400) == []  # 5 s read timeout, but pings every 2 s keep the link busy


def test_rank_config_only_and_stale_container() -> None:
    ev = _ev(container_env={"RATE_LIMIT_ENABLED": "true"}, env_file_values=GOOD_ENV)
    by = {c.id: c for c in rank(ev, FLAGS, 86400)}
    assert by["rate_limit"].score < 100  # configured like the incident, not seen in the logs
    assert by["stale_container"].fix == "invoke fix-rate-limit"
    assert "WS_RATE_LIMIT_ENABLED" in by["stale_container"].detail


def test_rank_heartbeat_restarts_and_down() -> None:
    lines = ["x listening on :8000", "x SIGTERM received: shutting down",
             "x disconnect conn=1 code=1001 reason='server shutting down'", "x listening on :8000",
             "x disconnect conn=2 code=1011 reason='keepalive ping timeout'"]
    ev = _ev(logs=log_evidence(lines, []), container={"exists": True, "running": False, "status": "exited",
                                                        "restart_count": 2},
             container_env=GOOD_ENV, env_file_values=GOOD_ENV)
    ids = [c.id for c in rank(ev, FLAGS, 86400, {"backend": lines})]
    assert ids[0] == "backend_down"
    assert "heartbeat" in ids and "restarts" in ids


# -- the rules, one at a time, on hand-made evidence --------------------------------------------

def _e(backend: list[str] | None = None, nginx_error: list[str] | None = None, want: float | None = 86400,
       flags: dict[str, str] | None = None, **kw: object) -> Evidence:
    backend, nginx_error = backend or [], nginx_error or []
    return Evidence(_ev(logs=log_evidence(backend, nginx_error), **kw), FLAGS if flags is None else flags, want,
                    backend, nginx_error)


def test_no_rule_fires_on_a_quiet_host() -> None:
    e = _e(container_env=GOOD_ENV, env_file_values=GOOD_ENV)
    assert [rule.__name__ for rule in CAUSES if rule(e) is not None] == []


def test_each_rule_names_its_cause() -> None:
    assert len({rule.__name__ for rule in CAUSES}) == len(CAUSES)
    lines = ["x Rate limit exceeded", "x disconnect code=1011 reason='keepalive ping timeout'",
             "x SIGTERM received: shutting down"]
    e = _e(lines, NGINX_ERR, container={"exists": False}, nginx_stale="reloaded before the last change",
           container_env={"RATE_LIMIT_ENABLED": "true"}, env_file_values=GOOD_ENV,
           nginx_locations=location_settings(_dump(**{"sites-enabled/b": BARE}), "/ws/"))
    for rule in CAUSES:
        cause = rule(e)
        assert cause is not None and cause.id == rule.__name__


def test_rate_limit_rule_seen_in_the_log() -> None:
    lines = ["x Rate limit exceeded conn=1", "x disconnect conn=1 peer=10.0.0.1:51008 code=1006 reason=''",
             "x disconnect conn=2 code=1008 reason='too many'"]
    cause = rate_limit(_e(lines))
    assert cause is not None and cause.score == 100 + 1 + 1  # one limiter line, one 1008 close
    assert cause.lines == lines[:1]
    only_closes = rate_limit(_e(lines[1:]))
    assert only_closes is not None and only_closes.lines == lines[2:]  # port 51008 is not a 1008 close


def test_rate_limit_rule_on_configuration_alone() -> None:
    cause = rate_limit(_e(container_env={"RATE_LIMIT_ENABLED": "true"}))
    assert cause is not None and cause.score == 50 and "WS_RATE_LIMIT_ENABLED=(unset) (want false)" in cause.detail
    # The limiter switched off another way: the flags differ, but nothing would close with 1008.
    assert rate_limit(_e(container_env={"WS_RATE_LIMIT_ENABLED": "off"})) is None
    assert rate_limit(_e(container_env={})) is None  # the container's environment unknown: no guess


def test_idle_timeout_rule() -> None:
    short = [{"read_timeout_seconds": 5.0}]
    assert idle_timeout(_e(nginx_locations=short, ping_interval=2.0)) is None  # pings keep the link busy
    cause = idle_timeout(_e(nginx_locations=short, ping_interval=5.0))  # a ping as slow as the timeout
    assert cause is not None and cause.score == 60 and "pings every 5s" in cause.detail
    assert idle_timeout(_e(nginx_locations=short, want=None)) is None  # no timeout wanted by the inventory
    seen = idle_timeout(_e(nginx_error=NGINX_ERR[:1]))
    assert seen is not None and seen.score == 101 and seen.detail.startswith("nginx logs upstream timeouts")


def test_upgrade_headers_rule_reports_the_first_location() -> None:
    bare = location_settings(_dump(**{"sites-enabled/b": BARE, "sites-enabled/c": BARE}), "/ws/")
    cause = upgrade_headers(_e(nginx_locations=bare))
    assert cause is not None and cause.detail.startswith("/etc/nginx/sites-enabled/b location /ws/")
    assert "proxy_set_header Connection" in cause.detail and "proxy_set_header Upgrade" not in cause.detail
    assert upgrade_headers(_e(nginx_locations=location_settings(_dump(a=SITE), "/ws/"))) is None


def test_heartbeat_and_restarts_rules() -> None:
    lines = ["x listening on :8000", "x disconnect code=1011 reason='keepalive ping timeout'",
             "x disconnect code=1012 reason='service restart'", "x listening on :8000"]
    hb = heartbeat(_e(lines))
    assert hb is not None and hb.score == 100 + 1 + 1  # the heartbeat line is also the 1011 close
    rs = restarts(_e(lines, container={"exists": True, "running": True, "restart_count": 3}))
    assert rs is not None and rs.score == 80 + 3 + 1
    assert "1 restart(s) in the log" in rs.detail
    assert restarts(_e(lines[:2])) is None  # one start line is the container's own start


def test_equal_scores_keep_the_table_order() -> None:
    # One limiter line and one 1008 close against one timeout line and one 1006 close: 102 each.
    lines = ["x Rate limit exceeded", "x disconnect code=1008", "x disconnect code=1006"]
    ev = _ev(logs=log_evidence(lines, NGINX_ERR[:1]), container_env=GOOD_ENV, env_file_values=GOOD_ENV)
    causes = rank(ev, FLAGS, 86400, {"backend": lines, "nginx_error": NGINX_ERR[:1]})
    assert [(c.id, c.score) for c in causes] == [("rate_limit", 102), ("idle_timeout", 102)]


def test_ping_interval() -> None:
    assert ping_interval({"WS_PING_INTERVAL": "2"}) == 2.0
    assert ping_interval({"WS_PING_INTERVAL": "0"}) is None
    assert ping_interval({}) is None


def test_analyze_masks_secrets(tmp_path: Path) -> None:
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  vars:\n    nginx_site: /etc/nginx/sites-enabled/a\n  hosts:\n    h1:\n")
    host = load_inventory(str(inv)).select("h1")[0]
    env = b"WS_AUTH_TOKEN=abcdef123456\nOPENAI_API_KEY=sk-very-secret-1\n"
    facts = {"files": [{"path": host.ws.env_file, "exists": True, "content": base64.b64encode(env).decode()}],
             "container": {"exists": True, "running": True, "env": ["WS_AUTH_TOKEN=abcdef123456"],
                           "started_at": "2026-01-01T00:00:00.123456789Z", "restart_count": 0},
             "nginx": {"installed": True, "test_ok": True, "dump": _dump(**{"sites-enabled/a": SITE})},
             "diagnose": {"now": 1767225700.0,
                          "backend_logs": {"lines": BACKEND + ["leaked sk-very-secret-1 and abcdef123456"]},
                          "nginx_error_log": {"lines": NGINX_ERR}}}
    ev = evaluate(host, Facts.parse(facts), Masker())
    text = json.dumps(ev)
    assert "abcdef123456" not in text and "sk-very-secret-1" not in text
    assert ev["uptime_seconds"] == 100
    assert "env_file_values" not in ev and "container_env" not in ev
    assert [c["id"] for c in ev["causes"]][:2] == ["rate_limit", "idle_timeout"]
    assert "token=***" in json.dumps(ev["causes"])


def test_monitor_kinds() -> None:
    assert kind_of("backend", BACKEND[3]) == "rate_limit"
    assert kind_of("backend", BACKEND[5]) == "disconnect"
    assert kind_of("backend", BACKEND[2]) == "websocket"
    assert kind_of("backend", "GET /health 200") is None
    assert kind_of("backend", "GET /health 200", show_all=True) == "info"
    assert kind_of("nginx", NGINX_ERR[0]) == "timeout"
    assert kind_of("nginx", NGINX_ERR[1]) == "error"


# -- against the lab ---------------------------------------------------------------------------

def test_diagnose_stale_container_and_secrets_masked(clean) -> None:  # type: ignore[no-untyped-def]
    lab = clean
    # The .env fixed by hand, the container only restarted: it keeps its OLD environment (seen on the lab).
    lab.sh("lab5", "cd /opt/wealth-coach-ai && printf 'WS_RATE_LIMIT_ENABLED=false\\n"
                   "WS_MAX_MESSAGES_PER_MINUTE=1000\\n' >> .env && docker-compose restart backend >/dev/null 2>&1")
    d = lab.invoke("diagnose", "--inventory", lab.inventory, "--limit", "lab5")
    assert d.returncode == 2, d.stdout + d.stderr
    assert lab.token not in d.stdout and lab.secret not in d.stdout
    assert "stale_container" in d.stdout and "fix: invoke fix-rate-limit" in d.stdout
    j = lab.invoke("diagnose", "--inventory", lab.inventory, "--limit", "lab5", "--json")
    ev = json.loads(j.stdout)["hosts"][0]["evidence"]
    ids = [c["id"] for c in ev["causes"]]
    assert "stale_container" in ids and "restarts" in ids  # a restart shows in the log (shutdown, listening twice)
    assert ev["env_file_flags"]["WS_RATE_LIMIT_ENABLED"] == "false"
    assert "WS_RATE_LIMIT_ENABLED" not in ev["container_env_flags"]
    assert lab.token not in j.stdout and lab.secret not in j.stdout


def test_nginx_lines_from_before_the_container_started_are_left_out() -> None:
    from remediations.checks.diagnose import since

    lines = ["2026/11/26 06:21:10 [error] 7#7: *3 connect() failed (111: Connection refused) while connecting",
             "2026/11/26 06:21:30 [error] 7#7: *9 connect() failed (111: Connection refused) while connecting",
             "a line without a time"]
    started = 1795674080.0  # 2026-11-26T06:21:20Z
    assert since(lines, started, 0) == lines[1:]
    # A host two hours ahead of UTC writes 08:21:10 for the same instant.
    shifted = [line.replace("06:21", "08:21") for line in lines]
    assert since(shifted, started, 7200) == shifted[1:]
