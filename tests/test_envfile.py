"""remediations.edit.envfile: set flags in a docker-compose env file without disturbing the rest of it."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Iterator

import pytest
from dotenv import dotenv_values
from dotenv.parser import parse_stream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediations.edit.envfile import (
    BOM,
    Agreement,
    agreed_values,
    binding_agreement,
    duplicate_keys,
    read_values,
    set_flags,
    validate_flags,
)
from remediations.model.errors import EnvFileError, RemediationError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Values that later serve as injection test cases: each must reach the container literally.
NASTY = [
    "$",
    "$HOME",
    "$(touch /tmp/x)",
    "`touch /tmp/x`",
    "a;b",
    "a b",
    " lead and trail ",
    "#",
    "a #b",
    "a#b",
    "'",
    '"',
    'it\'s "quoted"',
    "\\",
    "a\\",
    "\\'",
    '\\"',
    "\\n",
    "",
    "false",
    "x=y",
    "\t",
    "ünï€ødé",
    "${",
]


def readback(text: str, interpolate: bool = False) -> dict[str, str | None]:
    return dotenv_values(stream=io.StringIO(text), interpolate=interpolate)


def segments(text: str) -> list[tuple[str | None, str]]:
    return [(b.key, b.original.string) for b in parse_stream(io.StringIO(text))]


def agreements(text: str) -> list[Agreement]:
    return [binding_agreement(b) for b in parse_stream(io.StringIO(text))]


def assert_contract(before: str, after: str, flags: dict[str, str]) -> None:
    """What every successful set_flags must satisfy, whatever the input."""
    for interpolate in (False, True):  # True is how docker-compose 1.29 reads it
        values = readback(after, interpolate)
        assert {k: values.get(k) for k in flags} == flags
    # every assignment of a flag, not just the last, reads as the desired value, to every reader
    assert all(b.value == flags[b.key] for b in parse_stream(io.StringIO(after)) if b.key in flags)
    assert all(a.safe for a in agreements(after))
    assert all(a.value == flags[a.key] for a in agreements(after) if a.key in flags)
    assert {k: agreed_values(after).get(k) for k in flags} == flags
    assert after.startswith(BOM) == before.startswith(BOM)
    old, new = segments(before), segments(after)
    missing = [k for k in flags if k not in {key for key, _ in old}]
    for i, (key, seg) in enumerate(old):
        if key in flags:
            continue
        got = new[i][1]
        if i == len(old) - 1 and missing:
            # the last statement may gain a newline; trailing blanks become the new key's leading blanks
            assert got.startswith(seg) and (key is None or got in (seg, seg + "\n", seg + "\r\n", seg + "\r"))
        else:
            assert new[i] == (key, seg)  # untouched, byte for byte
    new_keys = [key for key, _ in new if key is not None]
    assert new_keys == [key for key, _ in old if key is not None] + missing
    assert set_flags(after, flags) == after  # idempotent


# --- unit tests: each rule -------------------------------------------------------------------------


def test_unquoted_when_plain() -> None:
    assert set_flags("WS_ENABLED=true\n", {"WS_ENABLED": "false"}) == "WS_ENABLED=false\n"


def test_no_change_returns_same_bytes() -> None:
    text = "# comment\nexport A='false'  # inline\r\nB=\"x y\"\n\n"
    assert set_flags(text, {"A": "false", "B": "x y"}) == text


def test_other_lines_kept() -> None:
    text = '# head\n\n  OTHER = \'q u o t e d\' # note\nexport KEEP="a\\"b"\nWS=1\nLAST=z\n'
    out = set_flags(text, {"WS": "2"})
    assert out == text.replace("WS=1", "WS=2")


def test_bom_kept() -> None:
    out = set_flags(BOM + "WS=1\n", {"WS": "0", "NEW": "1"})
    assert out == BOM + "WS=0\nNEW=1\n"


def test_crlf_kept_and_used_for_new_lines() -> None:
    out = set_flags("A=1\r\nWS=1\r\n", {"WS": "0", "NEW": "x"})
    assert out == "A=1\r\nWS=0\r\nNEW=x\r\n"


def test_export_prefix_comment_and_line_ending_kept() -> None:
    out = set_flags("export WS=true   # keep me\r\nexport\tWS2='on'\n", {"WS": "false", "WS2": "off"})
    assert out == "export WS=false   # keep me\r\nexport\tWS2=off\n"


def test_no_final_newline() -> None:
    assert set_flags("A=1", {"B": "2", "C": "3"}) == "A=1\nB=2\nC=3\n"
    assert set_flags("# only a comment", {"B": "2"}) == "# only a comment\nB=2\n"
    assert set_flags("", {"B": "2"}) == "B=2\n"


def test_edit_of_last_line_without_newline() -> None:
    assert set_flags("A=1\nWS=1", {"WS": "0"}) == "A=1\nWS=0"


def test_new_keys_at_end_in_given_order() -> None:
    out = set_flags("A=1\n", {"Z": "1", "B": "2", "A": "1"})
    assert out == "A=1\nZ=1\nB=2\n"


def test_commented_out_assignment_is_not_an_assignment() -> None:
    text = "# WS_RATE_LIMIT_ENABLED=true\n#WS_RATE_LIMIT_ENABLED=false\n"
    out = set_flags(text, {"WS_RATE_LIMIT_ENABLED": "false"})
    assert out == text + "WS_RATE_LIMIT_ENABLED=false\n"


def test_duplicates_all_get_the_value() -> None:
    text = "WS=1\nA=x\nexport WS='1' # again\nWS=0\n"
    out = set_flags(text, {"WS": "0"})
    assert out == "WS=0\nA=x\nexport WS=0 # again\nWS=0\n"
    assert duplicate_keys(text, ["WS", "A", "MISSING", "WS"]) == ["WS"]


def test_bare_key_counts_as_assignment() -> None:
    # `WS` alone makes python-dotenv (and compose) read None, so it must be set too
    assert set_flags("WS\nexport WS # note\n", {"WS": "1"}) == "WS=1\nexport WS=1 # note\n"
    assert read_values("WS\n") == {"WS": None}


def test_comment_glued_to_a_value_gets_a_space() -> None:
    out = set_flags("WS='a'#note\n", {"WS": "b"})
    assert out == "WS=b #note\n"
    assert readback(out) == {"WS": "b"}


def test_empty_value_with_inline_comment() -> None:
    assert set_flags("WS= # why\n", {"WS": "on"}) == "WS= on # why\n"


def test_multiline_quoted_value_replaced() -> None:
    out = set_flags('WS="line1\nline2"\nB=2\n', {"WS": "one"})
    assert out == "WS=one\nB=2\n"


@pytest.mark.parametrize("value", NASTY[:-1])
def test_quoting_round_trip(value: str) -> None:
    for text in ("", "WS=old\n", "export WS='old' # c\n", "WS\n"):
        out = set_flags(text, {"WS": value})
        assert_contract(text, out, {"WS": value})


def test_quoting_styles() -> None:
    assert set_flags("", {"A": "a b"}) == "A='a b'\n"
    assert set_flags("", {"A": "it's"}) == 'A="it\'s"\n'
    assert set_flags("", {"A": "a\\b"}) == 'A="a\\\\b"\n'
    assert set_flags("", {"A": ""}) == "A=\n"


def test_read_values_last_assignment_no_interpolation() -> None:
    assert read_values("A=1\nB='${A}'\nA=2\n# C=3\n") == {"A": "2", "B": "${A}"}


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        ({"1A": "x"}, "variable name"),
        ({"A-B": "x"}, "variable name"),
        ({"": "x"}, "variable name"),
        ({"É": "x"}, "variable name"),
        ({"A": "a\nb"}, "newline"),
        ({"A": "a\rb"}, "carriage return"),
        ({"A": "a\0b"}, "NUL"),
        ({"A": "${HOME}"}, "${"),
        ({"A": "x${"}, "${"),
    ],
)
def test_bad_flags_refused(flags: dict[str, str], words: str) -> None:
    with pytest.raises(EnvFileError) as caught:
        validate_flags(flags)
    assert words in caught.value.message and caught.value.hint
    text = "A=1\n"
    with pytest.raises(EnvFileError):
        set_flags(text, {"OK": "1", **flags})


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("A=1\nB='unterminated\n", 2),
        ('A=1\r\n\r\n  C="x\r\nD=4\r\n', 3),
        ("# c\n=nokey\n", 2),
        ("A='x' junk\n", 1),
    ],
)
def test_unparseable_text_refused_with_line(text: str, line: int) -> None:
    for call in (
        lambda: set_flags(text, {"A": "1"}),
        lambda: read_values(text),
        lambda: duplicate_keys(text, ["A"]),
    ):
        with pytest.raises(EnvFileError, match=rf"\bline {line}\b") as caught:
            call()
        assert caught.value.hint


# --- the readers' agreement (docker compose, not python-dotenv, gives the container its values) --------
# Each divergence below was measured with the real readers; tests/test_env_corpus.py re-measures them.


def agreement(statement: str) -> tuple[str | None, bool]:
    [binding] = parse_stream(io.StringIO(statement))
    a = binding_agreement(binding)
    return a.value, a.safe


@pytest.mark.parametrize(("statement", "value"), [
    ("A=plain\n", "plain"),
    ("export A = x y  # note\r\n", "x y"),
    ("A=x\t #c\n", "x"),  # compose v2 cuts at ' #', python-dotenv at the blanks before '#': both give x
    ("A=x#c\n", "x#c"),
    ("A=\n", ""),
    ("A='' # c\n", ""),
    ("A='$HOME $$'\n", "$HOME $$"),  # nothing expands in single quotes, but '${'
    ("A='it\\'s'\n", "it's"),
    ('A="say \\"hi\\" \\\\ \\n"\n', 'say "hi" \\ \n'),
    ('A="a\nb"\n', "a\nb"),
    ("A=a\\\n", "a\\"),
    ("A=false\t# off\n", None),  # compose v2: 'false\t# off'
    ("A= # c\n", None),  # python-dotenv 1.x: '', docker-compose 1.29 and compose v2: '# c'
    ("A=$HOME\n", None),  # compose v2 expands $NAME
    ('A="$HOME"\n', None),
    ("A=$$\n", None),  # compose v2: '$'
    ("A='${HOME}'\n", None),  # docker-compose 1.29 and python-dotenv expand it, compose v2 does not
    ("A='a\\\\b'\n", None),  # python-dotenv: one backslash, compose v2: two
    ('A="it\\\'s"\n', None),  # python-dotenv: it's, compose v2: it\'s
    ('A="a\r\nb"\r\n', None),  # docker-compose 1.29 reads the CRLF inside as LF
    ("A=x\x1c\n", None),  # python-dotenv trims \x1c, compose v2 keeps it
    ("A=x\xa0\n", None),  # all trim \xa0, but the model only trusts spaces and tabs
    ("A\n", None),  # no '=': the value comes from compose's own environment
    ("A.B=1\n", None),
])
def test_binding_agreement(statement: str, value: str | None) -> None:
    assert agreement(statement) == (value, True)


@pytest.mark.parametrize("statement", [
    "A=1\r",  # compose v2 does not end a line at a bare CR (the next line would join the value)
    "A # c\n",  # compose v2 rejects the file
    "A",  # compose v2: a variable named '' holding 'A'
    "export\n",  # compose v2 joins it to the next line
    "'A'=1\n",  # compose v2 rejects quoted keys
    "A,B=1\n",
    'A="a\\\\"\n',  # docker-compose 1.29 reads the closing quote as escaped, and on
    "A=${1}\n",  # compose v2: invalid template, the whole file rejected
    "A=${B?need B}\n",  # ... or a required variable
    'A="\\0101"\n',
    "\x1cA=1\n",  # compose v2 rejects the file
])
def test_binding_agreement_unsafe(statement: str) -> None:
    assert agreement(statement) == (None, False)


def test_tab_before_inline_comment_is_rewritten_so_compose_v2_agrees() -> None:
    text = "WS_RATE_LIMIT_ENABLED=false\t# off\n"
    assert read_values(text) == {"WS_RATE_LIMIT_ENABLED": "false"}  # python-dotenv alone says already right
    out = set_flags(text, {"WS_RATE_LIMIT_ENABLED": "false"})
    assert out == "WS_RATE_LIMIT_ENABLED=false\t # off\n"
    assert agreed_values(out) == {"WS_RATE_LIMIT_ENABLED": "false"}


def test_empty_value_beside_an_inline_comment_is_quoted() -> None:
    assert set_flags("FOO=x # c\n", {"FOO": ""}) == "FOO='' # c\n"
    # was judged already right (python-dotenv 1.x reads ''); docker-compose 1.29 and compose v2 read '# c'
    assert set_flags("FOO= # c\n", {"FOO": ""}) == "FOO= '' # c\n"
    assert set_flags("FOO=x\n", {"FOO": ""}) == "FOO=\n"


def test_dollar_values_are_single_quoted() -> None:
    assert set_flags("", {"A": "$HOME"}) == "A='$HOME'\n"
    assert set_flags("", {"A": "$$"}) == "A='$$'\n"
    assert set_flags("", {"A": "it's $HOME"}) == "A='it\\'s $HOME'\n"  # not "it's $HOME": compose v2 expands it
    assert set_flags('A="$HOME"\n', {"A": "$HOME"}) == "A='$HOME'\n"
    assert set_flags("A=$$\n", {"A": "$$"}) == "A='$$'\n"
    assert set_flags("", {"A": "it's"}) == 'A="it\'s"\n'  # no '$': double quotes read alike


def test_already_right_means_what_docker_compose_gives() -> None:
    text = "A=x\nB=$A\n"  # compose v2 gives B 'x', not '$A'
    assert set_flags(text, {"B": "$A"}) == "A=x\nB='$A'\n"
    same = "A=x\nB='$A'\n"
    assert set_flags(same, {"B": "$A"}) is same


def test_bare_carriage_returns_refused() -> None:
    for text, line in (("A=1\rB=2\r", 1), ("A=1\r\nB=2\rC=3\r\n", 2)):
        with pytest.raises(EnvFileError, match=rf"line {line} .*carriage return") as caught:
            set_flags(text, {"WS": "0"})
        assert "LF" in (caught.value.hint or "")
    assert set_flags("A=1\r\n", {"WS": "0"}) == "A=1\r\nWS=0\r\n"  # CRLF is fine


@pytest.mark.parametrize(("text", "line"), [
    ("A=1\nB=${1}\nWS=0\n", 2),
    ("A=1\nB # note\n", 2),
    ("'A'=1\n", 1),
    ('X="a\\\\"\nY="b"\n', 1),
])
def test_a_line_the_readers_may_split_differently_is_refused(text: str, line: int) -> None:
    for call in (lambda: set_flags(text, {"WS": "1"}), lambda: agreed_values(text)):
        with pytest.raises(EnvFileError, match=rf"^line {line} of the env file") as caught:
            call()
        assert f"line {line}" in (caught.value.hint or "")


def test_a_flag_line_the_readers_misread_is_rewritten() -> None:
    assert set_flags("A=1\nWS # note\n", {"WS": "1"}) == "A=1\nWS=1 # note\n"
    assert set_flags("WS=\xa0x\n", {"WS": "y"}) == "WS=y\n"  # the odd blank after '=' goes


def test_a_value_referring_to_a_rewritten_flag_is_refused() -> None:
    text = "WS_PORT=1\nWS_URL=ws://h:${WS_PORT}/ws\n"
    with pytest.raises(EnvFileError, match=r"refusing to set WS_PORT: WS_URL on line 2 refers to it"):
        set_flags(text, {"WS_PORT": "2"})
    assert set_flags(text, {"WS_PORT": "1"}) is text  # nothing changes: nothing to refuse
    # an appended flag cannot change what an earlier line expanded
    assert set_flags("URL=${WS}\n", {"WS": "2"}) == "URL=${WS}\nWS=2\n"
    assert set_flags("B='$WS'\nWS=1\n", {"WS": "2"}) == "B='$WS'\nWS=2\n"  # literal to every reader


@pytest.mark.parametrize("value", ["\x0c\\", " a\\", "$a\\", "$a\\\\b", "x\\'$"])
def test_values_no_spelling_gives_every_reader_are_refused(value: str) -> None:
    with pytest.raises(EnvFileError, match="no spelling of its value reads the same") as caught:
        validate_flags({"A": value})
    assert caught.value.hint


def test_agreed_values_leaves_out_what_readers_may_not_agree_on() -> None:
    text = "A=1\nB=$A\nC='${A}'\nD=x\t# c\nE\nF='ok'\nA=2\n"
    assert agreed_values(text) == {"A": "2", "F": "ok"}
    assert read_values(text)["B"] == "$A"  # read_values stays python-dotenv's literal reading


# --- property tests --------------------------------------------------------------------------------

TARGETS = ["WS_A", "WS_B", "_x9"]
keys = st.sampled_from([*TARGETS, "OTHER"])
plain_values = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=12)
values = (st.sampled_from(NASTY) | plain_values).filter(lambda v: "${" not in v)
flag_sets = st.dictionaries(st.sampled_from(TARGETS), values, min_size=1, max_size=3)
eols = st.sampled_from(["\n", "\r\n"])


@st.composite
def quoted(draw: st.DrawFn) -> str:
    value = draw(values)
    style = draw(st.sampled_from(["plain", "single", "double"]))
    if style == "single" and "'" not in value and "\\" not in value:
        return f"'{value}'"
    if style == "double" or not re.fullmatch(r"[\w.-]*", value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


@st.composite
def env_lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["assign", "assign", "comment", "commented", "blank", "bare"]))
    key = draw(keys)
    if kind == "comment":
        return "# " + draw(plain_values)
    if kind == "commented":
        return f"# {key}={draw(quoted())}"
    if kind == "blank":
        return draw(st.sampled_from(["", "  ", "\t"]))
    prefix = draw(st.sampled_from(["", "export ", "  "]))
    if kind == "bare":
        return prefix + key
    spacing = draw(st.sampled_from(["=", " = ", "= "]))
    comment = draw(st.sampled_from(["", " # note", "  #x"]))
    return f"{prefix}{key}{spacing}{draw(quoted())}{comment}"


@st.composite
def env_texts(draw: st.DrawFn) -> str:
    eol = draw(eols)
    text = eol.join(draw(st.lists(env_lines(), max_size=8)))
    if text and draw(st.booleans()):
        text += eol
    return (BOM if draw(st.booleans()) else "") + text


def doubtful_elsewhere(text: str, flags: dict[str, str]) -> bool:
    """The readers may disagree about a statement set_flags leaves alone (so it must refuse the file)."""
    return any(not a.safe and a.key not in flags for a in agreements(text))


def edited(text: str, flags: dict[str, str]) -> str | None:
    """set_flags' result, or None when it refused a file the model finds doubtful (and only then)."""
    try:
        return set_flags(text, flags)
    except EnvFileError as error:
        if not _flags_valid(flags):  # a value no spelling gives every reader (e.g. ' x\\')
            return None
        assert doubtful_elsewhere(text, flags), str(error)
        assert re.search(r"\bline \d+\b", error.message) and error.hint
        return None


