"""The Ansible-format inventory: loading, precedence, validation, --limit and sharding."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediations.model.defaults import DEFAULT_ENV_FLAGS, DEFAULT_NGINX_DIRECTIVES
from remediations.model.errors import InventoryError
from remediations.model.inventory import (
    Host,
    Inventory,
    WsVars,
    load_inventory,
    resolve_inventory_path,
    shard,
)

REPO = Path(__file__).resolve().parent.parent
SITE = "nginx_site: /etc/nginx/sites-enabled/app"


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "hosts.yml"


def load(tmp_path: Path, hosts_yml: str, **extra: str) -> Inventory:
    """Load hosts.yml (plus extra files, named with / as __) with nginx_site set in all's vars."""
    files = {"hosts.yml": hosts_yml, **{k.replace("__", "/"): v for k, v in extra.items()}}
    files.setdefault("group_vars/all.yml", SITE + "\n")
    return load_inventory(write(tmp_path, files))


def error(tmp_path: Path, hosts_yml: str, **extra: str) -> str:
    with pytest.raises(InventoryError) as e:
        load(tmp_path, hosts_yml, **extra)
    return str(e.value)


NESTED = """
all:
  hosts:
    lonely:
  children:
    production:
      hosts:
        api1:
          ansible_host: 10.0.0.1
          ansible_port: 2222
          ansible_user: deploy
          ansible_ssh_private_key_file: keys/id_ed25519
          ansible_become: yes
      children:
        web:
          hosts:
            web1:
            web2:
        db:
          hosts:
            db1:
          children:
            replicas:
              hosts:
                db2:
    staging:
      hosts:
        stage1:
"""


# ---------------------------------------------------------------- loading


def test_loads_hosts_connection_vars_and_defaults(tmp_path: Path) -> None:
    inv = load(tmp_path, NESTED)
    assert list(inv.hosts) == ["lonely", "api1", "web1", "web2", "db1", "db2", "stage1"]
    api = inv.hosts["api1"]
    assert (api.address, api.port, api.user, api.become) == ("10.0.0.1", 2222, "deploy", True)
    assert api.key_file == str(tmp_path / "keys" / "id_ed25519")  # relative to the inventory's dir
    web = inv.hosts["web1"]
    assert (web.address, web.port, web.user, web.key_file, web.become) == ("web1", 22, "root", None, False)
    assert web.ws == WsVars(nginx_site="/etc/nginx/sites-enabled/app")
    assert web.ws.env_file == "/opt/wealth-coach-ai/.env"
    assert web.ws.known_hosts == os.path.expanduser("~/.ssh/known_hosts")
    assert web.ws.env_flags == DEFAULT_ENV_FLAGS and web.ws.nginx_directives == DEFAULT_NGINX_DIRECTIVES
    assert (web.ws.ws_url, web.ws.ws_token_key, web.ws.journal_keep, web.ws.nginx_reload) == (None, None, 20, "auto")
    assert (web.ws.allowed_paths, web.ws.max_env_bytes, web.ws.max_site_bytes) == ((), 1048576, 16 * 1048576)


def test_children_nest_transitively(tmp_path: Path) -> None:
    inv = load(tmp_path, NESTED)
    assert inv.groups["production"] == ("api1", "web1", "web2", "db1", "db2")
    assert inv.groups["db"] == ("db1", "db2")
    assert inv.groups["ungrouped"] == ("lonely",)
    assert inv.groups["all"] == tuple(inv.hosts)
    assert inv.hosts["db2"].groups == ("all", "production", "db", "replicas")


def test_top_level_groups_besides_all_are_children_of_all(tmp_path: Path) -> None:
    inv = load(tmp_path, "web:\n  hosts:\n    w1:\ndb:\n  hosts:\n    d1:\n")
    assert inv.groups["web"] == ("w1",) and inv.groups["all"] == ("w1", "d1")
    assert inv.groups["ungrouped"] == ()


