"""Secrets a run meets on the lab appear in no output, report, history or webhook body (issue 16), and a
host's token goes to no other host than its own. Each test plants fresh random secrets where a real site
keeps them (the nginx site, .env values with escaped quotes or spanning lines, a token rotated through the
inventory, a probe URL) and checks every text wsguard produced; each also checks the secret really was in
play (the diff shows the line, the capture server gets the token when it is allowed to), so it can fail.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from conftest import Lab

SITE = "/etc/nginx/sites-available/api.wealthwarriorshub.test"
ENV = "/opt/wealth-coach-ai/.env"


def fresh(label: str) -> str:
    return f"{label}-{secrets.token_hex(8)}"


@pytest.fixture
def reset_after(lab: Lab) -> Iterator[set[str]]:
    hosts: set[str] = set()
    yield hosts
    for h in sorted(hosts):
        lab.reset(h, profile="seed")


def none_shown(lab: Lab, what: str, text: str, planted: list[str]) -> None:
    for value in [*planted, lab.token, lab.secret, lab.sudo_password]:
        assert value not in text, f"{value!r} leaked in {what}"


def run(lab: Lab, *args: str, codes: tuple[int, ...] = (0, 2), env: dict[str, str] | None = None) -> str:
    r = lab.invoke(*args, env=env, timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode in codes and "Traceback" not in out, (args, r.returncode, out)
    return r.stdout + r.stderr


def run_json(lab: Lab, *args: str, codes: tuple[int, ...] = (0, 2)) -> tuple[dict, str]:
    """The JSON report (stdout alone: notes such as new drift go to stderr) and everything printed."""
    r = lab.invoke(*args, timeout=180)
    out = r.stdout + r.stderr
    assert r.returncode in codes and "Traceback" not in out, (args, r.returncode, out)
    return json.loads(r.stdout), out


def with_flags(lab: Lab, tmp_path: Path, flags: dict[str, str]) -> str:
    inv = tmp_path / "inventory.yml"
    lines = "".join(f"      {k}: {json.dumps(v)}\n" for k, v in flags.items())
    inv.write_text(Path(lab.inventory).read_text().replace("  vars:\n", "  vars:\n    env_flags:\n" + lines, 1))
    return str(inv)


class Webhook:
    """A real HTTP endpoint on the controller that keeps every body POSTed to it."""

    def __init__(self) -> None:
        bodies: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.bodies = bodies
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Capture:
    """A listener standing for "somewhere else": keeps each request head, answers 403."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self.sock.getsockname()[1]}/ws/chat"
        self.requests: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    more = conn.recv(4096)
                    if not more:
                        break
                    data += more
                self.requests.append(data.decode("latin-1"))
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


# -- the nginx site ------------------------------------------------------------------------------------------

def secret_site(bearer: str, api_key: str, user_file: str, commented: str) -> str:
    """The seed site with a server-level Authorization header (copied into the location by the fix) and
    secrets next to where the fix inserts its lines (so they are the diff's context lines)."""
    return f"""server {{
    listen 80 default_server;
    server_name api.wealthwarriorshub.test;

    proxy_set_header Host $host;
    proxy_set_header Authorization "Bearer {bearer}";

    location / {{
        proxy_pass http://127.0.0.1:8000;
    }}

    location /ws/ {{
        proxy_pass http://127.0.0.1:8000;
        proxy_http_version 1.1;
        proxy_read_timeout 86400s;
        proxy_send_timeout 86400s;
        proxy_buffering off;
        auth_basic off;
        auth_basic_user_file /etc/nginx/{user_file};
        set $api_key "{api_key}";
        # proxy_set_header X-Api-Key "{commented}";
    }}
}}
"""


@pytest.mark.safety("attack")
def test_nginx_site_secrets_in_no_diff_warning_or_report(lab: Lab, reset_after: set[str], tmp_path: Path) -> None:
    host = "lab1"
    reset_after.add(host)
    planted = [fresh("bearer"), fresh("apikey"), fresh("htpasswd"), fresh("commented")]
    lab.host(host).path(SITE).write_text(secret_site(*planted))
    assert lab.sh(host, "nginx -t", check=False).returncode == 0  # a site nginx takes
    inv, limit = ("--inventory", lab.inventory), ("--limit", host)
    report = tmp_path / "verify.json"
    outputs = {
        "fix-nginx --check --diff": run(lab, "fix-nginx", *inv, *limit, "--check", "--diff"),
        "fix-nginx --check --diff --json": run(lab, "fix-nginx", *inv, *limit, "--check", "--diff", "--json"),
        "fix --check --diff": run(lab, "fix", *inv, *limit, "--check", "--diff"),
        "verify": run(lab, "verify", *inv, *limit, "--no-history", "--report", "table",
                      "--report", f"json:{report}"),
        "fix-nginx --diff": run(lab, "fix-nginx", *inv, *limit, "--diff"),
    }
    outputs["verify --report json"] = report.read_text()
    for what, text in outputs.items():
        none_shown(lab, what, text, planted)
    # The lines were really shown, masked: the copied header is a new line, the others its context.
    diff = outputs["fix-nginx --diff"]
    assert "+        proxy_set_header Authorization ***;" in diff, diff
    assert "set $api_key ***;" in diff and "auth_basic_user_file ***;" in diff, diff
    assert "copied so it is not silently dropped" in diff
    assert "proxy_set_header Authorization ***" in outputs["verify"]  # nginx-directives' actual: the missing lines
    assert planted[0] in lab.host(host).path(SITE).read_text()  # the site itself still holds its secrets


