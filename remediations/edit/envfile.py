"""Set variables in a docker-compose env file, leaving everything else in it byte for byte.

Three programs read the file, and they do not always agree:
  * python-dotenv (this venv's, 1.x): what wsguard itself reads (read_values);
  * docker-compose 1.29: python-dotenv 0.21 underneath, expanding `${...}` (even inside single quotes);
  * Docker Compose v2 (compose-go's parser): expands `$NAME` too, ends an unquoted value only at ` #`,
    and ends lines only at LF.

The rule: a value is written only in a spelling on which all three agree, and an existing assignment
counts as already right only when all three give the wanted value; anything else is rewritten into such
a spelling, or refused with an EnvFileError naming the key or line. wsguard cannot run compose on the
hosts, so `binding_agreement` models, one statement at a time, where the readers part ways; it is
conservative (it may call a spelling doubtful that all readers happen to read alike, never the other
way round), and tests/test_env_corpus.py holds it against the real readers. Only the value of an
assignment that needs changing is rewritten; indentation, `export `, key, inline comment and line ending
stay.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dotenv.parser import Binding, parse_stream

from remediations.model.errors import EnvFileError

BOM = "\ufeff"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Values that read back unchanged without quotes, and are inert in a shell too.
_PLAIN = re.compile(r"[A-Za-z0-9_./:@%+,=-]*")
_NEWLINE = re.compile(r"\r\n|\n|\r")
_EOL = re.compile(r"(?:\r\n|\n|\r)?\Z")
# Mirrors python-dotenv's parse_binding up to the value: leading blanks (and blank lines), `export `,
# the key (maybe single-quoted), blanks, then `=` with the blanks after it (absent for a bare `KEY`).
_HEAD = re.compile(r"\s*(?:export[^\S\r\n]+)?(?P<key>'[^']+'|[^=#\s]+)(?P<blank>[^\S\r\n]*)(?P<eq>=[^\S\r\n]*)?")
# python-dotenv 1.x's quoted values (a backslash escapes any character); compose v2 ends them at the
# same quote. docker-compose 1.29's python-dotenv 0.21 differs only for a quote after `\\` (see below).
_QUOTED = {
    "'": re.compile(r"'(?:\\.|[^'\\])*'", re.DOTALL),
    '"': re.compile(r'"(?:\\.|[^"\\])*"', re.DOTALL),
}
_FORBIDDEN = (
    ("\n", "a newline"),
    ("\r", "a carriage return"),
    ("\0", "a NUL byte"),
    ("${", "'${', which docker-compose would expand as a variable (docker-compose 1.29 even in single quotes)"),
)


def validate_flags(flags: Mapping[str, str]) -> None:
    """Refuse keys that are not shell identifiers and values no spelling gives every reader literally."""
    for key, value in flags.items():
        if not _KEY.fullmatch(key):
            raise EnvFileError(
                f"refusing to set {key!r}: not a valid variable name",
                hint="use letters, digits and underscores only, not starting with a digit",
            )
        reason = next((why for bad, why in _FORBIDDEN if bad in value), None)
        if reason is None and _unencodable(value):  # lone surrogates cannot be written to a file
            reason = "characters that are not valid UTF-8"
        if reason:
            raise EnvFileError(
                f"refusing to set {key}: its value contains {reason}",
                hint="env files hold one literal line per variable; choose a value without "
                "line breaks, NUL bytes or '${'",
            )
        if _quote(key, value) is None:
            raise EnvFileError(
                f"refusing to set {key}: no spelling of its value reads the same in python-dotenv, "
                "docker-compose 1.29 and docker compose v2",
                hint=_UNSPELLABLE_DOLLAR if "$" in value else _UNSPELLABLE_BACKSLASH,
            )


_UNSPELLABLE_DOLLAR = (
    "a value with '$' can only be single-quoted (compose v2 expands '$' anywhere else), and there a backslash "
    "before a quote, two backslashes in a row or a final backslash read differently; choose a value without them"
)
_UNSPELLABLE_BACKSLASH = (
    "a value ending in a backslash can only be written unquoted (in quotes docker-compose 1.29 reads on past "
    "the closing quote), so it cannot also start or end with blanks, start with a quote, or hold '$', a blank "
    "before '#' or unusual whitespace; choose a simpler value"
)


def read_values(text: str) -> dict[str, str | None]:
    """Key -> value of its last assignment, as python-dotenv reads it without interpolation.

    That is python-dotenv's literal reading, not always what a container gets: see agreed_values."""
    return {b.key: b.value for _, b in _parse(text) if b.key is not None}


