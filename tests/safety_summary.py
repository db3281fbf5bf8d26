"""The reliability suite's own tally, printed at the end of a pytest run (issue 13).

Tests mark themselves `@pytest.mark.safety("fault" | "bad_input" | "attack" | "hostile")`; every such test is one
thing tried, and it counts as survived / a clear error / refused when all its phases passed. Fault
tests also report the bytes of managed files that ended as neither the old nor the new bytes (`lost`).
Nothing here is written by hand: the table is computed from the recorded outcomes.
"""

from __future__ import annotations

from typing import Any

KINDS = {
    "fault": ("faults", "survived"),
    "bad_input": ("bad inputs", "clear errors"),
    "attack": ("attacks", "refused"),
    "hostile": ("hostile-user attempts", "refused"),
}

# kind -> test node id -> True (every phase passed) / False (a phase failed)
_outcomes: dict[str, dict[str, bool]] = {k: {} for k in KINDS}
_skipped: set[str] = set()
_lost: list[tuple[str, int]] = []


def lost(what: str, nbytes: int) -> None:
    """A managed file ended as neither its old nor its new bytes: count its size as lost."""
    _lost.append((what, nbytes))


def record(item: Any, report: Any) -> None:
    """Called for every phase (setup, call, teardown) of every test."""
    marker = item.get_closest_marker("safety")
    if marker is None:
        return
    kind = marker.args[0] if marker.args else "fault"
    if kind not in KINDS:
        raise ValueError(f"@pytest.mark.safety({kind!r}): use one of {', '.join(KINDS)}")
    seen = _outcomes[kind]
    if report.skipped:
        _skipped.add(item.nodeid)
        seen.pop(item.nodeid, None)
    elif report.failed:
        seen[item.nodeid] = False
    elif report.when == "call":
        seen.setdefault(item.nodeid, True)


def rows() -> list[tuple[str, int, int]]:
    out = []
    for kind, (label, good) in KINDS.items():
        results = [ok for node, ok in _outcomes[kind].items() if node not in _skipped]
        out.append((f"{label} tried / {good}", len(results), sum(results)))
    return out


def lost_bytes() -> int:
    return sum(n for _, n in _lost)


def terminal_summary(tr: Any) -> None:
    if not any(_outcomes.values()):
        return
    tr.write_sep("=", "wsguard safety summary")
    for label, tried, good in rows():
        tr.write_line(f"{label:<40} {tried:>4} / {good:<4}")
    total = lost_bytes()
    tr.write_line(f"{'bytes lost':<40} {total:>4}" + ("" if not total else
                  "  (" + ", ".join(f"{w}: {n}" for w, n in _lost) + ")"))
