"""The inventory: Ansible's YAML format, so an existing Ansible inventory works as it is.

Reads `all:` / `children:` / `hosts:` / `vars:` (groups nested to any depth), the `group_vars/` and
`host_vars/` folders beside the inventory, and merges vars with Ansible's precedence:
all < parent group < child group (by depth, then name; a group's group_vars file right after its inline
vars) < the host's inline vars < host_vars. wsguard's own vars are validated on load, and every error
names the file, the host or group, and the key, because the person reading it has to go and fix that line.
"""

from __future__ import annotations

import copy
import hashlib
import os
import posixpath
import re
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

DEFAULT_INVENTORY = "inventory/"
NGINX_RELOAD_MODES = ("auto", "signal", "service", "systemd")
_DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
_HINT_INVENTORY = "pass --inventory PATH (a file or a directory) or set WSGUARD_INVENTORY"
# Ansible's vars plugin tries these suffixes in this order and takes the first that exists.
_VARS_SUFFIXES = ("", ".yml", ".yaml", ".json")
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
_RANGE = re.compile(r"\[([0-9]+|[a-z]):([0-9]+|[a-z])(?::([0-9]+))?\]")  # web[01:20] or db[a:f], as Ansible
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
    """Load an inventory file, or a directory whose *.yml/*.yaml files are all inventory sources."""
    path = os.fspath(path)
    if os.path.isdir(path):
        base_dir = path
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            raise InventoryError(f"cannot read inventory directory {path}: {e.strerror}", hint=_HINT_INVENTORY) from e
        sources = [
            os.path.join(path, n)
            for n in names
            if n.endswith((".yml", ".yaml")) and not n.startswith(".") and os.path.isfile(os.path.join(path, n))
        ]
        if not sources:
            raise InventoryError(f"inventory directory {path} holds no *.yml or *.yaml file", hint=_HINT_INVENTORY)
    elif os.path.exists(path):
        base_dir, sources = os.path.dirname(path) or ".", [path]
    else:
        raise InventoryError(f"inventory not found: {path}", hint=_HINT_INVENTORY)

    builder = _Builder()
    for source in sources:
        builder.add_source(source, _read_yaml(source))
    return builder.build(path, base_dir)


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
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.load(f, Loader=_AnsibleLoader)  # noqa: S506 - a SafeLoader subclass
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
    except OSError as e:
        raise InventoryError(f"{path}: cannot read: {e.strerror}", hint=_HINT_INVENTORY) from e


def _vars_files(folder: str, name: str) -> list[str]:
    """The files of group_vars/NAME or host_vars/NAME, as Ansible finds them: NAME, NAME.yml, NAME.yaml
    or NAME.json (first one found), or NAME/ as a directory read recursively in sorted order."""
    for suffix in _VARS_SUFFIXES:
        candidate = os.path.join(folder, name + suffix)
        if os.path.isdir(candidate) and not suffix:
            found = []
            for root, dirs, files in os.walk(candidate):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found += [
                    os.path.join(root, f)
                    for f in sorted(files)
                    if not f.startswith(".") and os.path.splitext(f)[1] in _VARS_SUFFIXES
                ]
            return found
        if os.path.isfile(candidate):
            return [candidate]
    return []


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
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("yes", "true", "on", "1", "no", "false", "off", "0"):
        return v.lower() in ("yes", "true", "on", "1")
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
    "ansible_port": _port,
    "ansible_user": _user,
    "ansible_ssh_private_key_file": _string,
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
    vars: dict[str, Any] = field(default_factory=dict)  # inline vars, merged over sources


def _expand_host(file: str, group: str, key: Any) -> tuple[list[str], int | None]:
    """Host key -> names and port: `web[01:03].example.com` ranges and a `name:2222` port, as Ansible."""
    if not isinstance(key, str | int) or isinstance(key, bool) or not str(key).strip():
        raise InventoryError(f"{file}: group '{group}': host name {key!r} must be a string")
    name, port = str(key).strip(), None
    # A host name is printed in every report line and is the address when ansible_host is not set.
    if _CONTROL.search(name) or name.startswith("-"):
        raise InventoryError(f"{file}: group '{group}': host name {key!r} starts with '-' or holds a control "
                             "character", hint="name the host as DNS does (letters, digits, '.', '-' inside)")
    m = re.fullmatch(r"(.+):([0-9]+)", name)
    if m and ":" not in re.sub(r"\[[^\]]*\]", "", m[1]):  # not an IPv6 address
        name, port = m[1], int(m[2]) if len(m[2]) <= 6 else 0  # thousands of digits never reach int()
        if not 1 <= port <= 65535:
            raise InventoryError(f"{file}: group '{group}': host {key!r}: the port must be from 1 to 65535")
    # A typo such as web[1:1000000000] must not build a billion names: count them first.
    count = 1
    for r in _RANGE.finditer(name):
        if max(len(r[1]), len(r[2]), len(r[3] or "")) > 6:
            count = _MAX_RANGE_HOSTS + 1
            break
        beg, end, step = (int(x) if x.isdigit() else ord(x) for x in (r[1], r[2], r[3] or "1"))
        count *= len(range(beg, end + 1, max(step, 1)))
    if count > _MAX_RANGE_HOSTS:
        raise InventoryError(f"{file}: group '{group}': host range {key!r} makes more than {_MAX_RANGE_HOSTS} hosts",
                             hint="check the range's bounds")
    return _expand_ranges(file, group, name), port


