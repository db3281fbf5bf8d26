"""The nginx editor: unit tests per rule, then hypothesis properties checked against crossplane."""

from __future__ import annotations

import os
import re
import tempfile

import crossplane
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediations.edit import nginxconf
from remediations.edit.nginxconf import (
    ensure_directives,
    identity,
    list_locations,
    location_blocks,
    parse_directive,
    server_directives_for,
)
from remediations.model.errors import LocationNotFound, NginxConfError, RemediationError
from remediations.model.inventory import DEFAULT_NGINX_DIRECTIVES

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

WS = DEFAULT_NGINX_DIRECTIVES


# --- crossplane as the independent judge ------------------------------------------------------

def xparse(text: str) -> list[dict]:
    """crossplane's tree of `text` (no includes, no context checks: site files are fragments)."""
    fd, path = tempfile.mkstemp(suffix=".conf")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        payload = crossplane.parse(path, single=True, check_ctx=False, check_args=False)
    finally:
        os.unlink(path)
    assert payload["status"] == "ok", payload["errors"]
    return payload["config"][0]["parsed"]


def x_skeleton(tree: list[dict], loc: list[str], ids: set[tuple[str, ...]]) -> list[object]:
    out: list[object] = []
    for d in tree:
        if d["directive"] == "#":  # a comment among a directive's words: crossplane lists it even without comments=True
            continue
        if "block" not in d:
            out.append((d["directive"], d["args"]))
            continue
        kids = d["block"]
        if d["directive"] == "location" and d["args"] == loc:
            kids = [k for k in kids if "block" in k or identity(k["directive"], k["args"]) not in ids]
        out.append((d["directive"], d["args"], x_skeleton(kids, loc, ids)))
    return out


def x_targets(tree: list[dict], loc: list[str]) -> list[list[dict]]:
    found = []
    for d in tree:
        if "block" in d:
            if d["directive"] == "location" and d["args"] == loc:
                found.append(d["block"])
            found += x_targets(d["block"], loc)
    return found


def crossplane_quirk(text: str) -> str | None:
    """Why crossplane.parse cannot judge `text` (it reads it differently from nginx), or None."""
    if re.search(r"\r(?!\n)", text):
        return "a bare CR (crossplane reads files with universal newlines)"
    if any(ch.isspace() and ch not in " \t\r\n" for ch in text):
        return "a whitespace character nginx reads as part of a word"
    for t in nginxconf._lex(text):
        raw = text[t.start : t.end]
        if t.kind != "word":
            continue
        if "\\" in raw or "\r" in raw:
            return "an escape or a CR inside a word (crossplane keeps them as typed)"
        if raw[0] not in "\"'" and ("}" in raw or "${" in raw):
            return "'}' or `${` in a word (crossplane ends words at '}' and scans `${...}` its own way)"
    return None


def assert_contract(before: str, after: str, location: str, directives: list[str]) -> None:
    """What ensure_directives promises, judged by crossplane (where it reads the text as nginx does),
    by our own reading otherwise, and by plain line comparison."""
    loc = nginxconf._location_args(nginxconf._parse(before), location)
    wanted = {identity(*parse_directive(d)): parse_directive(d)[1] for d in directives}
    if crossplane_quirk(before) is None:
        old, new = xparse(before), xparse(after)
        assert x_skeleton(old, loc, set(wanted)) == x_skeleton(new, loc, set(wanted))
        targets = [[(k["directive"], k["args"]) for k in block if "block" not in k] for block in x_targets(new, loc)]
    else:
        tree = nginxconf._parse(after)
        assert nginxconf._skeleton(nginxconf._parse(before), loc, set(wanted)) == nginxconf._skeleton(tree, loc,
                                                                                                     set(wanted))
        targets = [nginxconf._simple(b.block or []) for b in nginxconf._location_blocks(tree) if b.args == loc]
    assert targets
    for block in targets:
        got = [(identity(n, a), a) for n, a in block]
        for ident, args in wanted.items():
            assert [a for i, a in got if i == ident] == [args]
    assert outside_lines(before, location) == outside_lines(after, location)
    assert ensure_directives(after, location, directives) == after