def duplicate_keys(text: str, keys: Iterable[str]) -> list[str]:
    """The given keys that are assigned more than once (every assignment counts, not just the last)."""
    assigned = [b.key for _, b in _parse(text)]
    return [k for k in dict.fromkeys(keys) if assigned.count(k) > 1]


# --- where the readers part ways ----------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """What python-dotenv, docker-compose 1.29 and docker compose v2 make of one statement of a file."""

    key: str | None  # None: blank lines or a comment
    value: str | None  # the value all three give the key here; None when they may not agree
    why: str = ""  # why `value` is None (or the statement unsafe); never quotes the value
    safe: bool = True  # False: the readers may split the file differently from here, or one rejects it


# A statement as every reader sees it: blank lines and indentation (blanks beyond space and tab are
# trimmed differently by each reader), then a comment, or `export `, a key and maybe `=` and blanks.
_STATEMENT = re.compile(r"[ \t\r\n]*(?:(?P<comment>#)|(?P<export>export[ \t]+)?(?P<key>[^=#\s']+)[ \t]*"
                        r"(?P<eq>=[ \t]*)?)")
_BLANK = re.compile(r"[ \t\r\n]*")
_COMMENT_REST = re.compile(r"#[^\r\n]*(?:\r?\n)?")
_BARE_REST = re.compile(r"\r?\n")  # a key without `=` must end its line (compose v2 rejects `KEY # c`)
_AFTER_QUOTE = re.compile(r"[ \t]*(?:#[^\r\n]*)?(?:\r?\n)?")
_LINE = re.compile(r"[^\r\n]*")
# Names compose v2 accepts; anything wider makes it reject the whole file.
_V2_KEY = re.compile(r"[A-Za-z0-9_.\[\]-]+")
_BARE_CR = re.compile(r"\r(?!\n)")
_SINGLE_ESCAPES = re.compile(r"\\[\\']")  # python-dotenv (0.21 and 1.x) in single quotes
_DOUBLE_ESCAPES = re.compile(r"\\[\\'\"abfnrtv]")  # ... and in double quotes
_PY_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r",
               "t": "\t", "v": "\v"}
_V2_QUOTE_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
# compose-go's expandEscapes: these, after its quote scanner; `\c` is kept as is (Go cannot unquote it).
_V2_ESCAPES = re.compile(r"\\(?:[abcfnrtv$\"\\]|0\d{0,3})")
_GO_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", '"': '"',
               "\\": "\\", "c": "\\c"}
# `${NAME}` or `${NAME:-word}`/`${NAME-word}` (word without `$ { }`): forms compose v2 never fails on.
_V2_BRACES = re.compile(r"\$\{[_A-Za-z][_A-Za-z0-9]*(?P<default>:?-[^${}]*)?\}")
_V2_BLANKS = " \t"


class _Unsafe(Exception):
    pass


