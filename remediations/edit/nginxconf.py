"""Surgical edits of nginx config text: ensure directives inside `location` blocks.

Only the lines that must change are touched; every other byte (comments, blank lines,
CRLF, indentation, other blocks) is kept. crossplane is never used to write: its builder
reformats the whole file. Our own lexer keeps byte offsets so edits can be spliced in.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from remediations.model.errors import LocationNotFound, NginxConfError

# Directives that may appear several times in one block with different first arguments:
# their identity is (name, first arg) rather than just the name.
REPEATABLE = frozenset({
    "proxy_set_header", "add_header", "add_trailer", "set", "proxy_hide_header", "proxy_pass_header",
    "fastcgi_param", "fastcgi_hide_header", "fastcgi_pass_header", "uwsgi_param", "uwsgi_hide_header",
    "uwsgi_pass_header", "scgi_param", "scgi_hide_header", "scgi_pass_header", "grpc_set_header",
    "grpc_hide_header", "grpc_pass_header", "more_set_headers", "more_clear_headers",
    "more_set_input_headers", "more_clear_input_headers", "proxy_cookie_path", "proxy_cookie_domain",
    "sub_filter", "include", "error_page", "env",
})

_SPACE = " \t\r\n"  # the only separators nginx knows (ngx_conf_read_token); any other byte is part of a word
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNESCAPE = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}
_ESCAPE = re.compile(r"\\(.)", re.S)
_SPACES = re.compile(r"[ \t\r\n]+")
# An unquoted word runs to a space, ';' or '{'; a backslash hides the next character; a '{' right
# after '$' (or after such a '{') stays in the word: "${var}". '}', '#', quotes are ordinary there.
_WORD = re.compile(r"[^ \t\r\n;{\\$]*(?:(?:\\[\s\S]|\$\{*)[^ \t\r\n;{\\$]*)*")
# A quoted word ends at the first unescaped quote of its kind; nothing else is special inside.
_QUOTED = {q: re.compile(rf"[^{q}\\]*(?:\\[\s\S][^{q}\\]*)*{q}") for q in "\"'"}
_CONF_BUFFER = 4096  # NGX_CONF_BUFFER: nginx reads one token through a buffer this size (in bytes)
_LONG = _CONF_BUFFER // 4 - 1  # fewer characters (4 bytes at most) and a separator never fill it


@dataclass(slots=True)
class _Tok:
    kind: str  # "word", "#" (comment), ";", "{", "}"
    value: str  # words: as nginx reads them (quotes removed, escapes applied)
    start: int
    end: int


@dataclass
class _Stmt:
    name: str
    args: list[str]
    start: int  # offset of the name
    end: int  # offset just past ';' or the closing '}'
    block: list[_Stmt] | None = None
    open: int = -1  # offset of '{'
    server: _Stmt | None = field(default=None, repr=False)  # enclosing server block


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _err(text: str, pos: int, msg: str) -> NginxConfError:
    return NginxConfError(
        f"line {_line(text, pos)}: {msg}",
        hint="fix the file (nginx -t reports the same spot) before running wsguard on it",
    )


def _unescape(raw: str) -> str:
    """The value nginx stores for a word: \\" \\' \\\\ \\t \\r \\n are unescaped, any other \\x is kept as is."""
    if "\\" not in raw:
        return raw
    return _ESCAPE.sub(lambda m: _UNESCAPE.get(m.group(1), m.group(0)), raw)


def _nbytes(s: str) -> int:
    try:
        return len(s.encode("utf-8", "surrogateescape"))  # text decoded from bytes with surrogateescape
    except UnicodeEncodeError:
        return len(s.encode("utf-8", "surrogatepass"))


def _fits(text: str, start: int, reach: int) -> None:
    """nginx's "too long parameter": it refills its buffer from the current token's start, so it refuses
    when it must read byte start+4096 before it has moved past that token. `reach` is the offset of
    the character nginx has to read before its token start moves on."""
    size = _nbytes(text[start:reach])
    if size >= _CONF_BUFFER and (reach < len(text) or size > _CONF_BUFFER):
        raise _err(text, start, f"too long parameter: nginx reads a word or comment through a {_CONF_BUFFER}-byte "
                                "buffer and this one does not fit")


