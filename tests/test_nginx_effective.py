"""Effective settings of a location as nginx merges them: location, server, http (in nginx.conf or any
included file), default; proxy_set_header from the nearest level that sets any. Pure: nginx -T text in."""

from __future__ import annotations

import pytest

from remediations.checks.diagnose import location_settings
from remediations.edit import nginx_effective
from remediations.edit.nginxconf import location_blocks
from remediations.edit.nginxplan import plan_site

MAIN = """user www-data;
events {}
http {
    proxy_read_timeout 3600s;
    proxy_set_header X-Forwarded-Proto $scheme;
    include /etc/nginx/conf.d/*.conf;
    include /etc/nginx/sites-enabled/*;
}
"""
CONFD = "proxy_http_version 1.1;\n"


def dump(site: str, main: str = MAIN, **more: str) -> str:
    files = {"/etc/nginx/nginx.conf": main, "/etc/nginx/conf.d/ws.conf": CONFD,
             "/etc/nginx/sites-enabled/api": site, **more}
    return "".join(f"# configuration file {p}:\n{t}\n" for p, t in files.items())


def site(server: str = "", location: str = "") -> str:
    return (f"server {{\n    listen 80;\n{server}    location /ws/ {{\n        proxy_pass http://127.0.0.1:8000;\n"
            f"{location}    }}\n}}\n")


def only(dump_text: str) -> dict:
    [s] = location_settings(dump_text, "/ws/")
    return s


@pytest.mark.parametrize(("server", "location", "value", "level", "at"), [
    ("", "", "3600s", "http", "/etc/nginx/nginx.conf:4"),
    ("    proxy_read_timeout 120s;\n", "", "120s", "server", "/etc/nginx/sites-enabled/api:3"),
    ("    proxy_read_timeout 120s;\n", "        proxy_read_timeout 5s;\n", "5s", "location",
     "/etc/nginx/sites-enabled/api:6"),
])
def test_read_timeout_from_the_nearest_level(server: str, location: str, value: str, level: str, at: str) -> None:
    s = only(dump(site(server, location)))
    assert (s["proxy_read_timeout"], s["proxy_read_timeout_from"]) == (value, level)
    assert s["proxy_read_timeout_at"] == f"{level} ({at})"


def test_default_when_no_level_sets_it() -> None:
    s = only(dump(site(), main=MAIN.replace("    proxy_read_timeout 3600s;\n", "")))
    assert (s["proxy_read_timeout"], s["proxy_read_timeout_at"], s["read_timeout_seconds"]) == ("60s", "default", 60)
    assert (s["proxy_send_timeout"], s["proxy_buffering"]) == ("60s", "on")


def test_an_http_level_directive_in_an_included_file_counts() -> None:
    s = only(dump(site()))
    assert (s["proxy_http_version"], s["proxy_http_version_at"]) == ("1.1", "http (/etc/nginx/conf.d/ws.conf:1)")


def test_headers_follow_nginxs_array_rule() -> None:
    # No header in server or location: the http block's line is what nginx sends.
    s = only(dump(site()))
    assert s["upgrade_header"] is None and s["headers_from"] == "http (/etc/nginx/nginx.conf:5)"
    # One header in the location: it inherits none of the http block's (X-Forwarded-Proto is gone).
    [lv] = nginx_effective.load(dump(site(location="        proxy_set_header Upgrade $http_upgrade;\n"))).find("/ws/")
    [line] = nginx_effective.headers(lv)
    assert line.args == ["Upgrade", "$http_upgrade"] and line.source == "location (/etc/nginx/sites-enabled/api:5)"
    # None anywhere: nginx's own Host and Connection close.
    bare = MAIN.replace("    proxy_set_header X-Forwarded-Proto $scheme;\n", "")
    [lv] = nginx_effective.load(dump(site(), main=bare)).find("/ws/")
    assert [(h.args, h.source) for h in nginx_effective.headers(lv)] == [
        (["Host", "$proxy_host"], "default"), (["Connection", "close"], "default")]