def test_host_ranges_ports_and_ansible_tags(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        "all:\n  hosts:\n    web[01:03].example.com:\n    db[a:b]:\n    bastion:2200:\n"
        "    fe80::1:\n  vars:\n    secret: !vault |\n      $ANSIBLE_VAULT;1.1;AES256\n      6162\n"
        "    raw: !unsafe '{{ not templated }}'\n",
    )
    assert list(inv.hosts) == ["web01.example.com", "web02.example.com", "web03.example.com", "dba", "dbb",
                               "bastion", "fe80::1"]
    assert inv.hosts["bastion"].port == 2200 and inv.hosts["fe80::1"].port == 22
    assert inv.hosts["dba"].vars["raw"] == "{{ not templated }}"


def test_directory_inventory_reads_every_yaml_source(tmp_path: Path) -> None:
    write(tmp_path, {
        "a.yml": "all:\n  children:\n    web:\n      hosts:\n        w1:\n",
        "b.yaml": "all:\n  children:\n    web:\n      hosts:\n        w2:\n      vars:\n        compose_service: api\n",
        "notes.txt": "not an inventory",
        "group_vars/all.yml": SITE,
        "host_vars/w2.yml": "compose_service: worker\n",
    })
    inv = load_inventory(tmp_path)
    assert inv.groups["web"] == ("w1", "w2")
    assert inv.hosts["w1"].ws.compose_service == "api"
    assert inv.hosts["w2"].ws.compose_service == "worker"


# ---------------------------------------------------------------- precedence

# Ansible's order (its VARIABLE_PRECEDENCE default, checked against ansible-inventory in
# test_inventory_formats.py): every group's inventory vars come before any group_vars file.
LEVELS = ["all inline", "parent inline", "child inline", "group_vars/all", "group_vars/parent",
          "group_vars/child", "host inline", "host_vars"]


def level_vars(j: int, indent: str = "") -> str:
    """Level j sets k{i}=j for every i >= j, so k{i} must end up as i if the order is right."""
    return "".join(f"{indent}k{i}: {j}\n" for i in range(j, len(LEVELS)))


def test_precedence_all_group_child_host_host_vars(tmp_path: Path) -> None:
    hosts = (
        "all:\n  vars:\n" + level_vars(0, "    ")
        + "  children:\n    parent:\n      vars:\n" + level_vars(1, "        ")
        + "      children:\n        child:\n          vars:\n" + level_vars(2, "            ")
        + "          hosts:\n            h1:\n" + level_vars(6, "              ")
    )
    inv = load(
        tmp_path, hosts,
        group_vars__all=SITE + "\n" + level_vars(3),
        group_vars__parent=level_vars(4),  # the extension-less file form
        **{"group_vars__child.yaml": level_vars(5), "host_vars__h1.yml": level_vars(7)},
    )
    got = inv.hosts["h1"].vars
    assert {f"k{i}": got[f"k{i}"] for i in range(len(LEVELS))} == {f"k{i}": i for i in range(len(LEVELS))}


def test_same_depth_groups_merge_by_name_and_depth_beats_name(tmp_path: Path) -> None:
    hosts = """
all:
  children:
    b_group: {hosts: {h1: }, vars: {x: b, y: b}}
    a_group: {hosts: {h1: }, vars: {x: a}}
    z_group:
      vars: {y: z}
      children:
        a_child: {hosts: {h1: }, vars: {y: a_child}}
"""
    v = load(tmp_path, hosts).hosts["h1"].vars
    assert v["x"] == "b"  # b_group sorts after a_group at depth 1
    assert v["y"] == "a_child"  # depth 2 wins whatever its name


def test_group_vars_directory_form_in_sorted_order(tmp_path: Path) -> None:
    inv = load(
        tmp_path,
        "all:\n  children:\n    web:\n      hosts:\n        w1:\n      vars:\n        ws_location: /inline/\n",
        **{
            "group_vars__web__10-base.yml": "ws_location: /base/\ncompose_service: api\n",
            "group_vars__web__20-override.yaml": "ws_location: /override/\n",
            "group_vars__web__.hidden.yml": "ws_location: /hidden/\n",
            "group_vars__web__sub__30-deep.yml": "backend_container: deep\n",
        },
    )
    ws = inv.hosts["w1"].ws
    assert (ws.ws_location, ws.compose_service, ws.backend_container) == ("/override/", "api", "deep")