def outside_lines(text: str, location: str) -> list[list[str]]:
    """The runs of lines that are not inside a target block (those must be byte-identical)."""
    lines = text.split("\n")  # nginx's lines: a bare CR does not end one
    tree = nginxconf._parse(text)
    spans = [
        (text.count("\n", 0, b.start), text.count("\n", 0, b.end))
        for b in nginxconf._targets(text, tree, location)
    ]
    runs, pos = [], 0
    for first, last in sorted(spans):
        if first < pos:  # a target block nested in another one
            continue
        runs.append(lines[pos:first])
        pos = last + 1
    runs.append(lines[pos:])
    return runs


def ensure(text: str, location: str = "/ws/", directives: list[str] = WS) -> str:
    out = ensure_directives(text, location, directives)
    assert_contract(text, out, location, directives)
    return out


# --- unit tests ----------------------------------------------------------------------------

def test_compliant_site_is_returned_unchanged() -> None:
    site = SITE.replace("proxy_buffering off;\n", "proxy_buffering off;\n"
                        "        proxy_send_timeout 86400s;\n        proxy_socket_keepalive on;\n"
                        "        keepalive_timeout 86400s;\n")
    assert ensure(site) == site


def test_missing_directives_are_added_before_the_closing_brace() -> None:
    out = ensure(SITE)
    assert out == SITE.replace(
        "        proxy_buffering off;\n",
        "        proxy_buffering off;\n"
        "        proxy_send_timeout 86400s;\n"
        "        proxy_socket_keepalive on;\n"
        "        keepalive_timeout 86400s;\n",
    )


def test_every_server_block_is_edited() -> None:
    two = SITE + SITE.replace("listen 80", "listen 443 ssl")
    out = ensure(two, directives=["proxy_socket_keepalive on"])
    assert out.count("proxy_socket_keepalive on;") == 2


def test_existing_value_is_changed_in_place_not_duplicated() -> None:
    site = SITE.replace("proxy_buffering off;", "keepalive_timeout 65;\n        proxy_buffering off;")
    out = ensure(site, directives=["keepalive_timeout 86400s"])
    assert out == site.replace("keepalive_timeout 65;", "keepalive_timeout 86400s;")


def test_duplicates_keep_the_first_and_lose_their_lines() -> None:
    site = SITE.replace(
        "proxy_buffering off;",
        "proxy_buffering on;\n        proxy_buffering on; # old\n        proxy_pass_header X; proxy_buffering on;",
    )
    out = ensure(site, directives=["proxy_buffering off"])
    assert out == SITE.replace("proxy_buffering off;", "proxy_buffering off;\n        proxy_pass_header X;")


def test_header_names_compare_case_insensitively_and_quotes_are_unwrapped() -> None:
    site = SITE.replace("Upgrade $http_upgrade", "upgrade $http_upgrade").replace('"upgrade"', "upgrade")
    out = ensure(site, directives=["proxy_set_header Upgrade $http_upgrade", 'proxy_set_header Connection "upgrade"'])
    assert out == site.replace("upgrade $http_upgrade", "Upgrade $http_upgrade")  # Connection upgrade kept


def test_nested_blocks_neither_count_nor_change() -> None:
    site = SITE.replace("proxy_buffering off;\n", (
        "if ($slow) { proxy_socket_keepalive off; }\n"
        "        location /ws/inner/ {\n            keepalive_timeout 5;\n        }\n"
        "        limit_except GET { deny all; }\n"
    ))
    out = ensure(site, directives=["proxy_socket_keepalive on", "keepalive_timeout 86400s"])
    assert "if ($slow) { proxy_socket_keepalive off; }" in out
    assert "keepalive_timeout 5;" in out
    assert out.count("proxy_socket_keepalive on;") == 1
    blocks = location_blocks(out, "/ws/")
    assert ("keepalive_timeout", ["86400s"]) in blocks[0]


