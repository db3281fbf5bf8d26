"""The planner: one test per rule, on a realistic site file."""

from __future__ import annotations

import pytest

from remediations.edit.nginxconf import location_blocks
from remediations.edit.nginxplan import (
    DEFAULT_DIRECTIVES,
    NginxPlan,
    parse_nginx_version,
    plan_site,
    split_nginx_T,
)
from remediations.model.errors import LocationNotFound, NginxConfError

SITE = """\
server {
    listen 80;
    server_name api.example.test;
    location /ws/ {
        proxy_pass http://127.0.0.1:8000;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        proxy_set_header Host $host;
        proxy_read_timeout 86400s;
        proxy_buffering off;
    }
}
"""

MISSING = ["proxy_send_timeout 86400s", "proxy_socket_keepalive on", "keepalive_timeout 86400s"]


def test_default_plan_adds_only_what_is_missing() -> None:
    plan = plan_site(SITE, "/ws/", DEFAULT_DIRECTIVES)
    assert plan.changed
    assert plan.ensured == DEFAULT_DIRECTIVES
    assert not (plan.kept_equivalent or plan.unsupported or plan.include_conflicts or plan.copied_inherited)
    assert plan.new_text == SITE.replace(
        "        proxy_buffering off;\n",
        "        proxy_buffering off;\n" + "".join(f"        {d};\n" for d in MISSING),
    )
    again = plan_site(plan.new_text, "/ws/", DEFAULT_DIRECTIVES)
    assert not again.changed and again.new_text == plan.new_text


def test_connection_upgrade_map_idiom_is_kept() -> None:
    site = SITE.replace('Connection "upgrade"', "Connection $connection_upgrade")
    plan = plan_site(site, "/ws/", DEFAULT_DIRECTIVES)
    assert plan.kept_equivalent == [('proxy_set_header Connection "upgrade"', "proxy_set_header Connection "
                                     "$connection_upgrade")]
    assert 'proxy_set_header Connection "upgrade"' not in plan.ensured
    assert "Connection $connection_upgrade;" in plan.new_text and '"upgrade"' not in plan.new_text


@pytest.mark.parametrize("spelling", ["1d", "86400", "1440m", "24h", "23h60m", "86400000ms"])
def test_same_time_in_other_units_is_kept(spelling: str) -> None:
    site = SITE.replace("proxy_read_timeout 86400s", f"proxy_read_timeout {spelling}")
    site = site.replace("proxy_buffering off;", "proxy_buffering off;\n        keepalive_timeout 1d 60;")
    plan = plan_site(site, "/ws/", DEFAULT_DIRECTIVES)
    assert ("proxy_read_timeout 86400s", f"proxy_read_timeout {spelling}") in plan.kept_equivalent
    assert ("keepalive_timeout 86400s", "keepalive_timeout 1d 60") in plan.kept_equivalent
    assert f"proxy_read_timeout {spelling};" in plan.new_text
    assert "keepalive_timeout 1d 60;" in plan.new_text


def test_different_time_is_rewritten() -> None:
    site = SITE.replace("proxy_read_timeout 86400s", "proxy_read_timeout 60s")
    plan = plan_site(site, "/ws/", DEFAULT_DIRECTIVES)
    assert not plan.kept_equivalent
    assert "proxy_read_timeout 86400s;" in plan.new_text and "60s" not in plan.new_text


def test_equivalence_is_judged_block_by_block() -> None:
    two = SITE + SITE.replace("listen 80", "listen 81").replace("proxy_read_timeout 86400s", "proxy_read_timeout 5s")
    two = two.replace("proxy_read_timeout 86400s", "proxy_read_timeout 1d", 1)
    plan = plan_site(two, "/ws/", ["proxy_read_timeout 86400s"])
    # The first block's `1d` is compliant and kept; the second block's 5s is changed in place.
    assert plan.ensured == ["proxy_read_timeout 86400s"]
    assert plan.kept_equivalent == [("proxy_read_timeout 86400s", "proxy_read_timeout 1d")]
    assert [b[5] for b in location_blocks(plan.new_text, "/ws/")] == [("proxy_read_timeout", ["1d"]),
                                                                       ("proxy_read_timeout", ["86400s"])]


def test_too_old_nginx_skips_the_directive() -> None:
    plan = plan_site(SITE, "/ws/", DEFAULT_DIRECTIVES, nginx_version=(1, 14, 2))
    assert plan.unsupported == [("proxy_socket_keepalive on", "needs nginx >= 1.15.6")]
    assert "proxy_socket_keepalive" not in plan.new_text
    assert "proxy_send_timeout 86400s;" in plan.new_text
    ok = plan_site(SITE, "/ws/", DEFAULT_DIRECTIVES, nginx_version=(1, 15, 6))
    assert not ok.unsupported and "proxy_socket_keepalive on;" in ok.new_text
    unknown = plan_site(SITE, "/ws/", ["more_set_headers 'X: y'"], nginx_version=(0, 8, 0))
    assert not unknown.unsupported and unknown.changed


INCLUDING = SITE.replace("proxy_buffering off;", "proxy_buffering off;\n        include snippets/ws-timeouts.conf;")


def test_include_with_same_value_counts_as_present() -> None:
    snippet = "proxy_send_timeout 1d;\nkeepalive_timeout 86400s;\n"
    plan = plan_site(INCLUDING, "/ws/", DEFAULT_DIRECTIVES,
                     included={"/etc/nginx/snippets/ws-timeouts.conf": snippet})
    assert plan.ensured == [d for d in DEFAULT_DIRECTIVES if d not in ("proxy_send_timeout 86400s",
                                                                       "keepalive_timeout 86400s")]
    assert "proxy_send_timeout" not in plan.new_text and "keepalive_timeout" not in plan.new_text
    assert not plan.include_conflicts