@pytest.mark.safety("attack")
def test_nginx_site_secrets_in_no_rollback_diff(lab: Lab, reset_after: set[str]) -> None:
    host = "lab1"
    reset_after.add(host)
    planted = [fresh("bearer"), fresh("apikey"), fresh("htpasswd"), fresh("commented")]
    lab.host(host).path(SITE).write_text(secret_site(*planted))
    run(lab, "fix-nginx", "--inventory", lab.inventory, "--limit", host)
    out = run(lab, "rollback", "--inventory", lab.inventory, "--limit", host, "--check", "--diff")
    assert "proxy_set_header Authorization" in out
    none_shown(lab, "rollback --check --diff", out, planted)


# -- .env values and a token rotated through the inventory ---------------------------------------------------

@pytest.mark.safety("attack")
def test_env_secrets_and_rotated_token_in_no_output_history_or_webhook(lab: Lab, reset_after: set[str],
                                                                       tmp_path: Path) -> None:
    host = "lab2"
    reset_after.add(host)
    old_token, escaped, pem = fresh("oldtoken"), fresh("escaped"), [fresh("pemline1"), fresh("pemline2")]
    env = lab.host(host).path(ENV)
    env.write_text(env.read_text() + f"API_TOKEN={old_token}\n"
                   f'API_SECRET="ab\\"cd-{escaped}"\n'
                   'PRIVATE_KEY="-----BEGIN PRIVATE KEY-----\n' + "\n".join(pem) + '\n-----END PRIVATE KEY-----"\n')
    lab.sh(host, "cd /opt/wealth-coach-ai && docker-compose up -d --no-deps backend >/dev/null 2>&1")
    new_token, new_secret, new_key = fresh("newtoken"), 'rot"ated-' + fresh("newsecret"), fresh("newkey")
    inv = with_flags(lab, tmp_path, {"WS_RATE_LIMIT_ENABLED": "false", "WS_MAX_MESSAGES_PER_MINUTE": "1000",
                                     "API_TOKEN": new_token, "API_SECRET": new_secret, "PRIVATE_KEY": new_key})
    planted = [old_token, escaped, *pem, new_token, new_secret, new_secret.split('"')[1], new_key]
    history, report, hook = tmp_path / "compliance.jsonl", tmp_path / "verify.json", Webhook()
    common = ("--inventory", inv, "--limit", host)
    try:
        outputs = {
            "verify (drift)": run(lab, "verify", *common, "--history", str(history), "--webhook", hook.url,
                                  "--report", "table", "--report", f"json:{report}"),
        }
        outputs["verify --report json"] = report.read_text()
        outputs["fix-rate-limit --check --diff"] = run(lab, "fix-rate-limit", *common, "--check", "--diff")
        outputs["fix-rate-limit --diff --json"] = run(lab, "fix-rate-limit", *common, "--diff", "--json")
        verified, outputs["verify (after)"] = run_json(lab, "verify", *common, "--history", str(history),
                                                       "--webhook", hook.url, "--json")
        outputs["compliance-history"] = run(lab, "compliance-history", "--history", str(history))
        outputs["the compliance history"] = history.read_text()
        outputs["webhook bodies"] = "\n".join(hook.bodies)
    finally:
        hook.close()
    for what, text in outputs.items():
        none_shown(lab, what, text, planted)
    # What was shown did carry those values, masked.
    assert hook.bodies and '"API_TOKEN": "***"' in hook.bodies[0], hook.bodies
    assert '"API_TOKEN": "***"' in outputs["the compliance history"]
    diff = outputs["fix-rate-limit --check --diff"]
    assert "-API_TOKEN=***" in diff and "+API_TOKEN=***" in diff and '-API_SECRET="***"' in diff, diff
    assert "\n  -***\n  -***\n" in diff  # the PEM's lines, each masked
    after = {c["id"]: c["status"] for c in verified["hosts"][0]["controls"]}
    assert after["env-flags"] == after["runtime-env"] == "pass", after  # (the site is another matter)
    running = lab.sh(host, "docker inspect -f '{{json .Config.Env}}' wealth_coach_backend").stdout
    assert new_token in running and new_key in running  # the rotation really happened