@FAST
@given(env_texts(), flag_sets)
def test_property_contract(text: str, flags: dict[str, str]) -> None:
    out = edited(text, flags)
    if out is not None:
        assert_contract(text, out, flags)


@FAST
@given(env_texts(), flag_sets)
def test_property_idempotent(text: str, flags: dict[str, str]) -> None:
    once = edited(text, flags)
    if once is not None:
        assert set_flags(once, flags) == once


@FAST
@given(env_texts(), flag_sets)
def test_property_untouched_lines_kept(text: str, flags: dict[str, str]) -> None:
    out = edited(text, flags)
    if out is None:
        return
    kept = [seg for key, seg in segments(text) if key not in flags]
    for seg in kept:  # each non-target statement (with its comments/blank lines) survives verbatim
        assert seg.rstrip("\r\n") in out
    # already right = every assignment of every flag gives every reader the value (not just python-dotenv)
    statements = agreements(text)
    if all(a.value == flags[a.key] for a in statements if a.key in flags) and \
            set(flags) <= {a.key for a in statements}:
        assert out == text


@FAST
@given(env_texts(), flag_sets)
def test_property_reads_back(text: str, flags: dict[str, str]) -> None:
    out = edited(text, flags)
    if out is not None:
        assert {k: readback(out)[k] for k in flags} == flags
        assert {k: readback(out, interpolate=True)[k] for k in flags} == flags
        assert {k: agreed_values(out)[k] for k in flags} == flags