def test_commented_directive_does_not_count_and_is_kept() -> None:
    site = SITE.replace("proxy_buffering off;", "# proxy_socket_keepalive on;\n        proxy_buffering off;")
    out = ensure(site, directives=["proxy_socket_keepalive on"])
    assert "# proxy_socket_keepalive on;" in out
    assert "        proxy_socket_keepalive on;\n    }" in out


def test_braces_and_semicolons_in_quotes_and_comments() -> None:
    site = SITE.replace("proxy_buffering off;", (
        "add_header X-Odd \"a{b}c; d\" always; # } { ;\n"
        "        return 200 '}';\n"
        "        # location /ws/ {\n"
        "        proxy_buffering on;"
    ))
    out = ensure(site, directives=["proxy_buffering off", "add_header X-Odd \"a{b}c; d\" always"])
    assert out == site.replace("proxy_buffering on;", "proxy_buffering off;")


def test_one_line_block() -> None:
    site = "server {\n    location /ws/ { proxy_pass http://x; }\n}\n"
    out = ensure(site, directives=["proxy_buffering off", "proxy_http_version 1.1"])
    assert out == site.replace("x; }", "x; proxy_buffering off; proxy_http_version 1.1; }")
    assert ensure("location /ws/ {proxy_pass http://x;}", directives=["proxy_buffering off"]) == (
        "location /ws/ {proxy_pass http://x; proxy_buffering off; }"
    )
    assert ensure("location /ws/ {}", directives=["proxy_buffering off"]) == "location /ws/ { proxy_buffering off; }"


def test_crlf_is_kept() -> None:
    site = SITE.replace("\n", "\r\n")
    out = ensure(site)
    assert "\n" not in out.replace("\r\n", "")
    assert "        proxy_socket_keepalive on;\r\n" in out


def test_tabs_indentation_follows_the_file() -> None:
    site = "server {\n\tlocation /ws/ {\n\t\tproxy_pass http://x;\n\t}\n}\n"
    assert ensure(site, directives=["proxy_buffering off"]) == (
        "server {\n\tlocation /ws/ {\n\t\tproxy_pass http://x;\n\t\tproxy_buffering off;\n\t}\n}\n"
    )
    empty = "server {\n\tlocation /ws/ {\n\t}\n}\n"
    assert ensure(empty, directives=["proxy_buffering off"]) == (
        "server {\n\tlocation /ws/ {\n\t\tproxy_buffering off;\n\t}\n}\n"
    )
    two = "server {\n  location /ws/ {\n  }\n}\n"
    assert ensure(two, directives=["proxy_buffering off"]) == (
        "server {\n  location /ws/ {\n    proxy_buffering off;\n  }\n}\n"
    )


def test_modifier_is_part_of_the_location() -> None:
    site = SITE + "server {\n    location ^~ /ws/ {\n        proxy_pass http://y;\n    }\n}\n"
    out = ensure(site, "^~ /ws/", ["proxy_buffering off"])
    assert out == site.replace("proxy_pass http://y;\n", "proxy_pass http://y;\n        proxy_buffering off;\n")
    out = ensure(site, "/ws/", ["proxy_socket_keepalive on"])
    assert out.count("proxy_socket_keepalive") == 1


def test_location_not_found_lists_the_locations() -> None:
    site = SITE.replace("location /ws/", "location ^~ /ws/") + "location = /health { return 200; }\n"
    with pytest.raises(LocationNotFound) as e:
        ensure_directives(site, "/ws/", WS)
    assert "location ^~ /ws/" in str(e.value) and "location = /health" in str(e.value)
    assert list_locations(site) == ["^~ /ws/", "= /health"]


@pytest.mark.parametrize("bad", [
    "", "   ", "proxy_buffering off;", "proxy_buffering 'off", "proxy_buffering {", "a }",
    "9lives on", '"quoted_name" on', "proxy-buffering off", "proxy_buffering off # no", "a\x0bb",
])
def test_bad_directive_is_refused(bad: str) -> None:
    with pytest.raises(NginxConfError):
        ensure_directives(SITE, "/ws/", [bad])


