"""Compliance history on the controller: one JSON line per host per verify run, and new-drift detection.

Named `compliance` (not `history`): `invoke history` and remediations/host/journal.py are the per-host record of
what the FIXES changed, kept on each host; this is the controller's record of what VERIFY saw.

The file (default `$WSGUARD_HISTORY`, else `$XDG_STATE_HOME/wsguard/compliance.jsonl`, else
`~/.local/state/wsguard/compliance.jsonl`; `--history PATH`) is append-only JSON Lines, mode 0600 in a
0700 directory. Each line is one host of one verify round:

    {"time", "run_id", "host", "status": ok|changed|failed|unreachable, "round": 1|2 (only with --remediate),
     "controls": {control id: pass|fail|error|skipped}, "drift": {control id: {"expected", "actual"}},
     "error": null|message, "new_drift": [control ids], "unalerted": [control ids]}

Every string passes through the run's masker before it is written: the file holds no secret.

New drift: a control that fails now on a host where the last run that could CHECK it (pass or fail) found it
passing, or never saw it. A control in error (host unreachable, say) neither clears nor renews a drift, so a
blip of unreachability does not re-alert. `unalerted` lists new drifts whose webhook POST failed: they
count as new again at the next run, so an alert is retried rather than lost; once delivered, the same drift
is not alerted again while it persists.

Reading, deciding, alerting and appending happen under an exclusive flock on the file, so two verify runs
at once (a timer and a person) neither interleave lines nor both alert the same drift.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from remediations.model.errors import RemediationError
from remediations.model.masking import Masker
from remediations.model.results import HostResult, RunResult, show

CHECKED = ("pass", "fail")


class HistoryError(RemediationError):
    kind = "history"


def default_path() -> str:
    env = os.environ.get("WSGUARD_HISTORY")
    if env:
        return env
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "wsguard", "compliance.jsonl")


def resolve_path(cli_value: str | None) -> str:
    return os.path.abspath(os.path.expanduser(cli_value or default_path()))


# -- reading ------------------------------------------------------------------------------------

def parse_lines(lines: Iterator[str] | list[str]) -> tuple[list[dict[str, Any]], int]:
    """Records in file order, and how many lines were unreadable (a torn last line, a hand edit)."""
    out, bad = [], 0
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(rec, dict) and isinstance(rec.get("host"), str) and isinstance(rec.get("controls"), dict):
            out.append(rec)
        else:
            bad += 1
    return out, bad


def read(path: str) -> tuple[list[dict[str, Any]], int]:
    try:
        with open(path, encoding="utf-8") as f:
            return parse_lines(f)
    except FileNotFoundError:
        return [], 0
    except OSError as exc:
        raise HistoryError(f"cannot read the compliance history {path}: {exc.strerror}",
                           hint="pass --history PATH (or set WSGUARD_HISTORY) to a readable file") from None


@dataclass
class Known:
    """What the history says about one host: the last checked status of each control, and alerts owed."""

    controls: dict[str, str] = field(default_factory=dict)
    unalerted: set[str] = field(default_factory=set)


def known_state(records: list[dict[str, Any]]) -> dict[str, Known]:
    state: dict[str, Known] = {}
    for rec in records:
        k = state.setdefault(rec["host"], Known())
        for cid, status in rec["controls"].items():
            if status in CHECKED:
                k.controls[cid] = status
        k.unalerted = set(rec.get("unalerted") or [])
    return state


def new_drift(host: HostResult, known: Known | None) -> list[str]:
    """Controls failing now that the history has not seen failing (or whose alert was never delivered)."""
    out = []
    for c in host.controls or []:
        if c["status"] != "fail":
            continue
        before = known.controls.get(c["id"]) if known else None
        if before != "fail" or (known and c["id"] in known.unalerted):
            out.append(c["id"])
    return out


# -- writing ------------------------------------------------------------------------------------

def record(host: HostResult, run: RunResult, new: list[str], unalerted: list[str], round_: int | None,
           masker: Masker) -> dict[str, Any]:
    controls = host.controls or []
    rec: dict[str, Any] = {
        "time": run.finished or run.started, "run_id": run.run_id, "host": host.host, "status": host.status,
        "controls": {c["id"]: c["status"] for c in controls},
        "drift": {c["id"]: {"expected": c.get("expected"), "actual": c.get("actual")}
                  for c in controls if c["status"] == "fail"},
        "error": (host.error or {}).get("message"), "new_drift": new, "unalerted": unalerted}
    if round_ is not None:
        rec["round"] = round_
    masked: dict[str, Any] = masker.deep(rec)  # type: ignore[assignment]
    return masked


@contextlib.contextmanager
def locked(path: str) -> Iterator[IO[str]]:
    """The history file opened for append, created 0600 in a 0700 directory, under an exclusive flock."""
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as exc:
        raise HistoryError(f"cannot open the compliance history {path}: {exc.strerror}",
                           hint="pass --history PATH (or set WSGUARD_HISTORY) to a writable place") from None
    with os.fdopen(fd, "a+", encoding="utf-8") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield f
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


@dataclass
class Observation:
    """What one verify round added to the history: new drift per host, and warnings (webhook, bad lines)."""

    new_drift: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    alerted: bool = False

    def to_list(self) -> list[dict[str, str]]:
        return [{"host": h, "control": c} for h, cs in self.new_drift.items() for c in cs]


Alert = Callable[[RunResult, dict[str, list[str]]], str | None]  # -> a warning, or None when delivered


def observe(path: str, run: RunResult, masker: Masker, *, alert: Alert | None = None,
            round_: int | None = None) -> Observation:
    """Compare one verify round with the history, alert new drift once, append one line per host."""
    obs = Observation()
    with locked(path) as f:
        f.seek(0)
        records, bad = parse_lines(f.read().splitlines())
        if bad:
            obs.warnings.append(f"{path}: {bad} unreadable line(s) skipped")
        state = known_state(records)
        for h in run.hosts:
            new = new_drift(h, state.get(h.host))
            if new:
                obs.new_drift[h.host] = new
        failed_alert = False
        if obs.new_drift and alert is not None:
            warning = alert(run, obs.new_drift)
            if warning:
                obs.warnings.append(warning)
                failed_alert = True
            else:
                obs.alerted = True
        lines = []
        for h in run.hosts:
            new = obs.new_drift.get(h.host, [])
            unalerted = new if failed_alert else []
            lines.append(json.dumps(record(h, run, new, unalerted, round_, masker), sort_keys=True))
        text = masker("\n".join(lines)) + "\n"
        try:
            f.write(text)  # one write of whole lines, O_APPEND
            f.flush()
            os.fsync(f.fileno())
        except OSError as exc:
            raise HistoryError(f"cannot append to the compliance history {path}: {exc.strerror}") from None
    return obs


# -- transitions --------------------------------------------------------------------------------

def _category(status: str) -> str:
    return status if status in ("failed", "unreachable") else "checked"


def transitions(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per host: events (drift appeared, cleared, unreachable, error, checked again) and the current state."""
    hosts: dict[str, dict[str, Any]] = {}
    for rec in records:
        host = rec["host"]
        h = hosts.setdefault(host, {"host": host, "events": [], "controls": {}, "since": {}, "category": "checked",
                                    "first": rec.get("time")})
        base = {"time": rec.get("time"), "run_id": rec.get("run_id")}
        cat = _category(rec.get("status", ""))
        if cat != h["category"]:
            event = cat if cat != "checked" else "checked again"
            h["events"].append({**base, "event": event, "control": None, "detail": rec.get("error")})
            h["category"] = cat
        for cid, status in rec["controls"].items():
            if status not in CHECKED:
                continue
            before = h["controls"].get(cid)
            if status == "fail" and before != "fail":
                d = (rec.get("drift") or {}).get(cid) or {}
                h["events"].append({**base, "event": "drift", "control": cid, "expected": d.get("expected"),
                                    "actual": d.get("actual")})
                h["since"][cid] = rec.get("time")
            elif status == "pass" and before == "fail":
                h["events"].append({**base, "event": "cleared", "control": cid})
                h["since"].pop(cid, None)
            h["controls"][cid] = status
        h["last"] = {"time": rec.get("time"), "run_id": rec.get("run_id"), "status": rec.get("status"),
                     "error": rec.get("error")}
    out = {}
    for host, h in hosts.items():
        drift = {cid: h["since"][cid] for cid, s in h["controls"].items() if s == "fail"}
        last = h["last"]
        state = {"ok": "compliant", "changed": "drift"}.get(last["status"], last["status"])
        out[host] = {"host": host, "state": state, "last_run": last["time"], "last_run_id": last["run_id"],
                     "error": last["error"], "drift_since": drift, "events": h["events"]}
    return out


