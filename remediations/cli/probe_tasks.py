"""`invoke probe`, `invoke diagnose` and `invoke monitor`: see what cuts the connections."""

from __future__ import annotations

import os
import sys
from typing import Any

from invoke import Context, task

from remediations.cli.common import COMMON_HELP, connect_options, fail_on_error, load_hosts, number
from remediations.model.errors import RemediationError

HEADER_STYLE = {"stable": "green", "unstable": "yellow", "causes": "yellow", "clear": "green", "error": "red"}


def _print(lines: list[str], style: str = "") -> None:
    from rich.console import Console
    from rich.text import Text

    if not lines:
        return
    if sys.stdout.isatty():
        console = Console(highlight=False, soft_wrap=True)
        console.print(Text(lines[0], style=style))
        for line in lines[1:]:
            console.print(Text(line))
    else:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()


def _finish(run: Any, as_json: bool, recap: str) -> None:
    from remediations.output import render as report

    if as_json:
        report.print_json(run)
    else:
        print(f"RECAP {run.task} run {run.run_id}: {recap}; exit {run.exit_code}")
    if run.exit_code:
        raise SystemExit(run.exit_code)


PROBE_HELP = {
    **COMMON_HELP,
    "url": "probe this ws:// or wss:// URL instead of the inventory's ws_url (with --inventory or --limit: "
           "for each selected host, whose token it gets only if it points at the host's own ws_url host)",
    "token_env": "environment variable that holds the client token (sent as ?token=, never shown)",
    "send_token_to": "with --url and hosts: a host name that may receive the hosts' tokens besides "
                     "their own ws_url host",
    "message": "chat message that makes the server stream; {chunks} is replaced by --stream "
               "(default: the lab's {\"message\": ..., \"chunks\": {chunks}})",
    "duration": "seconds to hold the probe (default 300)",
    "stream": "chunks asked for in each cycle's chat message (default 30)",
    "idle": "seconds of silence in each cycle, client pings off (default 75)",
    "timeout": "seconds for each remote step, e.g. reading the token (default 60)",
}


@task(help=PROBE_HELP, auto_shortflags=False)
@fail_on_error
def probe(c: Context, url: str | None = None, token_env: str | None = None, message: str | None = None,
          duration: str = "300", stream: str = "30", idle: str = "75", json: bool = False,
          inventory: str | None = None, limit: str | None = None, connect_timeout: str = "10",
          timeout: str = "60", forks: str = "10", accept_new_host_keys: bool = False,
          send_token_to: str | None = None) -> None:
    """Hold a real WebSocket: stream, idle, count and explain disconnects (exit 0 stable, 2 unstable, 1 none)."""
    from remediations.checks import probe as p
    from remediations.checks.wsclient import mask_url
    from remediations.host.transport import Transport
    from remediations.model.masking import Masker
    from remediations.model.results import HostResult, RunResult, new_run_id, now_iso
    from remediations.run.runner import run_hosts

    conn = connect_options(connect_timeout, timeout, forks, accept_new_host_keys)
    duration = number("duration", duration, minimum=0.001)  # type: ignore[assignment]
    stream = int(number("stream", stream, integer=True))  # type: ignore[assignment]
    idle = number("idle", idle)  # type: ignore[assignment]
    token: str | None = None
    if token_env:
        token = os.environ.get(token_env)
        if not token:
            raise RemediationError(f"--token-env {token_env}: the variable is not set or empty",
                                   hint=f"export {token_env}=... (the token is never printed)")

    def config(target: str, tok: str | None, header: str | None = None) -> p.ProbeConfig:
        return p.ProbeConfig(url=target, token=tok, message=message or p.DEFAULT_MESSAGE, duration=float(duration),
                             stream=int(stream), idle=float(idle), connect_timeout=float(connect_timeout),
                             token_header=header)

    def events(name: str) -> Any:
        if json:
            return None
        return lambda msg: print(f"{name}: {msg}", flush=True)

    def show(r: HostResult) -> None:
        if not json:
            style = "error" if r.status in ("failed", "unreachable") else r.evidence.get("verdict", "")
            _print(p.result_lines(r), HEADER_STYLE.get(style, ""))

    if url and not (inventory or limit):  # one URL, no hosts: the token given is meant for it
        masker = Masker()
        if token:
            masker.add([token])
        run = RunResult(task="probe", run_id=new_run_id(), started=now_iso())

        name = masker(mask_url(url))
        result = HostResult(host=name, task="probe", run_id=run.run_id)
        try:
            p.fill_result(result, p.run_probe(config(url, token), events("probe"), masker))
        except RemediationError as e:
            result.fail(e.kind, masker(e.message))
        result.evidence = masker.deep(result.evidence)  # type: ignore[assignment]
        run.hosts.append(result)
        run.finished = now_iso()
        show(result)
    else:
        hosts = load_hosts(inventory, limit)

        def per_host(t: Transport, result: HostResult, masker: Masker) -> HostResult:
            ws = t.host.ws
            target = url or ws.ws_url
            if not target:
                result.status = "skipped"
                result.warnings.append("no ws_url for this host in the inventory")
                return result
            say = events(t.host.name)
            refused = p.token_refusal(target, ws.ws_url, send_token_to)
            tok = None
            if refused:  # the host's token is not even read
                result.warnings.append(f"token {refused}")
                if say:
                    say(f"token {refused}")
            else:
                tok = token if token is not None else p.host_token(t, masker)
            t.close()  # the probe itself needs no SSH
            return p.fill_result(result, p.run_probe(config(target, tok, ws.ws_token_header), say, masker))

        run = run_hosts("probe", hosts, conn, per_host, pending_is_2=False, on_result=show)
    run.exit_code = p.exit_code(run.hosts)
    verdicts = [r.evidence.get("verdict") or r.status for r in run.hosts]
    _finish(run, json, " ".join(f"{v}={verdicts.count(v)}" for v in ("stable", "unstable", "unreachable", "failed",
                                                                        "skipped") if verdicts.count(v)))