def test_conflicting_directives_are_refused() -> None:
    with pytest.raises(NginxConfError, match="conflicting"):
        ensure_directives(SITE, "/ws/", ["proxy_buffering off", "proxy_buffering on"])


@pytest.mark.parametrize(("text", "line"), [
    (SITE.replace("    }\n}", "    }\n"), 1),
    (SITE + "}\n", 14),
    (SITE.replace('"upgrade"', '"upgrade'), 8),
    (SITE.replace("proxy_buffering off;", "proxy_buffering off"), 11),
])
def test_text_that_does_not_lex_names_the_line(text: str, line: int) -> None:
    with pytest.raises(NginxConfError, match=f"line {line}:"):
        ensure_directives(text, "/ws/", WS)


def test_helpers() -> None:
    assert parse_directive('proxy_set_header Connection "upgrade"') == ("proxy_set_header", ["Connection", "upgrade"])
    assert parse_directive(r"add_header X 'a \'b\''") == ("add_header", ["X", "a 'b'"])
    assert identity("proxy_set_header", ["Host", "$host"]) == ("proxy_set_header", "host")
    assert identity("set", ["$A", "1"]) == ("set", "$A")
    assert identity("keepalive_timeout", ["65"]) == ("keepalive_timeout",)
    blocks = location_blocks(SITE, "/ws/")
    assert blocks[0][3] == ("proxy_set_header", ["Connection", "upgrade"])
    assert server_directives_for(SITE, "/ws/") == [[("listen", ["80"]), ("server_name", ["api.example.test"])]]
    assert server_directives_for("location /ws/ {}", "/ws/") == [[]]
    assert nginxconf.render_directive("add_header", ["X", "a b", ""]) == 'add_header X "a b" ""'


# --- the lexer is nginx's tokenizer (ngx_conf_read_token in src/core/ngx_conf_file.c) ----------

def words(text: str) -> list[tuple[str, str]]:
    return [(t.kind, t.value) for t in nginxconf._lex(text)]


def stmts(text: str) -> list[tuple[str, list[str]]]:
    return [(s.name, s.args) for s in nginxconf._walk(nginxconf._parse(text))]


def test_a_paren_may_follow_a_closing_quote() -> None:
    # need_space after a quote accepts ')' and starts the next word there: if's `(... = "")`
    site = SITE.replace("proxy_buffering off;", (
        'if ($http_upgrade = "") { return 426; }\n'
        "        if ($request_method = 'OPTIONS') { return 204; }\n"
        "        proxy_buffering off;"
    ))
    assert ("if", ["($http_upgrade", "=", "", ")"]) in stmts(site)
    assert ("if", ["($request_method", "=", "OPTIONS", ")"]) in stmts(site)
    assert stmts('a "x")y;') == [("a", ["x", ")y"])]
    ensure(site)


@pytest.mark.parametrize("bad", ['a "x"y;', 'a "x"#c\n;', 'location /a { a "x"}', "a 'x'\"y\";", 'a "x"\\;'])
def test_a_closing_quote_wants_a_separator(bad: str) -> None:
    with pytest.raises(NginxConfError, match="after a quoted string"):
        nginxconf._parse(bad)


def test_quotes_open_a_word_only_where_a_word_starts() -> None:
    assert stmts('a b"c d"e;') == [("a", ['b"c', 'd"e'])]
    with pytest.raises(NginxConfError):
        nginxconf._parse("a 'it''s';")  # '' right after a closing quote: nginx refuses, so do we