def test_ws_vars_conversions_and_relative_paths(tmp_path: Path) -> None:
    inv = load(tmp_path, """
all:
  hosts:
    h1:
      app_dir: /srv/app
      env_file: config/prod.env
      wsguard_known_hosts: ssh/known_hosts
      env_flags: {WS_RATE_LIMIT_ENABLED: false, WS_MAX_MESSAGES_PER_MINUTE: 500, X_ON: true}
      nginx_directives: [proxy_buffering off]
      ws_url: ws://h1:8000/ws/chat
      wsguard_journal_keep: 3
      wsguard_nginx_reload: systemd
      wsguard_allowed_paths: [/srv/shared/, /srv/shared, /data//x]
      wsguard_max_env_bytes: 2048
      wsguard_max_site_bytes: "4096"
      unknown_var_from_ansible: anything
""")
    ws = inv.hosts["h1"].ws
    assert ws.env_file == "/srv/app/config/prod.env"
    assert ws.known_hosts == str(tmp_path / "ssh" / "known_hosts")
    assert ws.env_flags == {"WS_RATE_LIMIT_ENABLED": "false", "WS_MAX_MESSAGES_PER_MINUTE": "500", "X_ON": "true"}
    assert ws.nginx_directives == ["proxy_buffering off"]
    assert (ws.ws_url, ws.journal_keep, ws.nginx_reload) == ("ws://h1:8000/ws/chat", 3, "systemd")
    assert ws.allowed_paths == ("/srv/shared", "/data/x")  # normalised, each once, in order
    assert (ws.max_env_bytes, ws.max_site_bytes) == (2048, 4096)


def test_allowed_paths_may_be_empty(tmp_path: Path) -> None:
    inv = load(tmp_path, "all:\n  hosts:\n    h1:\n      wsguard_allowed_paths:\n    h2:\n"
                         "      wsguard_allowed_paths: []\n")
    assert inv.hosts["h1"].ws.allowed_paths == () == inv.hosts["h2"].ws.allowed_paths


def test_names_and_values_that_look_like_options_elsewhere_are_kept(tmp_path: Path) -> None:
    inv = load(tmp_path, """
all:
  hosts:
    h1:
      compose_service: a
      backend_container: web.1_x-y
      ws_location: "~ ^/ws-(chat|feed)/"
      env_flags: {WS_OFFSET: -1, WS_NAME: "-x-"}
      nginx_directives: ["proxy_set_header X-Tab\tvalue"]
""")
    ws = inv.hosts["h1"].ws
    assert (ws.compose_service, ws.backend_container, ws.ws_location) == ("a", "web.1_x-y", "~ ^/ws-(chat|feed)/")
    assert ws.env_flags == {"WS_OFFSET": "-1", "WS_NAME": "-x-"}  # written into the file, never argv


# ---------------------------------------------------------------- validation

