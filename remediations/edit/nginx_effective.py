"""A location's effective proxy settings as nginx computes them, with where each value comes from (pure).

nginx builds one tree from the main file and every file it includes, then merges each proxy_* setting of a
location from the nearest enclosing level that sets it: a nested location, the location, its server, the
`http {}` block (which usually lives in nginx.conf while the location lives in an included site), and
last its built-in default. proxy_set_header is an array and follows another rule: a level that sets any
proxy_set_header inherits none of its parent's; where no level sets one, nginx sends `Host $proxy_host`
and `Connection close`.

The input is `nginx -T`'s dump: every file nginx loaded, the main file first.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from remediations.edit.nginxconf import _parse, _Stmt, _words, split_nginx_T
from remediations.model.errors import NginxConfError

# nginx's built-in values of the settings a WebSocket location depends on (ngx_http_proxy_module).
DEFAULTS: dict[str, list[str]] = {
    "proxy_read_timeout": ["60s"],
    "proxy_send_timeout": ["60s"],
    "proxy_connect_timeout": ["60s"],
    "proxy_http_version": ["1.0"],
    "proxy_buffering": ["on"],
    "proxy_request_buffering": ["on"],
    "proxy_socket_keepalive": ["off"],
}
DEFAULT_HEADERS: list[list[str]] = [["Host", "$proxy_host"], ["Connection", "close"]]
_MAX_INCLUDE_DEPTH = 16  # nginx itself has no limit; a loop of includes must not hang the reader


@dataclass(frozen=True)
class Directive:
    name: str
    args: list[str]
    file: str
    line: int


@dataclass
class Level:
    """One block of the merged tree (or the file's top level, kind "main"), with every simple directive
    that lands in it, those of included files too."""

    kind: str  # "main", "http", "server", "location", ...
    args: list[str]
    file: str
    line: int
    parent: Level | None = None
    directives: list[Directive] = field(default_factory=list)

    def chain(self) -> Iterator[Level]:
        """This level, then each enclosing one, out to the main context."""
        level: Level | None = self
        while level is not None:
            yield level
            level = level.parent


@dataclass(frozen=True)
class Setting:
    args: list[str]
    level: str  # where it was set: "location", "server", "http", ... or "default"
    file: str | None = None
    line: int | None = None

    @property
    def value(self) -> str:
        return " ".join(self.args)

    @property
    def source(self) -> str:
        """'default', or e.g. 'http (/etc/nginx/nginx.conf:31)'."""
        return self.level if self.file is None else f"{self.level} ({self.file}:{self.line})"


def setting(level: Level, name: str) -> Setting:
    """The value nginx gives `name` in `level`: the nearest level that sets it, else the default."""
    for lv in level.chain():
        mine = [d for d in lv.directives if d.name == name]
        if mine:
            return Setting(mine[-1].args, lv.kind, mine[-1].file, mine[-1].line)
    return Setting(DEFAULTS.get(name, []), "default")


def headers(level: Level) -> list[Setting]:
    """The proxy_set_header lines in force in `level` (args: name and value), each with where it is set."""
    for lv in level.chain():
        mine = [Setting(d.args, lv.kind, d.file, d.line) for d in lv.directives if d.name == "proxy_set_header"]
        if mine:
            return mine
    return [Setting(list(h), "default") for h in DEFAULT_HEADERS]


def resolve_include(arg: str, prefix: str, files: Mapping[str, str]) -> list[str]:
    """Paths among `files` that `include arg` loads (relative to nginx's prefix; globs per segment)."""
    pattern = posixpath.normpath(posixpath.join(prefix, arg)).split("/")
    return sorted(p for p in files
                  if len(p.split("/")) == len(pattern) and all(map(fnmatchcase, p.split("/"), pattern)))


@dataclass
class Tree:
    """nginx's merged configuration tree; `locations` in file order, `outer` says where each file was
    included (the level its top-level directives land in), `unreadable` the files that did not parse."""

    locations: list[Level] = field(default_factory=list)
    outer: dict[str, Level] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)

    def find(self, location: str) -> list[Level]:
        want = [t.value for t in _words(location, "location")]
        return [lv for lv in self.locations if lv.args == want]


def load(dump: str) -> Tree:
    """The tree nginx builds, from `nginx -T`'s output (the main file first, then what it includes)."""
    files = split_nginx_T(dump)
    tree = Tree()
    if not files:
        return tree
    main = next(iter(files))
    prefix = posixpath.dirname(main)
    for path in files:  # the main file first; then any file it did not reach, read on its own
        if path not in tree.outer:
            _visit(tree, files, prefix, path, Level("main", [], path, 1), 0)
    return tree


def standalone(text: str, path: str, outer: Level | None, files: Mapping[str, str], prefix: str) -> Tree:
    """One file's tree as if included into `outer` (None: read on its own), its includes taken from `files`.
    Its levels hang below `outer` without changing it."""
    tree = Tree()
    root = Level(outer.kind if outer else "main", [], path, 1, parent=outer)
    _visit(tree, {**files, path: text}, prefix, path, root, 0)
    return tree


def _visit(tree: Tree, files: Mapping[str, str], prefix: str, path: str, into: Level, depth: int) -> None:
    text = files[path]
    tree.outer.setdefault(path, into)
    try:
        stmts = _parse(text)
    except NginxConfError as e:
        tree.unreadable[path] = e.message
        return
    _walk_into(tree, files, prefix, path, text, stmts, into, depth)


def _walk_into(tree: Tree, files: Mapping[str, str], prefix: str, path: str, text: str, stmts: list[_Stmt],
               level: Level, depth: int) -> None:
    for s in stmts:
        line = text.count("\n", 0, s.start) + 1
        if s.block is None:
            if s.name == "include" and s.args and depth < _MAX_INCLUDE_DEPTH:
                for inc in resolve_include(s.args[0], prefix, files):
                    _visit(tree, files, prefix, inc, level, depth + 1)
            else:
                level.directives.append(Directive(s.name, s.args, path, line))
            continue
        child = Level(s.name, s.args, path, line, parent=level)
        if s.name == "location":
            tree.locations.append(child)
        _walk_into(tree, files, prefix, path, text, s.block, child, depth)