def _lex(text: str) -> Iterator[_Tok]:
    """nginx's tokenizer, ngx_conf_read_token() in src/core/ngx_conf_file.c, with offsets.

    It accepts and refuses what nginx does, byte for byte: only space, tab, CR and LF separate words;
    a quote opens a quoted word only where a word starts; after the closing quote nginx wants a
    separator, ';' or '{', or a ')' (which starts the next word: `if ($a = "")`); '#' starts a comment
    only where a word could start (`a#b` is one word); '}' inside a word is part of it; escapes are
    resolved as nginx does (_unescape). Errors that need the parser's view (a '}' or ';' in the wrong
    place, end of file inside a statement) are reported by _parse.
    """
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _SPACE:
            m = _SPACES.match(text, i)
            i = m.end() if m else i + 1
        elif c in ";{}":
            yield _Tok(c, c, i, i + 1)
            i += 1
        elif c == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            if j - i >= _LONG:
                _fits(text, i, j)
            yield _Tok("#", text[i:j], i, j)
            i = j
        elif c in "\"'":
            m = _QUOTED[c].match(text, i + 1)
            if m is None:
                raise _err(text, i, "unterminated quoted string")
            j = m.end()
            after = text[j] if j < n else ";"  # end of text: the parser reports an unfinished statement
            if after not in _SPACE and after not in ";{)":
                raise _err(text, j, f"unexpected {after!r} after a quoted string")
            if j - i >= _LONG:  # nginx's token start stays here until it reads past one separator
                _fits(text, i + 1, min(n, j + 1) if after in _SPACE else j)
            yield _Tok("word", _unescape(text[i + 1 : j - 1]), i, j)
            i = j
        else:
            w = _WORD.match(text, i)  # matches at least the empty string
            j = w.end() if w else i
            if j < n and text[j] == "\\":  # only a backslash at the very end is left unmatched
                raise _err(text, n, "unexpected end of file after a backslash")
            if j - i >= _LONG:
                _fits(text, i, j + 1 if j < n and text[j] in _SPACE else j)
            yield _Tok("word", _unescape(text[i:j]), i, j)
            i = j


def _parse(text: str) -> list[_Stmt]:
    root = _Stmt("", [], 0, len(text), block=[])
    stack, words = [root], []
    server: _Stmt | None = None
    for t in _lex(text):
        if t.kind == "word":
            words.append(t)
        elif t.kind in ";{":
            if not words:
                raise _err(text, t.start, f"unexpected {t.kind!r}")
            st = _Stmt(words[0].value, [w.value for w in words[1:]], words[0].start, t.end, server=server)
            words = []
            assert stack[-1].block is not None
            stack[-1].block.append(st)
            if t.kind == "{":
                st.block, st.open = [], t.start
                stack.append(st)
                if st.name == "server":
                    server = st
        elif t.kind == "}":
            if words:
                raise _err(text, words[0].start, "missing ';' before '}'")
            if len(stack) == 1:
                raise _err(text, t.start, "unexpected '}'")
            st = stack.pop()
            st.end = t.end
            if st is server:
                server = st.server
    if words:
        raise _err(text, words[0].start, "missing ';' at end of file")
    if len(stack) > 1:
        raise _err(text, stack[-1].start, f"'{{' of {stack[-1].name!r} is never closed")
    assert root.block is not None
    return root.block


def _walk(stmts: list[_Stmt]) -> Iterator[_Stmt]:
    for s in stmts:
        yield s
        if s.block is not None:
            yield from _walk(s.block)


def _words(s: str, what: str) -> list[_Tok]:
    """Tokens of a one-line snippet (directive or location args): words only."""
    try:
        toks = list(_lex(s))
    except NginxConfError as e:
        raise NginxConfError(f"{what} {s!r} is not valid nginx syntax: {e.message}") from None
    if not toks or any(t.kind != "word" for t in toks):
        raise NginxConfError(
            f"{what} {s!r} is not valid nginx syntax",
            hint="write it as in nginx, without ';', braces or comments, e.g. 'proxy_buffering off'",
        )
    for t in toks:  # nginx reads a no-break space or a vertical tab as part of a word, a person as a gap
        odd = next((ch for ch in s[t.start : t.end] if ch.isspace() and ch not in _SPACE), None)
        if odd and s[t.start] not in "\"'":
            raise NginxConfError(f"{what} {s!r} has an unusual whitespace character {odd!r}",
                                 hint="use plain spaces between words, or quote the word")
    return toks