BAD_VARS = [
    ("app_dir", "relative/dir", "absolute path"),
    ("nginx_site", "sites-enabled/app", "absolute path"),
    ("nginx_site", "'{{ site }}'", "Jinja"),
    ("env_file", "[a, b]", "non-empty string"),
    ("compose_service", "''", "non-empty string"),
    ("env_flags", "[WS_RATE_LIMIT_ENABLED]", "mapping"),
    ("env_flags", "{'not an identifier': x}", "identifiers"),
    ("env_flags", "{A: [1]}", "string, number or boolean"),
    ("env_flags", "{on: x}", "quote it"),
    ("nginx_directives", "proxy_buffering off", "list of non-empty"),
    ("nginx_directives", "['']", "list of non-empty"),
    ("ws_url", "https://example.com/ws", "ws:// or wss://"),
    ("ws_token_key", "'has space'", "identifier"),
    ("wsguard_journal_keep", "0", "from 1 to 10000"),
    ("wsguard_journal_keep", "true", "from 1 to 10000"),
    ("wsguard_journal_keep", ".inf", "from 1 to 10000"),
    ("wsguard_journal_keep", ".nan", "from 1 to 10000"),
    ("wsguard_journal_keep", "99999999999999999999", "from 1 to 10000"),
    ("wsguard_nginx_reload", "restart", "auto, signal, service, systemd"),
    ("ansible_port", "70000", "from 1 to 65535"),
    ("ansible_port", "ssh", "from 1 to 65535"),
    ("ansible_port", "22.5", "from 1 to 65535"),
    ("ansible_port", "'99999999999999999999999'", "from 1 to 65535"),
    ("ansible_become", "maybe", "boolean"),
    ("ansible_user", "{a: 1}", "non-empty string"),
    # The new limits and trees.
    ("wsguard_max_env_bytes", "0", "a size in bytes from 1 to 1073741824"),
    ("wsguard_max_env_bytes", "1.5", "a size in bytes from 1 to"),
    ("wsguard_max_env_bytes", ".inf", "a size in bytes from 1 to"),
    ("wsguard_max_env_bytes", "99999999999999999999", "a size in bytes from 1 to"),
    ("wsguard_max_env_bytes", "lots", "a size in bytes from 1 to"),
    ("wsguard_max_env_bytes", "false", "a size in bytes from 1 to"),
    ("wsguard_max_site_bytes", "-1", "a size in bytes from 1 to"),
    ("wsguard_max_site_bytes", ".nan", "a size in bytes from 1 to"),
    ("wsguard_max_site_bytes", "2147483648", "a size in bytes from 1 to 1073741824"),
    ("wsguard_allowed_paths", "/srv/shared", "a list of absolute paths"),
    ("wsguard_allowed_paths", "[srv/shared]", "'srv/shared' is not: an absolute path"),
    ("wsguard_allowed_paths", "[/srv, 5]", "5 is not: a non-empty string"),
    ("wsguard_allowed_paths", "['/srv/../etc']", "without '..'"),
    ("wsguard_allowed_paths", "[/]", "narrower than /"),
    ("wsguard_allowed_paths", '["/srv/a\\nb"]', "single line"),
    ("ws_token_header", "'X Token'", "an HTTP header name such as Authorization"),
    ("ws_token_header", "'Authorization:'", "an HTTP header name such as Authorization"),
    # Values that would read as options on a command line, or cut it short.
    ("compose_service", "--help", "does not start with '-'"),
    ("compose_service", "' -d'", "does not start with '-'"),
    ("compose_service", "'back end'", "compose service name"),
    ("compose_service", ".hidden", "compose service name"),
    ("compose_service", "'svc;reboot'", "compose service name"),
    ("backend_container", "--follow", "does not start with '-'"),
    ("backend_container", "x", "container name"),  # Docker's rule: two characters at least
    ("backend_container", "'app$(id)'", "container name"),
    ("backend_container", "/app", "container name"),
    ("ansible_user", "-oProxyCommand=x", "does not start with '-'"),
    ("ansible_user", "'de ploy'", "without spaces"),
    ("ansible_host", "-oProxyCommand=x", "does not start with '-'"),
    ("ansible_host", "'10.0.0.1 -p 2'", "without spaces"),
    ("ansible_ssh_private_key_file", "-i", "does not start with '-'"),
    ("ws_location", "-x", "does not start with '-'"),
    ("env_file", "--env-file", "does not start with '-'"),
    ("wsguard_known_hosts", "'-F'", "does not start with '-'"),
    ("app_dir", '"/srv/a\\0b"', "no NUL, newline"),
    ("nginx_site", '"/etc/nginx/a\\nb"', "no NUL, newline"),
    ("env_file", '"x\\r.env"', "no NUL, newline"),
    ("ws_location", '"/ws/\\n"', "no NUL, newline"),
    ("ws_url", '"ws://h/ws\\0"', "no NUL, newline"),
    ("env_flags", '{A: "x\\0y"}', "no NUL or other control character"),
    ("nginx_directives", '["proxy_buffering off\\0"]', "no NUL or other control character"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VARS)
def test_bad_host_var_names_file_host_and_key(tmp_path: Path, key: str, value: str, expected: str) -> None:
    msg = error(tmp_path, f"all:\n  hosts:\n    h1:\n      {key}: {value}\n")
    assert str(tmp_path / "hosts.yml") in msg and "host 'h1'" in msg and f"{key}:" in msg and expected in msg


@pytest.mark.parametrize(("key", "value", "expected"), BAD_VARS[:6])
def test_bad_group_var_in_group_vars_file_names_it(tmp_path: Path, key: str, value: str, expected: str) -> None:
    msg = error(tmp_path, "all:\n  children:\n    web:\n      hosts:\n        w1:\n",
                group_vars__web=f"{key}: {value}\n")
    assert str(tmp_path / "group_vars" / "web") in msg and "group 'web'" in msg and key in msg and expected in msg


def test_bad_var_in_host_vars_and_inline_group_vars(tmp_path: Path) -> None:
    msg = error(tmp_path, "all:\n  hosts:\n    h1:\n", host_vars__h1="ws_url: ftp://x\n")
    assert "host_vars/h1" in msg and "host 'h1'" in msg and "ws_url" in msg
    msg = error(tmp_path, "all:\n  vars:\n    wsguard_journal_keep: many\n  hosts:\n    h1:\n")
    assert "hosts.yml" in msg and "group 'all'" in msg and "wsguard_journal_keep" in msg


NEW_VARS = [b for b in BAD_VARS if b[0].startswith(("wsguard_max_", "wsguard_allowed_"))]


@pytest.mark.parametrize(("key", "value", "expected"), NEW_VARS)
def test_bad_limit_or_tree_in_group_vars_names_file_and_key(tmp_path: Path, key: str, value: str,
                                                          expected: str) -> None:
    msg = error(tmp_path, "all:\n  children:\n    web:\n      hosts:\n        w1:\n",
                **{"group_vars__web.yml": f"{key}: {value}\n"})
    assert str(tmp_path / "group_vars" / "web.yml") in msg and f"{key}:" in msg and expected in msg


@pytest.mark.parametrize(("key", "value"), [("compose_service", "--help"), ("backend_container", "--follow"),
                                            ("ansible_host", "-oProxyCommand=sh")])
def test_option_like_value_error_shows_it_and_says_what_to_write(tmp_path: Path, key: str, value: str) -> None:
    msg = error(tmp_path, f"all:\n  vars:\n    {key}: {value}\n  hosts:\n    h1:\n")
    assert "hosts.yml" in msg and f"{key}: expected" in msg and repr(value) in msg
    assert "read as an option" in msg and "hint: write the name or path itself" in msg


@pytest.mark.parametrize(("hosts_yml", "expected"), [
    ("all:\n  hosts:\n    -oProxyCommand=x:\n", "host name '-oProxyCommand=x' starts with '-'"),
    ('all:\n  hosts:\n    "web\\n1":\n', "holds a control character"),
    ("all:\n  hosts:\n    web1:0:\n", "the port must be from 1 to 65535"),
    ("all:\n  hosts:\n    web1:70000:\n", "the port must be from 1 to 65535"),
    ("all:\n  hosts:\n    ? web1:" + "9" * 5000 + "\n    :\n", "the port must be from 1 to 65535"),
    ("all:\n  hosts:\n    web[1:999999999]:\n", "makes more than 10000 hosts"),
    ("all:\n  hosts:\n    web[1:100]-[1:200]:\n", "makes more than 10000 hosts"),
    ("all:\n  hosts:\n    ? web[0:" + "9" * 5000 + "]\n    :\n", "makes more than 10000 hosts"),
    ('all:\n  hosts:\n    "web 1":\n', "host 'web 1' has no ansible_host, and its name is not an address"),
    ('all:\n  children:\n    "web\\rx":\n      hosts:\n        h1:\n', "holds a control character"),
])
def test_host_and_group_names_that_cannot_be_used(tmp_path: Path, hosts_yml: str, expected: str) -> None:
    msg = error(tmp_path, hosts_yml)
    assert expected in msg and "hosts.yml" in msg


def test_host_name_with_a_space_is_fine_with_an_ansible_host(tmp_path: Path) -> None:
    inv = load(tmp_path, 'all:\n  hosts:\n    "web 1":\n      ansible_host: 10.0.0.1\n')
    assert inv.hosts["web 1"].address == "10.0.0.1"


def test_missing_nginx_site_names_the_host(tmp_path: Path) -> None:
    msg = error(tmp_path, "all:\n  hosts:\n    h1:\n", group_vars__all="app_dir: /srv\n")
    assert "host 'h1'" in msg and "nginx_site" in msg and "absolute path" in msg


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    msg = error(tmp_path, "all:\n  hosts:\n    h1:\n      app_dir: [unclosed\n    h2:\n")
    assert str(tmp_path / "hosts.yml") in msg and "line " in msg and "invalid YAML" in msg
    msg = error(tmp_path, "all:\n  hosts:\n    h1:\n", **{"group_vars__all.yml": "a: 1\n  b: : 2\n"})
    assert "group_vars/all.yml, line 2" in msg


@pytest.mark.parametrize(("hosts_yml", "expected"), [
    ("- h1\n- h2\n", "top level must be a mapping"),
    ("just text\n", "top level must be a mapping"),
    ("all:\n  hosts:\n    - h1\n", "hosts must be a mapping"),
    ("all:\n  hosts:\n    h1: 10.0.0.1\n", "host 'h1' must map to a mapping"),
    ("all:\n  children:\n    - web\n", "children must be a mapping"),
    ("all:\n  hostz:\n    h1:\n", "unknown key 'hostz'"),
    ("h1:\n  ansible_host: 10.0.0.1\n", "group 'h1': unknown key 'ansible_host'"),
    ("all:\n  children:\n    web: [h1]\n", "group 'web' must be a mapping"),
    ("all:\n  vars: [a]\n  hosts:\n    h1:\n", "vars must be a mapping"),
    ("all:\n  children:\n    a: {children: {b: {children: {a: }}}, hosts: {h1: }}\n", "cycle"),
    ("all:\n  children:\n    web: {children: {all: }}\n", "`all` cannot be a child"),
    ("all:\n  vars:\n    x: 1\n", "defines no hosts"),
    ("", "defines no hosts"),
    ("all:\n  vars:\n    x: " + "9" * 5000 + "\n  hosts:\n    h1:\n", "invalid YAML value"),  # past int()'s limit
    ("all:\n  vars:\n    x: 2024-13-01\n  hosts:\n    h1:\n", "invalid YAML value"),  # not a date
])
def test_bad_shapes_are_clear_errors(tmp_path: Path, hosts_yml: str, expected: str) -> None:
    msg = error(tmp_path, hosts_yml)
    assert expected in msg and "hosts.yml" in msg


def test_missing_inventory_says_how_to_pass_one(tmp_path: Path) -> None:
    for path in (tmp_path / "nope.yml", tmp_path):  # a missing file; a directory with no sources
        with pytest.raises(InventoryError) as e:
            load_inventory(path)
        assert str(path) in str(e.value) and "--inventory" in str(e.value)


def test_resolve_inventory_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WSGUARD_INVENTORY", raising=False)
    assert resolve_inventory_path(None) == "inventory/"
    monkeypatch.setenv("WSGUARD_INVENTORY", "/etc/wsguard/inv.yml")
    assert resolve_inventory_path(None) == "/etc/wsguard/inv.yml"
    assert resolve_inventory_path(".lab/inventory.yml") == ".lab/inventory.yml"


# ---------------------------------------------------------------- --limit


@pytest.mark.parametrize(("limit", "expected"), [
    (None, "lonely api1 web1 web2 db1 db2 stage1"),
    ("", "lonely api1 web1 web2 db1 db2 stage1"),
    ("all", "lonely api1 web1 web2 db1 db2 stage1"),
    ("web1", "web1"),
    ("db", "db1 db2"),
    ("web*", "web1 web2"),  # hosts web1, web2 and the group web
    ("rep*", "db2"),  # a glob over group names
    ("stage1,web1", "web1 stage1"),  # inventory order, not pattern order
    ("stage1:web1", "web1 stage1"),
    ("production,!db", "api1 web1 web2"),
    ("production:!web:!api1", "db1 db2"),
    ("!production", "lonely stage1"),
    ("production,&db", "db1 db2"),
    ("web,stage1,&web*", "web1 web2"),
    ("  web1 , db1 ", "web1 db1"),
])
def test_select_patterns(tmp_path: Path, limit: str | None, expected: str) -> None:
    inv = load(tmp_path, NESTED)
    assert [h.name for h in inv.select(limit)] == expected.split()


@pytest.mark.parametrize("limit", ["nosuch", "web1,nosuch", "production,!nosuch", "all:&typo*", "ungrouped_x"])
def test_select_pattern_matching_nothing_is_an_error(tmp_path: Path, limit: str) -> None:
    inv = load(tmp_path, NESTED)
    with pytest.raises(InventoryError) as e:
        inv.select(limit)
    bad = limit.split(",")[-1].split(":")[-1].lstrip("!&")
    assert f"'{bad}'" in str(e.value) and "production" in str(e.value)  # lists the known groups


def test_select_without_any_pattern_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="no pattern"):
        load(tmp_path, NESTED).select(" , ")


