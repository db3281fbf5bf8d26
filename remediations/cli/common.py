"""What every task shares: errors shown as a message and a hint, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from remediations.errors import RemediationError

F = TypeVar("F", bound=Callable[..., Any])


def fail_on_error(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RemediationError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            if exc.hint:
                print(f"  hint: {exc.hint}", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapper  # type: ignore[return-value]


# Flags every remote task takes (DESIGN.md conventions).
COMMON_HELP = {
    "inventory": "inventory file or dir (default inventory/ or $WSGUARD_INVENTORY; the lab's: .lab/inventory.yml)",
    "limit": "hosts or groups: names, globs, comma lists, !exclude",
    "connect_timeout": "seconds to connect to a host (default 10)",
    "timeout": "seconds for each remote step (default 60)",
    "forks": "hosts worked on at once (default 10)",
    "accept_new_host_keys": "trust and record keys of hosts not in known_hosts (never a changed key)",
    "json": "print one JSON document on stdout and nothing else there",
}


def load_hosts(inventory: str | None, limit: str | None) -> list[Any]:
    from remediations.inventory import load_inventory, resolve_inventory_path

    inv = load_inventory(resolve_inventory_path(inventory))
    return inv.select(limit)


def finish(run: Any, *, as_json: bool, check: bool = False) -> None:
    from remediations import report

    if as_json:
        report.print_json(run)
    else:
        print(report.recap(run))
    raise SystemExit(run.exit_code)


def on_result(as_json: bool, check: bool, diff: bool) -> Callable[[Any], None] | None:
    if as_json:
        return None
    from remediations import report

    return lambda r: report.print_host(r, check=check, diff=diff)


def number(flag: str, value: object, *, minimum: float = 0, integer: bool = False) -> float:
    """Numeric flags arrive as text (invoke would raise a traceback on `--timeout abc`): check them here."""
    from remediations.errors import RemediationError

    try:
        n = float(str(value))
        if integer and n != int(n):
            raise ValueError
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise RemediationError(f"--{flag.replace('_', '-')} must be {kind}, got {value!r}") from None
    if n < minimum or n != n:
        raise RemediationError(f"--{flag.replace('_', '-')} must be at least {minimum:g}, got {value!r}")
    return int(n) if integer else n