def test_include_with_other_value_is_a_conflict_not_added() -> None:
    nested = {"/etc/nginx/snippets/ws-timeouts.conf": "include /etc/nginx/snippets/more/*.conf;\n",
              "/etc/nginx/snippets/more/a.conf": "proxy_send_timeout 60s;\n",
              "/etc/nginx/snippets/other.conf": "keepalive_timeout 5s;\n"}
    plan = plan_site(INCLUDING, "/ws/", DEFAULT_DIRECTIVES, included=nested)
    assert len(plan.include_conflicts) == 1
    assert "/etc/nginx/snippets/more/a.conf" in plan.include_conflicts[0]
    assert "proxy_send_timeout 60s" in plan.include_conflicts[0]
    assert "proxy_send_timeout" not in plan.new_text
    assert "keepalive_timeout 86400s;" in plan.new_text  # other.conf is not included here


def test_include_in_only_some_blocks_adds_where_it_is_missing() -> None:
    two = INCLUDING + SITE.replace("listen 80", "listen 81")
    plan = plan_site(two, "/ws/", ["proxy_send_timeout 86400s"],
                     included={"/etc/nginx/snippets/ws-timeouts.conf": "proxy_send_timeout 86400s;\n"})
    first, second = location_blocks(plan.new_text, "/ws/")
    assert ("proxy_send_timeout", ["86400s"]) not in first      # the include sets it there
    assert ("proxy_send_timeout", ["86400s"]) in second
    assert not plan.include_conflicts


def test_broken_included_file_names_the_file() -> None:
    with pytest.raises(NginxConfError, match="ws-timeouts.conf: line 1"):
        plan_site(INCLUDING, "/ws/", DEFAULT_DIRECTIVES,
                  included={"/etc/nginx/snippets/ws-timeouts.conf": "proxy_send_timeout 1d\n"})


INHERITING = """\
server {
\tlisten 80;
\tproxy_set_header Host $host;
\tproxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
\tproxy_set_header Connection "";
\tinclude proxy_extra;
\tlocation /ws/ {
\t\tproxy_pass http://127.0.0.1:8000;
\t}
}
"""


def test_server_headers_are_copied_when_we_add_the_first_one() -> None:
    plan = plan_site(INHERITING, "/ws/", DEFAULT_DIRECTIVES,
                     included={"/etc/nginx/proxy_extra": "proxy_set_header X-Real-IP $remote_addr;\n"})
    assert plan.copied_inherited == [
        "proxy_set_header Host $host",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for",
        "proxy_set_header X-Real-IP $remote_addr",
    ]  # Connection "" is not copied: the desired Connection wins
    assert not set(plan.copied_inherited) & set(plan.ensured)
    block = location_blocks(plan.new_text, "/ws/")[0]
    assert ("proxy_set_header", ["Host", "$host"]) in block
    assert ("proxy_set_header", ["Connection", "upgrade"]) in block
    assert "\t\tproxy_set_header Host $host;\n" in plan.new_text


def test_no_copy_when_the_location_has_its_own_headers_or_adds_none() -> None:
    own = INHERITING.replace("\t\tproxy_pass", "\t\tproxy_set_header X-A b;\n\t\tproxy_pass")
    assert plan_site(own, "/ws/", DEFAULT_DIRECTIVES).copied_inherited == []
    assert plan_site(INHERITING, "/ws/", ["proxy_buffering off"]).copied_inherited == []


def test_errors_propagate() -> None:
    with pytest.raises(LocationNotFound):
        plan_site(SITE, "/api/", DEFAULT_DIRECTIVES)
    with pytest.raises(NginxConfError):
        plan_site(SITE, "/ws/", ["proxy_buffering off;"])


def test_changed_property() -> None:
    assert not NginxPlan(new_text="a", original="a").changed
    assert NginxPlan(new_text="b", original="a").changed


def test_split_nginx_T() -> None:
    out = (
        "nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n"
        "nginx: configuration file /etc/nginx/nginx.conf test is successful\n"
        "# configuration file /etc/nginx/nginx.conf:\n"
        "http {\n    include /etc/nginx/sites-enabled/*;\n}\n\n"
        "# configuration file /etc/nginx/sites-enabled/api:\n"
        + SITE + "\n"
        "# configuration file /etc/nginx/snippets/empty.conf:\n"
        "\n"
    )
    files = split_nginx_T(out)
    assert files == {
        "/etc/nginx/nginx.conf": "http {\n    include /etc/nginx/sites-enabled/*;\n}\n",
        "/etc/nginx/sites-enabled/api": SITE,
        "/etc/nginx/snippets/empty.conf": "",
    }
    assert split_nginx_T("nginx: [emerg] unknown directive\n") == {}


@pytest.mark.parametrize(("s", "v"), [
    ("nginx version: nginx/1.22.1\n", (1, 22, 1)),
    ("nginx version: nginx/1.18.0 (Ubuntu)", (1, 18, 0)),
    ("nginx version: openresty/1.21.4.1", (1, 21, 4)),
    ("bash: nginx: command not found", None),
])
def test_parse_nginx_version(s: str, v: tuple[int, int, int] | None) -> None:
    assert parse_nginx_version(s) == v
