"""The compliance controls: one small function each, judged exactly as the fixes judge.

Every control checks the real host: the bulk facts come from ONE agent round trip (the app's .env,
the container, nginx with its `nginx -T` dump and reload record, the journal), and the rest goes
through testinfra's host API on wsguard's transport (`host.run("nginx -t")`, the WebSocket upgrade
made on the host). A control returns an Outcome: pass, fail (drift), error (could not check) or
skipped (not applicable), with what was expected and what was found; secrets are masked later by
the caller's Masker, which learns every secret-looking value the facts hold.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from remediations.checks import wsclient
from remediations.checks.wsclient import mask_url
from remediations.edit.envfile import read_values
from remediations.edit.nginxplan import site_plan
from remediations.edit.secrets import learn_env_text, learn_nginx_secrets
from remediations.host import programs
from remediations.model.errors import AgentError, RemediationError
from remediations.model.facts import ContainerFact, Facts, NginxFact, file_fact, running_config_stale
from remediations.model.inventory import Host
from remediations.model.masking import Masker

IMPACTS = ("low", "medium", "high")
STATUSES = ("pass", "fail", "error", "skipped")
TOKEN_PARAM = "token"  # noqa: S105 - the query parameter's name, not a secret


@dataclass
class VerifyOptions:
    probe: bool = False
    probe_chunks: int = 30         # more than the old rate limit (20 a minute)
    probe_idle: float = 65.0       # longer than nginx's default proxy_read_timeout (60 s)
    connect_timeout: float = 10.0


@dataclass
class Outcome:
    status: str
    expected: Any = None
    actual: Any = None
    detail: str | None = None


def passed(expected: Any, actual: Any, detail: str | None = None) -> Outcome:
    return Outcome("pass", expected, actual, detail)


def failed(expected: Any, actual: Any, detail: str | None = None) -> Outcome:
    return Outcome("fail", expected, actual, detail)


@dataclass
class Context:
    """What a control may look at: the inventory host, testinfra's host and the gathered facts."""

    inv: Host
    host: Any  # testinfra.host.Host on wsguard's transport
    facts: Facts
    masker: Masker
    options: VerifyOptions
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def nginx(self) -> NginxFact:
        """The nginx facts (the controls' request always asks for them; absent means not installed)."""
        return self.facts.nginx or NginxFact(installed=False)

    @property
    def container(self) -> ContainerFact:
        return self.facts.container or ContainerFact(exists=False)

    def env_values(self) -> dict[str, str | None]:
        """The app's .env as python-dotenv reads it (secret values registered with the masker)."""
        if "env" not in self.cache:
            ws = self.inv.ws
            f = file_fact(self.facts, ws.env_file, self.inv.name, "the app's .env",
                          hint="set env_file (or app_dir) for this host in the inventory")
            text = f.data.decode("utf-8", "replace")
            learn_env_text(self.masker, text)  # before parsing: a file that does not parse still has secrets
            self.cache["env"] = read_values(text)
        env: dict[str, str | None] = self.cache["env"]
        return env


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    impact: str
    check: Callable[[Context], Outcome]
    probe_only: bool = False


def learn_secrets(ctx: Context) -> None:
    """Teach the masker every secret the facts and the inventory hold, before any control reports.

    The .env's and the container's values, the inventory's own env_flags (a token being rotated is
    a secret in `expected` before it is one on the host) and the nginx config's secret arguments.
    """
    ctx.masker.add_env(ctx.inv.ws.env_flags)
    ctx.masker.add_env(ctx.facts.container_env() or {})
    try:
        ctx.env_values()
    except Exception:  # noqa: BLE001, S110 - env-flags reports it; here it only teaches the masker
        pass
    site = ctx.facts.file(ctx.inv.ws.nginx_site)
    text = site.data.decode("utf-8", "replace") if site else ""
    learn_nginx_secrets(ctx.masker, text, ctx.nginx.dump)


def facts_request(host: Host) -> dict[str, Any]:
    """The one facts round trip every control shares."""
    ws = host.ws
    return {"op": "facts", "files": [ws.env_file, ws.nginx_site], "container": ws.backend_container,
            "nginx": True, "journal": {}}


# -- the controls ---------------------------------------------------------------------------------

def env_flags(ctx: Context) -> Outcome:
    want = ctx.inv.ws.env_flags
    try:
        values = ctx.env_values()
    except AgentError as exc:
        if exc.kind == "missing":
            return failed(want, "missing", exc.message)
        raise
    have = {k: values.get(k) for k in want}
    return (passed if have == want else failed)(want, have, f"in {ctx.inv.ws.env_file}")


