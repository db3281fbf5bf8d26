"""Ansible's INI inventory, read line by line as ansible-core's `ini` inventory plugin reads it (2.19).

What it does, checked against `ansible-inventory --list` by tests/test_inventory_formats.py:
- Lines before the first section are hosts of `ungrouped`; `#` and `;` start a comment line.
- `[group]` lists hosts, `[group:vars]` sets the group's vars, `[group:children]` names child groups.
  A group named only by `[group:vars]` or as a child must be declared by a `[group]` or `[group:children]`
  section of the same file (or by an earlier source of a directory inventory), else the file is refused.
- A host line is split as a shell would (`shlex`, quotes kept together, `#` starts a comment); its first
  word is the host pattern and each further word a `name=value` var of that host.
- Every value, on a host line and in a `[group:vars]` section alike, goes through Python's
  `ast.literal_eval`: `5` is an int, `True` a bool, `[1, 2]` a list, `'007'` the string 007; what is not a
  Python literal (`yes`, `/etc/nginx/a.conf`, `007`) stays the string as written. Ansible's documentation
  says `:vars` values stay strings, but ansible-core 2.19 evaluates them too, and that is what is matched.

The parser holds no inventory of its own: it tells a sink what each line declares, and the sink (the
inventory builder) expands host patterns, checks wsguard's vars and merges them.
"""

from __future__ import annotations

import ast
import re
import shlex
import warnings
from typing import Any, Protocol

from remediations.model.errors import InventoryError

# [group], [group:vars], [group:children], optionally followed by a `#` comment (not `;`: Ansible's rule).
_SECTION = re.compile(r"\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?")
_GROUP_NAME = re.compile(r"([^:\]\s]+)\s*(?:#.*)?")
_SECTION_HINT = "write [group], [group:vars] or [group:children], with no spaces inside the brackets"


class IniSink(Protocol):
    """What the INI reader declares; `where` is "FILE, line N" for the builder's own errors."""

    def has_group(self, name: str) -> bool: ...

    def declare_group(self, where: str, name: str) -> None: ...

    def add_child(self, where: str, parent: str, child: str) -> None: ...

    def add_ini_hosts(self, where: str, group: str, pattern: str, host_vars: dict[str, Any]) -> None: ...

    def set_group_vars(self, where: str, group: str, group_vars: dict[str, Any]) -> None: ...


def parse_value(text: str) -> Any:
    """A value as Ansible's INI plugin types it: a Python literal if `ast.literal_eval` reads one, else the
    text itself. Tuples and sets become lists, complex numbers and `...` become their text, bytes become str."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)  # "\d" in a path must not print a warning
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError):  # also ints past Python's digit limit, brackets nested past 200: kept as text
        return text
    return _coerce(value)


def _coerce(value: Any) -> Any:
    if isinstance(value, list | tuple | set):
        return [_coerce(v) for v in value]
    if isinstance(value, dict):
        return {k: _coerce(v) for k, v in value.items()}
    if value is ... or isinstance(value, complex):
        return "..." if value is ... else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def _lines(data: bytes, file: str) -> list[str]:
    """The file's lines; bytes that are not UTF-8 are forgiven on comment lines only, as Ansible does."""
    try:
        return data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        pass
    lines = []
    for number, raw in enumerate(data.splitlines(), 1):
        if raw[:1] in (b"#", b";"):
            lines.append("")
            continue
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise InventoryError(f"{file}, line {number}: not UTF-8 text ({e.reason} at byte {e.start} of the line)",
                                 hint="save the file as UTF-8") from None
    return lines


