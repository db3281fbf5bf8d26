"""The inventory, as Ansible users have it: Ansible's YAML or INI inventory, or the JSON `ansible-inventory --list`
prints (so every dynamic inventory and inventory plugin works through it).

A file's format is told by its content (an INI file is often called just `hosts`); a directory's files are
all sources, as Ansible reads a directory. Beside a YAML or INI inventory, `group_vars/` and `host_vars/` are
read as Ansible's host_group_vars plugin reads them. Vars merge with Ansible's precedence (its
VARIABLE_PRECEDENCE default): the inventory's own vars of `all`, then of every other group of the host (by
depth, then ansible_group_priority, then name), then group_vars/all, then group_vars of the host's groups in
the same order, then the host's own vars, then host_vars. `ansible-inventory --list` JSON carries every var
already merged, so nothing is read beside it.

wsguard's own vars are validated on load, and every error names the file (and for INI the line), the host or
group, and the key, because the person reading it has to go and fix that line. An `ansible_*` var that would
make Ansible connect differently from how wsguard connects is refused, never silently ignored.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import posixpath
import re
import string
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

from remediations.model.defaults import (
    DEFAULT_APP_DIR,
    DEFAULT_BACKEND_CONTAINER,
    DEFAULT_COMPOSE_SERVICE,
    DEFAULT_ENV_FLAGS,
    DEFAULT_JOURNAL_KEEP,
    DEFAULT_MAX_ENV_BYTES,
    DEFAULT_MAX_SITE_BYTES,
    DEFAULT_NGINX_DIRECTIVES,
    DEFAULT_WS_LOCATION,
)
from remediations.model.errors import InventoryError
from remediations.model.inventory_ini import parse_ini

DEFAULT_INVENTORY = "inventory/"
NGINX_RELOAD_MODES = ("auto", "signal", "service", "systemd")
_DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
_HINT_INVENTORY = "pass --inventory PATH (a file or a directory) or set WSGUARD_INVENTORY"
# Ansible's vars plugin tries these suffixes in this order and takes the first that exists.
_VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")
_FORMATS = ("Ansible's YAML inventory, its INI inventory, or the JSON that `ansible-inventory -i SOURCE --list` "
            "prints")
# In a directory, Ansible skips hidden names, these folders and these endings (INVENTORY_IGNORE_EXTS).
_DIR_SKIP_NAMES = ("group_vars", "host_vars", "vars_plugins")
_DIR_SKIP_ENDINGS = (".pyc", ".pyo", ".swp", ".bak", "~", ".rpm", ".md", ".txt", ".rst", ".orig", ".cfg", ".retry")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Docker's own rule for container names (daemon/names: at least two characters); a compose service name
# takes the same characters, and must start with a letter or digit so it never reads as an option.
_CONTAINER = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
_SERVICE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
# C0 controls but tab, and DEL: a NUL cuts a path or an argument short, a newline starts a new line
# in a file, a unit or a report, and neither can be seen in a message.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_MIB = 1024 * 1024
_MAX_FILE_BYTES = 1024 * _MIB  # a larger .env or site is surely a typo, and would be read into memory
_MAX_JOURNAL_KEEP = 10_000
_MAX_RANGE_HOSTS = 10_000


@dataclass(frozen=True)
class WsVars:
    """wsguard's own vars for one host, validated, defaults filled in (taken from the incident)."""

    app_dir: str = DEFAULT_APP_DIR
    env_file: str = ""  # "" means <app_dir>/.env; a relative value is relative to app_dir
    compose_service: str = DEFAULT_COMPOSE_SERVICE
    backend_container: str = DEFAULT_BACKEND_CONTAINER
    # Required, and keyword-only so the fields above keep their defaults and their order.
    nginx_site: str = field(kw_only=True)
    ws_location: str = DEFAULT_WS_LOCATION
    known_hosts: str = ""  # "" means ~/.ssh/known_hosts, expanded
    ws_url: str | None = None
    ws_token_key: str | None = None
    ws_token_header: str | None = None  # send the token in this header, not the query string
    env_flags: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ENV_FLAGS))
    nginx_directives: list[str] = field(default_factory=lambda: list(DEFAULT_NGINX_DIRECTIVES))
    journal_keep: int = DEFAULT_JOURNAL_KEEP
    nginx_reload: str = "auto"
    # Trees besides the defaults (app_dir for the .env; nginx's config directory for the site) that a
    # managed file may be a symlink into; the agent decides what is allowed.
    allowed_paths: tuple[str, ...] = ()
    max_env_bytes: int = DEFAULT_MAX_ENV_BYTES
    max_site_bytes: int = DEFAULT_MAX_SITE_BYTES

    def __post_init__(self) -> None:
        # Remote paths are POSIX whatever the controller runs; frozen, hence object.__setattr__.
        env_file = posixpath.join(self.app_dir, self.env_file or ".env")
        object.__setattr__(self, "env_file", env_file)
        if not self.known_hosts:
            object.__setattr__(self, "known_hosts", os.path.expanduser(_DEFAULT_KNOWN_HOSTS))


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int
    user: str
    key_file: str | None
    become: bool
    groups: tuple[str, ...]  # every group the host is in, in precedence order ("all" first)
    vars: Mapping[str, Any]  # merged vars as written (read-only), unknown ones included
    ws: WsVars


@dataclass(frozen=True)
class Inventory:
    path: str
    hosts: dict[str, Host]  # in inventory order
    groups: dict[str, tuple[str, ...]]  # group -> host names, transitively; has "all" and "ungrouped"

    def select(self, limit: str | None = None) -> list[Host]:
        """Hosts matching an Ansible-like --limit, in inventory order.

        Patterns are separated by commas (or colons when there is no comma); each is a host name, a
        group name or a glob over both; `&pat` intersects and `!pat` excludes, applied after the plain
        patterns, as Ansible does. A pattern matching no host is an error: a typo must not quietly
        shrink (or empty) the set of hosts a fix runs on.
        """
        text = (limit or "").strip()
        if text in ("", "all"):
            return list(self.hosts.values())
        if "," in text:
            patterns = text.split(",")
        elif text in self.hosts or text in self.groups:
            patterns = [text]  # a name that itself holds a colon (an IPv6 address, say)
        else:
            patterns = text.split(":")
        patterns = [p.strip() for p in patterns if p.strip()]
        if not patterns:  # "," must not silently mean every host
            raise InventoryError(f"--limit {limit!r} holds no pattern", hint="e.g. --limit web1,db")
        plain = [p for p in patterns if p[0] not in "!&"]
        chosen = set() if plain else set(self.hosts)
        for p in plain:
            chosen |= self._match(p)
        for p in patterns:
            if p[0] == "&":
                chosen &= self._match(p[1:])
        for p in patterns:
            if p[0] == "!":
                chosen -= self._match(p[1:])
        return [host for name, host in self.hosts.items() if name in chosen]

    def _match(self, pattern: str) -> set[str]:
        pattern = pattern.strip()
        if not pattern:
            raise InventoryError(f"--limit has an empty pattern after '!' or '&' in {self.path}")
        if any(c in pattern for c in "*?["):
            names = {h for h in self.hosts if fnmatchcase(h, pattern)}
            for group, members in self.groups.items():
                if fnmatchcase(group, pattern):
                    names.update(members)
        else:
            names = {pattern} if pattern in self.hosts else set()
            names.update(self.groups.get(pattern, ()))
        if not names:
            raise InventoryError(
                f"--limit pattern '{pattern}' matches no host in {self.path}",
                hint=f"known groups: {', '.join(sorted(self.groups))}",
            )
        return names


