"""verify's reports: the table of each round (and the fixes between), other formats of the final round."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from remediations.checks.verify import Rounds
from remediations.output import reports
from remediations.output.render import host_lines


def _notes(rounds: Rounds, i: int) -> list[str]:
    obs = rounds.observations[i]
    if obs is None:
        return []
    lines = [f"NEW DRIFT on {host}: {', '.join(ids)}" + (" (alert sent)" if obs.alerted else "")
             for host, ids in obs.new_drift.items()]
    return lines + [f"warning: {w}" for w in obs.warnings]


def _remediation_lines(rounds: Rounds) -> list[str]:
    if not rounds.remediation:
        fixable = {c["id"] for h in rounds.rounds[0].hosts for c in h.controls or [] if c["status"] == "fail"}
        if fixable:
            return [f"remediation: nothing automatic for {', '.join(sorted(fixable))} (no fix repairs these)"]
        return ["remediation: nothing to remediate"]
    lines = []
    for r in rounds.remediation:
        lines.append(f"remediation: {r.task} run {r.run_id} on {', '.join(h.host for h in r.hosts)}")
        for h in r.hosts:
            lines += ["  " + line for line in host_lines(h, check=False, diff=False)]
    return lines


def emit(rounds: Rounds, specs: list[Any], out: TextIO | None = None, err: TextIO | None = None) -> None:
    """Every report of the run. The table shows each round (and the fixes between); other formats the
    final round in the result shape (JSON: with `rounds` and `remediation`). Notes about new drift and
    warnings go with a table on stdout, else to stderr (stdout then holds one report and nothing else)."""
    out, err = out or sys.stdout, err or sys.stderr
    masker = rounds.masker()
    report = rounds.report()
    table_specs = [s for s in specs if s.fmt == "table"]
    notes_out = out if any(s.to_stdout for s in table_specs) else err
    two = len(rounds.rounds) > 1 or rounds.remediation is not None
    for spec in table_specs:
        if spec.to_stdout and out.isatty():
            for i, r in enumerate(rounds.rounds):
                reports.print_table_rich(r, out, rounds.maskers[i])
                out.write(masker("\n".join(_notes(rounds, i) + (_remediation_lines(rounds) if two and i == 0
                                                                    else [])) + "\n"))
            continue
        parts = []
        for i, r in enumerate(rounds.rounds):
            if two:
                parts.append(f"== round {i + 1}: verify{' after remediation' if i else ''} ==")
            parts.append(reports.render_table_plain(r).rstrip("\n"))
            parts += _notes(rounds, i)
            if two and i == 0:
                parts += _remediation_lines(rounds)
        if rounds.remediation_failed:
            parts.append("exit 1: a remediation failed")
        text = masker("\n".join(parts) + "\n")
        if spec.to_stdout:
            out.write(text)
            out.flush()
        else:
            reports.write_atomic(spec.path, text)
    if notes_out is err:
        notes = [n for i in range(len(rounds.rounds)) for n in _notes(rounds, i)]
        if rounds.remediation is not None and not table_specs:
            notes += _remediation_lines(rounds)
        if notes:
            err.write(masker("\n".join(notes) + "\n"))
            err.flush()
    reports.emit(report, [s for s in specs if s.fmt != "table"], masker, out)