def _directive(s: str) -> tuple[str, list[str], str]:
    """(name, args, normalized source text) of a directive string."""
    toks = _words(s, "directive")
    if not _NAME.fullmatch(s[toks[0].start : toks[0].end]):
        raise NginxConfError(f"directive {s!r} has an invalid name", hint="e.g. 'proxy_read_timeout 60s'")
    return toks[0].value, [t.value for t in toks[1:]], " ".join(s[t.start : t.end] for t in toks)


def parse_directive(s: str) -> tuple[str, list[str]]:
    """'proxy_set_header Connection "upgrade"' -> ('proxy_set_header', ['Connection', 'upgrade'])."""
    name, args, _ = _directive(s)
    return name, args


def identity(name: str, args: list[str]) -> tuple[str, ...]:
    """What makes two directives 'the same setting' in one block."""
    if name in REPEATABLE and args:
        first = args[0].casefold() if name.endswith(("_header", "_headers")) else args[0]
        return (name, first)
    return (name,)


def _quote(a: str) -> str:
    """`a` as one nginx word: bare when nginx reads it back unchanged and it looks like one word to a
    person too, else double-quoted. A backslash stays bare unless nginx would unescape it (regexes
    such as \\.php$ keep their usual spelling)."""
    if a and not re.search(r"[\s;{}#\"']|\\(?:[\"'\\trn]|$)", a):
        return a
    return '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_directive(name: str, args: list[str]) -> str:
    """Source text for (name, args), quoting only the args that need it."""
    return " ".join([name, *map(_quote, args)])


def _simple(stmts: list[_Stmt]) -> list[tuple[str, list[str]]]:
    return [(s.name, s.args) for s in stmts if s.block is None]


def _location_blocks(tree: list[_Stmt]) -> list[_Stmt]:
    return [s for s in _walk(tree) if s.block is not None and s.name == "location"]


def _location_args(tree: list[_Stmt], location: str) -> list[str]:
    """The args of the blocks that `location` names.

    First as nginx reads it (`"/a b"` is one arg, `~ "^/ws(/|$)"` equals `~ ^/ws(/|$)`). Failing
    that, as the plain spelling of args that hold spaces, `/a b` for `location "/a b"` (what
    list_locations printed before it quoted): accepted only when it names exactly one arg list.
    """
    toks = _words(location, "location")
    want = [t.value for t in toks]
    blocks = _location_blocks(tree)
    if any(b.args == want for b in blocks):
        return want
    plain = {" ".join(want), location.strip(_SPACE)}
    spelled = {tuple(b.args) for b in blocks if " ".join(b.args) in plain}
    if len(spelled) > 1:
        raise LocationNotFound(
            f"`location {location}` is ambiguous: it could be "
            + " or ".join(f"`location {_render_args(list(a))}`" for a in sorted(spelled)),
            hint="pass the location as list_locations prints it (quoted where it has spaces)",
        )
    return list(spelled.pop()) if spelled else want


def _targets(text: str, tree: list[_Stmt], location: str) -> list[_Stmt]:
    args = _location_args(tree, location)
    found = [b for b in _location_blocks(tree) if b.args == args]
    if not found:
        have = _locations(tree)
        listing = ", ".join(f"location {loc}" for loc in have) if have else "no location blocks"
        raise LocationNotFound(
            f"no `location {location}` block; the config has: {listing}",
            hint="pass the location exactly as written (modifiers like '^~' or '=' are part of it)",
        )
    return found


def _render_args(args: list[str]) -> str:
    return " ".join(map(_quote, args))


def _locations(tree: list[_Stmt]) -> list[str]:
    out: list[str] = []
    for s in _location_blocks(tree):
        loc = _render_args(s.args)
        if loc not in out:
            out.append(loc)
    return out


def list_locations(text: str) -> list[str]:
    """Args of every location block, e.g. ['/ws/', '^~ /static/', '"/a b"'], in file order; each is
    spelled so that passing it back as `location` names that block (quoted only where needed)."""
    return _locations(_parse(text))