def resolve_inventory_path(cli_value: str | None) -> str:
    """--inventory if given, else $WSGUARD_INVENTORY, else the production inventory."""
    return cli_value or os.environ.get("WSGUARD_INVENTORY") or DEFAULT_INVENTORY


def shard(hosts: Sequence[Host], spec: str) -> list[Host]:
    """Slice K of N ("K/N", 1-based): disjoint slices covering every host, stable across runs and
    machines (sha256 of the name, not hash(), which is salted per process)."""
    m = re.fullmatch(r"\s*([0-9]+)\s*/\s*([0-9]+)\s*", spec or "")
    k, n = (int(m[1]), int(m[2])) if m else (0, 0)
    if not 1 <= k <= n:
        raise InventoryError(f"bad shard {spec!r}: expected K/N with 1 <= K <= N", hint="e.g. --shard 2/4")
    return [h for h in hosts if int.from_bytes(hashlib.sha256(h.name.encode()).digest()[:8], "big") % n == k - 1]


def load_inventory(path: str | os.PathLike[str]) -> Inventory:
    """Load an inventory: a file in any accepted format (told by its content), `-` for standard input, or a
    directory whose files are all sources, as Ansible reads one."""
    path = os.fspath(path)
    builder = _Builder()
    if path == "-":
        builder.add_file("<stdin>", sys.stdin.buffer.read(), alone=True)
        return builder.build("<stdin>", os.getcwd(), beside=False)  # no folder: no group_vars/ to read
    if os.path.isdir(path):
        sources = _dir_sources(path, set())
        if not sources:
            raise InventoryError(f"inventory directory {path} holds no inventory file", hint=_HINT_INVENTORY)
        for source in sources:
            builder.add_file(source, _read_bytes(source), alone=False)
        return builder.build(path, path)
    if os.path.exists(path):
        builder.add_file(path, _read_bytes(path), alone=True)
        return builder.build(path, os.path.dirname(path) or ".")
    raise InventoryError(f"inventory not found: {path}", hint=_HINT_INVENTORY)


def _dir_sources(folder: str, seen: set[str]) -> list[str]:
    """Every file of an inventory directory, subdirectories included, in Ansible's sorted order, less the
    names Ansible skips (hidden, group_vars/, host_vars/, *.md, *.txt, *.cfg, ...)."""
    real = os.path.realpath(folder)
    if real in seen:  # a symlink loop
        return []
    seen.add(real)
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise InventoryError(f"cannot read inventory directory {folder}: {e.strerror}", hint=_HINT_INVENTORY) from e
    found = []
    for name in names:
        if name.startswith(".") or name in _DIR_SKIP_NAMES or name.endswith(_DIR_SKIP_ENDINGS):
            continue
        full = os.path.join(folder, name)
        if os.path.isdir(full):
            found += _dir_sources(full, seen)
        elif os.path.isfile(full):
            found.append(full)
    return found


def _read_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InventoryError(f"{path}: cannot read: {e.strerror}", hint=_HINT_INVENTORY) from e


def _list_json_hint(file: str) -> str:
    source = "SOURCE" if file == "<stdin>" else file
    return (f"run `ansible-inventory -i {source} --list > hosts.json` where Ansible is set up, and pass "
            "--inventory hosts.json (or pipe it in with --inventory -)")


# ---------------------------------------------------------------- reading YAML


class _Vaulted:
    """An `!vault` value: kept opaque so that vaulted secrets in an Ansible inventory do not stop it loading."""

    def __repr__(self) -> str:
        return "<vault-encrypted>"


class _AnsibleLoader(yaml.SafeLoader):
    """SafeLoader plus Ansible's own tags (`!vault`, `!unsafe`), which real inventories carry."""