fuzz_text = st.text(alphabet=st.sampled_from(list("WS_AB= #'\"\\$ {}x\t\r\nexport\ufeff\x0b\x85")), max_size=40)
fuzz_flags = st.dictionaries(  # mostly valid flags, so the success path gets fuzzed too
    st.sampled_from(["WS_A", "WS_B", "e", "x"]), st.text(alphabet=list("ab #'\"\\${}\t="), max_size=6), max_size=3
) | st.dictionaries(
    st.sampled_from(["WS_A", "1X", "A-B", ""]), st.text(alphabet=list("ab\n\r\0${"), max_size=6), max_size=3
)


def _text_doubtful(text: str, flags: dict[str, str]) -> bool:
    """python-dotenv cannot parse it, or the readers may disagree about a statement set_flags keeps, or a
    value the readers expand refers to a flag (rewriting the flag would change it)."""
    if any(b.error for b in parse_stream(io.StringIO(text))) or doubtful_elsewhere(text, flags):
        return True
    if re.search(r"\r(?!\n)", text):  # compose v2 would not see a line added after a bare CR
        return True
    return any(a.value is None and a.key not in flags and re.search(rf"\${{?{re.escape(k)}\b", b.original.string)
               for b, a in zip(parse_stream(io.StringIO(text)), agreements(text), strict=True) for k in flags)