def test_nested_location_inherits_from_its_parent_location() -> None:
    text = ("server {\n  location / {\n    proxy_read_timeout 7s;\n    location /ws/ { proxy_pass http://b; }\n"
            "  }\n}\n")
    s = only(dump(text))
    assert (s["proxy_read_timeout"], s["proxy_read_timeout_from"]) == ("7s", "location")


def test_a_file_nginx_did_not_reach_is_read_on_its_own() -> None:
    # (nginx -T lists only loaded files; a hand-made dump may not) still found, with server and default only.
    text = dump(site(), main="events {}\n")
    s = only(text)
    assert s["proxy_read_timeout_from"] == "default"


def test_an_include_loop_ends() -> None:
    loop = {"/etc/nginx/a.conf": "include /etc/nginx/a.conf;\n"}
    s = only(dump(site(server="    include /etc/nginx/a.conf;\n"), **loop))
    assert s["proxy_read_timeout"] == "3600s"


# -- the planner judges by the same rules ---------------------------------------------------------------

def files(site_text: str, main: str = MAIN) -> dict[str, str]:
    from remediations.edit.nginxconf import split_nginx_T

    return split_nginx_T(dump(site_text, main))


def test_planner_keeps_what_the_http_block_already_gives() -> None:
    text = site(location="        proxy_set_header Upgrade $http_upgrade;\n"
                         "        proxy_set_header Connection upgrade;\n        proxy_buffering off;\n")
    plan = plan_site(text, "/ws/", ["proxy_http_version 1.1", "proxy_read_timeout 1h", "proxy_buffering off"],
                     included=files(text), site_path="/etc/nginx/sites-available/api")
    assert not plan.changed, plan.new_text
    assert plan.kept_inherited == [
        ("proxy_http_version 1.1", "proxy_http_version 1.1 from http (/etc/nginx/conf.d/ws.conf:1)"),
        ("proxy_read_timeout 1h", "proxy_read_timeout 3600s from http (/etc/nginx/nginx.conf:4)"),
    ]


def test_planner_writes_what_is_inherited_differently() -> None:
    text = site()
    plan = plan_site(text, "/ws/", ["proxy_read_timeout 86400s"], included=files(text))
    assert plan.kept_inherited == [] and plan.ensured == ["proxy_read_timeout 86400s"]
    [block] = location_blocks(plan.new_text, "/ws/")
    assert ("proxy_read_timeout", ["86400s"]) in block


def test_planner_copies_http_level_headers_when_the_location_gets_its_first() -> None:
    """Adding Upgrade to a location that inherits X-Forwarded-Proto from http would drop it: copied."""
    text = site()
    plan = plan_site(text, "/ws/", ["proxy_set_header Upgrade $http_upgrade"], included=files(text))
    assert plan.copied_inherited == ["proxy_set_header X-Forwarded-Proto $scheme"]
    [block] = location_blocks(plan.new_text, "/ws/")
    assert ("proxy_set_header", ["X-Forwarded-Proto", "$scheme"]) in block


def test_planner_keeps_an_inherited_header_only_while_the_location_has_none() -> None:
    main = MAIN.replace("$scheme;\n", "$scheme;\n    proxy_set_header Upgrade $http_upgrade;\n")
    text = site()
    kept = plan_site(text, "/ws/", ["proxy_set_header Upgrade $http_upgrade"], included=files(text, main))
    assert not kept.changed and kept.kept_inherited[0][1].endswith("from http (/etc/nginx/nginx.conf:6)")
    both = plan_site(text, "/ws/", ["proxy_set_header Upgrade $http_upgrade", "proxy_set_header Connection upgrade"],
                     included=files(text, main))
    [block] = location_blocks(both.new_text, "/ws/")
    assert ("proxy_set_header", ["Upgrade", "$http_upgrade"]) in block  # ensured or copied: present either way
    assert ("proxy_set_header", ["Connection", "upgrade"]) in block
    assert ("proxy_set_header", ["X-Forwarded-Proto", "$scheme"]) in block
    assert both.kept_inherited == []