@task(help={**COMMON_HELP, "tail": "backend log lines and nginx error log lines read per host (default 500)"},
      auto_shortflags=False)
@fail_on_error
def diagnose(c: Context, inventory: str | None = None, limit: str | None = None, tail: str = "500",
             json: bool = False, connect_timeout: str = "10", timeout: str = "60", forks: str = "10",
             accept_new_host_keys: bool = False) -> None:
    """Rank what cuts the WebSocket connections on each host, with evidence (exit 0 none, 2 causes, 1 error)."""
    from remediations.checks.diagnose import diagnose_host, report_lines
    from remediations.host.transport import Transport
    from remediations.model.masking import Masker
    from remediations.model.results import HostResult
    from remediations.run.runner import run_hosts

    conn = connect_options(connect_timeout, timeout, forks, accept_new_host_keys)
    lines = int(number("tail", tail, integer=True))
    hosts = load_hosts(inventory, limit)

    def per_host(t: Transport, result: HostResult, masker: Masker) -> HostResult:
        result.evidence.update(diagnose_host(t, lines, masker))
        return result

    def show(r: HostResult) -> None:
        if json:
            return
        if r.error:
            _print([f"{r.host}: {r.status}", f"  error: {r.error['message']}"], HEADER_STYLE["error"])
            return
        n = len(r.evidence.get("causes", []))
        head = f"{r.host}: {n} likely cause(s), most likely first" if n else f"{r.host}: no cause found"
        _print([head, *report_lines(r.evidence)], HEADER_STYLE["causes" if n else "clear"])

    run = run_hosts("diagnose", hosts, conn, per_host, pending_is_2=False, on_result=show)
    if run.exit_code == 0 and any(r.evidence.get("causes") for r in run.hosts):
        run.exit_code = 2
    found = sum(1 for r in run.hosts if r.evidence.get("causes"))
    failed = sum(1 for r in run.hosts if r.error)
    _finish(run, json, f"hosts with causes={found} clear={len(run.hosts) - found - failed} errors={failed}")


@task(help={**{k: v for k, v in COMMON_HELP.items() if k not in ("forks", "json")},
            "duration": "stop by itself after this many seconds (default: run until Ctrl-C)",
            "lines": "show this many earlier lines of each log first (default 0)",
            "all": "show every backend line, not only WebSocket/disconnect/rate-limit/error lines"},
      auto_shortflags=False)
@fail_on_error
def monitor(c: Context, inventory: str | None = None, limit: str | None = None, duration: str = "0",
            lines: str = "0", all: bool = False, connect_timeout: str = "10", timeout: str = "60",  # noqa: A002
            accept_new_host_keys: bool = False) -> None:
    """Follow the backend logs and nginx error logs of the selected hosts, one prefixed line each."""
    from remediations.checks.monitor import Monitor

    conn = connect_options(connect_timeout, timeout, accept_new_host_keys=accept_new_host_keys)
    seconds, earlier = number("duration", duration), int(number("lines", lines, integer=True))
    hosts = load_hosts(inventory, limit)
    m = Monitor(hosts, duration=seconds, lines=earlier, show_all=all, connect=conn.transport)
    raise SystemExit(m.run())


TASKS = [probe, diagnose, monitor]
