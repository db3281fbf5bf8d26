"""fix-nginx end to end on the lab (issue 6)."""

from __future__ import annotations

import hashlib
import json
import time

from conftest import Lab
from remediations.checks import wsclient

SITE = "/etc/nginx/sites-available/api.wealthwarriorshub.test"


def fix(lab: Lab, *args: str) -> tuple[int, dict]:
    r = lab.invoke("fix-nginx", "--inventory", lab.inventory, "--json", *args)
    assert r.stdout.startswith("{"), r.stdout + r.stderr
    return r.returncode, json.loads(r.stdout)


def workers(lab: Lab, host: str) -> list[str]:
    return sorted(lab.sh(host, "ps -o pid= --ppid $(cat /run/nginx.pid)").stdout.split())


def site_text(lab: Lab, host: str) -> str:
    return lab.host(host).path(SITE).read_text()


def write_site(lab: Lab, host: str, text: str) -> None:
    lab.host(host).path(SITE).write_text(text)
    lab.sh(host, "nginx -t && nginx -s reload")


def test_idle_websocket_dropped_before_and_held_after(clean: Lab) -> None:
    lab = clean
    lab.reset("lab1", profile="stock")
    url = f"ws://{lab.address('lab1')}/ws/chat"
    with wsclient.connect(url, token=lab.token) as ws:
        closed = ws.idle(9)
    assert closed is not None and closed.code == 1006
    code, doc = fix(lab, "--limit", "lab1")
    assert code == 0 and doc["hosts"][0]["status"] == "changed", doc
    assert doc["hosts"][0]["handlers"][0]["status"] == "ok"
    with wsclient.connect(url, token=lab.token) as ws:
        assert ws.idle(12) is None            # well past the old 5 s read timeout
        assert ws.chat("still there?", 3) == (3, None)
    text = site_text(lab, "lab1")
    for d in ("proxy_read_timeout 86400s;", "proxy_socket_keepalive on;", "keepalive_timeout 86400s;",
              "proxy_send_timeout 86400s;"):
        assert text.count(d) == 1, d
    assert "proxy_read_timeout 5s" not in text


def test_second_run_changes_nothing_and_does_not_reload(clean: Lab) -> None:
    lab = clean
    assert fix(lab, "--limit", "lab2")[0] == 0
    before = workers(lab, "lab2")
    code, doc = fix(lab, "--limit", "lab2")
    h = doc["hosts"][0]
    assert code == 0 and h["status"] == "ok" and h["handlers"] == [] and h["round_trips"] == 1
    assert workers(lab, "lab2") == before


def test_hand_edit_never_reloaded_gets_reloaded(clean: Lab) -> None:
    lab = clean
    assert fix(lab, "--limit", "lab2")[0] == 0
    lab.sh("lab2", f"echo '# edited by hand, not reloaded' >> {SITE}")
    before = workers(lab, "lab2")
    code, doc = fix(lab, "--limit", "lab2")
    h = doc["hosts"][0]
    assert code == 0 and h["status"] == "changed" and h["changes"] == []
    assert h["handlers"][0]["name"] == "nginx_reload" and h["handlers"][0]["status"] == "ok"
    after = workers(lab, "lab2")
    assert after and not set(after) & set(before)
    assert fix(lab, "--limit", "lab2")[1]["hosts"][0]["status"] == "ok"


def test_broken_conf_d_file_fails_with_nginx_error_and_restores(clean: Lab) -> None:
    lab = clean
    site_before = lab.host("lab3").path(SITE).read_bytes()
    lab.sh("lab3", "echo 'this is not nginx;' > /etc/nginx/conf.d/broken.conf")
    code, doc = fix(lab, "--limit", "lab3")
    h = doc["hosts"][0]
    assert code == 1 and h["status"] == "failed"
    assert h["error"]["kind"] == "validate"
    assert "unknown directive" in h["error"]["message"] and "broken.conf" in h["error"]["message"]
    assert lab.host("lab3").path(SITE).read_bytes() == site_before
    r = lab.sh("lab3", "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1/ws/chat")
    assert r.stdout in ("400", "403", "426")     # nginx still answering, proxying to the backend