def _construct_unsafe(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


_AnsibleLoader.add_constructor("!vault", lambda loader, node: _Vaulted())
_AnsibleLoader.add_constructor("!unsafe", _construct_unsafe)


def _read_yaml(path: str) -> Any:
    return _parse_yaml(path, _read_bytes(path))


def _parse_yaml(path: str, data: bytes) -> Any:
    try:
        return yaml.load(data.decode("utf-8"), Loader=_AnsibleLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else path
        raise InventoryError(f"{where}: invalid YAML: {e.problem or e.context}", hint="fix the YAML there") from e
    except yaml.YAMLError as e:
        raise InventoryError(f"{path}: invalid YAML: {e}") from e
    except UnicodeDecodeError as e:
        raise InventoryError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except ValueError as e:  # a scalar YAML reads as a number or a date it cannot make (5,000 digits, 2024-13-01)
        raise InventoryError(f"{path}: invalid YAML value: {e}", hint="quote the value if it is meant as text") from e


# ---------------------------------------------------------------- reading JSON


def _json_tags(obj: dict[str, Any]) -> Any:
    """ansible-inventory writes a vaulted value as {"__ansible_vault": ...}, an unsafe one as
    {"__ansible_unsafe": ...}: read them as the YAML tags are read."""
    if len(obj) == 1 and "__ansible_vault" in obj:
        return _Vaulted()
    if len(obj) == 1 and "__ansible_unsafe" in obj:
        return obj["__ansible_unsafe"]
    return obj


def _parse_json(path: str, data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8-sig"), object_hook=_json_tags)
    except UnicodeDecodeError as e:
        raise InventoryError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except json.JSONDecodeError as e:
        raise InventoryError(f"{path}, line {e.lineno}, column {e.colno}: invalid JSON: {e.msg}",
                             hint="fix the JSON there, or write it anew with ansible-inventory --list") from e
    except (ValueError, RecursionError) as e:  # an int past Python's digit limit; arrays nested thousands deep
        raise InventoryError(f"{path}: invalid JSON value: {e or 'nested too deeply'}") from e


def _is_list_json(doc: Any) -> bool:
    """The shape `ansible-inventory --list` (and any dynamic inventory script) prints: `_meta.hostvars`, and
    groups whose hosts and children are lists; YAML's format has mappings there."""
    if not isinstance(doc, dict):
        return False
    if "_meta" in doc:
        return True
    return any(isinstance(g, list) or (isinstance(g, dict) and any(isinstance(g.get(k), list)
                                                                     for k in ("hosts", "children")))
               for g in doc.values())


# ---------------------------------------------------------------- group_vars/ and host_vars/


def _vars_files(folder: str, name: str) -> list[str]:
    """The files of group_vars/NAME or host_vars/NAME, as Ansible's host_group_vars plugin finds them: the
    first of NAME, NAME.yml, NAME.yaml, NAME.json that exists, a directory read recursively in sorted order."""
    if name.startswith("/"):  # Ansible skips such names (chroot-style hosts)
        return []
    for suffix in _VARS_SUFFIXES:
        candidate = os.path.join(folder, name + suffix)
        if os.path.isdir(candidate):
            return _vars_dir_files(candidate)
        if os.path.exists(candidate):
            return [candidate]
    return []


def _vars_dir_files(folder: str) -> list[str]:
    # Files and subdirectories interleave in one sorted listing; hidden names and backups~ are skipped; a
    # subdirectory with an extension is not entered, as in Ansible.
    try:
        names = sorted(os.listdir(folder))
    except OSError as e:
        raise InventoryError(f"cannot read vars directory {folder}: {e.strerror}") from e
    found = []
    for name in names:
        if name.startswith(".") or name.endswith("~"):
            continue
        full, ext = os.path.join(folder, name), os.path.splitext(name)[1]
        if os.path.isdir(full):
            found += [] if ext else _vars_dir_files(full)
        elif os.path.isfile(full) and ext in _VARS_SUFFIXES:
            found.append(full)
    return found


# ---------------------------------------------------------------- validating vars


class _Bad(Exception):
    """A value is not what wsguard expects; the message says what is, the hint what to write."""

    def __init__(self, expected: str, hint: str | None = None) -> None:
        super().__init__(expected)
        self.hint = hint


def _string(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise _Bad("a non-empty string")
    if _CONTROL.search(v):
        raise _Bad("a single line with no NUL, newline or other control character",
                   "write the value on one line; remove the escape (\\0, \\n, ...) from the quoted string")
    # Each of these values ends up as an argument of a command (ssh, docker, compose, the agent) or in a
    # message about one; a leading '-' would be read as an option there.
    if v.lstrip().startswith("-"):
        raise _Bad("a value that does not start with '-' (it is passed on a command line, where it would "
                   "read as an option)", "write the name or path itself; wsguard adds any options")
    if "{{" in v:
        raise _Bad("a literal value (wsguard does not evaluate Jinja templates)")
    return v


def _abs_path(v: Any) -> str:
    if not _string(v).startswith("/"):
        raise _Bad("an absolute path (starting with /)")
    return str(v)


def _address(v: Any) -> str:
    if any(c.isspace() for c in _string(v)):
        raise _Bad("a host name or IP address, without spaces")
    return str(v)


def _user(v: Any) -> str:
    if any(c.isspace() for c in _string(v)):
        raise _Bad("a login name, without spaces")
    return str(v)


def _name(pattern: re.Pattern[str], what: str, hint: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not pattern.fullmatch(_string(v)):
            raise _Bad(what, hint)
        return str(v)

    return check


_compose_service = _name(_SERVICE, "a compose service name: a letter or digit, then letters, digits, '_', '.' "
                         "or '-'", "use the service's key under services: in the app's docker-compose.yml")
_container = _name(_CONTAINER, "a container name: a letter or digit, then at least one more letter, digit, "
                   "'_', '.' or '-' (Docker's rule)", "use the name `docker ps --format '{{.Names}}'` shows")


def _identifier(v: Any) -> str:
    if not _IDENT.fullmatch(_string(v)):
        raise _Bad("an identifier such as WS_AUTH_TOKEN (letters, digits, _)")
    return str(v)


def _ws_url(v: Any) -> str:
    parts = urlsplit(_string(v))
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise _Bad("a ws:// or wss:// URL")
    return str(v)


def _env_flags(v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise _Bad("a mapping of NAME: value")
    flags = {}
    for name, value in v.items():
        if not isinstance(name, str) or not _IDENT.fullmatch(name):
            quote = " (quote it: YAML reads yes/no/on/off as booleans)" if isinstance(name, bool) else ""
            raise _Bad(f"variable names that are identifiers, not {name!r}{quote}")
        if isinstance(value, bool):  # YAML's true/false, written as the app's .env expects them
            flags[name] = "true" if value else "false"
        elif isinstance(value, int | float | str) and not _CONTROL.search(str(value)):
            flags[name] = str(value)  # a leading '-' is fine here: the value goes into the file, not argv
        else:
            raise _Bad(f"a single-line string, number or boolean for {name} (no NUL or other control character)")
    return flags


def _directives(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(d, str) and d.strip() and not _CONTROL.search(d) for d in v):
        raise _Bad("a list of non-empty, single-line strings (no NUL or other control character)")
    return list(v)


def _allowed_paths(v: Any) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list):
        raise _Bad("a list of absolute paths", "write one `- /path` line per tree")
    paths = []
    for p in v:
        try:
            path = _abs_path(p)
        except _Bad as e:
            raise _Bad(f"a list of absolute paths; {_got(p)} is not: {e}", e.hint) from None
        # Spelled plainly, so the agent compares real trees: '..' would mean one tree here and another
        # after symlinks are resolved, and '/' would allow every file on the host.
        if ".." in path.split("/"):
            raise _Bad(f"a list of absolute paths without '..'; {_got(p)} has one", "write the path it means")
        path = posixpath.normpath(path)
        if path in ("/", "//"):
            raise _Bad("a list of trees narrower than / (the root would allow every file on the host)")
        paths.append(path)
    return tuple(dict.fromkeys(paths))


def _whole(low: int, high: int, what: str = "a whole number") -> Callable[[Any], int]:
    """A whole number within [low, high]: never a boolean, a float (.inf, .nan) or an overflow."""

    def check(v: Any) -> int:
        # A quoted number is accepted: inventories converted from INI often carry them as strings.
        if isinstance(v, str) and v.isascii() and v.strip().isdigit() and len(v.strip()) <= 20:
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise _Bad(f"{what} from {low} to {high}")
        return v

    return check


_journal_keep = _whole(1, _MAX_JOURNAL_KEEP, "a whole number of runs")
_port = _whole(1, 65535, "a whole-number port")
_file_bytes = _whole(1, _MAX_FILE_BYTES, "a size in bytes")


def _nginx_reload(v: Any) -> str:
    if v not in NGINX_RELOAD_MODES:
        raise _Bad("one of " + ", ".join(NGINX_RELOAD_MODES))
    return str(v)


def _bool(v: Any) -> bool:
    # Ansible's own boolean spellings, as `ansible_become: yes` is common in the wild.
    # INI reads `ansible_become=1` as the int 1, which Ansible's boolean() takes too.
    if isinstance(v, bool):
        return v
    if isinstance(v, int | float) and v in (0, 1):
        return bool(v)
    word = v.lower().strip() if isinstance(v, str) else None
    if word in ("yes", "y", "true", "t", "on", "1", "no", "n", "false", "f", "off", "0"):
        return word in ("yes", "y", "true", "t", "on", "1")
    raise _Bad("a boolean (true or false)")


def _optional(check: Any) -> Any:
    return lambda v: None if v is None else check(v)


def _header_name(v: Any) -> str:
    if not isinstance(v, str) or not _HEADER.fullmatch(v):
        raise _Bad("an HTTP header name such as Authorization (letters, digits and -)")
    return v


_HEADER = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}")


# Every var wsguard reads, with its check; each check returns the value as wsguard uses it.
_CHECKS: dict[str, Any] = {
    "ansible_host": _address,
    "ansible_ssh_host": _address,
    "ansible_port": _port,
    "ansible_ssh_port": _port,
    "ansible_user": _user,
    "ansible_ssh_user": _user,
    "ansible_ssh_private_key_file": _string,
    "ansible_private_key_file": _string,
    "ansible_become": _bool,
    "app_dir": _abs_path,
    "env_file": _string,
    "compose_service": _compose_service,
    "backend_container": _container,
    "nginx_site": _abs_path,
    "ws_location": _string,
    "wsguard_known_hosts": _string,
    "ws_url": _optional(_ws_url),
    "ws_token_key": _optional(_identifier),
    "ws_token_header": _optional(_header_name),
    "env_flags": _env_flags,
    "nginx_directives": _directives,
    "wsguard_journal_keep": _journal_keep,
    "wsguard_nginx_reload": _nginx_reload,
    "wsguard_allowed_paths": _allowed_paths,
    "wsguard_max_env_bytes": _file_bytes,
    "wsguard_max_site_bytes": _file_bytes,
}
# WsVars field -> the var that sets it.
_WS_FIELDS = {
    **{f: f for f in ("app_dir", "env_file", "compose_service", "backend_container", "nginx_site", "ws_location",
                      "ws_url", "ws_token_key", "ws_token_header", "env_flags", "nginx_directives")},
    "journal_keep": "wsguard_journal_keep",
    "nginx_reload": "wsguard_nginx_reload",
    "allowed_paths": "wsguard_allowed_paths",
    "max_env_bytes": "wsguard_max_env_bytes",
    "max_site_bytes": "wsguard_max_site_bytes",
}


# ---------------------------------------------------------------- Ansible's connection vars
# Every var that Ansible's ssh and paramiko connections, its sudo become plugin and its sh shell read (their
# documented `vars:`), plus ansible_connection and ansible_python_interpreter, has a row in one of the four
# tables below; tests/test_inventory_formats.py checks that against the installed ansible-core, so a var that a
# newer Ansible reads cannot slip through unnoticed.

# Honoured: each connection setting with the vars Ansible reads for it, the winning one first (the old
# ansible_ssh_* spellings beat the plain ones in Ansible too).
_CONNECTION_SETTINGS = {
    "address": ("ansible_ssh_host", "ansible_host"),
    "port": ("ansible_ssh_port", "ansible_port"),
    "user": ("ansible_ssh_user", "ansible_user"),
    "key_file": ("ansible_ssh_private_key_file", "ansible_private_key_file"),
    "become": ("ansible_become",),
}
_BECOME_HINT = "wsguard becomes root with sudo only"


def _one_of(*accepted: str) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and v in accepted


def _true(v: Any) -> bool:
    try:
        return _bool(v)
    except _Bad:
        return False


# Accepted only with a value that means what wsguard does anyway: var -> (test, what passes, hint).
_SAME_AS_WSGUARD: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "ansible_connection": (_one_of("ssh", "smart", "paramiko", "paramiko_ssh", "ansible.builtin.ssh",
                                   "ansible.builtin.paramiko_ssh", "ansible.legacy.ssh",
                                   "ansible.legacy.paramiko_ssh"), "ssh, smart or paramiko",
                           "wsguard reaches every host over SSH; give this host an SSH login (ansible_host, "
                           "ansible_user) instead"),
    "ansible_become_method": (_one_of("sudo", "ansible.builtin.sudo"), "sudo", _BECOME_HINT),
    "ansible_become_user": (_one_of("root"), "root", _BECOME_HINT + " to root"),
    "ansible_sudo_user": (_one_of("root"), "root", _BECOME_HINT + " to root"),
    # wsguard always checks host keys against wsguard_known_hosts.
    **dict.fromkeys(("ansible_host_key_checking", "ansible_ssh_host_key_checking",
                     "ansible_paramiko_host_key_checking"),
                    (_true, "true", "wsguard always checks host keys: add the host's key to known_hosts, or run "
                     "once with --accept-new-host-keys")),
    # Interpreter discovery, or the python3 that wsguard's agent runs anyway.
    "ansible_python_interpreter": (_one_of("auto", "auto_silent", "auto_legacy", "auto_legacy_silent", "python3",
                                           "/usr/bin/python3"), "auto or python3",
                                   "wsguard runs its agent with the host's python3"),
    "ansible_shell_type": (_one_of("sh"), "sh", "wsguard's commands are POSIX sh"),
    "ansible_shell_executable": (_one_of("/bin/sh"), "/bin/sh", "wsguard's commands are POSIX sh"),
}
_KEYS_ONLY_HINT = "wsguard logs in with SSH keys only (ansible_ssh_private_key_file, or your ssh-agent)"
# Refused whatever the value: each makes Ansible reach another machine, log in another way, or run
# commands through something wsguard does not do. var -> what to do instead.
_REFUSED_VARS: dict[str, str] = {
    **dict.fromkeys(("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args"),
                    "put SSH options for this host in ~/.ssh/config (wsguard refuses ProxyJump/ProxyCommand)"),
    "ansible_ssh_executable": "wsguard uses its own SSH client",
    **dict.fromkeys(("ansible_password", "ansible_ssh_pass", "ansible_ssh_password", "ansible_paramiko_pass",
                     "ansible_paramiko_password", "ansible_ssh_password_mechanism", "ansible_sshpass_prompt",
                     "ansible_private_key", "ansible_ssh_private_key", "ansible_private_key_passphrase",
                     "ansible_ssh_private_key_passphrase", "ansible_ssh_pkcs11_provider"), _KEYS_ONLY_HINT),
    "ansible_paramiko_proxy_command": "wsguard connects directly (it cannot check a proxy's host keys yet)",
    **dict.fromkeys(("ansible_paramiko_host", "ansible_paramiko_port", "ansible_paramiko_user",
                     "ansible_paramiko_private_key_file"),
                    "use ansible_host, ansible_port, ansible_user or ansible_ssh_private_key_file"),
    **dict.fromkeys(("ansible_become_exe", "ansible_sudo_exe", "ansible_become_flags", "ansible_sudo_flags"),
                    "wsguard runs plain sudo"),
    **dict.fromkeys(("ansible_become_password", "ansible_become_pass", "ansible_sudo_pass"),
                    "wsguard reads the sudo password from WSGUARD_SUDO_PASSWORD, or asks once on a terminal"),
    "ansible_connection_user": "use ansible_user",
    "ansible_network_os": "wsguard manages Linux hosts over SSH, not network devices",
}
# Read and not used: they only tune how Ansible moves files or reuses and times connections, which wsguard
# does its own way (one SSH session per host, --connect-timeout); none changes where, as whom or how it logs in.
_TUNING_VARS = frozenset((
    "ansible_pipelining", "ansible_ssh_pipelining", "ansible_ssh_transfer_method", "ansible_sftp_executable",
    "ansible_scp_executable", "ansible_sftp_extra_args", "ansible_scp_extra_args", "ansible_sftp_batch_mode",
    "ansible_ssh_retries", "ansible_control_path", "ansible_control_path_dir", "ansible_ssh_use_tty",
    "ansible_ssh_timeout", "ansible_timeout", "ansible_paramiko_timeout", "ansible_ssh_verbosity",
    "ansible_paramiko_use_rsa_sha2_algorithms", "ansible_module_compression", "ansible_docker_extra_args",
    "ansible_sudo_chdir", "ansible_remote_tmp", "ansible_common_remote_group", "ansible_system_tmpdirs",
    "ansible_async_dir", "ansible_admin_users", "ansible_shell_allow_world_readable_temp",
))


def _check_connection_vars(path: str, host: str, v: Mapping[str, Any], origins: Mapping[str, str]) -> None:
    """Refuse an ansible_* var that would make Ansible connect differently from how wsguard connects."""
    for key, value in v.items():
        if key in _REFUSED_VARS:  # its value is not shown: many of these are passwords
            what, why, hint = f"{key} is set", "wsguard does not honour it", _REFUSED_VARS[key]
        elif key in _SAME_AS_WSGUARD and not _SAME_AS_WSGUARD[key][0](value):
            _, accepted, hint = _SAME_AS_WSGUARD[key]
            what, why = f"{key} = {_got(value)}", f"wsguard works only with {key} = {accepted}"
        else:
            continue
        raise InventoryError(
            f"{path}: host '{host}': {what} (in {origins.get(key, 'the inventory')}), which changes how Ansible "
            f"connects to it, and {why}",
            hint=f"{hint}; remove {key} from the inventory wsguard reads, or limit it to hosts wsguard does not manage",
        )


def _got(v: Any) -> str:
    if isinstance(v, str | int | float | bool) or v is None or isinstance(v, _Vaulted):
        text = repr(v)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a {type(v).__name__}"


def _checked_vars(file: str, owner: str, data: Any) -> dict[str, Any]:
    """A vars mapping as written, after checking every var wsguard reads. Each definition is checked
    where it is written (not only the one that wins), so the error points at the line to fix."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InventoryError(f"{file}: {owner}: vars must be a mapping of name: value, got {_got(data)}")
    for key, value in data.items():
        if not isinstance(key, str):
            raise InventoryError(f"{file}: {owner}: var name {key!r} must be a string")
        if key in _CHECKS:
            try:
                _CHECKS[key](value)
            except _Bad as e:
                raise InventoryError(f"{file}: {owner}: {key}: expected {e}, got {_got(value)}",
                                     hint=e.hint or f"fix {key} there") from None
    return dict(data)


# ---------------------------------------------------------------- building the inventory


@dataclass
class _Group:
    parents: set[str] = field(default_factory=set)
    hosts: list[str] = field(default_factory=list)  # direct members
    vars: dict[str, Any] = field(default_factory=dict)  # the inventory's own vars, merged over sources
    origins: dict[str, str] = field(default_factory=dict)  # var -> where it was set, for errors on merged values
    priority: int = 1  # ansible_group_priority: orders groups of the same depth before their names do


# A host pattern's port: `[host]:2222`, then `host:2222` with no ':' outside brackets (so never a bare IPv6).
_BRACKETED_PORT = re.compile(r"\[(.+)\]:([0-9]+)")
_HOST_PORT = re.compile(r"((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)")
# What Ansible takes for an address before it splits a port off: DNS-like labels (underscores and [a:b]
# ranges allowed, no trailing '-' or '_'), which covers IPv4, or an IPv6 address.
_RANGE_PART = r"\[(?:[a-z]:[a-z]|[0-9]+:[0-9]+)(?::[0-9]+)?\]"
_LABEL = rf"(?:\w|{_RANGE_PART})(?:[\w-]|{_RANGE_PART})*(?<![_-])"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*", re.IGNORECASE)
_IPV6 = re.compile(r"(?:[0-9a-f]{1,4}|[:.]|\[[0-9a-f]+:[0-9a-f]+(?::[0-9]+)?\])*:(?:[0-9a-f]{1,4}|[:.]|"
                   r"\[[0-9a-f]+:[0-9a-f]+(?::[0-9]+)?\])*", re.IGNORECASE)


def _split_port(key: str) -> tuple[str, str | None]:
    """(pattern, port digits) as Ansible's parse_address splits them; a pattern that is not an address
    once the port is off (`my host!:22`) keeps its colon and gets no port, as in Ansible."""
    pattern, port = key, None
    for rx in (_BRACKETED_PORT, _HOST_PORT):
        m = rx.fullmatch(pattern)
        if m:
            pattern, port = m[1], m[2]
    if port is not None and not (_HOSTNAME.fullmatch(pattern) or _IPV6.fullmatch(pattern)):
        return key, None
    return pattern, port


def _expand_host(where: str, group: str, key: Any, ini: bool = False) -> tuple[list[str], int | None]:
    """Host key -> names and port, as Ansible's _expand_hostpattern: a `name:2222` or `[addr]:2222` port,
    then `web[01:03].example.com` / `db-[a:f]` / `[1:9:2]` ranges, left to right."""
    if not isinstance(key, str | int) or isinstance(key, bool) or not str(key).strip():
        raise InventoryError(f"{where}: group '{group}': host name {key!r} must be a string")
    text = str(key).strip()
    # A host name is printed in every report line and is the address when ansible_host is not set.
    if _CONTROL.search(text) or text.startswith("-"):
        raise InventoryError(f"{where}: group '{group}': host name {key!r} starts with '-' or holds a control "
                             "character", hint="name the host as DNS does (letters, digits, '.', '-' inside)")
    name, digits = _split_port(text)
    port = None
    if digits is not None:
        port = int(digits) if len(digits) <= 6 else 0  # thousands of digits never reach int()
        if not 1 <= port <= 65535:
            raise InventoryError(f"{where}: group '{group}': host {key!r}: the port must be from 1 to 65535")
    elif ini and text.endswith(":"):
        raise InventoryError(f"{where}: group '{group}': host {text!r} ends in ':', which only comes before a port",
                             hint="write the port after it (web1:2222), or remove the ':'")
    # A typo such as web[1:1000000000] must not build a billion names: count them first.
    parts: list[tuple[str, Sequence[str]]] = []  # (text before the range, the range's items)
    rest, count = name, 1
    while "[" in rest:
        head, _, tail = rest.partition("[")
        inner, closed, rest = tail.partition("]")
        if not closed:
            raise InventoryError(f"{where}: group '{group}': host {key!r} opens a range with '[' and never closes it",
                                 hint="write a range as [01:20] or [a:f]")
        items = _range_items(where, group, key, inner)
        count *= len(items)
        if count > _MAX_RANGE_HOSTS:
            raise InventoryError(f"{where}: group '{group}': host range {key!r} makes more than {_MAX_RANGE_HOSTS} "
                                 "hosts", hint="check the range's bounds")
        parts.append((head, items))
    names = [""]
    for head, items in parts:
        names = [n + head + item for n in names for item in items]
    return [n + rest for n in names], port


class _Overflow(Sequence[str]):
    """A range too long to build (bounds of thousands of digits): it only has to be counted."""

    def __len__(self) -> int:
        return _MAX_RANGE_HOSTS + 1

    def __getitem__(self, i: Any) -> Any:
        raise IndexError(i)


def _range_items(where: str, group: str, key: Any, inner: str) -> Sequence[str]:
    """One `[begin:end(:step)]` range as Ansible's expand_hostname_range reads it: numbers (zero-padded
    when begin is, to begin's width) or single letters; an empty begin is 0."""

    def bad(why: str) -> InventoryError:
        return InventoryError(f"{where}: group '{group}': bad host range in {key!r}: {why}",
                              hint="write a range as [01:20], [1:20:2] or [a:f]")

    bounds = inner.split(":")
    if len(bounds) not in (2, 3):
        raise bad("expected [begin:end] or [begin:end:step]")
    beg, end, step = bounds[0] or "0", bounds[1], bounds[2] if len(bounds) == 3 else "1"
    if not end:
        raise bad("the range has no end")
    if not (step.isascii() and step.isdigit()) or not step.strip("0"):
        raise bad("the step must be a whole number from 1")
    if max(len(beg), len(end), len(step)) > 4000:  # int() refuses 4,300 digits; such a range is a typo anyway
        return _Overflow()
    width = len(beg) if beg[0] == "0" and len(beg) > 1 else 0
    if width and len(end) != width:
        raise bad("a zero-padded begin and its end must have the same number of digits")
    if len(beg) == len(end) == 1 and beg in string.ascii_letters and end in string.ascii_letters:
        first, last = string.ascii_letters.index(beg), string.ascii_letters.index(end)
        if first > last:
            raise bad("begin must come before end")
        return list(string.ascii_letters[first : last + 1 : int(step)])
    if not all(b.isascii() and b.isdigit() for b in (beg, end)):
        raise bad("the bounds must both be numbers, or both single letters")
    numbers = range(int(beg), int(end) + 1, int(step))
    if not numbers:  # Ansible makes no host of it; a typo must not quietly drop hosts
        raise bad("the range is empty (its begin is after its end)")
    if numbers[-1] - numbers[0] > _MAX_RANGE_HOSTS * numbers.step:  # len() overflows past sys.maxsize
        return _Overflow()
    return [str(i).zfill(width) for i in numbers]


def _priority(where: str, group: str, value: Any) -> int:
    """ansible_group_priority, which Ansible reads with int() and keeps out of the group's vars."""
    try:
        if isinstance(value, str | int | float) and len(str(value)) <= 20:
            return int(value)
    except ValueError:
        pass
    raise InventoryError(f"{where}: group '{group}': ansible_group_priority: expected a whole number, "
                         f"got {_got(value)}",
                         hint="e.g. ansible_group_priority: 10 (a higher priority merges later, and wins)")


class _Builder:
    """Groups and hosts from every source, then Host objects with Ansible's var precedence.

    Also the sink the INI reader declares into (has_group, declare_group, add_child, add_ini_hosts,
    set_group_vars)."""

    def __init__(self) -> None:
        self.groups: dict[str, _Group] = {"all": _Group(), "ungrouped": _Group(parents={"all"})}
        self.hosts: dict[str, dict[str, Any]] = {}  # host -> its own vars, in inventory order
        self.host_origins: dict[str, dict[str, str]] = {}
        # Hosts came from `ansible-inventory --list` with group_vars/ and host_vars/ already merged in.
        self.merged_json = False

    # -- one file, whatever its format

    def add_file(self, file: str, data: bytes, alone: bool) -> None:
        """Tell the format by the content (and the extension where it decides), as Ansible's plugins try in
        turn: JSON, YAML, then INI. A file none of them reads is an error naming each reader's complaint."""
        ext = os.path.splitext(file)[1].lower()
        start = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:2]
        if start == b"#!":
            raise InventoryError(f"{file}: a dynamic inventory script; wsguard does not run inventory scripts",
                                 hint=_list_json_hint(file))
        if ext == ".toml":
            raise InventoryError(f"{file}: a TOML inventory; wsguard reads {_FORMATS}", hint=_list_json_hint(file))
        as_json = None
        if ext == ".json" or start[:1] in (b"{", b"["):
            try:
                doc = _parse_json(file, data)
            except InventoryError as e:
                as_json = e  # YAML's flow style starts with { too: the readers below get their turn
            else:
                if _is_list_json(doc):
                    if not alone:
                        raise InventoryError(f"{file}: `ansible-inventory --list` JSON holds every var already "
                                             "merged, so it cannot be one of several sources in a directory",
                                             hint=f"pass it alone: --inventory {file}")
                    self._add_list_json(file, doc)
                else:  # YAML's format, written as JSON (Ansible's yaml plugin reads *.json too)
                    self._add_yaml(file, doc)
                return
        if ext == ".ini":
            parse_ini(data, file, self)
            return
        saved = copy.deepcopy(self.__dict__)
        doc = None
        try:
            doc = _parse_yaml(file, data)
            self._add_yaml(file, doc)
            return
        except InventoryError as e:
            as_yaml = e
            self.__dict__ = saved
        try:
            parse_ini(data, file, self)
            return
        except InventoryError as e:
            as_ini = e
        # None read it: the error of the reader the file was most likely meant for.
        if isinstance(doc, dict) or ext in (".yml", ".yaml"):
            raise as_yaml
        if as_json is not None and (ext == ".json" or start[:1] == b"{"):  # `[` starts INI sections too
            raise as_json
        not_yaml = as_yaml.message.removeprefix(file).lstrip(":, ")
        hint = as_ini.hint or "fix that line"
        if not alone:
            hint += ("; if the file is no inventory, move it out of the directory, or give it an ending that "
                     "Ansible skips there, such as .txt, .md or .cfg")
        raise InventoryError(f"{as_ini.message} (read as INI, since it is not YAML: {not_yaml}; wsguard reads "
                             f"{_FORMATS})", hint=hint)

    # -- shared by every format

    def _group(self, where: str, name: Any, parent: str | None = None) -> _Group:
        if not isinstance(name, str) or not name.strip():
            raise InventoryError(f"{where}: group name {name!r} must be a non-empty string")
        if _CONTROL.search(name):
            raise InventoryError(f"{where}: group name {name!r} holds a control character", hint="rename the group")
        if name == "all" and parent:
            raise InventoryError(f"{where}: group '{parent}': `all` cannot be a child of another group")
        group = self.groups.setdefault(name, _Group())
        if parent:
            group.parents.add(parent)
        return group

    def _set_group_vars(self, where: str, name: str, data: Any) -> None:
        group = self.groups[name]
        for key, value in _checked_vars(where, f"group '{name}'", data).items():
            if key == "ansible_group_priority":
                group.priority = _priority(where, name, value)
                continue
            group.vars[key] = value
            group.origins[key] = f"{where}, group '{name}'"

    def _add_hosts(self, where: str, group: str, names: list[str], port: int | None,
                   own_vars: dict[str, Any]) -> None:
        for host in names:
            first = host not in self.hosts
            vars_ = self.hosts.setdefault(host, {})
            origins = self.host_origins.setdefault(host, {})
            if port is not None and first:  # as Ansible: a pattern's port counts where the host first appears
                vars_["ansible_port"], origins["ansible_port"] = port, f"{where}, host '{host}'"
            vars_.update(own_vars)
            origins.update(dict.fromkeys(own_vars, f"{where}, host '{host}'"))
            if host not in self.groups[group].hosts:
                self.groups[group].hosts.append(host)

    # -- YAML

    def _add_yaml(self, file: str, data: Any) -> None:
        if data is None:
            return  # an empty file is an empty source, as in Ansible
        if not isinstance(data, dict):
            raise InventoryError(
                f"{file}: the top level must be a mapping of group names (usually `all:`), got {_got(data)}",
                hint="see https://docs.ansible.com/ansible/latest/inventory_guide/intro_inventory.html",
            )
        if isinstance(data.get("plugin"), str):
            raise InventoryError(f"{file}: the configuration of inventory plugin {data['plugin']!r}; wsguard does "
                                 "not run inventory plugins", hint=_list_json_hint(file))
        for name, body in data.items():
            # Top-level groups other than `all` are children of `all`, as in Ansible.
            self._add_yaml_group(file, name, body, parent=None if name == "all" else "all")

    def _add_yaml_group(self, file: str, name: Any, body: Any, parent: str | None) -> None:
        self._group(file, name, parent)
        if body is None:
            return
        if not isinstance(body, dict):
            raise InventoryError(
                f"{file}: group '{name}' must be a mapping with hosts:, vars: or children:, got {_got(body)}"
            )
        unknown = sorted(str(k) for k in body if k not in ("hosts", "vars", "children"))
        if unknown:
            raise InventoryError(
                f"{file}: group '{name}': unknown key '{unknown[0]}' (a group holds only hosts, vars, children)",
                hint="put a host's vars under hosts: NAME:, a group's vars under vars:",
            )
        # Ansible reads `hosts: web1` as `hosts: {web1: }`, and so for vars: and children:.
        body = {k: {v: None} if isinstance(v, str) else v for k, v in body.items()}
        self._set_group_vars(file, name, body.get("vars"))
        for key, what in (("hosts", "host name: vars"), ("children", "group name: group")):
            if not isinstance(body.get(key), dict | None):
                raise InventoryError(
                    f"{file}: group '{name}': {key} must be a mapping of {what}, got {_got(body[key])}",
                    hint="write each entry as `name:` on its own line; the trailing colon makes it a mapping key",
                )
        for key, host_vars in (body.get("hosts") or {}).items():
            names, port = _expand_host(file, name, key)
            if not isinstance(host_vars, dict | None):
                raise InventoryError(
                    f"{file}: group '{name}': host '{key}' must map to a mapping of vars (or nothing), "
                    f"got {_got(host_vars)}",
                    hint=f"write `{key}:` then its vars indented below, e.g. `ansible_host: 10.0.0.5`",
                )
            self._add_hosts(file, name, names, port, _checked_vars(file, f"host '{key}'", host_vars))
        for child, child_body in (body.get("children") or {}).items():
            self._add_yaml_group(file, child, child_body, parent=name)

    # -- INI (the sink parse_ini declares into)

    def has_group(self, name: str) -> bool:
        return name in self.groups

    def declare_group(self, where: str, name: str) -> None:
        self._group(where, name)

    def add_child(self, where: str, parent: str, child: str) -> None:
        self._group(where, child, parent)

    def add_ini_hosts(self, where: str, group: str, pattern: str, host_vars: dict[str, Any]) -> None:
        names, port = _expand_host(where, group, pattern, ini=True)
        self._add_hosts(where, group, names, port, _checked_vars(where, f"host '{pattern}'", host_vars))

    def set_group_vars(self, where: str, group: str, group_vars: dict[str, Any]) -> None:
        self._set_group_vars(where, group, group_vars)

    # -- `ansible-inventory --list` JSON

    def _add_list_json(self, file: str, doc: dict[str, Any]) -> None:
        """As Ansible's script plugin reads it: groups with hosts, vars and children lists, then each host's
        vars from _meta.hostvars. Host names are taken as they are (Ansible expanded ranges already)."""
        self.merged_json = True
        meta = doc.get("_meta", {})
        hostvars = meta.get("hostvars", {}) if isinstance(meta, dict) else None
        if not isinstance(hostvars, dict):
            raise InventoryError(f"{file}: _meta must be a mapping holding hostvars, a mapping of host: vars",
                                 hint="pass the JSON exactly as ansible-inventory --list printed it")
        listed: list[str] = []
        for name, body in doc.items():
            if name == "_meta":
                continue
            where = f"{file}: group '{name}'"
            self._group(file, name)
            if isinstance(body, list):  # the older script form: "group": ["host", ...]
                body = {"hosts": body}
            if not isinstance(body, dict) or (body and not body.keys() & {"hosts", "vars", "children"}):
                raise InventoryError(f"{where} must be a mapping with hosts, vars or children (or a list of hosts), "
                                     f"got {_got(body)}", hint="pass the JSON exactly as ansible-inventory --list "
                                                               "printed it")
            for key in ("hosts", "children"):
                items = body.get(key, [])
                if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
                    raise InventoryError(f"{where}: {key} must be a list of names, got {_got(items)}")
            for host in body.get("hosts", []):
                # Taken literally: the name is already expanded, and a ':' in it is not a port.
                if _CONTROL.search(host) or host.startswith("-"):
                    raise InventoryError(f"{where}: host name {host!r} starts with '-' or holds a control character",
                                         hint="name the host as DNS does (letters, digits, '.', '-' inside)")
                self._add_hosts(file, name, [host], None, {})
                listed.append(host)
            self._set_group_vars(file, name, body.get("vars"))
            for child in body.get("children", []):
                self._group(file, child, parent=name)
        for host in dict.fromkeys(listed):  # hostvars of a host no group lists are ignored, as in Ansible
            own = _checked_vars(f"{file}: _meta.hostvars", f"host '{host}'", hostvars.get(host))
            self.hosts[host].update(own)
            self.host_origins[host].update(dict.fromkeys(own, f"{file}, _meta.hostvars of '{host}'"))

    # -- the Host objects

    def _depths(self, path: str) -> dict[str, int]:
        """Depth of each group: longest chain of parents up to `all`; a cycle is an error."""
        depths: dict[str, int] = {"all": 0}

        def depth(name: str, chain: tuple[str, ...]) -> int:
            if name in chain:
                raise InventoryError(f"{path}: groups form a cycle: {' -> '.join((*chain, name))}")
            if name not in depths:
                parents = self.groups[name].parents or {"all"}
                depths[name] = 1 + max(depth(p, (*chain, name)) for p in parents)
            return depths[name]

        for name in self.groups:
            depth(name, ())
        return depths

    def build(self, path: str, base_dir: str, beside: bool = True) -> Inventory:
        if not self.hosts:
            raise InventoryError(f"{path}: the inventory defines no hosts", hint=_HINT_INVENTORY)
        depths = self._depths(path)
        # Ansible's sort_groups: depth, then ansible_group_priority, then name.
        order = sorted(self.groups, key=lambda g: (depths[g], self.groups[g].priority, g))

        # Members, transitively: a group's own hosts plus every descendant's.
        children: dict[str, set[str]] = {g: set() for g in self.groups}
        for name, group in self.groups.items():
            for parent in group.parents:
                children[parent].add(name)
        grouped = {h for g, grp in self.groups.items() if g not in ("all", "ungrouped") for h in grp.hosts}
        self.groups["ungrouped"].hosts = [h for h in self.hosts if h not in grouped]
        members: dict[str, set[str]] = {}
        for name in reversed(order):  # children (deeper) first
            members[name] = set(self.groups[name].hosts).union(*(members[c] for c in children[name]))
        members["all"] = set(self.hosts)

        # Layers of vars, each with where every var came from.
        Layer = tuple[Mapping[str, Any], Mapping[str, str]]
        read_beside = beside and not self.merged_json

        def files_layer(folder: str, name: str, owner: str) -> Layer:
            merged: dict[str, Any] = {}
            origins: dict[str, str] = {}
            if read_beside:
                for file in _vars_files(os.path.join(base_dir, folder), name):
                    data = _checked_vars(file, owner, _read_yaml(file))
                    merged.update(data)
                    origins.update(dict.fromkeys(data, file))
            return merged, origins

        group_files = {g: files_layer("group_vars", g, f"group '{g}'") for g in order}
        hosts = {}
        for name, own in self.hosts.items():
            in_groups = tuple(g for g in order if name in members[g])
            # Ansible's order: every group's inventory vars (all first), then every group's group_vars
            # files (all first), then the host's own vars, then its host_vars files.
            layers: list[Layer] = [(self.groups[g].vars, self.groups[g].origins) for g in in_groups]
            layers += [group_files[g] for g in in_groups]
            layers += [(own, self.host_origins[name]), files_layer("host_vars", name, f"host '{name}'")]
            merged: dict[str, Any] = {}
            origins: dict[str, str] = {}
            for data, where in layers:
                merged.update(data)
                origins.update({k: where[k] for k in data})
            hosts[name] = _make_host(path, base_dir, name, in_groups, merged, origins)
        groups = {g: tuple(h for h in self.hosts if h in members[g]) for g in order}
        return Inventory(path=path, hosts=hosts, groups=groups)


def _local_path(value: str, base_dir: str) -> str:
    """A controller-side path: ~ expanded, relative to the inventory's directory (not the cwd, which
    changes with where the operator happens to stand)."""
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))