def parse_ini(data: bytes, file: str, sink: IniSink) -> None:
    """Read an INI inventory into `sink`; every error names the file and the line, and what to write."""
    group, state = "ungrouped", "hosts"
    # Groups named before they are declared: name -> (line, state, parents), resolved by a later section.
    pending: dict[str, tuple[int, str, list[str]]] = {}
    for number, line in enumerate(_lines(data, file), 1):
        where = f"{file}, line {number}"
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        m = _SECTION.fullmatch(line)
        if m:
            group, state = m[1], m[2] or "hosts"
            if state not in ("hosts", "children", "vars"):
                raise InventoryError(f"{where}: section [{group}:{state}] has an unknown type '{state}'",
                                     hint=_SECTION_HINT)
            if not sink.has_group(group):
                # [g:vars] alone does not declare g; [g] or [g:children] later in the file may.
                if state == "vars" and group not in pending:
                    pending[group] = (number, "vars", [])
                sink.declare_group(where, group)
            if group in pending and state != "vars":
                _resolve(where, sink, group, pending)
            continue
        if line.startswith("[") and line.endswith("]"):
            raise InventoryError(f"{where}: invalid section header {line!r}", hint=_SECTION_HINT)
        if state == "hosts":
            pattern, host_vars = _host_line(where, line)
            sink.add_ini_hosts(where, group, pattern, host_vars)
        elif state == "vars":
            name, sep, value = line.partition("=")
            if not sep:
                raise InventoryError(f"{where}: [{group}:vars] expects name=value, got {line!r}",
                                     hint="write one var per line, e.g. nginx_site=/etc/nginx/conf.d/app.conf")
            sink.set_group_vars(where, group, {name.strip(): _value(where, name.strip(), value.strip())})
        else:
            gm = _GROUP_NAME.fullmatch(line)
            if not gm:
                raise InventoryError(f"{where}: [{group}:children] expects a group name, got {line!r}",
                                     hint="write one group name per line (no spaces, ':' or ']')")
            child = gm[1]
            if sink.has_group(child):
                sink.add_child(where, group, child)
            elif child in pending:
                pending[child][2].append(group)
            else:
                pending[child] = (number, "children", [group])
    for name, (number, kind, parents) in pending.items():  # the first unresolved one, as Ansible reports it
        where = f"{file}, line {number}"
        if kind == "vars":
            raise InventoryError(f"{where}: [{name}:vars] is for group '{name}', which the file never declares",
                                 hint=f"declare it with a [{name}] section (it may stay empty) or a "
                                      f"[{name}:children] section")
        raise InventoryError(f"{where}: [{parents[-1]}:children] names group '{name}', which the file never "
                             "declares", hint=f"declare it with a [{name}] section listing its hosts, or remove it")


def _resolve(where: str, sink: IniSink, group: str, pending: dict[str, tuple[int, str, list[str]]]) -> None:
    """A section declared a group that was named earlier: attach it to the parents that named it."""
    _, kind, parents = pending.pop(group)
    if kind != "children":
        return
    for parent in parents:
        sink.add_child(where, parent, group)
        if parent in pending and pending[parent][1] == "children":
            _resolve(where, sink, parent, pending)


def _host_line(where: str, line: str) -> tuple[str, dict[str, Any]]:
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError as e:
        raise InventoryError(f"{where}: cannot split host line {line!r}: {e}",
                             hint="close the quote; quote a value holding spaces as name=\"a b\"") from None
    if not tokens:  # only a comment after the first character, e.g. `"" # x`
        raise InventoryError(f"{where}: host line {line!r} names no host", hint="start the line with a host name")
    pattern = tokens[0]
    if pattern.strip() == "---":
        raise InventoryError(f"{where}: '---' is not a host; it starts a YAML document",
                             hint="name a YAML inventory *.yml so it is read as YAML")
    host_vars: dict[str, Any] = {}
    for token in tokens[1:]:
        name, sep, value = token.partition("=")
        if not sep:
            raise InventoryError(f"{where}: expected name=value after the host name, got {token!r}",
                                 hint="write host vars as name=value; quote a value holding spaces: name=\"a b\"")
        host_vars[name] = _value(where, name, value)
    return pattern, host_vars


def _value(where: str, name: str, text: str) -> Any:
    try:
        return parse_value(text)
    except TypeError as e:  # a literal Python cannot build, such as {[1]: 2}: Ansible fails on it too
        raise InventoryError(f"{where}: {name}: the value {text[:60]!r} reads as a Python literal that cannot be "
                             f"built ({e})", hint="quote the whole value to keep it as text: name=\"'...'\"") from None
