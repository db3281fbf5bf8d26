"""What every task shares: errors shown as a message and a hint, never a traceback."""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from remediations.model.errors import RemediationError

F = TypeVar("F", bound=Callable[..., Any])


def fail_on_error(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as a Unix tool does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(1) from None
        except RemediationError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            if exc.hint:
                print(f"  hint: {exc.hint}", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapper  # type: ignore[return-value]


def finish(run: Any, *, as_json: bool) -> None:
    """A run's one renderer: the JSON document or the recap; then its exit code (0: the next task runs)."""
    from remediations.output import render as report

    if as_json:
        report.print_json(run)
    else:
        print(report.recap(run))
    if run.exit_code:
        raise SystemExit(run.exit_code)
    # exit 0: return, so that `invoke fix-rate-limit ... fix-nginx ...` goes on to the next task


# The largest value of a number flag without a maximum of its own (flags.py gives each flag its range).
DEFAULT_MAXIMUM = 1_000_000
# Plain decimal only: float() would also take inf, nan, 1_000 and non-ASCII digits.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_WHOLE = re.compile(r"[+-]?[0-9]{1,20}")


def shown(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"


def number(flag: str, value: object, *, minimum: float = 0, maximum: float | None = None,
           integer: bool = False) -> float:
    """A number flag's value (the text given, or a number): a finite number from `minimum` to `maximum`,
    else one line that gives the range and the value."""
    top = DEFAULT_MAXIMUM if maximum is None else maximum
    text = str(value).strip()
    n = float("nan")
    if (_WHOLE if integer else _DECIMAL).fullmatch(text):
        n = float(text) if not integer else int(text)
    if not (math.isfinite(n) and minimum <= n <= top):
        kind = "a whole number" if integer else "a number"
        raise RemediationError(f"--{flag.replace('_', '-')} must be {kind} from {shown(minimum)} to {shown(top)}, "
                               f"got {value!r}")
    return n


def whole(flag: str, value: object, *, minimum: int = 0, maximum: int | None = None) -> int:
    """number() for a flag that counts (hosts, lines, chunks)."""
    return int(number(flag, value, minimum=minimum, maximum=maximum, integer=True))


def one_line(flag: str, value: str | None) -> str | None:
    """A text flag that ends up in a file, a unit or a report: a NUL or a newline in it would cut it
    short or start a new line there, so it is refused before anything runs."""
    if value is not None and re.search(r"[\x00-\x1f\x7f]", value):
        raise RemediationError(f"--{flag.replace('_', '-')} {value!r} holds a NUL, a newline or another control "
                               "character", hint="give the value on one line, without control characters")
    return value