def binding_agreement(binding: Binding) -> Agreement:
    """Whether python-dotenv 1.x, docker-compose 1.29 and docker compose v2 agree on this statement (one
    of python-dotenv's bindings), and on what value.

    Unsafe: the readers may not end the statement at the same place (so nothing after it can be trusted),
    or compose v2 rejects the file over it. Safe with value None: every reader skips past it alike, but
    they may give the key different values (or take it from their environment).
    """
    segment = binding.original.string
    try:
        if binding.error:
            raise _Unsafe("python-dotenv cannot parse it (docker-compose 1.29 skips it, compose v2 may reject "
                          "the whole file)")
        if _BARE_CR.search(segment):
            raise _Unsafe("a carriage return without a line feed (compose v2 does not end a line there)")
        if _BLANK.fullmatch(segment):
            return Agreement(None, None)
        m = _STATEMENT.match(segment)
        if m is None or (m["comment"] is None and m["key"] != binding.key):
            raise _Unsafe("unusual characters or blanks around the key: the readers may split this line "
                          "differently")
        if m["comment"] is not None:
            if binding.key is not None or not _COMMENT_REST.fullmatch(segment, m.start("comment")):
                raise _Unsafe("a comment the readers may end differently")
            return Agreement(None, None)
        key, rest = m["key"], segment[m.end() :]
        if not _V2_KEY.fullmatch(key):
            raise _Unsafe("a variable name compose v2 rejects (it then reads none of the file)")
        if m["eq"] is None:
            if key == "export":  # compose v2 reads a bare `export` as the prefix of the next line
                raise _Unsafe("a bare 'export' line (compose v2 joins it to the next line)")
            if not _BARE_REST.fullmatch(rest):
                raise _Unsafe("a key without '=' must end its line (compose v2 rejects a comment after it and "
                              "misreads it on the last line)")
            return Agreement(key, None, "no '=': docker compose takes the value from the environment it runs in")
        value, why = _value_agreement(rest, m["eq"])
    except _Unsafe as unsafe:
        return Agreement(binding.key, None, str(unsafe), safe=False)
    if value is not None and not _KEY.fullmatch(key):
        value, why = None, "not a plain variable name (letters, digits and underscores)"
    return Agreement(key, value, why)


def _value_agreement(rest: str, eq: str) -> tuple[str | None, str]:
    """(value, "") when every reader gives `rest` (what follows `KEY=`) that value, else (None, why)."""
    quote = rest[:1]
    if quote in _QUOTED:
        return _quoted_agreement(rest, quote)
    line = _LINE.match(rest)
    part = line.group() if line else ""
    v2 = part.split(" #", 1)[0]  # compose v2 ends the value only at ` #`
    if "$" in v2:
        _check_v2_template(v2)  # first: it may reject the whole file
        return None, "compose v2 expands '$' in an unquoted value"
    if any(c.isspace() and c not in _V2_BLANKS for c in part):
        return None, "unusual blanks in an unquoted value (each reader trims different ones)"
    v2 = v2.rstrip(_V2_BLANKS)
    dotenv_0_21 = re.sub(r"\s+#.*", "", part).rstrip()
    # python-dotenv 1.x alone reads `KEY= #...` as empty; 0.21 and compose v2 read the comment as the value
    dotenv_1 = "" if len(eq) > 1 and part.startswith("#") else dotenv_0_21
    if "${" in dotenv_0_21:
        return None, "docker-compose 1.29 and python-dotenv expand '${...}'"
    if dotenv_1 != dotenv_0_21:
        return None, "'KEY= #...' is empty to python-dotenv 1.x but the comment to docker-compose 1.29 and compose v2"
    if dotenv_1 != v2:
        return None, ("compose v2 ends an unquoted value only at ' #' (a space, then '#'), python-dotenv at any "
                      "blank before '#'")
    return _literal(dotenv_1)


def _quoted_agreement(rest: str, quote: str) -> tuple[str | None, str]:
    m = _QUOTED[quote].match(rest)
    if m is None:
        raise _Unsafe("quotes that are never closed")
    content = m.group()[1:-1]
    if content.endswith("\\"):
        # python-dotenv 0.21 reads `\\` + quote as a backslash and an escaped quote, and reads on
        raise _Unsafe("a quote closed right after a backslash (docker-compose 1.29 reads past it)")
    if not _AFTER_QUOTE.fullmatch(rest, m.end()):
        raise _Unsafe("text after the closing quote the readers may read differently")
    v2 = _V2_QUOTE_ESCAPE.sub(lambda e: e[1] if e[1] == quote else e[0], content)  # compose v2's scanner
    if quote == "'":
        dotenv = _SINGLE_ESCAPES.sub(lambda e: _PY_ESCAPES[e[0][1]], content)
        if "${" in dotenv:
            return None, "docker-compose 1.29 and python-dotenv expand '${...}' even in single quotes, compose v2 not"
    else:
        dotenv = _DOUBLE_ESCAPES.sub(lambda e: _PY_ESCAPES[e[0][1]], content)
        v2 = _V2_ESCAPES.sub(_v2_escape, v2)
        if "$" in v2:
            _check_v2_template(v2)
            return None, "compose v2 expands '$' in double quotes"
        if "${" in dotenv:
            return None, "docker-compose 1.29 and python-dotenv expand '${...}'"
    if "\r" in content:
        return None, "a CRLF line break inside quotes (docker-compose 1.29 reads it as LF, compose v2 keeps the CR)"
    if dotenv != v2:
        return None, "backslash escapes python-dotenv and compose v2 read differently"
    return _literal(dotenv)


