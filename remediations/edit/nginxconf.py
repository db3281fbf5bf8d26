"""Surgical edits of nginx config text: ensure directives inside `location` blocks.

Only the lines that must change are touched; every other byte (comments, blank lines,
CRLF, indentation, other blocks) is kept. crossplane is never used to write: its builder
reformats the whole file. Our own lexer keeps byte offsets so edits can be spliced in.
"""

from __future__ import annotations

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

_SPACE = " \t\r\n"  # nginx's whitespace; other Unicode spaces are refused, not guessed at
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_UNESCAPE = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}


@dataclass
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


def _lex(text: str) -> Iterator[_Tok]:
    """nginx's tokenizer (ngx_conf_read_token), with offsets; ambiguous input is refused."""
    lone_cr = re.search(r"\r(?!\n)", text)
    if lone_cr:  # nginx and other readers disagree on a bare CR: refuse rather than guess
        raise _err(text, lone_cr.start(), "carriage return without a line feed")
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _SPACE:
            i += 1
        elif c.isspace():
            raise _err(text, i, f"unusual whitespace character {c!r}")
        elif c == "#":
            j = text.find("\n", i)
            j = n if j < 0 else j
            yield _Tok("#", text[i:j], i, j)
            i = j
        elif c in ";{}":
            yield _Tok(c, c, i, i + 1)
            i += 1
        elif c in "\"'":
            buf, j = [], i + 1
            while True:
                if j >= n:
                    raise _err(text, i, "unterminated quoted string")
                ch = text[j]
                if ch == "\\" and j + 1 < n:
                    buf.append(_UNESCAPE.get(text[j + 1], "\\" + text[j + 1]))
                    j += 2
                elif ch == c:
                    break
                else:
                    buf.append(ch)
                    j += 1
            j += 1
            # nginx wants a separator after a closing quote ("a"b is an error there)
            if j < n and text[j] not in _SPACE + ";{":
                raise _err(text, j, f"unexpected {text[j]!r} after a quoted string")
            yield _Tok("word", "".join(buf), i, j)
            i = j
        else:
            buf, j = [], i
            while j < n and text[j] not in _SPACE + ";{":
                ch = text[j]
                if ch.isspace():
                    raise _err(text, j, f"unusual whitespace character {ch!r}")
                if ch == "\\":
                    if j + 1 >= n:
                        raise _err(text, j, "backslash at end of file")
                    buf.append(_UNESCAPE.get(text[j + 1], "\\" + text[j + 1]))
                    j += 2
                    continue
                if ch == "}":  # nginx keeps it in the word, other tools split: refuse
                    raise _err(text, j, "'}' inside a word; quote the word or put a space before '}'")
                buf.append(ch)
                j += 1
                if ch == "$" and j < n and text[j] == "{":  # ${var} is part of the word
                    k = j + 1
                    while k < n and text[k] not in "}" + _SPACE + ";{\"'\\":
                        k += 1
                    if k >= n or text[k] != "}":
                        raise _err(text, j, "unterminated ${variable}")
                    buf.append(text[j : k + 1])
                    j = k + 1
            yield _Tok("word", "".join(buf), i, j)
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


def render_directive(name: str, args: list[str]) -> str:
    """Source text for (name, args), quoting only the args that need it."""
    def q(a: str) -> str:
        if a and not re.search(r"[\s;{}#\"'\\]", a):
            return a
        return '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return " ".join([name, *map(q, args)])


def _simple(stmts: list[_Stmt]) -> list[tuple[str, list[str]]]:
    return [(s.name, s.args) for s in stmts if s.block is None]


def _targets(text: str, tree: list[_Stmt], location: str) -> list[_Stmt]:
    want = [t.value for t in _words(location, "location")]
    found = [s for s in _walk(tree) if s.block is not None and s.name == "location" and s.args == want]
    if not found:
        have = _locations(tree)
        listing = ", ".join(f"location {loc}" for loc in have) if have else "no location blocks"
        raise LocationNotFound(
            f"no `location {location}` block; the config has: {listing}",
            hint="pass the location exactly as written (modifiers like '^~' or '=' are part of it)",
        )
    return found


def _locations(tree: list[_Stmt]) -> list[str]:
    out: list[str] = []
    for s in _walk(tree):
        if s.block is not None and s.name == "location":
            loc = " ".join(s.args)
            if loc not in out:
                out.append(loc)
    return out


def list_locations(text: str) -> list[str]:
    """Args of every location block, e.g. ['/ws/', '^~ /static/'], in file order."""
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


