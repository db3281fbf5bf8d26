"""`invoke probe`, `invoke diagnose` and `invoke monitor`: see what cuts the connections."""

from __future__ import annotations

import os
from typing import Any

from invoke import Context

from remediations.cli.flags import REMOTE, Flag, RunFlags, flag_task
from remediations.model.errors import RemediationError

PROBE_OWN = [
    Flag("url", str, None, "probe this ws:// or wss:// URL instead of the inventory's ws_url (with --inventory or "
         "--limit: for each selected host, whose token it gets only if it points at the host's own ws_url host)",
         metavar="URL"),
    Flag("token_env", str, None, "environment variable that holds the client token (sent as ?token=, never shown)",
         metavar="NAME"),
    Flag("send_token_to", str, None, "with --url and hosts: a host name that may receive the hosts' tokens "
         "besides their own ws_url host", metavar="HOST"),
    Flag("message", str, None, "chat message that makes the server stream; {chunks} is replaced by --stream",
         metavar="TEXT", default_help="the lab's {\"message\": ..., \"chunks\": {chunks}}", multiline=True),
    Flag("duration", float, 300.0, "seconds to hold the probe", minimum=0.001, maximum=7 * 86400),
    Flag("stream", int, 30, "chunks asked for in each cycle's chat message", maximum=100_000),
    Flag("idle", float, 75.0, "seconds of silence in each cycle, client pings off", maximum=86400),
]
TAIL = Flag("tail", int, 500, "backend log lines and nginx error log lines read per host", maximum=1_000_000)
MONITOR_OWN = [
    Flag("duration", float, 0.0, "stop by itself after this many seconds", maximum=7 * 86400,
         default_help="run until Ctrl-C"),
    Flag("lines", int, 0, "show this many earlier lines of each log first", maximum=1_000_000),
    Flag("all", bool, False, "show every backend line, not only WebSocket/disconnect/rate-limit/error lines"),
]


def _block(lines: list[str], status: str) -> None:
    from remediations.output.console import Printer

    Printer().block(lines, status)


def _say(name: str, message: str) -> None:
    print(f"{name}: {message}", flush=True)


def _show_probe(r: Any) -> None:
    from remediations.checks.probe import result_lines

    _block(result_lines(r), "error" if r.status in ("failed", "unreachable") else r.evidence.get("verdict", ""))


def _show_diagnosis(r: Any) -> None:
    from remediations.checks.diagnose import report_lines

    if r.error:
        _block([f"{r.host}: {r.status}", f"  error: {r.error['message']}"], "error")
        return
    n = len(r.evidence.get("causes", []))
    head = f"{r.host}: {n} likely cause(s), most likely first" if n else f"{r.host}: no cause found"
    _block([head, *report_lines(r.evidence)], "causes" if n else "clear")


def _finish(run: Any, as_json: bool, recap: str) -> None:
    from remediations.output import render as report

    if as_json:
        report.print_json(run)
    else:
        print(f"RECAP {run.task} run {run.run_id}: {recap}; exit {run.exit_code}")
    if run.exit_code:
        raise SystemExit(run.exit_code)


def _token(token_env: str | None) -> str | None:
    if not token_env:
        return None
    token = os.environ.get(token_env)
    if not token:
        raise RemediationError(f"--token-env {token_env}: the variable is not set or empty",
                               hint=f"export {token_env}=... (the token is never printed)")
    return token


@flag_task(*REMOTE, own=PROBE_OWN, help={"timeout": "seconds for each remote step, e.g. reading the token"})
def probe(c: Context, flags: RunFlags, url: str | None, token_env: str | None, send_token_to: str | None,
          message: str | None, duration: float, stream: int, idle: float) -> None:
    """Hold a real WebSocket: stream, idle, count and explain disconnects (exit 0 stable, 2 unstable, 1 none)."""
    from remediations.checks.probe import DEFAULT_MESSAGE, ProbeConfig
    from remediations.flows import per_host

    config = ProbeConfig(url=url or "", token=_token(token_env), message=message or DEFAULT_MESSAGE,
                         duration=duration, stream=stream, idle=idle, connect_timeout=flags.connect_timeout)
    # One URL and no hosts: the token given is meant for that URL alone.
    hosts = None if url and not (flags.inventory or flags.limit) else flags.hosts()
    run = per_host.probe(hosts, flags.connect(), config, send_token_to=send_token_to,
                         say=None if flags.json else _say, on_result=None if flags.json else _show_probe)
    verdicts = [r.evidence.get("verdict") or r.status for r in run.hosts]
    _finish(run, flags.json, " ".join(f"{v}={verdicts.count(v)}" for v in ("stable", "unstable", "unreachable",
                                                                            "failed", "skipped") if v in verdicts))


@flag_task(*REMOTE, own=[TAIL])
def diagnose(c: Context, flags: RunFlags, tail: int) -> None:
    """Rank what cuts the WebSocket connections on each host, with evidence (exit 0 none, 2 causes, 1 error)."""
    from remediations.flows import per_host

    run = per_host.diagnose(flags.hosts(), flags.connect(), tail, on_result=None if flags.json else _show_diagnosis)
    found = sum(1 for r in run.hosts if r.evidence.get("causes"))
    failed = sum(1 for r in run.hosts if r.error)
    _finish(run, flags.json, f"hosts with causes={found} clear={len(run.hosts) - found - failed} errors={failed}")


@flag_task("inventory", "limit", "connect_timeout", "timeout", "accept_new_host_keys", own=MONITOR_OWN)
def monitor(c: Context, flags: RunFlags, duration: float, lines: int, all: bool) -> None:  # noqa: A002
    """Follow the backend logs and nginx error logs of the selected hosts, one prefixed line each."""
    from remediations.checks.monitor import Monitor
    from remediations.output.console import Printer

    m = Monitor(flags.hosts(), duration=duration, lines=lines, show_all=all, connect=flags.connect().transport,
                show=Printer().line)
    raise SystemExit(m.run())


TASKS = [probe, diagnose, monitor]