def _expand_ranges(file: str, group: str, name: str) -> list[str]:
    m = _RANGE.search(name)
    if not m:
        return [name]
    beg, end, step = m[1], m[2], int(m[3] or 1)
    if beg.isdigit() != end.isdigit() or step < 1:
        raise InventoryError(f"{file}: group '{group}': bad host range in {name!r}")
    if beg.isdigit():
        width = len(beg) if beg.startswith("0") else 0  # web[01:10] keeps its zero padding
        items = [str(i).zfill(width) for i in range(int(beg), int(end) + 1, step)]
    else:
        items = [chr(c) for c in range(ord(beg), ord(end) + 1, step)]
    if not items:
        raise InventoryError(f"{file}: group '{group}': empty host range in {name!r}")
    return [n for i in items for n in _expand_ranges(file, group, name[: m.start()] + i + name[m.end() :])]


class _Builder:
    def __init__(self) -> None:
        self.groups: dict[str, _Group] = {"all": _Group(), "ungrouped": _Group(parents={"all"})}
        self.hosts: dict[str, dict[str, Any]] = {}  # host -> inline vars, in inventory order
        self.owners: dict[str, str] = {}  # host -> file that first defined it, for later errors

    def add_source(self, file: str, data: Any) -> None:
        if data is None:
            return  # an empty file is an empty source, as in Ansible
        if not isinstance(data, dict):
            raise InventoryError(
                f"{file}: the top level must be a mapping of group names (usually `all:`), got {_got(data)}",
                hint="see https://docs.ansible.com/ansible/latest/inventory_guide/intro_inventory.html",
            )
        for name, body in data.items():
            # Top-level groups other than `all` are children of `all`, as in Ansible.
            self._add_group(file, name, body, parent=None if name == "all" else "all")

    def _add_group(self, file: str, name: Any, body: Any, parent: str | None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise InventoryError(f"{file}: group name {name!r} must be a non-empty string")
        if _CONTROL.search(name):
            raise InventoryError(f"{file}: group name {name!r} holds a control character", hint="rename the group")
        if name == "all" and parent:
            raise InventoryError(f"{file}: group '{parent}': `all` cannot be a child of another group")
        group = self.groups.setdefault(name, _Group())
        if parent:
            group.parents.add(parent)
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
        group.vars.update(_checked_vars(file, f"group '{name}'", body.get("vars")))
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
            inline = _checked_vars(file, f"host '{key}'", host_vars)
            for host in names:
                self.owners.setdefault(host, file)
                merged = self.hosts.setdefault(host, {})
                if port is not None:
                    merged["ansible_port"] = port
                merged.update(inline)
                if host not in group.hosts:
                    group.hosts.append(host)
        for child, child_body in (body.get("children") or {}).items():
            self._add_group(file, child, child_body, parent=name)

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

    def build(self, path: str, base_dir: str) -> Inventory:
        if not self.hosts:
            raise InventoryError(f"{path}: the inventory defines no hosts", hint=_HINT_INVENTORY)
        depths = self._depths(path)
        order = sorted(self.groups, key=lambda g: (depths[g], g))  # Ansible's precedence order

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

        # Each group's vars: its inline vars, then its group_vars file(s).
        group_vars = {}
        for name in order:
            merged = dict(self.groups[name].vars)
            for file in _vars_files(os.path.join(base_dir, "group_vars"), name):
                merged.update(_checked_vars(file, f"group '{name}'", _read_yaml(file)))
            group_vars[name] = merged

        hosts = {}
        for name, inline in self.hosts.items():
            in_groups = tuple(g for g in order if name in members[g])
            merged = {}
            for g in in_groups:
                merged.update(group_vars[g])
            merged.update(inline)
            for file in _vars_files(os.path.join(base_dir, "host_vars"), name):
                merged.update(_checked_vars(file, f"host '{name}'", _read_yaml(file)))
            hosts[name] = _make_host(path, base_dir, name, in_groups, merged)
        groups = {g: tuple(h for h in self.hosts if h in members[g]) for g in order}
        return Inventory(path=path, hosts=hosts, groups=groups)


def _local_path(value: str, base_dir: str) -> str:
    """A controller-side path: ~ expanded, relative to the inventory's directory (not the cwd, which
    changes with where the operator happens to stand)."""
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))


def _make_host(path: str, base_dir: str, name: str, groups: tuple[str, ...], v: dict[str, Any]) -> Host:
    if "nginx_site" not in v:
        raise InventoryError(
            f"{path}: host '{name}': nginx_site is not set (expected the absolute path of its nginx site file)",
            hint="set nginx_site in the host's vars, its group's vars or group_vars/all.yml",
        )
    if "ansible_host" not in v:  # the name is the address: it must be one
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
    key_file = v.get("ansible_ssh_private_key_file")
    return Host(
        name=name,
        address=v.get("ansible_host", name),
        port=_port(v.get("ansible_port", 22)),
        user=v.get("ansible_user", "root"),
        key_file=_local_path(key_file, base_dir) if key_file else None,
        become=_bool(v.get("ansible_become", False)),
        groups=groups,
        vars=MappingProxyType(copy.deepcopy(v)),  # hosts must not share mutable values
        ws=WsVars(**ws),
    )