def summary(path: str, last: int = 0) -> dict[str, Any]:
    records, bad = read(path)
    hosts = transitions(records)
    for h in hosts.values():
        if last:
            h["events"] = h["events"][-last:]
    return {"history": path, "records": len(records), "unreadable_lines": bad,
            "hosts": [hosts[k] for k in sorted(hosts)]}


def _show(value: Any) -> str:
    return show(value)


def render(doc: dict[str, Any]) -> str:
    if not doc["hosts"]:
        return f"no compliance history in {doc['history']} (verify appends to it on every run)\n"
    out = []
    for h in doc["hosts"]:
        state = h["state"].upper() if h["state"] != "compliant" else "compliant"
        head = f"{h['host']}: {state} at {h['last_run']} (run {h['last_run_id']})"
        out.append(head)
        for cid, since in h["drift_since"].items():
            out.append(f"  drifting since {since}: {cid}")
        if h["error"] and h["state"] not in ("compliant", "drift"):
            out.append(f"  error: {h['error']}")
        for e in h["events"]:
            what = e["event"] if e["control"] is None else f"{e['event']:<8} {e['control']}"
            line = f"  {e['time']}  {what}"
            if e["event"] == "drift":
                line += f"  (expected: {_show(e.get('expected'))}; actual: {_show(e.get('actual'))})"
            elif e.get("detail"):
                line += f"  ({e['detail']})"
            out.append(line)
    out.append(f"{doc['records']} record(s) in {doc['history']}"
               + (f"; {doc['unreadable_lines']} unreadable line(s) skipped" if doc["unreadable_lines"] else ""))
    return "\n".join(out) + "\n"