def runtime_env(ctx: Context) -> Outcome:
    ws = ctx.inv.ws
    want = ws.env_flags
    c = ctx.container
    env = ctx.facts.container_env()
    if env is None:
        return failed(want, f"container {ws.backend_container} does not exist", c.error)
    ctx.masker.add_env(env)
    have = {k: env.get(k) for k in want}
    detail = f"container {ws.backend_container} ({(c.id or '')[:12]})"
    if "compose_recreate" in ctx.facts.pending:
        detail += "; a previous run left its recreate pending"
    if have != want and _file_holds_flags(ctx):
        detail += (f"; {ws.env_file} holds the flags but the container was not recreated "
                   f"(docker-compose restart keeps the old environment): fix-rate-limit recreates it")
    return (passed if have == want else failed)(want, have, detail)


def _file_holds_flags(ctx: Context) -> bool:
    try:
        values = ctx.env_values()
    except RemediationError:
        return False
    return all(values.get(k) == v for k, v in ctx.inv.ws.env_flags.items())


def _site_difference(old: str, new: str) -> dict[str, list[str]]:
    """What fix-nginx would write: the lines it would add, and the ones those replace."""
    out: dict[str, list[str]] = {"missing": [], "replaced": []}
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0):
        if line.startswith(("+++", "---", "@@")):
            continue
        out["missing" if line[0] == "+" else "replaced"].append(line[1:].strip().rstrip(";"))
    return {k: v for k, v in out.items() if v}


def nginx_directives(ctx: Context) -> Outcome:
    ws = ctx.inv.ws
    want = list(ws.nginx_directives)
    sp, _f, text = site_plan(ctx.inv, ctx.facts, want, ctx.masker)
    notes = [f"{d}: {why}" for d, why in sp.unsupported] + sp.include_conflicts
    notes += [f"inherited: {held}" for _, held in sp.kept_inherited]
    detail = f"location {ws.ws_location} in {ws.nginx_site}" + (f"; {'; '.join(notes)}" if notes else "")
    if not sp.changed:
        how = [f"{len(sp.kept_equivalent)} in an equivalent spelling"] if sp.kept_equivalent else []
        how += [f"{len(sp.kept_inherited)} inherited"] if sp.kept_inherited else []
        return passed(want, "all present" + (f" ({', '.join(how)})" if how else ""), detail)
    return failed(want, _site_difference(text, sp.new_text), detail + "; fix-nginx would write the missing lines")


def nginx_loaded(ctx: Context) -> Outcome:
    ng = ctx.nginx
    want = "nginx runs the configuration on disk"
    if not ng.installed:
        return Outcome("error", want, "nginx is not installed", "nginx -v failed")
    if not ng.master:
        return Outcome("skipped", want, "nginx is not running", "see nginx-running")
    stale = running_config_stale(ng)
    pending = "nginx_reload" in ctx.facts.pending
    if stale is None and not pending:
        return passed(want, "loaded" + (" (confirmed at the last recorded reload)" if ng.reload_record else ""))
    return failed(want, stale or "a previous run left the reload pending", "fix-nginx reloads it")


def nginx_config_valid(ctx: Context) -> Outcome:
    # From the facts round trip: the agent's `nginx -t`, whose error withholds what nginx quotes from a
    # file outside the nginx tree (a site swapped for a link to another file).
    ng = ctx.nginx
    if not ng.installed:
        return Outcome("error", "nginx -t exits 0", "nginx is not installed")
    if ng.test_ok:
        return passed("nginx -t exits 0", "exit 0")
    lines = [line for line in ng.test_error.splitlines() if line]
    return failed("nginx -t exits 0", "exit 1: " + " | ".join(lines[-3:]))


def nginx_running(ctx: Context) -> Outcome:
    ng = ctx.nginx
    want = "an nginx master with workers"
    if not ng.installed:
        return failed(want, "nginx is not installed")
    if not ng.master:
        return failed(want, "no live master (/run/nginx.pid)")
    if not ng.workers:
        return failed(want, f"master {ng.master} has no workers")
    return passed(want, f"master {ng.master}, {len(ng.workers)} worker(s)")


def backend_running(ctx: Context) -> Outcome:
    ws = ctx.inv.ws
    c = ctx.container
    want = f"container {ws.backend_container} running"
    if not c.exists:
        return failed(want, "does not exist", c.error)
    actual = f"{c.status} since {c.started_at}, {c.restart_count} restart(s)"
    return (passed if c.running else failed)(want, actual, f"image {c.image}")