def test_backslashes_as_nginx_reads_them() -> None:
    # outside and inside quotes: \" \' \\ \t \r \n are unescaped, any other \x stays as typed
    assert stmts(r'a \"q\" "x\"y" b\\c d\.e "t\tn\n" \x;') == [("a", ['"q"', 'x"y', "b\\c", "d\\.e", "t\tn\n", "\\x"])]
    assert stmts("a b\\ c;") == [("a", ["b\\ c"])]  # an escaped space does not separate
    assert stmts("a b\\;c;") == [("a", ["b\\;c"])]  # nor does an escaped ';' end the statement
    assert stmts('a "b\\"";') == [("a", ['b"'])]
    with pytest.raises(NginxConfError):
        nginxconf._parse("a b\\")


def test_dollar_brace_and_braces_inside_words() -> None:
    assert stmts("set $a ${b}c}d;") == [("set", ["$a", "${b}c}d"])]  # '}' inside a word is part of it
    assert stmts("set $a ${b c;") == [("set", ["$a", "${b", "c"])]  # '${' needs no closing brace
    assert stmts("set $a x${{{y;") == [("set", ["$a", "x${{{y"])]  # '{' after '$' (or after such '{') stays
    assert stmts("map $a ${b}x {}") == [("map", ["$a", "${b}x"])]
    assert stmts("map $a $b{}") == [("map", ["$a", "$b"])]  # '$b' then '{': the block opens


def test_hash_starts_a_comment_only_where_a_word_could() -> None:
    assert words("a b#c d;") == [("word", "a"), ("word", "b#c"), ("word", "d"), (";", ";")]
    assert words("a #c d;\n;") == [("word", "a"), ("#", "#c d;"), (";", ";")]
    assert stmts("a;#c\nb{#c\n}") == [("a", []), ("b", [])]


def test_separators_are_nginx_s_four() -> None:
    # only space, tab, CR and LF separate; a bare CR is one of them, a no-break space is not
    assert stmts("a\rb\r;") == [("a", ["b"])]
    assert stmts("a b\u00a0c\x0bd;") == [("a", ["b\u00a0c\x0bd"])]
    assert words("# x\ry;\n") == [("#", "# x\ry;")]  # a comment runs to LF only
    with pytest.raises(NginxConfError, match="unusual whitespace"):
        parse_directive("proxy_read_timeout\u00a060s")  # in what we write, it would look like two words


@pytest.mark.parametrize(("text", "error"), [
    ("a b", "missing ';' at end of file"), ('a "b"', "missing ';'"), ("a;\n}", "unexpected '}'"),
    ("{", "unexpected '{'"), (";", "unexpected ';'"), ("a {", "never closed"), ("a { b }", "missing ';'"),
    ('a "b', "unterminated"),
])
def test_where_nginx_refuses_we_refuse(text: str, error: str) -> None:
    with pytest.raises(NginxConfError, match=error):
        nginxconf._parse(text)


@pytest.mark.parametrize(("body", "longest_ok"), [
    ("x{n};", 4095), ("x{n} ;", 4094), ('"x{n}";', 4094), ('"x{n}" ;', 4093), ('"x{n}")y;', 4094),
    ("#x{n}\na;", 4094),
])
def test_a_token_must_fit_nginx_s_read_buffer(body: str, longest_ok: int) -> None:
    # NGX_CONF_BUFFER is 4096 bytes and refilled from the token's start; nginx 1.22 -t agrees at
    # each of these boundaries (tests/test_nginx_corpus.py checks it against nginx itself)
    def text(n: int) -> str:
        return "a " + body.replace("x{n}", "x" * n) + "\nb;\n"
    nginxconf._parse(text(longest_ok))
    with pytest.raises(NginxConfError, match="too long parameter"):
        nginxconf._parse(text(longest_ok + 1))
    # bytes, not characters
    with pytest.raises(NginxConfError, match="too long parameter"):
        nginxconf._parse(text(longest_ok + 1).replace("xx", "é"))  # about half as many characters
    with pytest.raises(NginxConfError, match="too long parameter"):
        nginxconf._parse(text(longest_ok + 1).replace("xxxx", "\U0001f600"))  # a quarter