def location_blocks(text: str, location: str) -> list[list[tuple[str, list[str]]]]:
    """For each matching location block: its own simple directives (not nested blocks')."""
    return [_simple(b.block or []) for b in _targets(text, _parse(text), location)]


def server_directives_for(text: str, location: str) -> list[list[tuple[str, list[str]]]]:
    """For each matching location block: the simple directives of its enclosing server block."""
    return [_simple(b.server.block or []) if b.server else [] for b in _targets(text, _parse(text), location)]


def top_directives(text: str) -> list[tuple[str, list[str]]]:
    """Simple directives at the top level of a file (e.g. a snippet included in a location)."""
    return _simple(_parse(text))


# --- editing ---------------------------------------------------------------------------------

_Edit = tuple[int, int, str]  # replace text[start:end] with str


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _indent_unit(text: str) -> str:
    indents = [m.group(1) for m in re.finditer(r"^([ \t]+)\S", text, re.M)]
    tabs = sum(i.startswith("\t") for i in indents)
    if tabs and tabs * 2 >= len(indents):
        return "\t"
    spaces = [len(i) for i in indents if not i.startswith("\t")]
    return " " * (min(spaces) if spaces else 4)


def _removal(text: str, s: _Stmt) -> _Edit:
    ls = _line_start(text, s.start)
    le = text.find("\n", s.end)
    le = len(text) if le < 0 else le + 1
    alone_before = not text[ls : s.start].strip(" \t")
    after = text[s.end : le].strip()
    if alone_before and (not after or after.startswith("#")):
        return (ls, le, "")  # the statement owns its line(s): drop them whole
    # shares its line: drop the statement and the blanks on one side of it
    start, end = s.start, s.end
    if alone_before:
        while end < len(text) and text[end] in " \t":
            end += 1
    else:
        while start > ls and text[start - 1] in " \t":
            start -= 1
    return (start, end, "")


def _insertion(text: str, block: _Stmt, lines: list[str], removed: set[int]) -> _Edit:
    close = block.end - 1
    ls = _line_start(text, close)
    kept = [k for k in block.block or [] if k.start not in removed]
    if ls <= block.open or not kept and text[ls:close].strip(" \t"):
        # a one-line block stays one line: add before its '}'
        pre = "" if text[close - 1] in " \t" else " "
        return (close, close, pre + " ".join(f"{d};" for d in lines) + " ")
    nl = "\r\n" if text[max(0, ls - 2) : ls] == "\r\n" else "\n"
    alone = not text[ls:close].strip(" \t")
    # the indentation of the first sibling that starts its own line, else one unit deeper than the block
    indent = (text[ls:close] if alone else _indentation(text, block.start)) + _indent_unit(text)
    for kid in block.block or []:
        kls = _line_start(text, kid.start)
        if kls > block.open and not text[kls : kid.start].strip(" \t"):
            indent = text[kls : kid.start]
            break
    if alone:  # '}' on its own line: the new lines go just above it
        return (ls, ls, "".join(f"{indent}{d};{nl}" for d in lines))
    # '}' shares its line with the last statement (`proxy_buffering off; }`): each new directive
    # starts its own line after the last statement that stays, and the '}' keeps its place
    at = kept[-1].end
    return (at, at, "".join(f"{nl}{indent}{d};" for d in lines))


def _indentation(text: str, pos: int) -> str:
    before = text[_line_start(text, pos) : pos]
    return before[: len(before) - len(before.lstrip(" \t"))]


def _block_edits(text: str, block: _Stmt, wanted: list[tuple[str, list[str], str]]) -> list[_Edit]:
    simple = [s for s in block.block or [] if s.block is None]
    edits: list[_Edit] = []
    missing: list[str] = []
    removed: set[int] = set()
    for name, args, src in wanted:
        same = [s for s in simple if identity(s.name, s.args) == identity(name, args)]
        if not same:
            missing.append(src)
            continue
        if same[0].args != args:
            edits.append((same[0].start, same[0].end, src + ";"))
        edits.extend(_removal(text, s) for s in same[1:])
        removed.update(s.start for s in same[1:])
    if missing:
        edits.append(_insertion(text, block, missing, removed))
    return edits