def _flags_valid(flags: dict[str, str]) -> bool:
    try:
        validate_flags(flags)
    except EnvFileError:
        return False
    return True


@settings(max_examples=600, deadline=None)
@given(fuzz_text, fuzz_flags)
def test_fuzz_contract_or_envfile_error(text: str, flags: dict[str, str]) -> None:
    try:
        out = set_flags(text, flags)
    except RemediationError as error:
        assert isinstance(error, EnvFileError)
        # refusing is only allowed for bad or doubtful input, never as a way out of a rewrite it got wrong
        assert not _flags_valid(flags) or _text_doubtful(text, flags), str(error)
        return
    assert_contract(text, out, flags)


# --- size: the work grows with the file, not with its square ------------------------------------------

class CountingPattern:
    """The real line-break pattern, counting the characters each call hands it to scan."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern, self.scanned = pattern, 0

    def _seen(self, string: str, pos: int, endpos: int) -> None:
        self.scanned += max(0, min(endpos, len(string)) - pos)

    def findall(self, string: str, pos: int = 0, endpos: int = sys.maxsize) -> list[str]:
        self._seen(string, pos, endpos)
        return self.pattern.findall(string, pos, endpos)

    def finditer(self, string: str, pos: int = 0, endpos: int = sys.maxsize) -> Iterator[re.Match[str]]:
        self._seen(string, pos, endpos)
        return self.pattern.finditer(string, pos, endpos)


def big_env(size: int) -> str:
    kinds = ("PLAIN_{i}=value-{i}", "export SINGLE_{i}='single {i}'  # note", 'DOUBLE_{i}="esc \\"{i}\\""',
             "# comment {i}", "", 'MULTI_{i}="first {i}\nsecond"', "CRLF_{i}=x\r")
    out, total, i = [], 0, 0
    while total < size:
        line = kinds[i % len(kinds)].format(i=i) + "\n"
        out.append(line)
        total += len(line)
        i += 1
    return "".join(out)


def test_two_megabytes_read_with_linear_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deterministic, not timed: every character is scanned for line breaks a bounded number of times
    (counting them again for every statement scanned ~10^10 characters for 2 MB and took minutes)."""
    from remediations.edit import envfile

    text = big_env(2 * 1024 * 1024)
    counter = CountingPattern(envfile._NEWLINE)
    monkeypatch.setattr(envfile, "_NEWLINE", counter)
    assert read_values(text) == readback(text)
    assert counter.scanned <= len(text)  # one pass
    counter.scanned = 0
    out = set_flags(text, {"PLAIN_0": "changed", "NEW_KEY": "1"})
    assert out == text.replace("PLAIN_0=value-0\n", "PLAIN_0=changed\n", 1) + "NEW_KEY=1\n"
    assert counter.scanned <= 3 * len(out)  # the input, its line endings, the result read back
    # the line numbers are still right at the far end of the file
    last = len(re.findall(r"\r\n|\n|\r", text)) + 1
    with pytest.raises(EnvFileError, match=rf"\bline {last}\b"):
        read_values(text + "BROKEN='no end\n")


def old_error_lines(text: str) -> list[int]:
    """The line numbers as wsguard computed them before (quadratic, kept here as the reference)."""
    bindings = list(parse_stream(io.StringIO(text)))
    body = "".join(b.original.string for b in bindings)
    out, offset = [], 0
    for b in bindings:
        start = offset + len(b.original.string) - len(b.original.string.lstrip())
        if b.error:
            out.append(1 + len(re.findall(r"\r\n|\n|\r", body[:start])))
        offset += len(b.original.string)
    return out


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("A= '\"#\\\r\n\t\x0b\x85x")), max_size=60))
def test_property_error_lines_as_before(text: str) -> None:
    lines = old_error_lines(text)
    if not lines:
        read_values(text)
        return
    where = f"line {lines[0]}" if len(lines) == 1 else f"lines {', '.join(map(str, lines))}"
    with pytest.raises(EnvFileError) as caught:
        read_values(text)
    assert f"cannot parse {where} of" in caught.value.message