def test_last_directive_sharing_the_brace_line() -> None:
    site = SITE.replace("proxy_buffering off;\n    }", "proxy_buffering off; }")
    out = ensure(site, directives=["proxy_socket_keepalive on", "keepalive_timeout 86400s"])
    assert out == site.replace(
        "        proxy_buffering off; }",
        "        proxy_buffering off;\n        proxy_socket_keepalive on;\n        keepalive_timeout 86400s; }",
    )
    crlf = site.replace("\n", "\r\n")
    assert ensure(crlf, directives=["proxy_socket_keepalive on"]) == crlf.replace(
        "proxy_buffering off; }", "proxy_buffering off;\r\n        proxy_socket_keepalive on; }")
    # a nested block's '}' on that line, and a block whose only own-line child is its first
    nested = "server {\n  location /ws/ { proxy_pass http://x;\n    if ($a) { return 403; } }\n}\n"
    assert ensure(nested, directives=["proxy_buffering off"]) == nested.replace(
        "return 403; } }", "return 403; }\n    proxy_buffering off; }")
    multi = "location /ws/ { proxy_pass 'a\nb'; }\n"  # no child starts a line: one unit deeper than the block
    assert ensure(multi, directives=["proxy_buffering off"]) == multi.replace(
        "b'; }", "b';\n    proxy_buffering off; }")


def test_quoted_locations_round_trip() -> None:
    site = (
        "server {\n"
        '    location "/a b" {\n        proxy_pass http://x;\n    }\n'
        '    location ~ "^/ws(/|$)" {\n        proxy_pass http://y;\n    }\n'
        "    location ~* \\.(png|jpg)$ {\n        expires 1d;\n    }\n"
        "    location = \"\" {\n    }\n"
        "}\n"
    )
    listed = list_locations(site)
    assert listed == ['"/a b"', "~ ^/ws(/|$)", "~* \\.(png|jpg)$", '= ""']
    for loc in listed:  # what list_locations prints names the block it came from
        assert location_blocks(site, loc)
        ensure(site, loc, ["proxy_buffering off"])
    # the other spellings: as written in the file, and the plain one older listings printed
    for loc, kids in [('~ "^/ws(/|$)"', 1), ("/a b", 1), ('"/a b"', 1), ("\\.(png|jpg)$", 0)]:
        if kids:
            assert len(location_blocks(site, loc)) == kids
        else:
            with pytest.raises(LocationNotFound):
                location_blocks(site, loc)
    out = ensure(site, "/a b", ["proxy_buffering off"])
    assert '    location "/a b" {\n        proxy_pass http://x;\n        proxy_buffering off;\n    }' in out


def test_plain_spelling_that_fits_two_blocks_is_refused() -> None:
    site = 'location "~ a" b {}\nlocation ~ "a b" {}\n'  # both print as `~ a b` without quotes
    with pytest.raises(LocationNotFound, match="ambiguous"):
        ensure_directives(site, "~ a b", ["proxy_buffering off"])
    assert ensure(site, '~ "a b"', ["proxy_buffering off"]).count("proxy_buffering off;") == 1


def test_render_quotes_only_what_needs_it() -> None:
    render = nginxconf.render_directive
    assert render("x", ["\\.php$", "^/a\\d+$", "a b", "", "a\\nb", 'q"', "}", "a\\"]) == (
        'x \\.php$ ^/a\\d+$ "a b" "" "a\\\\nb" "q\\"" "}" "a\\\\"')


# --- properties ----------------------------------------------------------------------------

SIMPLE = [
    "proxy_pass http://127.0.0.1:8000", "proxy_set_header Host $host", "proxy_set_header connection close",
    "keepalive_timeout 65", "keepalive_timeout 70 60", "proxy_read_timeout 60s", "proxy_buffering on",
    "proxy_http_version 1.0", 'add_header X-Odd "a{b}c;d"', "return 200 '# not a comment'",
    "proxy_set_header Upgrade $http_upgrade", "set $a '}'", "proxy_set_header X-Id ${request_id}x",
]
COMMENTS = ["# proxy_buffering off;", "# { unbalanced", "#"]
LOCS = ["/ws/", "/ws/", "/", "^~ /ws/", "= /ws/", "/ws"]
DESIRED = [*WS, 'add_header X-Odd "v}"', "proxy_set_header Host $http_host"]


