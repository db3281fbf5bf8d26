"""verify's reports: table, json, junit, prometheus; each to stdout (`-`) or a file.

`--report FMT[:PATH]` (repeatable). Every report is built from the one result shape (docs/ARCHITECTURE.md) and
passes through the run's masker before it is written anywhere. Files are written atomically (a
temporary file in the same directory, then rename), so a scraper never reads half a file.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from remediations.model.errors import RemediationError
from remediations.model.masking import Masker
from remediations.model.results import RunResult, show
from remediations.output.console import PALETTE

FORMATS = ("table", "json", "junit", "prometheus")
STDOUT = "-"
# A NUL cuts a path short and a newline splits it (and a scheduled unit's line); neither is ever meant.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MARK = {"pass": "PASS", "fail": "FAIL", "error": "ERROR", "skipped": "SKIP"}


class ReportError(RemediationError):
    kind = "report"


@dataclass(frozen=True)
class ReportSpec:
    fmt: str
    path: str = STDOUT

    @property
    def to_stdout(self) -> bool:
        return self.path == STDOUT


def parse_specs(values: list[str] | None, as_json: bool = False) -> list[ReportSpec]:
    """`FMT[:PATH]` values (and --json) -> specs; with none at all, a table on stdout."""
    specs = []
    for v in values or []:
        fmt, _, path = v.partition(":")
        fmt = fmt.strip().lower()
        if _CONTROL.search(path):
            raise ReportError(f"--report {v!r}: the path holds a NUL, a newline or another control character",
                              hint="give the path on one line, e.g. --report junit:reports/verify.xml")
        if fmt not in FORMATS:
            raise ReportError(f"unknown report format {fmt!r} in --report {v!r}",
                              hint=f"use one of {', '.join(FORMATS)}, as FMT or FMT:PATH (PATH - is stdout)")
        specs.append(ReportSpec(fmt, path or STDOUT))
    if as_json:
        specs.append(ReportSpec("json", STDOUT))
    specs = list(dict.fromkeys(specs))
    on_stdout = [s for s in specs if s.to_stdout]
    if len(on_stdout) > 1:
        raise ReportError(f"only one report can go to stdout, not {', '.join(s.fmt for s in on_stdout)}",
                          hint="give the others a path: --report junit:verify.xml")
    if not specs:
        specs = [ReportSpec("table", STDOUT)]
    return specs


# -- renderers --------------------------------------------------------------------------------

def control_lines(c: dict[str, Any]) -> list[str]:
    lines = [f"  {_MARK[c['status']]:5} {c['id']:<19} {c['impact']:<6} {c['title']}"]
    if c["status"] in ("fail", "error"):
        if c.get("expected") is not None:
            lines.append(f"        expected: {show(c['expected'])}")
        if c.get("actual") is not None:
            lines.append(f"        actual:   {show(c['actual'])}")
    if c.get("detail") and c["status"] != "pass":
        lines.append(f"        {c['detail']}")
    return lines


def host_verdict(status: str) -> str:
    return {"ok": "compliant", "changed": "DRIFT", "failed": "ERROR", "unreachable": "UNREACHABLE"}.get(status, status)


def recap(run: RunResult) -> str:
    n = {k: sum(1 for h in run.hosts if h.status == s) for k, s in
         (("compliant", "ok"), ("drift", "changed"), ("error", "failed"), ("unreachable", "unreachable"))}
    parts = " ".join(f"{k}={v}" for k, v in n.items())
    rts = " ".join(f"{h.host}={h.round_trips}" for h in run.hosts)
    return f"RECAP verify run {run.run_id}: {len(run.hosts)} host(s) {parts}; round trips {rts}; exit {run.exit_code}"


def render_table_plain(run: RunResult) -> str:
    out: list[str] = []
    for h in run.hosts:
        out.append(f"{h.host}: {host_verdict(h.status)}")
        if h.error and h.status == "unreachable":
            out.append(f"  error: {h.error['message']}")
        for c in h.controls or []:
            if h.status == "unreachable":
                continue
            out.extend(control_lines(c))
    out.append(recap(run))
    return "\n".join(out) + "\n"


def print_table_rich(run: RunResult, out: TextIO, masker: Masker) -> None:
    console = Console(file=out, highlight=False)
    table = Table(title=f"wsguard verify {run.run_id}", show_lines=False)
    for col in ("host", "control", "impact", "status", "expected / actual"):
        table.add_column(col, overflow="fold")
    for h in run.hosts:
        for c in h.controls or []:
            detail = ""
            if c["status"] in ("fail", "error"):
                detail = masker(f"expected: {show(c['expected'])}\nactual:   {show(c['actual'])}")
                if c.get("detail"):
                    detail += "\n" + masker(str(c["detail"]))
            elif c["status"] == "skipped":
                detail = masker(str(c.get("detail") or ""))
            table.add_row(h.host, c["id"], c["impact"], Text(_MARK[c["status"]], style=PALETTE[c["status"]]),
                          detail)
    console.print(table)
    console.print(masker(recap(run)))


def render_json(run: RunResult) -> str:
    return json.dumps(run.to_dict(), indent=2) + "\n"


def render_junit(run: RunResult) -> str:
    suites = ET.Element("testsuites", name="wsguard verify")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for h in run.hosts:
        suite = ET.SubElement(suites, "testsuite", name=f"verify.{h.host}", timestamp=run.started)
        counts = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
        for c in h.controls or []:
            counts["tests"] += 1
            case = ET.SubElement(suite, "testcase", classname=f"wsguard.verify.{h.host}", name=c["id"])
            ET.SubElement(case, "properties")
            props = case[0]
            for k in ("impact", "title"):
                ET.SubElement(props, "property", name=k, value=str(c[k]))
            body = f"expected: {show(c['expected'])}\nactual: {show(c['actual'])}"
            if c.get("detail"):
                body += f"\ndetail: {c['detail']}"
            if c["status"] == "fail":
                counts["failures"] += 1
                el = ET.SubElement(case, "failure", message=f"expected {show(c['expected'])}; "
                                   f"actual {show(c['actual'])}", type="drift")
                el.text = body
            elif c["status"] == "error":
                counts["errors"] += 1
                el = ET.SubElement(case, "error", message=str(c.get("detail") or "could not check"), type="error")
                el.text = body
            elif c["status"] == "skipped":
                counts["skipped"] += 1
                ET.SubElement(case, "skipped", message=str(c.get("detail") or "not applicable"))
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
    for k, v in totals.items():
        suites.set(k, str(v))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _label(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_prometheus(run: RunResult, now: float | None = None) -> str:
    """Text exposition format (node_exporter's textfile collector reads it)."""
    lines = ["# HELP wsguard_control_passed 1 if the control passed on the host, 0 if it failed or could not "
             "be checked (skipped controls are left out).",
             "# TYPE wsguard_control_passed gauge"]
    for h in run.hosts:
        for c in h.controls or []:
            if c["status"] == "skipped":
                continue
            lines.append(f'wsguard_control_passed{{host="{_label(h.host)}",control="{_label(c["id"])}",'
                         f'impact="{_label(c["impact"])}"}} {1 if c["status"] == "pass" else 0}')
    lines += ["# HELP wsguard_host_compliant 1 if every control passed (or was skipped) on the host.",
              "# TYPE wsguard_host_compliant gauge"]
    lines += [f'wsguard_host_compliant{{host="{_label(h.host)}"}} {1 if h.status == "ok" else 0}' for h in run.hosts]
    unreachable = sum(1 for h in run.hosts if h.status == "unreachable")
    lines += ["# HELP wsguard_hosts_unreachable Hosts that could not be reached by the last verify.",
              "# TYPE wsguard_hosts_unreachable gauge", f"wsguard_hosts_unreachable {unreachable}",
              "# HELP wsguard_verify_exit_code The last verify's exit code (0 compliant, 2 drift, 1 error).",
              "# TYPE wsguard_verify_exit_code gauge", f"wsguard_verify_exit_code {run.exit_code}",
              "# HELP wsguard_verify_timestamp_seconds When the last verify finished (Unix time).",
              "# TYPE wsguard_verify_timestamp_seconds gauge",
              f"wsguard_verify_timestamp_seconds {time.time() if now is None else now:.3f}"]
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[RunResult], str]] = {
    "table": render_table_plain, "json": render_json, "junit": render_junit, "prometheus": render_prometheus}


# -- writing ----------------------------------------------------------------------------------

def write_atomic(path: str, text: str) -> None:
    """temp file in the same directory + fsync + rename: readers see the old file or the new one."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise ReportError(f"cannot write the report {path}: {exc.strerror}",
                          hint="check that the directory exists and is writable") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def emit(run: RunResult, specs: list[ReportSpec], masker: Masker, out: TextIO | None = None) -> None:
    """Write every requested report; each text passes through the masker first."""
    out = out or sys.stdout
    for spec in specs:
        if spec.fmt == "table" and spec.to_stdout and out.isatty():
            print_table_rich(run, out, masker)
            continue
        text = masker(RENDERERS[spec.fmt](run))
        if spec.to_stdout:
            out.write(text)
            out.flush()
        else:
            write_atomic(spec.path, text)