# -- the probe: URL credentials, and the token's destination ----------------------------------------------

@pytest.mark.safety("attack")
def test_probe_url_userinfo_and_token_parameters_never_shown(lab: Lab) -> None:
    password, token, key, sig = fresh("urlpass"), fresh("urltoken"), fresh("urlkey"), fresh("urlsig")
    url = f"ws://probe:{password}@{lab.address('lab3')}/ws/chat?token={token}&api_key={key}&sig={sig}"
    planted = [password, token, key, sig]
    for fmt in ((), ("--json",)):
        # alone: the URL's own token is wrong (403); with the host: its token replaces it (101)
        out = run(lab, "probe", "--url", url, "--duration", "2", "--stream", "2", "--idle", "0.5", *fmt, codes=(1,))
        none_shown(lab, "probe --url " + " ".join(fmt), out, planted)
        assert "HTTP 403" in out
        out = run(lab, "probe", "--inventory", lab.inventory, "--limit", "lab3", "--url", url, "--duration", "2",
                  "--stream", "2", "--idle", "0.5", *fmt, codes=(0,))
        none_shown(lab, "probe --limit --url " + " ".join(fmt), out, planted)
        assert "ws://***@" in out


@pytest.mark.safety("attack")
def test_probe_token_goes_only_to_the_hosts_own_ws_url(lab: Lab) -> None:
    capture = Capture()
    args = ("probe", "--inventory", lab.inventory, "--limit", "lab4", "--duration", "2", "--stream", "2",
            "--idle", "0.5")
    try:
        elsewhere_report, elsewhere = run_json(lab, *args, "--url", capture.url, "--json", codes=(1,))
        shown = run(lab, *args, "--url", capture.url, codes=(1,))
        seen_without = list(capture.requests)
        allowed_report, allowed = run_json(lab, *args, "--url", capture.url, "--send-token-to", "127.0.0.1",
                                           "--json", codes=(1,))
        seen_with = capture.requests[len(seen_without):]
    finally:
        capture.close()
    h = elsewhere_report["hosts"][0]
    assert len(seen_without) == 2 and all(lab.token not in r for r in seen_without), seen_without
    assert any("token not sent to 127.0.0.1" in w and "--send-token-to 127.0.0.1" in w for w in h["warnings"]), h
    assert h["round_trips"] == 0  # the host's .env was not even read
    assert "token not sent to 127.0.0.1" in shown
    # Named by --send-token-to, the same listener does get it: the capture sees what a token would look like.
    # The lab's inventory sets ws_token_header: Authorization, so the token travels as a header.
    assert len(seen_with) == 1 and f"Authorization: Bearer {lab.token}" in seen_with[0], seen_with
    assert lab.token not in seen_with[0].split("\r\n", 1)[0]  # never in the request line
    assert allowed_report["hosts"][0]["round_trips"] == 1
    none_shown(lab, "probe outputs", elsewhere + shown + allowed, [])
    own = run_json(lab, *args, "--json", codes=(0,))[0]["hosts"][0]  # its own ws_url: sent, and accepted
    assert own["evidence"]["verdict"] == "stable" and not own["warnings"], own


@pytest.mark.safety("attack")
def test_token_sent_in_a_header_never_reaches_nginxs_access_log(lab: Lab, reset_after: set[str]) -> None:
    """With ws_token_header (the lab sets Authorization), the upgrade control and the probe keep the token
    out of the request line, which is what nginx's access log records."""
    host = "lab3"
    reset_after.add(host)
    lab.sh(host, ": > /var/log/nginx/access.log")
    report, _ = run_json(lab, "verify", "--inventory", lab.inventory, "--limit", host, "--report", "json")
    upgrade = next(c for c in report["hosts"][0]["controls"] if c["id"] == "ws-upgrade")
    assert upgrade["status"] == "pass", upgrade  # the backend took the token from the header
    run(lab, "probe", "--inventory", lab.inventory, "--limit", host, "--duration", "2", "--stream", "3",
        "--idle", "0.5")
    log = lab.sh(host, "cat /var/log/nginx/access.log").stdout
    assert log.count("GET /ws/chat") >= 2, log
    assert lab.token not in log and "token=" not in log, log