def _v2_escape(escape: re.Match[str]) -> str:
    char = escape[0][1]
    if char == "0":  # octal escapes could even spell `${`
        raise _Unsafe("an octal escape ('\\0...') in double quotes")
    return "$$" if char == "$" else _GO_ESCAPES[char]  # `\$` is compose v2's `$$`: a literal `$`


def _check_v2_template(value: str) -> None:
    """compose v2 rejects the whole file over a `${...}` it cannot expand (`${1}`, `${A?}` unset, ...)."""
    for start in (m.start() for m in re.finditer(r"\$\{", value)):
        braces = _V2_BRACES.match(value, start)
        if braces is None or (braces["default"] and "}" in value[braces.end() :]):
            raise _Unsafe("a '${...}' compose v2 may fail to expand (it then rejects the whole file)")


def _literal(value: str) -> tuple[str | None, str]:
    if "\0" in value:
        return None, "a NUL character"
    return value, ""


def agreed_values(text: str) -> dict[str, str]:
    """Key -> the value python-dotenv, docker-compose 1.29 and docker compose v2 all give it (its last
    assignment); keys they may not agree on are left out. A file the readers may not even split into the
    same statements (or that one of them rejects) is refused: EnvFileError naming the line."""
    final: dict[str, str | None] = {}
    for line, _, agreement in _agreements(text):
        if not agreement.safe:
            raise _unsafe_error(line, agreement)
        if agreement.key is not None:
            final[agreement.key] = agreement.value
    return {k: v for k, v in final.items() if v is not None}


def _agreements(text: str) -> list[tuple[int, Binding, Agreement]]:
    return [(line, b, binding_agreement(b)) for line, b in _parse(text)]


def _unsafe_error(line: int, agreement: Agreement) -> EnvFileError:
    return EnvFileError(
        f"line {line} of the env file: {agreement.why}; python-dotenv, docker-compose 1.29 and docker compose v2 "
        "may not read the file alike",
        hint=f"fix line {line} by hand (README: how wsguard reads env files), then run again",
    )


# --- editing ---------------------------------------------------------------------------------------------


def set_flags(text: str, flags: dict[str, str]) -> str:
    """Return `text` with every assignment of each flag reading as its value to every reader (python-dotenv,
    docker-compose 1.29, docker compose v2); missing keys are appended."""
    validate_flags(flags)
    bare_cr = _BARE_CR.search(text)
    if bare_cr:
        line = 1 + len(re.findall(r"\r\n|\n|\r", text[: bare_cr.start()].removeprefix(BOM)))
        raise EnvFileError(
            f"line {line} of the env file ends with a carriage return alone: docker compose v2 does not end "
            "a line there, so a line wsguard added would not be seen",
            hint="convert the file to LF (or CRLF) line endings, e.g. with `mac2unix`, then run again",
        )
    statements = _agreements(text)
    body = "".join(b.original.string for _, b, _ in statements)  # `text` without its BOM
    parts: list[str] = []
    changed: set[str] = set()
    for line, b, agreement in statements:
        segment = b.original.string
        if b.key in flags and agreement.value != flags[b.key]:  # not what every reader gives: rewrite
            segment = _rewrite(segment, b.key, flags[b.key], line)
            changed.add(b.key)
        elif not agreement.safe:
            raise _unsafe_error(line, agreement)
        parts.append(segment)
    _refuse_references(statements, flags, changed)
    assigned = {b.key for _, b, _ in statements}
    missing = [k for k in flags if k not in assigned]
    new = "".join(parts)
    if new == body and not missing:
        return text  # already right: hand back the very same bytes
    if missing:
        eol = _dominant_eol(body)
        if new and not new.endswith(("\n", "\r")):
            new += eol  # the last line had no newline: new keys go on their own line
        new += "".join(f"{k}={_quote(k, flags[k])}{eol}" for k in missing)
    out = (BOM if text.startswith(BOM) else "") + new
    # Belt and braces: never hand back a file whose flags some reader would not read as asked.
    written = _agreements(out)
    unsafe = next(((line, a) for line, _, a in written if not a.safe), None)
    if unsafe:
        raise _unsafe_error(*unsafe)
    wrong = sorted({a.key for _, _, a in written if a.key in flags and a.value != flags[a.key]})
    if wrong:
        raise EnvFileError(f"could not write {', '.join(wrong)} so that every reader reads it back", hint=_BY_HAND)
    return out