def test_site_without_ws_location_fails_clearly_with_no_change(clean: Lab) -> None:
    lab = clean
    text = site_text(lab, "lab1").replace("location /ws/ {", "location /chat/ {")
    write_site(lab, "lab1", text)
    before = hashlib.sha256(text.encode()).hexdigest()
    code, doc = fix(lab, "--limit", "lab1")
    h = doc["hosts"][0]
    assert code == 1 and h["error"]["kind"] == "location_not_found"
    assert "/chat/" in h["error"]["message"] and "/ws/" in h["error"]["message"]
    assert hashlib.sha256(lab.host("lab1").path(SITE).read_bytes()).hexdigest() == before


def test_no_new_file_under_etc_nginx_and_symlink_kept(clean: Lab) -> None:
    lab = clean
    listing = "find /etc/nginx | sort"
    before = lab.sh("lab1", listing).stdout
    assert fix(lab, "--limit", "lab1")[0] == 0
    assert lab.sh("lab1", listing).stdout == before
    assert lab.sh("lab1", "readlink /etc/nginx/sites-enabled/api.wealthwarriorshub.test").stdout.strip() == SITE


TWO_SERVERS = """map $http_upgrade $connection_upgrade {
    default upgrade;
    ''      close;
}

server {
    listen 80 default_server;
    server_name api.wealthwarriorshub.test;
    keepalive_timeout 65;

    location /ws/ {
        proxy_pass http://127.0.0.1:8000;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        keepalive_timeout 65;
        proxy_read_timeout 1d;
    }
}

server {
    listen 8443;   # the TLS server of production, without certificates in the lab
    server_name api.wealthwarriorshub.test;

\tlocation /ws/ {
\t\tproxy_pass http://127.0.0.1:8000;
\t}
}
"""


def test_two_servers_in_place_changes_and_idioms_kept(clean: Lab) -> None:
    lab = clean
    write_site(lab, "lab2", TWO_SERVERS)
    code, doc = fix(lab, "--limit", "lab2")
    assert code == 0, doc
    text = site_text(lab, "lab2")
    first, second = text.split("listen 8443;")
    assert "keepalive_timeout 65;\n\n    location" in first        # server level untouched
    assert first.count("keepalive_timeout 86400s;") == 1 and "        keepalive_timeout 65;" not in first
    assert "proxy_set_header Connection $connection_upgrade;" in first and 'Connection "upgrade"' not in first
    assert "proxy_read_timeout 1d;" in first and "proxy_read_timeout 86400s" not in first
    for d in ("proxy_socket_keepalive on;", "proxy_buffering off;", "proxy_http_version 1.1;",
              'proxy_set_header Connection "upgrade";', "keepalive_timeout 86400s;"):
        assert f"\t\t{d}\n" in second, d
    assert lab.sh("lab2", "nginx -t", check=False).returncode == 0
    assert fix(lab, "--limit", "lab2")[1]["hosts"][0]["status"] == "ok"


INHERITS_AND_INCLUDES = """server {
    listen 80 default_server;
    proxy_set_header Host $host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;

    location /ws/ {
        proxy_pass http://127.0.0.1:8000;
        include snippets/ws-timeouts.conf;
    }
}
"""


def test_include_counts_as_present_and_inherited_headers_are_copied(clean: Lab) -> None:
    lab = clean
    lab.sh("lab3", "mkdir -p /etc/nginx/snippets && printf 'proxy_read_timeout 86400s;\\nproxy_send_timeout 1h;\\n' "
                   "> /etc/nginx/snippets/ws-timeouts.conf")
    write_site(lab, "lab3", INHERITS_AND_INCLUDES)
    code, doc = fix(lab, "--limit", "lab3")
    h = doc["hosts"][0]
    assert code == 0, doc
    text = site_text(lab, "lab3")
    location = text.split("location /ws/ {")[1]
    assert "proxy_read_timeout" not in location                   # set by the include already
    assert "proxy_send_timeout" not in location                   # disagreeing value: reported, not duplicated
    assert any("proxy_send_timeout" in w for w in h["warnings"])
    assert "proxy_set_header Host $host;" in location            # copied: adding Upgrade would drop it
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in location
    assert lab.sh("lab3", "nginx -t", check=False).returncode == 0


def test_check_diff_shows_the_change_and_exits_2(clean: Lab) -> None:
    lab = clean
    r = lab.invoke("fix-nginx", "--inventory", lab.inventory, "--limit", "lab1", "--check", "--diff")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "+        proxy_socket_keepalive on;" in r.stdout and "would change" in r.stdout
    before = workers(lab, "lab1")
    time.sleep(0.1)
    assert workers(lab, "lab1") == before