def _first(v: Mapping[str, Any], setting: str, default: Any) -> Any:
    """A connection setting from the first of Ansible's vars for it that is set."""
    return next((v[var] for var in _CONNECTION_SETTINGS[setting] if var in v), default)


def _make_host(path: str, base_dir: str, name: str, groups: tuple[str, ...], v: dict[str, Any],
               origins: Mapping[str, str]) -> Host:
    if "nginx_site" not in v:
        raise InventoryError(
            f"{path}: host '{name}': nginx_site is not set (expected the absolute path of its nginx site file)",
            hint="set nginx_site in the host's vars, its group's vars or group_vars/all.yml",
        )
    _check_connection_vars(path, name, v, origins)
    address = _first(v, "address", None)
    if address is None:  # the name is the address: it must be one
        try:
            _address(name)
        except _Bad as e:
            raise InventoryError(f"{path}: host '{name}' has no ansible_host, and its name is not an address: "
                                 f"expected {e}", hint="set ansible_host for it") from None
    # Values were checked where they were written; the checks also turn them into what wsguard uses.
    ws: dict[str, Any] = {}
    for fld, var in _WS_FIELDS.items():
        if var in v:
            ws[fld] = _CHECKS[var](v[var])
    ws["known_hosts"] = _local_path(v.get("wsguard_known_hosts", _DEFAULT_KNOWN_HOSTS), base_dir)
    key_file = _first(v, "key_file", None)
    return Host(
        name=name,
        address=address or name,
        port=_port(_first(v, "port", 22)),
        user=_first(v, "user", "root"),
        key_file=_local_path(key_file, base_dir) if key_file else None,
        become=_bool(_first(v, "become", False)),
        groups=groups,
        vars=MappingProxyType(copy.deepcopy(v)),  # hosts must not share mutable values
        ws=WsVars(**ws),
    )