# ---------------------------------------------------------------- sharding


def fake_host(name: str) -> Host:
    return Host(name=name, address=name, port=22, user="root", key_file=None, become=False, groups=("all",),
                vars={}, ws=WsVars(nginx_site="/etc/nginx/sites-enabled/x"))


@settings(max_examples=60, deadline=None)
@given(names=st.lists(st.text(min_size=1, max_size=12), unique=True, max_size=40), n=st.integers(1, 7))
def test_shards_are_disjoint_and_cover_all(names: list[str], n: int) -> None:
    hosts = [fake_host(name) for name in names]
    slices = [shard(hosts, f"{k}/{n}") for k in range(1, n + 1)]
    got = [h.name for s in slices for h in s]
    assert sorted(got) == sorted(names)  # every host exactly once
    for s in slices:
        assert [h.name for h in s] == [name for name in names if name in {h.name for h in s}]  # order kept
    assert shard(hosts, f"1/{n}") == slices[0]  # deterministic


@pytest.mark.parametrize("spec", ["", "1", "0/3", "4/3", "1/0", "a/b", "1/2/3", "-1/2"])
def test_bad_shard_spec(spec: str) -> None:
    with pytest.raises(InventoryError, match="K/N"):
        shard([fake_host("h")], spec)


# ---------------------------------------------------------------- the example production inventory


@pytest.mark.parametrize("path", ["inventory", "inventory/hosts.yml"])
def test_example_production_inventory_loads(path: str) -> None:
    inv = load_inventory(REPO / path)
    (host,) = inv.select("production")
    assert host.name == "api.wealthwarriorshub.in" and (host.user, host.become) == ("deploy", True)
    assert host.ws.nginx_site == "/etc/nginx/sites-enabled/api.wealthwarriorshub.in"
    assert host.ws.app_dir == "/opt/wealth-coach-ai" and host.ws.env_file == "/opt/wealth-coach-ai/.env"
    assert (host.ws.ws_url, host.ws.ws_token_key) == ("wss://api.wealthwarriorshub.in/ws/chat", "WS_AUTH_TOKEN")
    assert host.ws.env_flags == DEFAULT_ENV_FLAGS and host.ws.nginx_directives == DEFAULT_NGINX_DIRECTIVES
