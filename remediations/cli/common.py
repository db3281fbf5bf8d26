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


# Flags every remote task takes (docs/ARCHITECTURE.md, "Conventions").
COMMON_HELP = {
    "inventory": "inventory file or dir (default inventory/ or $WSGUARD_INVENTORY; the lab's: .lab/inventory.yml)",
    "limit": "hosts or groups: names, globs, comma lists, !exclude",
    "connect_timeout": "seconds to connect to a host (default 10)",
    "timeout": "seconds for each remote step (default 60)",
    "forks": "hosts worked on at once (default 10)",
    "accept_new_host_keys": "trust and record keys of hosts not in known_hosts (never a changed key)",
    "json": "print one JSON document on stdout and nothing else there",
}

# Flags of the tasks that change a fleet (remediations/run/fleet.py).
FLEET_HELP = {
    "serial": "rolling batches: N hosts, N% of the selection, or a list (1,2,25%; the last repeats); "
              "after each batch the changed hosts pass a health gate (effects confirmed + a 101 upgrade)",
    "canary": "a first batch of exactly one host, then --serial (or all the rest)",
    "max_fail_percent": "start no new batch once failed+unreachable hosts exceed P% of the selection "
                        "(0: stop at the first); default: stop only when every host of a batch failed; "
                        "hosts not started are reported skipped, exit 1",
    "shard": "K/N: only the K-th of N disjoint, deterministic slices of the selected hosts",
}


def load_hosts(inventory: str | None, limit: str | None, shard: str | None = None) -> list[Any]:
    from remediations.model.inventory import load_inventory, resolve_inventory_path
    from remediations.model.inventory import shard as slice_of

    inv = load_inventory(resolve_inventory_path(inventory))
    hosts = inv.select(limit)
    return slice_of(hosts, shard) if shard else hosts


def rollout(serial: str | None, canary: bool, max_fail_percent: str | None, shard: str | None) -> Any:
    """The fleet flags, checked (numbers arrive as text)."""
    from remediations.run.fleet import Rollout, parse_max_fail_percent, parse_serial

    return Rollout(parse_serial(serial), bool(canary), parse_max_fail_percent(max_fail_percent), shard or None)


def finish(run: Any, *, as_json: bool, check: bool = False) -> None:
    from remediations.output import render as report

    if as_json:
        report.print_json(run)
    else:
        print(report.recap(run))
    if run.exit_code:
        raise SystemExit(run.exit_code)
    # exit 0: return, so that `invoke fix-rate-limit ... fix-nginx ...` goes on to the next task


def on_result(as_json: bool, check: bool, diff: bool) -> Callable[[Any], None] | None:
    from remediations.output import render as report

    if as_json:
        return None

    return lambda r: report.print_host(r, check=check, diff=diff)


# The largest sane value of each numeric flag (seconds, hosts, lines...): past it a value is a typo, and a
# timer or a thread pool must never be handed one (an overflow, or a wait that never ends).
MAXIMUM = {"connect_timeout": 3600, "timeout": 86400, "lock_timeout": 86400, "forks": 1000,
           "probe_chunks": 100_000, "probe_idle": 86400, "duration": 7 * 86400, "stream": 100_000,
           "idle": 86400, "tail": 1_000_000, "lines": 1_000_000, "last": 1_000_000}
DEFAULT_MAXIMUM = 1_000_000  # for a flag not in MAXIMUM
# Plain decimal only: float() would also take inf, nan, 1_000 and non-ASCII digits.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_WHOLE = re.compile(r"[+-]?[0-9]{1,20}")


def _shown(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"


def number(flag: str, value: object, *, minimum: float = 0, maximum: float | None = None,
           integer: bool = False) -> float:
    """A numeric flag (they arrive as text; invoke would raise a traceback on `--timeout abc`): a finite
    number from `minimum` to `maximum` (default MAXIMUM[flag]), else one line that gives the range."""
    top = MAXIMUM.get(flag, DEFAULT_MAXIMUM) if maximum is None else maximum
    text = str(value).strip()
    n = float("nan")
    if (_WHOLE if integer else _DECIMAL).fullmatch(text):
        n = float(text) if not integer else int(text)
    if not (math.isfinite(n) and minimum <= n <= top):
        kind = "a whole number" if integer else "a number"
        raise RemediationError(f"--{flag.replace('_', '-')} must be {kind} from {_shown(minimum)} to {_shown(top)}, "
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


def connect_options(connect_timeout: object, timeout: object, forks: object = 10,
                    accept_new_host_keys: bool = False) -> Any:
    """The runner's Connect from the common flags, each checked (text in, a clear error out)."""
    from remediations.run.runner import Connect

    return Connect(number("connect_timeout", connect_timeout, minimum=0.1), number("timeout", timeout, minimum=0.1),
                   accept_new_host_keys, whole("forks", forks, minimum=1))
