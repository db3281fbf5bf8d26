"""What each task does on one host: the function the runner calls per host (transport, result, masker ->
result), built from the task's checked options; and the runs of the read-only tasks (history, diagnose,
probe), each with its own exit code."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from remediations.checks import probe as p
from remediations.checks.diagnose import diagnose_host
from remediations.checks.wsclient import mask_url
from remediations.fixes.plan import Remediation
from remediations.host.journal import read_runs, summary
from remediations.host.transport import Transport
from remediations.model.errors import RemediationError
from remediations.model.inventory import Host
from remediations.model.masking import Masker
from remediations.model.results import HostResult, RunResult, new_run_id, now_iso
from remediations.run.runner import Connect, HostFn, run_hosts
from remediations.run.transaction import Options, execute

OnResult = Callable[[HostResult], None] | None
Say = Callable[[str, str], None] | None  # (host or target, event): the probe's progress lines


def remediation_fn(make: Callable[[Host], Remediation], options: Options) -> HostFn:
    """One transaction per host with the remediation `make` builds for it (fixes, rollback)."""
    def per_host(t: Transport, result: HostResult, masker: Masker) -> HostResult:
        return execute(t, make(t.host), result.run_id, options, result, masker)

    return per_host


def history_fn(newest: int) -> HostFn:
    """The runs the host's journal recorded, newest first; `newest` > 0 keeps only that many."""
    def per_host(t: Transport, result: HostResult, masker: Masker) -> HostResult:
        runs = [summary(m) for m in read_runs(t)]
        result.evidence.update(recorded=len(runs), keep=t.host.ws.journal_keep,
                               runs=runs[:newest] if newest else runs)
        return result

    return per_host


def history(hosts: list[Host], conn: Connect, newest: int, on_result: OnResult = None) -> RunResult:
    """history_fn on each host; exit 0, or 1 when a host could not be read."""
    return run_hosts("history", hosts, conn, history_fn(newest), pending_is_2=False, on_result=on_result)


def diagnose_fn(tail: int) -> HostFn:
    """The likely causes on the host, with evidence, from `tail` lines of each log."""
    def per_host(t: Transport, result: HostResult, masker: Masker) -> HostResult:
        result.evidence.update(diagnose_host(t, tail, masker))
        return result

    return per_host


def diagnose(hosts: list[Host], conn: Connect, tail: int, on_result: OnResult = None) -> RunResult:
    """diagnose_fn on each host; exit 2 when a cause was found and nothing failed."""
    run = run_hosts("diagnose", hosts, conn, diagnose_fn(tail), pending_is_2=False, on_result=on_result)
    if run.exit_code == 0 and any(r.evidence.get("causes") for r in run.hosts):
        run.exit_code = 2
    return run


def probe_fn(config: p.ProbeConfig, send_token_to: str | None = None, say: Say = None) -> HostFn:
    """A probe of config.url, or of the host's own ws_url, with config.token or else the host's token,
    which is read only when it may go to that target (checks/probe.token_refusal)."""
    def per_host(t: Transport, result: HostResult, masker: Masker) -> HostResult:
        ws = t.host.ws
        target = config.url or ws.ws_url
        if not target:
            result.status = "skipped"
            result.warnings.append("no ws_url for this host in the inventory")
            return result
        events = _events(say, t.host.name)
        refused = p.token_refusal(target, ws.ws_url, send_token_to)
        token = None
        if refused:  # the host's token is not even read
            result.warnings.append(f"token {refused}")
            if events:
                events(f"token {refused}")
        else:
            token = config.token if config.token is not None else p.host_token(t, masker)
        t.close()  # the probe itself needs no SSH
        run = p.run_probe(replace(config, url=target, token=token, token_header=ws.ws_token_header), events, masker)
        return p.fill_result(result, run)

    return per_host


def probe(hosts: list[Host] | None, conn: Connect, config: p.ProbeConfig, *, send_token_to: str | None = None,
          say: Say = None, on_result: OnResult = None) -> RunResult:
    """The probe of each host (probe_fn), or with no hosts of config.url alone with config.token (the token
    given is meant for it); exit 0 stable, 2 unstable, 1 an error."""
    if hosts is not None:
        run = run_hosts("probe", hosts, conn, probe_fn(config, send_token_to, say), pending_is_2=False,
                        on_result=on_result)
    else:
        run = RunResult(task="probe", run_id=new_run_id(), started=now_iso())
        run.hosts.append(_probe_url(config, run.run_id, say))
        run.finished = now_iso()
        if on_result:
            on_result(run.hosts[0])
    run.exit_code = p.exit_code(run.hosts)
    return run


def _probe_url(config: p.ProbeConfig, run_id: str, say: Say) -> HostResult:
    masker = Masker()
    if config.token:
        masker.add([config.token])
    result = HostResult(host=masker(mask_url(config.url)), task="probe", run_id=run_id)
    try:
        p.fill_result(result, p.run_probe(config, _events(say, "probe"), masker))
    except RemediationError as e:
        result.fail(e.kind, masker(e.message))
    result.evidence = masker.deep(result.evidence)  # type: ignore[assignment]
    return result


def _events(say: Say, name: str) -> Callable[[str], None] | None:
    return (lambda msg: say(name, msg)) if say else None
