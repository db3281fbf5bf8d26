"""Set variables in a docker-compose env file, leaving everything else in it byte for byte.

The file is read with python-dotenv's own parser (what docker-compose 1.29 reads env files with), so
"the value of KEY" here is exactly what the container gets. Only the value of an assignment that
needs changing is rewritten; its indentation, `export ` prefix, key, inline comment and line ending stay.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Mapping

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
_QUOTED = {
    "'": re.compile(r"'(?:\\.|[^'\\])*'", re.DOTALL),
    '"': re.compile(r'"(?:\\.|[^"\\])*"', re.DOTALL),
}
_FORBIDDEN = (
    ("\n", "a newline"),
    ("\r", "a carriage return"),
    ("\0", "a NUL byte"),
    ("${", "'${', which docker-compose would expand as a variable"),
)


def validate_flags(flags: Mapping[str, str]) -> None:
    """Refuse keys that are not shell identifiers and values an env file cannot hold literally."""
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


def read_values(text: str) -> dict[str, str | None]:
    """Key -> value of its last assignment, as python-dotenv reads it without interpolation."""
    return {b.key: b.value for _, b in _parse(text) if b.key is not None}


def duplicate_keys(text: str, keys: Iterable[str]) -> list[str]:
    """The given keys that are assigned more than once (every assignment counts, not just the last)."""
    assigned = [b.key for _, b in _parse(text)]
    return [k for k in dict.fromkeys(keys) if assigned.count(k) > 1]


def set_flags(text: str, flags: dict[str, str]) -> str:
    """Return `text` with every assignment of each flag reading as its value; missing keys are appended."""
    validate_flags(flags)
    bindings = _parse(text)
    body = "".join(b.original.string for _, b in bindings)  # `text` without its BOM
    parts: list[str] = []
    for line, b in bindings:
        segment = b.original.string
        if b.key in flags and b.value != flags[b.key]:
            segment = _rewrite(segment, b.key, flags[b.key], line)
        parts.append(segment)
    assigned = {b.key for _, b in bindings}
    missing = [k for k in flags if k not in assigned]
    new = "".join(parts)
    if new == body and not missing:
        return text  # already right: hand back the very same bytes
    if missing:
        eol = _dominant_eol(body)
        if new and not new.endswith(("\n", "\r")):
            new += eol  # the last line had no newline: new keys go on their own line
        new += "".join(f"{k}={_quote(flags[k])}{eol}" for k in missing)
    out = (BOM if text.startswith(BOM) else "") + new
    # Belt and braces: never hand back a file that does not read as asked.
    values = read_values(out)
    wrong = [k for k, v in flags.items() if values.get(k) != v]
    if wrong:
        raise EnvFileError(f"could not write {', '.join(wrong)} so that python-dotenv reads it back", hint=_BY_HAND)
    return out


_BY_HAND = "edit the env file by hand, then run again"


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
    """The assignment in `segment` with its value replaced, keeping everything around the value."""
    quoted = _quote(value)
    head = _HEAD.match(segment)
    if head is None:  # python-dotenv parsed it, so this is not expected
        raise EnvFileError(f"could not locate the value of {key} on line {line}", hint=_BY_HAND)
    if head["eq"] is None:  # bare `KEY` (no `=`): add the value right after the key
        before, after = segment[: head.start("blank")] + "=", segment[head.start("blank") :]
    else:
        start, end = _value_span(segment, head)
        before, after = segment[:start], segment[end:]
    eol = _EOL.search(segment)
    candidates = (
        # Keep the inline comment; a `#` right after an unquoted value would join the value.
        before + quoted + (" " if after.startswith("#") else "") + after,
        before + quoted + (eol.group() if eol else ""),  # fallback: drop what followed the value
    )
    for candidate in candidates:
        parsed = list(parse_stream(io.StringIO(candidate)))
        if len(parsed) == 1 and not parsed[0].error and (parsed[0].key, parsed[0].value) == (key, value):
            return candidate
    raise EnvFileError(f"could not rewrite {key} on line {line} safely", hint=_BY_HAND)


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


def _quote(value: str) -> str:
    """The shortest spelling python-dotenv reads back as exactly `value`."""
    if _PLAIN.fullmatch(value):
        return value  # `false`, not `'false'`: some readers (docker run --env-file) keep quotes
    if "'" not in value and "\\" not in value:
        return f"'{value}'"  # single quotes: nothing inside is special
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dominant_eol(body: str) -> str:
    endings = _NEWLINE.findall(body)
    return max(("\n", "\r\n", "\r"), key=endings.count) if endings else "\n"


def _unencodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