_BY_HAND = "edit the env file by hand, then run again"


def _refuse_references(statements: list[tuple[int, Binding, Agreement]], flags: Mapping[str, str],
                       changed: set[str]) -> None:
    """A value the readers expand (`$WS_X`, `${WS_X}`) would change with a flag rewritten before it:
    refuse rather than change another variable behind the user's back."""
    if not changed:
        return
    ref = re.compile(r"\$\{?(" + "|".join(map(re.escape, sorted(changed))) + r")(?![A-Za-z0-9_])")
    for line, b, agreement in statements:
        if b.key is None or b.key in flags or agreement.value is not None:  # an agreed value is literal
            continue
        m = ref.search(b.original.string)
        if m:
            raise EnvFileError(
                f"refusing to set {m[1]}: {b.key} on line {line} refers to it, so docker compose would change "
                f"{b.key} too",
                hint=f"write {b.key}'s value out in full instead of referring to ${m[1]}, then run again",
            )


def _parse(text: str) -> list[tuple[int, Binding]]:
    """python-dotenv's bindings, each with the 1-based line its statement starts on (not its blank lines)."""
    bindings = list(parse_stream(io.StringIO(text)))
    body = "".join(b.original.string for b in bindings)
    # Line breaks are found in one pass and counted off as the statements go by: counting them again
    # from the top for every statement took minutes on a 2 MB file.
    breaks = [m.start() for m in _NEWLINE.finditer(body)]
    result, offset, seen = [], 0, 0
    for b in bindings:
        start = offset + len(b.original.string) - len(b.original.string.lstrip())
        while seen < len(breaks) and breaks[seen] < start:
            seen += 1
        result.append((1 + seen, b))
        offset += len(b.original.string)
    bad = [line for line, b in result if b.error]
    if bad:
        where = f"line {bad[0]}" if len(bad) == 1 else f"lines {', '.join(map(str, bad))}"
        raise EnvFileError(
            f"python-dotenv cannot parse {where} of the env file (docker-compose would skip it)",
            hint=f"fix or remove {where} by hand, then run again; wsguard does not rewrite a file it cannot read",
        )
    return result


def _rewrite(segment: str, key: str, value: str, line: int) -> str:
    """The assignment in `segment` with its value replaced, keeping everything around the value, in the
    first spelling and layout every reader reads as `value`."""
    head = _HEAD.match(segment)
    if head is None:  # python-dotenv parsed it, so this is not expected
        raise EnvFileError(f"could not locate the value of {key} on line {line}", hint=_BY_HAND)
    if head["eq"] is None:  # bare `KEY` (no `=`): add the value right after the key
        before, after = segment[: head.start("blank")] + "=", segment[head.start("blank") :]
        befores = [before]
    else:
        start, end = _value_span(segment, head)
        before, after = segment[:start], segment[end:]
        # blanks other than space and tab around `=` are trimmed differently by each reader: drop them
        tidy = segment[: head.end("key")] + _plain_blanks(head["blank"]) + "=" + _plain_blanks(head["eq"][1:])
        befores = list(dict.fromkeys([before, tidy + segment[head.end("eq") : start]]))
    eol = _EOL.search(segment)
    kept = (
        # Keep the inline comment; a `#` right after an unquoted value would join the value.
        (" " if after.startswith("#") else "") + after,
        # compose v2 ends an unquoted value only at ` #`: a tab alone before the `#` gets a space
        re.sub(r"^([^\S\r\n]*)#", r"\1 #", after),
    )
    dropped = eol.group() if eol else ""  # fallback: drop what followed the value
    spellings = _spellings(value)
    candidates = [b + s + rest for b in befores for s in spellings for rest in kept]
    candidates += [b + s + dropped for b in befores for s in spellings]
    for candidate in candidates:
        if _reads_as(candidate, key, value):
            return candidate
    raise EnvFileError(f"could not rewrite {key} on line {line} so that every reader reads it back", hint=_BY_HAND)