def _insertion(text: str, block: _Stmt, lines: list[str]) -> _Edit:
    close = block.end - 1
    ls = _line_start(text, close)
    if ls > block.open and not text[ls:close].strip(" \t"):  # '}' on its own line
        nl = "\r\n" if text[max(0, ls - 2) : ls] == "\r\n" else "\n"
        indent = text[ls:close] + _indent_unit(text)
        for kid in block.block or []:  # siblings' indentation wins over the guess
            kls = _line_start(text, kid.start)
            if kls > block.open and not text[kls : kid.start].strip(" \t"):
                indent = text[kls : kid.start]
                break
        return (ls, ls, "".join(f"{indent}{d};{nl}" for d in lines))
    # one-line block: add before the '}' on the same line
    pre = "" if text[close - 1] in " \t" else " "
    return (close, close, pre + " ".join(f"{d};" for d in lines) + " ")


def _block_edits(text: str, block: _Stmt, wanted: list[tuple[str, list[str], str]]) -> list[_Edit]:
    simple = [s for s in block.block or [] if s.block is None]
    edits: list[_Edit] = []
    missing: list[str] = []
    for name, args, src in wanted:
        same = [s for s in simple if identity(s.name, s.args) == identity(name, args)]
        if not same:
            missing.append(src)
            continue
        if same[0].args != args:
            edits.append((same[0].start, same[0].end, src + ";"))
        edits.extend(_removal(text, s) for s in same[1:])
    if missing:
        edits.append(_insertion(text, block, missing))
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


def _check(before: list[_Stmt], result: str, location: str,
           per_block: list[list[tuple[str, list[str], str]]]) -> None:
    """Guard: re-read the result and prove the edit did exactly what was asked, block by block."""
    try:
        after = _parse(result)
    except NginxConfError as e:
        raise NginxConfError(f"internal error: edited config does not parse: {e}") from None
    loc = [t.value for t in _words(location, "location")]
    ids = {identity(n, a) for wanted in per_block for n, a, _ in wanted}
    ok = _skeleton(before, loc, ids) == _skeleton(after, loc, ids)
    for b, wanted in zip(_targets(result, after, location), per_block, strict=True):
        mine = {identity(n, a) for n, a, _ in wanted}
        have = sorted((identity(n, a), a) for n, a in _simple(b.block or []) if identity(n, a) in mine)
        ok = ok and have == sorted((identity(n, a), a) for n, a, _ in wanted)
    if not ok:
        raise NginxConfError("internal error: the edit changed more than asked", hint="please report this config")


def _wanted(directives: list[str]) -> list[tuple[str, list[str], str]]:
    wanted: dict[tuple[str, ...], tuple[str, list[str], str]] = {}
    for d in directives:
        name, args, src = _directive(d)
        prev = wanted.setdefault(identity(name, args), (name, args, src))
        if prev[1] != args:
            raise NginxConfError(f"conflicting directives asked for: {prev[2]!r} and {src!r}")
    return list(wanted.values())


def ensure_directives_by_block(text: str, location: str, per_block: list[list[str]]) -> str:
    """As ensure_directives, with its own directive list for each matching block (in file order).

    The planner needs this: one block may already be compliant in another spelling (kept) while
    another block lacks the directive entirely.
    """
    tree = _parse(text)
    blocks = _targets(text, tree, location)
    if len(blocks) != len(per_block):
        raise NginxConfError(f"internal error: {len(per_block)} directive lists for {len(blocks)} blocks")
    wanted = [_wanted(ds) for ds in per_block]
    edits = [e for b, w in zip(blocks, wanted, strict=True) for e in _block_edits(text, b, w)]
    result = _apply(text, edits)
    _check(tree, result, location, wanted)
    return result


def ensure_directives(text: str, location: str, directives: list[str]) -> str:
    """Make each directive present exactly once, with these args, in every `location <location>` block."""
    _wanted(directives)  # bad directives are refused before the text is even read
    count = len(_targets(text, _parse(text), location))
    return ensure_directives_by_block(text, location, [directives] * count)


def split_nginx_T(output: str) -> dict[str, str]:
    """`nginx -T` output -> {path: file text}, cut at its "# configuration file PATH:" headers."""
    files: dict[str, str] = {}
    parts = re.split(r"^# configuration file (.+):\r?\n", output, flags=re.M)
    for path, body in zip(parts[1::2], parts[2::2], strict=True):
        # nginx writes one extra newline after each file's content
        files[path] = body[:-1] if body.endswith("\n") else body
    return files