@st.composite
def configs(draw: st.DrawFn) -> str:
    nl = draw(st.sampled_from(["\n", "\r\n"]))
    unit = draw(st.sampled_from(["    ", "\t", "  "]))

    def block(header: str, depth: int) -> list[str]:
        kids = draw(st.lists(st.sampled_from(SIMPLE + COMMENTS + [""]), max_size=5))
        if depth < 2 and draw(st.booleans()):
            nested = draw(st.sampled_from(["if ($x)", "limit_except GET", "location /ws/inner/"]))
            lines = block(nested, depth + 1)
        else:
            lines = []
        simple = [k for k in kids if k and not k.startswith("#")]
        if not lines and simple == kids and draw(st.booleans()):
            return [f"{header} {{ " + "".join(f"{k}; " for k in simple) + "}"]
        body = [unit + (k if not k or k.startswith("#") else k + ";") for k in kids]
        at = draw(st.integers(0, len(body)))
        body[at:at] = [unit + line for line in lines]
        if body and body[-1].strip() and not body[-1].lstrip().startswith("#") and draw(st.booleans()):
            return [f"{header} {{", *body[:-1], body[-1] + " }"]  # `proxy_buffering off; }`
        return [f"{header} {{", *body, "}"]

    servers = []
    for i in range(draw(st.integers(1, 2))):
        locs = ["/ws/"] if i == 0 else []
        locs += draw(st.lists(st.sampled_from(LOCS), max_size=2))
        body = ["listen 80;"] + [line for loc in locs for line in block(f"location {loc}", 1)]
        servers += ["server {", *(unit + line for line in body), "}", ""]
    return nl.join(servers)


PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(configs(), st.lists(st.sampled_from(DESIRED), unique=True))
def test_property_contract_holds(text: str, directives: list[str]) -> None:
    ensure(text, "/ws/", directives)  # idempotent, outside lines identical, crossplane agrees


@PROPS
@given(configs())
def test_property_other_locations_are_edited_alike(text: str) -> None:
    if "location ^~ /ws/" in text:
        ensure(text, "^~ /ws/", WS)


FRAGMENTS = [*"{};\"'#\\ \n\tab$/", "\r\n", "location /ws/ ", "server ", "proxy_buffering off;", "${x}", "} "]


@st.composite
def mangled(draw: st.DrawFn) -> str:
    """A valid config with random fragments spliced in: sometimes still valid, often not."""
    text = draw(configs())
    for frag in draw(st.lists(st.sampled_from(FRAGMENTS), max_size=3)):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + frag + text[at:]
    return text


@PROPS
@given(st.one_of(mangled(), st.lists(st.sampled_from(FRAGMENTS), max_size=30).map("".join)))
def test_fuzz_only_remediation_errors(text: str) -> None:
    directives = ["proxy_buffering off", "keepalive_timeout 1d", 'add_header X "}"']
    try:
        out = ensure_directives(text, "/ws/", directives)
    except RemediationError:
        return
    assert_contract(text, out, "/ws/", directives)


@PROPS
@given(st.lists(st.sampled_from([*"ab_ ;{}#\"'\\$\n\t", "x y", "add_header"]), max_size=12).map("".join))
def test_fuzz_directive_strings(s: str) -> None:
    try:
        name, args = parse_directive(s)
    except NginxConfError:
        return
    assert parse_directive(nginxconf.render_directive(name, args)) == (name, args)


@PROPS
@given(st.text())
def test_property_listed_spelling_reads_back(a: str) -> None:
    # what list_locations and render_directive print for an arg is one word nginx reads back unchanged
    assert [(t.kind, t.value) for t in nginxconf._lex(nginxconf._quote(a))] == [("word", a)]