def _plain_blanks(blanks: str) -> str:
    """The spaces and tabs of `blanks` (other blanks each reader trims its own way)."""
    return "".join(c for c in blanks if c in _V2_BLANKS)


def _reads_as(statement: str, key: str, value: str) -> bool:
    """Every reader reads `statement` (one statement) as `key` = `value`."""
    parsed = list(parse_stream(io.StringIO(statement)))
    if len(parsed) != 1 or parsed[0].key != key:
        return False
    agreement = binding_agreement(parsed[0])
    return agreement.safe and agreement.value == value


def _value_span(segment: str, head: re.Match[str]) -> tuple[int, int]:
    """Where the value of an assignment (`head` matched, with its `=`) is written, quotes included."""
    start = end = head.end()
    opener = segment[start : start + 1]
    if opener in _QUOTED:
        match = _QUOTED[opener].match(segment, start)
        end = match.end() if match else len(segment)
    elif not (len(head["eq"]) > 1 and opener == "#"):  # `KEY= # note` has an empty value
        # An unquoted value runs to the end of the line, minus an inline ` #...` and trailing blanks.
        rest = re.match(r"[^\r\n]*", segment[start:])
        raw = rest.group() if rest else ""
        end = start + len(re.sub(r"\s+#.*", "", raw).rstrip())
    return start, end


def written_values(text: str) -> list[tuple[str, str | None, str]]:
    """(key, value, spelling) of every assignment with `=`: the value as python-dotenv reads it, and
    as the file spells it (outer quotes removed, escapes and line breaks kept: what a diff shows).

    Statements python-dotenv cannot parse are included too (value None, spelling the rest of their
    line), so what a masker learns does not depend on the file being valid.
    """
    out: list[tuple[str, str | None, str]] = []
    for b in parse_stream(io.StringIO(text)):
        segment = b.original.string
        head = _HEAD.match(segment)
        if head is None or head["eq"] is None:
            continue
        start, end = _value_span(segment, head)
        raw = segment[start:end]
        if raw[:1] in _QUOTED:
            raw = raw[1:-1] if len(raw) > 1 and raw.endswith(raw[0]) else raw[1:]
        out.append((b.key or head["key"].strip("'"), b.value, raw))
    return out


def _spellings(value: str) -> list[str]:
    """Ways to write `value`, most readable first; only those every reader reads back (_reads_as) are used."""
    out = []
    if _PLAIN.fullmatch(value):
        out.append(value)  # `false`, not `'false'`: some readers (docker run --env-file) keep quotes
    if "'" not in value and "\\" not in value:
        out.append(f"'{value}'")  # single quotes: nothing inside is special to compose v2
    out.append('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')  # compose v2 expands `$` here
    out.append("'" + value.replace("'", "\\'") + "'")  # every reader reads `\'` as `'`
    out.append(value)  # unquoted: a backslash is literal to every reader (`a\`)
    return list(dict.fromkeys(out))


def _quote(key: str, value: str) -> str | None:
    """The first spelling of `value` every reader reads back as exactly `value` on a line of its own."""
    return next((s for s in _spellings(value) if _reads_as(f"{key}={s}\n", key, value)), None)


def _dominant_eol(body: str) -> str:
    endings = _NEWLINE.findall(body)
    return max(("\n", "\r\n", "\r"), key=endings.count) if endings else "\n"


def _unencodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