def _apply(text: str, edits: list[_Edit]) -> str:
    out, pos = [], 0
    for start, end, new in sorted(edits):
        if start < pos:
            raise NginxConfError("internal error: overlapping edits", hint="please report this config")
        out += [text[pos:start], new]
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _skeleton(stmts: list[_Stmt], loc: list[str], ids: set[tuple[str, ...]]) -> list[object]:
    """The tree minus the ensured directives of target blocks: must not change when editing."""
    out: list[object] = []
    for s in stmts:
        if s.block is None:
            out.append((s.name, s.args))
            continue
        kids = s.block
        if s.name == "location" and s.args == loc:
            kids = [k for k in kids if k.block is not None or identity(k.name, k.args) not in ids]
        out.append((s.name, s.args, _skeleton(kids, loc, ids)))
    return out


def _check(before: list[_Stmt], result: str, loc: list[str],
           per_block: list[list[tuple[str, list[str], str]]]) -> None:
    """Guard: re-read the result and prove the edit did exactly what was asked, block by block."""
    try:
        after = _parse(result)
    except NginxConfError as e:
        raise NginxConfError(f"internal error: edited config does not parse: {e}") from None
    ids = {identity(n, a) for wanted in per_block for n, a, _ in wanted}
    ok = _skeleton(before, loc, ids) == _skeleton(after, loc, ids)
    blocks = [b for b in _location_blocks(after) if b.args == loc]
    ok = ok and len(blocks) == len(per_block)
    for b, wanted in zip(blocks, per_block, strict=False):
        mine = {identity(n, a) for n, a, _ in wanted}
        have = sorted((identity(n, a), a) for n, a in _simple(b.block or []) if identity(n, a) in mine)
        ok = ok and have == sorted((identity(n, a), a) for n, a, _ in wanted)
    if not ok:
        raise NginxConfError("internal error: the edit changed more than asked", hint="please report this config")


def _wanted(directives: list[str]) -> list[tuple[str, list[str], str]]:
    return [(name, list(args), src) for name, args, src in _wanted_cached(tuple(directives))]


@functools.lru_cache(maxsize=256)  # the same few directive lists, asked for every block of every file
def _wanted_cached(directives: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...], str], ...]:
    wanted: dict[tuple[str, ...], tuple[str, list[str], str]] = {}
    for d in directives:
        name, args, src = _directive(d)
        prev = wanted.setdefault(identity(name, args), (name, args, src))
        if prev[1] != args:
            raise NginxConfError(f"conflicting directives asked for: {prev[2]!r} and {src!r}")
    return tuple((name, tuple(args), src) for name, args, src in wanted.values())


def ensure_directives_by_block(text: str, location: str, per_block: list[list[str]]) -> str:
    """As ensure_directives, with its own directive list for each matching block (in file order).

    The planner needs this: one block may already be compliant in another spelling (kept) while
    another block lacks the directive entirely.
    """
    tree = _parse(text)
    return _ensure(text, tree, _targets(text, tree, location), per_block)


def _ensure(text: str, tree: list[_Stmt], blocks: list[_Stmt], per_block: list[list[str]]) -> str:
    if len(blocks) != len(per_block):
        raise NginxConfError(f"internal error: {len(per_block)} directive lists for {len(blocks)} blocks")
    wanted = [_wanted(ds) for ds in per_block]
    edits = [e for b, w in zip(blocks, wanted, strict=True) for e in _block_edits(text, b, w)]
    result = _apply(text, edits)
    _check(tree, result, blocks[0].args, wanted)
    return result


def ensure_directives(text: str, location: str, directives: list[str]) -> str:
    """Make each directive present exactly once, with these args, in every `location <location>` block."""
    _wanted(directives)  # bad directives are refused before the text is even read
    tree = _parse(text)
    blocks = _targets(text, tree, location)
    return _ensure(text, tree, blocks, [directives] * len(blocks))


def split_nginx_T(output: str) -> dict[str, str]:
    """`nginx -T` output -> {path: file text}, cut at its "# configuration file PATH:" headers."""
    files: dict[str, str] = {}
    parts = re.split(r"^# configuration file (.+):\r?\n", output, flags=re.M)
    for path, body in zip(parts[1::2], parts[2::2], strict=True):
        # nginx writes one extra newline after each file's content
        files[path] = body[:-1] if body.endswith("\n") else body
    return files