def ws_upgrade(ctx: Context) -> Outcome:
    ws = ctx.inv.ws
    if not ws.ws_url:
        return Outcome("skipped", None, None, "ws_url is not set for this host in the inventory")

    url = mask_url(ws.ws_url, TOKEN_PARAM)
    want = f"HTTP 101 for {url} through nginx on the host" + (
        f" (token from {ws.ws_token_key} in .env)" if ws.ws_token_key else "")
    params = {"url": ws.ws_url, "address": "127.0.0.1", "env_file": ws.env_file, "token_key": ws.ws_token_key,
              "token_param": TOKEN_PARAM, "token_header": ws.ws_token_header,
              "timeout": max(1.0, min(10.0, ctx.options.connect_timeout))}
    if ws.ws_token_key:
        # The probe reads the token as root: only the file the agent resolved inside its boundary, and
        # only while it holds the bytes the agent read (a refused .env raises here, before anything runs).
        env = file_fact(ctx.facts, ws.env_file, ctx.inv.name, "the app's .env",
                        hint="set env_file (or app_dir) for this host in the inventory")
        params.update(env_file=env.resolved, env_sha256=env.sha256)
    src = programs.source("upgrade_probe")
    res = ctx.host.run("python3 -I -c %s %s", programs.boot("ws-upgrade"), str(len(src)),
                       stdin=src + json.dumps(params).encode())
    try:
        out = json.loads(res.stdout)
    except ValueError:
        return Outcome("error", want, f"the upgrade check did not run (exit {res.rc})", res.stderr.strip()[-300:])
    if out.get("token_found") is False:
        return Outcome("error", want, f"{ws.ws_token_key} is not set in {ws.env_file}",
                       "set ws_token_key to a key of the app's .env that holds a valid client token")
    if out.get("error"):
        return failed(want, out["error"], out.get("target"))
    status = out.get("status")
    if status == 101 and out.get("accept_ok"):
        return passed(want, "HTTP 101", out.get("target"))
    return failed(want, f"HTTP {status}" + ("" if status != 101 else " with a bad Sec-WebSocket-Accept"),
                  out.get("target"))


def ws_probe(ctx: Context) -> Outcome:
    """From the controller: a real connection through nginx, streamed past the rate limit, then idled."""
    ws, opts = ctx.inv.ws, ctx.options
    if not ws.ws_url:
        return Outcome("skipped", None, None, "ws_url is not set for this host in the inventory")
    want = (f"a connection to {wsclient.mask_url(ws.ws_url, TOKEN_PARAM)} survives {opts.probe_chunks} chunks "
            f"and {opts.probe_idle:g}s idle")
    token = None
    if ws.ws_token_key:
        token = ctx.env_values().get(ws.ws_token_key)  # in memory only; the masker knows it
        if token is None:
            return Outcome("error", want, f"{ws.ws_token_key} is not set in {ws.env_file}")
        ctx.masker.add([token])
    try:
        with wsclient.connect(ws.ws_url, token=token, token_param=TOKEN_PARAM, token_in_header=ws.ws_token_header,
                              timeout=opts.connect_timeout) as conn:
            got, closed = conn.chat("wsguard verify probe", opts.probe_chunks, timeout=max(10.0, opts.probe_chunks))
            if closed is not None:
                return failed(want, f"closed after {got}/{opts.probe_chunks} chunks: {closed.code} {closed.reason}")
            closed = conn.idle(opts.probe_idle)
            if closed is not None:
                return failed(want, f"closed during the idle period: {closed.code} {closed.reason or ''}".strip())
            got, closed = conn.chat("wsguard verify probe (after idle)", 1, timeout=10.0)
            if closed is not None or got != 1:
                return failed(want, f"no answer after the idle period ({closed.code if closed else 'no chunk'})")
    except wsclient.WSError as exc:
        return failed(want, exc.message)
    return passed(want, f"{opts.probe_chunks} chunks, {opts.probe_idle:g}s idle, still open",
                  f"server pings seen: {len(conn.pings)}")


CONTROLS: tuple[Control, ...] = (
    Control("env-flags", "the app's .env holds the inventory's env_flags", "high", env_flags),
    Control("runtime-env", "the running container's environment holds the env_flags", "high", runtime_env),
    Control("nginx-directives", "the WebSocket location has the directives fix-nginx ensures", "high",
            nginx_directives),
    Control("nginx-loaded", "nginx runs the configuration that is on disk", "medium", nginx_loaded),
    Control("nginx-config-valid", "nginx -t accepts the configuration", "high", nginx_config_valid),
    Control("nginx-running", "nginx is running", "high", nginx_running),
    Control("backend-running", "the backend container is running", "high", backend_running),
    Control("ws-upgrade", "a WebSocket upgrade through nginx on the host answers 101", "high", ws_upgrade),
    Control("ws-probe", "a WebSocket through nginx survives a long stream and an idle period", "medium", ws_probe,
            probe_only=True),
)


def selected(options: VerifyOptions) -> list[Control]:
    return [c for c in CONTROLS if options.probe or not c.probe_only]


def run_control(control: Control, ctx: Context) -> dict[str, Any]:
    """One control's record in the result shape: {id, title, impact, status, expected, actual, detail}."""
    try:
        out = control.check(ctx)
    except RemediationError as exc:
        out = Outcome("error", None, None, exc.message + (f" (hint: {exc.hint})" if exc.hint else ""))
    except Exception as exc:  # noqa: BLE001 - a bug in one control must not hide the others
        out = Outcome("error", None, None, f"internal error: {type(exc).__name__}: {exc}")
    assert out.status in STATUSES, out.status
    record = {"id": control.id, "title": control.title, "impact": control.impact, "status": out.status,
              "expected": out.expected, "actual": out.actual, "detail": out.detail}
    masked: dict[str, Any] = ctx.masker.deep(record)  # type: ignore[assignment]
    return masked
