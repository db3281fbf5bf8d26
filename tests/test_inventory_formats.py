"""Inventories as Ansible users have them: INI, YAML and `ansible-inventory --list` JSON, read as Ansible reads them.

The differential tests run a real ansible-core (pinned, from PyPI) installed once into .lab-cache/ansible-venv,
with HOME inside .lab-cache so nothing lands in the real ~/.ansible. A failed install fails those tests: a
silent skip would let the readers drift from Ansible unnoticed.
"""

from __future__ import annotations

import fcntl
import io
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remediations.model.errors import InventoryError
from remediations.model.inventory import (
    _CONNECTION_SETTINGS,
    _REFUSED_VARS,
    _SAME_AS_WSGUARD,
    _TUNING_VARS,
    Host,
    Inventory,
    load_inventory,
)

REPO = Path(__file__).resolve().parents[1]
ANSIBLE_CORE = "ansible-core==2.19.14"
CACHE = REPO / ".lab-cache"
VENV = CACHE / "ansible-venv"
ANSIBLE_HOME = CACHE / "ansible-home"  # HOME for Ansible: ~/.ansible lands here, never in the real home
SITE = "/etc/nginx/sites-enabled/app"


# ---------------------------------------------------------------- a real ansible-core


def ansible_venv() -> Path:
    """The cached venv with ANSIBLE_CORE, installed on first use (a lock keeps two runs from racing)."""
    CACHE.mkdir(exist_ok=True)
    marker = VENV / ".wsguard-installed"
    with open(CACHE / "ansible-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == ANSIBLE_CORE:
            return VENV
        shutil.rmtree(VENV, ignore_errors=True)
        started = time.monotonic()
        steps = ([sys.executable, "-m", "venv", str(VENV)],
                 [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  ANSIBLE_CORE])
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                pytest.fail(f"cannot install {ANSIBLE_CORE} into {VENV} (needed to compare wsguard's reading of "
                            f"inventories with Ansible's): {' '.join(cmd)} exited {r.returncode}:\n"
                            f"{r.stderr.strip()[-2000:]}", pytrace=False)
        marker.write_text(ANSIBLE_CORE)
        print(f"\ninstalled {ANSIBLE_CORE} in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return VENV


def ansible_env() -> dict[str, str]:
    """A clean environment: no ansible.cfg or ANSIBLE_* of the machine's, and a failed source is an error."""
    ANSIBLE_HOME.mkdir(parents=True, exist_ok=True)
    empty_cfg = ANSIBLE_HOME / "ansible.cfg"
    empty_cfg.write_text("")
    return {"PATH": f"{VENV / 'bin'}:/usr/bin:/bin", "HOME": str(ANSIBLE_HOME), "LANG": "C.UTF-8",
            "ANSIBLE_CONFIG": str(empty_cfg), "ANSIBLE_HOME": str(ANSIBLE_HOME / ".ansible"),
            "ANSIBLE_LOCAL_TEMP": str(ANSIBLE_HOME / "tmp"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "1"}


def start(cmd: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(cmd, cwd=cwd, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen[str]) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{proc.args!r} exited {proc.returncode}:\n{err}"
    return out


# In-process, as ansible-inventory computes --list (InventoryManager, then VariableManager.get_vars less the
# internal vars): one Python start for many small inventories instead of one ansible-inventory run each.
# Also lists every var Ansible's connection, become and shell plugins read.
DRIVER = r"""
import json, sys
from ansible import constants as C
from ansible.parsing.dataloader import DataLoader
from ansible.inventory.manager import InventoryManager
from ansible.vars.manager import VariableManager
from ansible._internal._json._profiles import _inventory_legacy
from ansible.plugins.loader import connection_loader, become_loader, shell_loader

results = {}
for src in json.loads(sys.argv[1]):
    loader = DataLoader()
    try:
        inv = InventoryManager(loader=loader, sources=[src])
    except Exception as e:
        results[src] = {"error": str(e)}
        continue
    vm = VariableManager(loader=loader, inventory=inv)
    hostvars = {}
    for h in inv.get_hosts():
        v = vm.get_vars(host=h, include_hostvars=False, stage="all")
        for k in C.INTERNAL_STATIC_VARS:
            v.pop(k, None)
        hostvars[h.name] = v
    groups = {g.name: sorted(h.name for h in g.get_hosts()) for g in inv.groups.values()}
    results[src] = {"hostvars": hostvars, "groups": groups}

names = set()
for loader, plugins in ((connection_loader, ["ssh", "paramiko_ssh"]), (become_loader, ["sudo"]),
                        (shell_loader, ["sh"])):
    for plugin in plugins:
        loader.get(plugin, class_only=True)  # loads its documented options into the config
        for option in C.config.get_configuration_definitions(loader.type, plugin).values():
            names.update(v["name"] for v in option.get("vars") or [])
names.update(v for pair in C.MAGIC_VARIABLE_MAPPING.values() for v in pair)
names.update(v["name"] for v in C.config.get_configuration_definition("INTERPRETER_PYTHON")["vars"])
print(json.dumps({"inventories": results, "connection_vars": sorted(n for n in names if n.startswith("ansible_"))},
                 cls=_inventory_legacy.Encoder))
"""


def plain(value: Any) -> Any:
    """A value as ansible-inventory's JSON shows it (tuples as lists, keys as strings)."""
    return json.loads(json.dumps(value))


# ---------------------------------------------------------------- one inventory, three formats

# Level j of the precedence chain sets lv{i} = "L{j}" for every i >= j: lv{i} ends as "L{i}" on a host that
# has every level, and each host with fewer levels shows which level wins among the ones it has.
LEVELS = 8  # all inline, parent inline, child inline, group_vars/all, group_vars/prod, group_vars/web|db, host inline,
#             host_vars


def ini_level(j: int) -> str:
    return "".join(f"lv{i}=L{j}\n" for i in range(j, LEVELS))


def yaml_level(j: int, indent: str) -> str:
    return "".join(f"{indent}lv{i}: L{j}\n" for i in range(j, LEVELS))


def inline_level(j: int) -> str:  # on an INI host line
    return " ".join(f"lv{i}=L{j}" for i in range(j, LEVELS))


INI = f"""\
# The same inventory as hosts.yml, in Ansible's INI format (no extension: read by its content).
lonely ansible_host=192.0.2.10 # ungrouped, with its own address

[web]
web01.example.com:2201 {inline_level(6)}
web[01:03].example.com
web02.example.com:2299 role=port-ignored  # web02 is known already: Ansible keeps its first port (none)
api ansible_host=192.0.2.20 ansible_port=2222 ansible_user=deploy ansible_become=True note="api host"

[db]
db-[a:c]:2200 ansible_ssh_user=admin

[replicas]
db-c replica=True

[dbs:children]
db
replicas

[prod:children]   # prod is named before its children are declared further down
web
dbs

[aaa]
web03.example.com
[bbb]
web03.example.com
[ccc]
web02.example.com
[ddd]
web02.example.com

[aaa:vars]
ansible_group_priority=5
same_depth=aaa
[bbb:vars]
same_depth=bbb
[ccc:vars]
same_depth=ccc
[ddd:vars]
same_depth=ddd

[all:vars]
nginx_site={SITE}
app_dir=/srv/app
ansible_python_interpreter=/usr/bin/python3
ansible_timeout=30
{ini_level(0)}
[prod:vars]
wsguard_journal_keep=7
ansible_connection=ssh
{ini_level(1)}
[web:vars]
compose_service=web
{ini_level(2)}
[db:vars]
compose_service=db
ansible_become=yes
ansible_become_user=root
{ini_level(2)}
"""

YAML = f"""\
# The same inventory as `hosts` beside it, in Ansible's YAML format.
all:
  vars:
    nginx_site: {SITE}
    app_dir: /srv/app
    ansible_python_interpreter: /usr/bin/python3
    ansible_timeout: 30
{yaml_level(0, "    ")}\
  hosts:
    lonely:
      ansible_host: 192.0.2.10
  children:
    prod:
      vars:
        wsguard_journal_keep: 7
        ansible_connection: ssh
{yaml_level(1, "        ")}\
      children:
        web:
          vars:
            compose_service: web
{yaml_level(2, "            ")}\
          hosts:
            web01.example.com:2201:
{yaml_level(6, "              ")}\
            web[01:03].example.com:
            web02.example.com:2299:
              role: port-ignored
            api:
              ansible_host: 192.0.2.20
              ansible_port: 2222
              ansible_user: deploy
              ansible_become: true
              note: api host
        dbs:
          children:
            db:
              vars:
                compose_service: db
                ansible_become: "yes"
                ansible_become_user: root
{yaml_level(2, "                ")}\
              hosts:
                db-[a:c]:2200:
                  ansible_ssh_user: admin
            replicas:
              hosts:
                db-c:
                  replica: true
    aaa:
      vars: {{ansible_group_priority: 5, same_depth: aaa}}
      hosts: {{web03.example.com: }}
    bbb:
      vars: {{same_depth: bbb}}
      hosts: {{web03.example.com: }}
    ccc:
      vars: {{same_depth: ccc}}
      hosts: {{web02.example.com: }}
    ddd:
      vars: {{same_depth: ddd}}
      hosts: {{web02.example.com: }}
"""

BESIDE = {
    "group_vars/all.yml": yaml_level(3, "") + "nginx_directives: [proxy_http_version 1.1, proxy_read_timeout 3600s]\n",
    # The directory form: files and subfolders in one sorted listing; hidden and *.txt files are not vars.
    "group_vars/prod/10-main.yml": yaml_level(4, "") + "ws_location: /ws/\n",
    "group_vars/prod/20-sub/more.json": json.dumps({"backend_container": "app_backend", "lv7": "L4-json"}),
    "group_vars/prod/30-last.yaml": "ws_location: /socket/\n",
    "group_vars/prod/.hidden.yml": "ws_location: /hidden/\n",
    "group_vars/prod/notes.txt": "ws_location: /txt/\n",
    "group_vars/web.yml": yaml_level(5, "") + "env_flags: {WS_RATE_LIMIT_ENABLED: false, WS_MAX: 500}\n",
    "group_vars/db": yaml_level(5, ""),  # the extension-less file form
    "group_vars/ccc.yml": "same_depth_file: ccc\n",
    "group_vars/ddd.yml": "same_depth_file: ddd\n",
    "group_vars/aaa.yml": "prio_file: aaa\n",
    "group_vars/bbb.yml": "prio_file: bbb\n",
    "host_vars/web01.example.com.yml": yaml_level(7, "") + "ws_token_key: WS_AUTH_TOKEN\n",
    "host_vars/api.json": json.dumps({"ws_url": "wss://api.example.com/ws/chat", "lv7": "L7-json"}),
    "host_vars/db-b/main.yml": "compose_service: db-b\n",
}


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


# Small INI inventories where Ansible's reading is easy to get wrong; each runs through Ansible and wsguard.
# nginx_site comes last, in [all:vars], since wsguard needs it.
EDGE_OK = {
    "typing_group_vars": "[g]\nh1\n[g:vars]\n" + "".join(f"v{i}={text}\n" for i, text in enumerate([
        "5", "True", "yes", "[1, 'x']", "{'k': (1, 2)}", "'007'", "007", "1.5e3", "None", "hello # not a comment",
        "5 # a comment", "", "=x", " spaced = more ", '"quoted"', "u'x'", "b'bytes'", "1j", "...", "{1, 2}",
        "-0x10", "1_000", "9" * 5000, "/etc/nginx/a.conf", "#x", "a;b", "'a\\tb'", "[[1], {'a': [None]}]"])),
    "typing_host_line": "h1 " + " ".join(f"v{i}={text}" for i, text in enumerate([
        "5", "True", "yes", "'[1, 2]'", '"hello world"', "\"'007'\"", "007", "0o17", "a;b",
        "\"{'a': 1}\"", "1e3", "None", "x#y", "lost=1"])) + " # shlex: '#' starts a comment even inside a word\n",
    "ranges": "web[01:03]\ndb-[a:c]\nn[1:9:4]\nx[A:C]\ny[:2]\nz[a:b][1:2]\n10.0.0.[1:2]\nr[01:02]:2222\n",
    "ports": "h1\n[g]\nh1:2222\nh2:2200 a=1\n[k]\nh2:2300\n[fe]\n[fe80::1]:2201\nfe80::2\n",
    "host_in_two_groups": "[a]\nh1 x=1 y=a\n[b]\nh1 x=2\n",
    "all_and_ungrouped": "u1\n[all]\na1\n[ungrouped]\nu2\n[g]\nu1\n",
    "comments": "# c\n; c\n  # indented\nh1 a=1 # c=2\n[g] # section comment\nh2 b=1#c=3\n",
    "children_declared_later": "[p:children]\nc\n[gp:children]\np\n[c]\nh1\n[c:vars]\nx=c\n[p:vars]\nx=p\ny=p\n",
    "vars_before_group": "[g:vars]\nx=1\n[g]\nh1\n",
    "priority": "[a]\nh1\n[b]\nh1\n[a:vars]\nx=a\nansible_group_priority=3\n[b:vars]\nx=b\n",
    "dash_group": "[web-servers]\nh1\n[p:children]\nweb-servers\n",
    "one_host": "h0\n",
    # Past 200 brackets Python's parser gives up and the value stays text (Ansible itself fails on 200).
    "nested_past_pythons_limit": "h1 a=" + "[" * 201 + "]" * 201 + " b=" + "[" * 50 + "]" * 50 + "\n",
    "digits_past_pythons_limit": "h1 a=" + "9" * 5000 + "\n",
}
EDGE_BAD = {  # Ansible refuses each; wsguard must too, naming the file and the line
    "space_in_section": ("[web servers]\nh1\n", 1),
    "unknown_section_type": ("[web:bogus]\nh1\n", 1),
    "host_word_without_value": ("h1 foo\n", 1),
    "unclosed_quote": ("[g]\nh1 a=\"unclosed\n", 2),
    "vars_without_equals": ("[g]\nh1\n[g:vars]\nnovalue\n", 4),
    "undefined_child": ("[g]\nh1\n[p:children]\nmissing\n", 4),
    "vars_of_undefined_group": ("h1\n[x:vars]\na=1\n", 2),
    "vars_of_group_only_named_as_child": ("h1\n[p:children]\nc\n[c:vars]\na=1\n", 3),
    "trailing_colon": ("[g]\nh1:\n", 2),
    "semicolon_after_host": ("[g]\nh1 ; only # starts a comment on a host line\n", 2),
    "yaml_marker": ("---\nh1\n", 1),
    "letter_number_range": ("[g]\nweb[1:a]\n", 2),
    "padded_width_mismatch": ("[g]\nweb[01:100]\n", 2),
    "letters_backwards": ("[g]\nweb[c:a]\n", 2),
    "children_bad_name": ("[g]\nh1\n[p:children]\ng h\n", 4),
    "unbuildable_literal": ("[g]\nh1\n[g:vars]\nx={[1]: 2}\n", 4),
}


def edge_text(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return data + f"\n[all:vars]\nnginx_site={SITE}\n".encode()


@pytest.fixture(scope="module")
def ansible(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Everything Ansible says, in one go: --list of the INI and the YAML versions, and the in-process
    readings of the edge cases (three processes at once)."""
    ansible_venv()
    root = tmp_path_factory.mktemp("formats")
    inv, edges, cwd = root / "inv", root / "edges", root / "cwd"
    write(inv, {"hosts": INI, "hosts.yml": YAML, **BESIDE})
    edges.mkdir()
    cwd.mkdir()  # Ansible runs in an empty directory: no ansible.cfg or group_vars/ of the cwd
    for name, text in EDGE_OK.items():
        (edges / name).write_bytes(edge_text(text))
    for name, (text, _) in EDGE_BAD.items():
        (edges / name).write_bytes(edge_text(text))
    bin_ = VENV / "bin"
    started = time.monotonic()
    procs = {
        "ini": start([str(bin_ / "ansible-inventory"), "-i", str(inv / "hosts"), "--list"], cwd),
        "yaml": start([str(bin_ / "ansible-inventory"), "-i", str(inv / "hosts.yml"), "--list"], cwd),
        "driver": start([str(bin_ / "python"), "-c", DRIVER, json.dumps(sorted(str(p) for p in edges.iterdir()))],
                        cwd),
    }
    out = {name: finish(p) for name, p in procs.items()}
    print(f"\nAnsible's side took {time.monotonic() - started:.1f}s", file=sys.stderr)
    (inv / "list.json").write_text(out["ini"])  # beside group_vars/: they must not be read again
    driver = json.loads(out["driver"])
    yield {"dir": inv, "edges": edges, "ini": json.loads(out["ini"]), "yaml": json.loads(out["yaml"]),
           "inventories": driver["inventories"], "connection_vars": driver["connection_vars"]}


def transitive_groups(listing: dict[str, Any]) -> dict[str, set[str]]:
    """group -> every host in it or its descendants, from ansible-inventory --list JSON."""

    def hosts(group: str) -> set[str]:
        body = listing.get(group, {})
        return set(body.get("hosts", [])).union(*(hosts(c) for c in body.get("children", [])))

    return {g: hosts(g) for g in listing if g != "_meta"}


def host_facts(h: Host) -> tuple[Any, ...]:
    return (h.address, h.port, h.user, h.key_file, h.become, set(h.groups), h.ws, plain(dict(h.vars)))


# ---------------------------------------------------------------- the differential tests


@pytest.mark.parametrize("fmt", ["ini", "yaml"])
def test_every_var_of_every_host_as_ansible_resolves_it(ansible: dict[str, Any], fmt: str) -> None:
    """wsguard's merged vars == ansible-inventory --list's hostvars, var by var, host by host: precedence
    (all < parent < child < group_vars files < host < host_vars), same-depth groups by priority then name,
    ranges, ports, [group:children], INI typing."""
    inv = load_inventory(ansible["dir"] / ("hosts" if fmt == "ini" else "hosts.yml"))
    listing = ansible[fmt]
    hostvars = listing["_meta"]["hostvars"]
    assert set(inv.hosts) == set(hostvars)
    for name, host in inv.hosts.items():
        assert plain(dict(host.vars)) == hostvars[name], name
    assert {g: set(h) for g, h in inv.groups.items()} == transitive_groups(listing)
    # A few of the cases spelled out, so a failure reads as the rule it breaks.
    v = {name: h.vars for name, h in inv.hosts.items()}
    assert [v["web01.example.com"][f"lv{i}"] for i in range(LEVELS)] == [f"L{i}" for i in range(LEVELS)]
    assert [v["web02.example.com"][f"lv{i}"] for i in range(LEVELS)] == ["L0", "L1", "L2", "L3", "L4", "L5", "L5",
                                                                         "L5"]
    assert v["lonely"]["lv7"] == "L3"  # group_vars/all beats the inventory's [all:vars]
    assert v["web03.example.com"]["same_depth"] == "aaa"  # priority 5 merges after bbb's 1
    assert v["web03.example.com"]["prio_file"] == "aaa" and "ansible_group_priority" not in v["web03.example.com"]
    assert (v["web02.example.com"]["same_depth"], v["web02.example.com"]["same_depth_file"]) == ("ddd", "ddd")
    assert v["web01.example.com"]["ansible_port"] == 2201 and "ansible_port" not in v["web02.example.com"]
    assert v["api"]["lv7"] == "L7-json" and v["db-a"]["backend_container"] == "app_backend"  # JSON vars files
    assert inv.hosts["db-b"].ws.compose_service == "db-b" and inv.hosts["db-b"].port == 2200
    assert inv.hosts["db-c"].groups == ("all", "prod", "dbs", "db", "replicas")


def test_same_inventory_in_yaml_ini_and_list_json(ansible: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """One inventory written three ways: hosts, connection settings, groups and wsguard's vars all agree."""
    d = ansible["dir"]
    from_yaml, from_ini, from_json = (load_inventory(d / n) for n in ("hosts.yml", "hosts", "list.json"))
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((d / "list.json").read_bytes())))
    from_stdin = load_inventory("-")
    assert len(from_yaml.hosts) == 8
    for inv in (from_ini, from_json, from_stdin):
        assert set(inv.hosts) == set(from_yaml.hosts)
        for name, host in from_yaml.hosts.items():
            assert host_facts(inv.hosts[name]) == host_facts(host), name
        assert {g: set(h) for g, h in inv.groups.items()} == {g: set(h) for g, h in from_yaml.groups.items()}
    # --list carries no ansible_group_priority, so only YAML and INI can agree on the groups' order.
    assert {n: h.groups for n, h in from_ini.hosts.items()} == {n: h.groups for n, h in from_yaml.hosts.items()}
    api, dbb, web1 = from_ini.hosts["api"], from_ini.hosts["db-b"], from_ini.hosts["web01.example.com"]
    assert (api.address, api.port, api.user, api.become) == ("192.0.2.20", 2222, "deploy", True)
    assert (dbb.address, dbb.port, dbb.user, dbb.become) == ("db-b", 2200, "admin", True)  # ansible_ssh_user
    assert (web1.port, web1.ws.ws_location, web1.ws.backend_container) == (2201, "/socket/", "app_backend")
    assert web1.ws.env_flags == {"WS_RATE_LIMIT_ENABLED": "false", "WS_MAX": "500"}
    assert (web1.ws.journal_keep, web1.ws.ws_token_key, api.ws.ws_url) == (7, "WS_AUTH_TOKEN",
                                                                          "wss://api.example.com/ws/chat")


@pytest.mark.parametrize("name", sorted(EDGE_OK))
def test_ini_edge_cases_read_as_ansible_reads_them(ansible: dict[str, Any], name: str) -> None:
    path = ansible["edges"] / name
    theirs = ansible["inventories"][str(path)]
    assert "error" not in theirs, theirs
    inv = load_inventory(path)
    assert {h: plain(dict(host.vars)) for h, host in inv.hosts.items()} == theirs["hostvars"]
    assert {g: sorted(h) for g, h in inv.groups.items()} == theirs["groups"]


@pytest.mark.parametrize("name", sorted(EDGE_BAD))
def test_bad_ini_lines_are_refused_as_ansible_refuses_them(ansible: dict[str, Any], name: str) -> None:
    path = ansible["edges"] / name
    assert "error" in ansible["inventories"][str(path)], "Ansible accepted it"
    with pytest.raises(InventoryError) as e:
        load_inventory(path)
    line = EDGE_BAD[name][1]
    assert f"{path}, line {line}: " in str(e.value) and e.value.hint, str(e.value)


def test_every_connection_var_ansible_reads_has_a_rule(ansible: dict[str, Any]) -> None:
    """Each ansible_* var that Ansible's ssh/paramiko connections, sudo and sh read is honoured, accepted with
    wsguard's own value, refused, or known to be mere tuning; and no table names a var Ansible does not read."""
    ours = {v for vs in _CONNECTION_SETTINGS.values() for v in vs} | set(_SAME_AS_WSGUARD) | set(_REFUSED_VARS)
    ours |= _TUNING_VARS
    theirs = set(ansible["connection_vars"])
    assert sorted(theirs - ours) == [], "vars Ansible reads that wsguard has no rule for"
    assert sorted(ours - theirs) == [], "vars in wsguard's tables that Ansible does not read"


# ---------------------------------------------------------------- formats, without Ansible


def site(extra: str = "") -> str:
    return f"[all:vars]\nnginx_site={SITE}\n{extra}"


def load_text(tmp_path: Path, name: str, text: str | bytes, **beside: str) -> Inventory:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    write(tmp_path, {k.replace("__", "/"): v for k, v in beside.items()})
    return load_inventory(path)


def error_of(tmp_path: Path, name: str, text: str | bytes, **beside: str) -> InventoryError:
    with pytest.raises(InventoryError) as e:
        load_text(tmp_path, name, text, **beside)
    return e.value


@pytest.mark.parametrize("name", ["hosts", "inventory.ini", "production", "hosts.yml"])
def test_ini_is_told_by_content(tmp_path: Path, name: str) -> None:
    # hosts.yml too: Ansible's ini plugin reads any file its yaml plugin could not.
    inv = load_text(tmp_path, name, "[web]\nweb1 ansible_port=2222\n" + site())
    assert inv.hosts["web1"].port == 2222 and inv.groups["web"] == ("web1",)


@pytest.mark.parametrize("name", ["hosts", "inventory.json", "inv"])
def test_yaml_and_list_json_are_told_by_content(tmp_path: Path, name: str) -> None:
    yaml_text = f"all:\n  vars: {{nginx_site: {SITE}}}\n  hosts:\n    web1:\n"
    assert list(load_text(tmp_path, name, yaml_text).hosts) == ["web1"]
    listing = {"_meta": {"hostvars": {"web1": {"nginx_site": SITE, "ansible_port": 2201}}},
               "all": {"children": ["ungrouped"]}, "ungrouped": {"hosts": ["web1"]}}
    assert load_text(tmp_path, name, json.dumps(listing)).hosts["web1"].port == 2201


def test_yaml_format_written_as_json_is_read_as_yaml(tmp_path: Path) -> None:
    doc = {"all": {"vars": {"nginx_site": SITE}, "children": {"web": {"hosts": {"web[1:2]": {"x": 1}}}}}}
    assert list(load_text(tmp_path, "inv.json", json.dumps(doc)).hosts) == ["web1", "web2"]


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("hosts", "just some words\n", "line 1: expected name=value after the host name, got 'some' (read as INI, "
                                    "since it is not YAML: the top level must be a mapping"),
    ("hosts", "all:\n  hostz:\n    h1:\n", "group 'all': unknown key 'hostz'"),  # a YAML mapping: YAML's error
    ("inventory.json", '{"all": ', "line 1, column 9: invalid JSON"),
    ("hosts.toml", "[all.hosts]\n", "a TOML inventory"),
    ("ec2", "#!/usr/bin/env python3\nprint('{}')\n", "a dynamic inventory script"),
    ("aws_ec2.yml", "plugin: amazon.aws.aws_ec2\nregions: [eu-west-1]\n", "inventory plugin 'amazon.aws.aws_ec2'"),
])
def test_a_file_in_no_accepted_format_says_which_are(tmp_path: Path, name: str, text: str, expected: str) -> None:
    e = error_of(tmp_path, name, text)
    assert str(tmp_path / name) in str(e) and expected in str(e) and e.hint, str(e)
    if "just some words" in text:
        assert "wsguard reads Ansible's YAML inventory, its INI inventory, or the JSON that `ansible-inventory" \
               in str(e)


def test_list_json_with_vault_unsafe_export_vars_and_priority(tmp_path: Path) -> None:
    """--list --export shape: group vars (with ansible_group_priority) and host vars merged as Ansible would;
    vaulted and unsafe values as ansible-inventory writes them; hostvars of an unlisted host ignored."""
    doc = {
        "_meta": {"hostvars": {"h1": {"secret": {"__ansible_vault": "$ANSIBLE_VAULT;1.1;AES256\n61\n"},
                                      "raw": {"__ansible_unsafe": "{{ x }}"}, "x": "host"},
                               "ghost": {"x": 1}}, "profile": "inventory_legacy"},
        "all": {"children": ["ungrouped", "a", "b"], "vars": {"nginx_site": SITE, "x": "all", "y": "all"}},
        "a": {"hosts": ["h1", "h2"], "vars": {"y": "a", "ansible_group_priority": 9}},
        "b": {"hosts": ["h1", "h2"], "vars": {"y": "b"}},
    }
    inv = load_text(tmp_path, "inv.json", json.dumps(doc))
    assert set(inv.hosts) == {"h1", "h2"}
    h1, h2 = inv.hosts["h1"].vars, inv.hosts["h2"].vars
    assert repr(h1["secret"]) == "<vault-encrypted>" and h1["raw"] == "{{ x }}"
    assert (h1["x"], h2["x"], h2["y"]) == ("host", "all", "a") and "ansible_group_priority" not in h2


def test_list_json_ignores_group_vars_beside_it(tmp_path: Path) -> None:
    # Its hostvars already hold group_vars/ and host_vars/: reading them again would put a group file
    # over the host's own value.
    doc = {"_meta": {"hostvars": {"h1": {"nginx_site": SITE, "x": "host"}}}, "all": {"children": ["ungrouped"]},
           "ungrouped": {"hosts": ["h1"]}}
    inv = load_text(tmp_path, "inv.json", json.dumps(doc), group_vars__all="x: group\n", host_vars__h1="y: 1\n")
    assert dict(inv.hosts["h1"].vars) == {"nginx_site": SITE, "x": "host"}


@pytest.mark.parametrize(("doc", "expected"), [
    ({"_meta": {"hostvars": []}}, "_meta must be a mapping holding hostvars"),
    ({"_meta": {}, "web": {"hosts": "h1"}}, "group 'web': hosts must be a list of names"),
    ({"_meta": {}, "web": {"hosts": ["h1"], "children": [5]}}, "group 'web': children must be a list of names"),
    ({"_meta": {}, "web": {"h1": {}}}, "group 'web' must be a mapping with hosts, vars or children"),
    ({"_meta": {}, "web": ["-oProxyCommand=x"]}, "host name '-oProxyCommand=x' starts with '-'"),
    ({"_meta": {"hostvars": {"h1": {"ansible_port": 0}}}, "web": ["h1"]}, "_meta.hostvars: host 'h1': ansible_port"),
])
def test_bad_list_json_is_a_clear_error(tmp_path: Path, doc: dict[str, Any], expected: str) -> None:
    e = error_of(tmp_path, "inv.json", json.dumps(doc))
    assert str(tmp_path / "inv.json") in str(e) and expected in str(e), str(e)


def test_directory_of_ini_yaml_and_json_sources(tmp_path: Path) -> None:
    write(tmp_path, {
        "01-hosts": "[web]\nweb1\n",  # INI, no extension
        "02-more.yml": "all:\n  children:\n    web:\n      hosts:\n        web2:\n",
        "03-db.json": json.dumps({"db": {"hosts": {"db1": {"ansible_port": 2200}}}}),  # YAML's format in JSON
        "04-later.ini": "[web:vars]\ncompose_service=webapp\n",  # no [web] needed: 01-hosts declared it
        "sub/05-deeper": "deep1\n",  # Ansible reads subdirectories too
        "README.md": "# not an inventory\n", "notes.txt": "words\n", "old.cfg": "x\n", ".hidden": "x y\n",
        "group_vars/all.yml": f"nginx_site: {SITE}\n",
    })
    inv = load_inventory(tmp_path)
    assert list(inv.hosts) == ["web1", "web2", "db1", "deep1"]
    assert inv.hosts["web2"].ws.compose_service == "webapp" and inv.hosts["db1"].port == 2200


def test_directory_refuses_an_unreadable_file_and_list_json(tmp_path: Path) -> None:
    write(tmp_path, {"hosts": f"[web]\nweb1\n{site()}", "id_ed25519": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n"})
    with pytest.raises(InventoryError) as e:
        load_inventory(tmp_path)
    assert f"{tmp_path / 'id_ed25519'}, line 1: " in str(e.value) and "wsguard reads Ansible's YAML" in str(e.value)
    assert e.value.hint and "move it out of the directory" in e.value.hint
    (tmp_path / "id_ed25519").unlink()
    (tmp_path / "list.json").write_text(json.dumps({"_meta": {"hostvars": {}}, "web": ["web2"]}))
    with pytest.raises(InventoryError, match="cannot be one of several sources"):
        load_inventory(tmp_path)


# ---------------------------------------------------------------- INI errors name the file and the line


@pytest.mark.parametrize(("text", "line", "expected"), [
    ("[g]\nh1 ansible_port=70000\n", 2, "host 'h1': ansible_port: expected a whole-number port"),
    ("[g]\nh1\n[g:vars]\ncompose_service=--help\n", 4, "group 'g': compose_service: expected a value that does not"),
    ("[g]\nh1\n[g:vars]\nansible_group_priority=high\n", 4, "ansible_group_priority: expected a whole number"),
    ("[g]\nweb[1:999999999]\n", 2, "makes more than 10000 hosts"),
    ("[g]\nweb[3:1]\n", 2, "the range is empty"),
    ("[g]\nweb[1:3\n", 2, "never closes it"),
    ("[g]\nh1:0\n", 2, "the port must be from 1 to 65535"),
    ("[g]\n-oProxyCommand=x\n", 2, "starts with '-'"),
    ("[g:children]\nall\n", 2, "`all` cannot be a child"),
    # Ansible reads undecodable bytes as lone surrogates (host 'h\udcff2'); wsguard refuses the line.
    (b"[g]\nh\xff2\n", 2, "not UTF-8 text"),
])
def test_ini_errors_name_file_line_and_what_to_do(tmp_path: Path, text: str | bytes, line: int,
                                                  expected: str) -> None:
    e = error_of(tmp_path, "hosts.ini", edge_text(text))
    assert f"{tmp_path / 'hosts.ini'}, line {line}: " in str(e) and expected in str(e), str(e)


def test_ini_comment_lines_may_hold_other_encodings(tmp_path: Path) -> None:
    inv = load_text(tmp_path, "hosts", b"# caf\xe9 (latin-1)\n[g]\nh1\n" + site().encode())
    assert list(inv.hosts) == ["h1"]


# ---------------------------------------------------------------- Ansible's connection vars


@pytest.mark.parametrize("var", sorted(_REFUSED_VARS))
def test_refused_connection_var_names_var_host_and_what_to_do(tmp_path: Path, var: str) -> None:
    e = error_of(tmp_path, "hosts", f"[web]\nweb1 {var}=s3cret\n" + site())
    assert f"host 'web1': {var} is set (in {tmp_path / 'hosts'}, line 2, host 'web1')" in str(e), str(e)
    assert "s3cret" not in str(e)  # many of these are passwords
    assert e.hint and f"remove {var}" in e.hint


@pytest.mark.parametrize(("var", "bad", "good"), [
    ("ansible_connection", "local", "paramiko"),
    ("ansible_connection", "winrm", "ansible.builtin.ssh"),
    ("ansible_become_method", "su", "sudo"),
    ("ansible_become_user", "postgres", "root"),
    ("ansible_sudo_user", "app", "root"),
    ("ansible_host_key_checking", "False", "True"),
    ("ansible_ssh_host_key_checking", "no", "yes"),
    ("ansible_python_interpreter", "/opt/py/bin/python3.12", "auto_silent"),
    ("ansible_shell_type", "powershell", "sh"),
    ("ansible_shell_executable", "/bin/bash", "/bin/sh"),
])
def test_connection_var_accepted_only_with_wsguards_own_value(tmp_path: Path, var: str, bad: str, good: str) -> None:
    load_text(tmp_path, "hosts", f"[web]\nweb1\n[web:vars]\n{var}={good}\n" + site())
    e = error_of(tmp_path, "hosts", f"[web]\nweb1\n[web:vars]\n{var}={bad}\n" + site())
    assert f"host 'web1': {var} = " in str(e) and bad in str(e) and "line 4, group 'web'" in str(e), str(e)


def test_refused_var_in_group_vars_names_the_file(tmp_path: Path) -> None:
    e = error_of(tmp_path, "hosts", "[web]\nweb1\n" + site(),
                 group_vars__web="ansible_ssh_common_args: -o ProxyCommand=nc %h %p\n")
    assert f"(in {tmp_path / 'group_vars' / 'web'})" in str(e) and "~/.ssh/config" in str(e)


def test_host_override_makes_a_group_value_acceptable(tmp_path: Path) -> None:
    # Only the value Ansible would use counts.
    inv = load_text(tmp_path, "hosts", "[web]\nweb1 ansible_connection=ssh\n[web:vars]\nansible_connection=local\n"
                    + site())
    assert inv.hosts["web1"].vars["ansible_connection"] == "ssh"


def test_old_ssh_aliases_are_honoured_and_win_as_in_ansible(tmp_path: Path) -> None:
    inv = load_text(tmp_path, "hosts", "web1 ansible_host=10.0.0.1 ansible_ssh_host=10.0.0.2 ansible_port=22 "
                    "ansible_ssh_port=2222 ansible_user=a ansible_ssh_user=b ansible_private_key_file=k1\n"
                    "web2 ansible_ssh_host=10.0.0.3 ansible_private_key_file=keys/k2 ansible_become=1\n" + site())
    w1, w2 = inv.hosts["web1"], inv.hosts["web2"]
    assert (w1.address, w1.port, w1.user, w1.key_file) == ("10.0.0.2", 2222, "b", str(tmp_path / "k1"))
    assert (w2.address, w2.key_file, w2.become) == ("10.0.0.3", str(tmp_path / "keys" / "k2"), True)


def test_tuning_and_other_ansible_vars_are_fine(tmp_path: Path) -> None:
    inv = load_text(tmp_path, "hosts", "web1 ansible_pipelining=True ansible_ssh_timeout=5 ansible_distribution="
                    "Debian ansible_control_path_dir=/tmp/cp\n[web:children]\n[web:vars]\nansible_group_priority=2\n"
                    + site())
    assert inv.hosts["web1"].vars["ansible_distribution"] == "Debian"


# ---------------------------------------------------------------- no input crashes the readers

FRAGMENTS = ["[g]", "[g:vars]", "[g:children]", "[all:vars]", "h1", "web[01:03]", "db-[a:c]:22", "h:0", "x=", "=",
             "a=1", "b='x y'", 'c="', "{", "[", "]", "#", ";", "---", "g", "ansible_port=22", "{[1]: 2}", "ä", "\t",
             "[h:2]", "1e999", "'\\x00'", "nginx_site=/etc/nginx/x", " "]


@settings(max_examples=150, deadline=None)
@given(lines=st.lists(st.lists(st.sampled_from(FRAGMENTS), max_size=5).map(" ".join), max_size=8),
       name=st.sampled_from(["hosts", "hosts.ini", "hosts.yml", "inv.json"]))
def test_any_text_loads_or_is_an_inventory_error(tmp_path_factory: pytest.TempPathFactory, lines: list[str],
                                                 name: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_text("\n".join(lines) + f"\n[all:vars]\nnginx_site={SITE}\n")
    try:
        load_inventory(path)
    except InventoryError as e:
        assert str(path) in str(e)
