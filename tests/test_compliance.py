"""Compliance history, new-drift alerts and `verify --remediate` (issue 9)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import Lab
from remediations.checks import compliance, webhook
from remediations.model.masking import Masker
from remediations.model.results import HostResult, RunResult

APP = "/opt/wealth-coach-ai"
ENV = f"{APP}/.env"


# -- a loopback webhook receiver ------------------------------------------------------------------

class Hook:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.answers: list[int] = []  # status codes to answer, in order; 204 once exhausted
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hook.raw.append(body)
                hook.posts.append({"path": self.path, "type": self.headers.get("Content-Type"),
                                   "body": json.loads(body)})
                self.send_response(hook.answers.pop(0) if hook.answers else 204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)  # a free port
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/wsguard-SECRETPATH"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    h.thread.start()
    yield h
    h.server.shutdown()
    h.server.server_close()
    h.thread.join(5)


def verify(lab: Lab, history: Path, *args: str) -> Any:
    return lab.invoke("verify", "--inventory", lab.inventory, "--history", str(history), *args)


def no_secrets(lab: Lab, *texts: str) -> None:
    for t in texts:
        assert lab.token not in t and lab.secret not in t and lab.sudo_password not in t


# -- on the lab -------------------------------------------------------------------------------------

def test_remediate_ends_compliant_and_reports_both_rounds(clean: Lab, tmp_path: Path) -> None:
    lab = clean
    lab.reset("lab3", "lab4", profile="seed")
    history = tmp_path / "compliance.jsonl"
    r = verify(lab, history, "--limit", "lab3", "--remediate", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["task"] == "verify" and doc["exit_code"] == 0 and doc["remediate"] is True
    first, second = doc["rounds"]
    assert first["exit_code"] == 2 and first["hosts"][0]["status"] == "changed"
    assert {c["id"] for c in first["hosts"][0]["controls"] if c["status"] == "fail"} == {
        "env-flags", "runtime-env", "nginx-directives"}
    assert second["exit_code"] == 0 and second["hosts"][0]["status"] == "ok"
    assert doc["hosts"] == second["hosts"] and doc["run_id"] == second["run_id"] != first["run_id"]
    assert [(f["task"], [h["host"] for h in f["hosts"]], [h["status"] for h in f["hosts"]])
            for f in doc["remediation"]] == [("fix-rate-limit", ["lab3"], ["changed"]),
                                             ("fix-nginx", ["lab3"], ["changed"])]
    assert first["new_drift"] == [{"host": "lab3", "control": c} for c in ("env-flags", "runtime-env",
                                                                           "nginx-directives")]
    assert second["new_drift"] == []

    # Drift again on lab3 (the .env only) and lab4 still as seeded: each host gets only the fix its drift needs.
    lab.sh("lab3", f"sed -i 's/^WS_RATE_LIMIT_ENABLED=.*/WS_RATE_LIMIT_ENABLED=true/' {ENV}")
    r = verify(lab, history, "--limit", "lab3,lab4", "--remediate")
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert out.index("== round 1: verify ==") < out.index("remediation: fix-rate-limit") < \
        out.index("== round 2: verify after remediation ==")
    assert "remediation: fix-rate-limit run " in out and " on lab3, lab4\n" in out
    [nginx_line] = [line for line in out.splitlines() if line.startswith("remediation: fix-nginx run ")]
    assert nginx_line.endswith(" on lab4")
    round2 = out[out.index("== round 2"):]
    assert "lab3: compliant" in round2 and "lab4: compliant" in round2 and "exit 0" in round2
    assert "NEW DRIFT on lab3: env-flags" in out
    assert "NEW DRIFT on lab4: env-flags, runtime-env, nginx-directives" in out

    # The history: lab3's env-flags drifted, cleared, drifted, cleared; both hosts compliant now.
    h = lab.invoke("compliance-history", "--history", str(history), "--json")
    assert h.returncode == 0, h.stderr
    hist = {x["host"]: x for x in json.loads(h.stdout)["hosts"]}
    assert hist["lab3"]["state"] == hist["lab4"]["state"] == "compliant"
    assert hist["lab3"]["drift_since"] == {}
    env_events = [e["event"] for e in hist["lab3"]["events"] if e["control"] == "env-flags"]
    assert env_events == ["drift", "cleared", "drift", "cleared"]
    drift = next(e for e in hist["lab3"]["events"] if e["event"] == "drift" and e["control"] == "env-flags")
    assert drift["expected"] == {"WS_RATE_LIMIT_ENABLED": "false", "WS_MAX_MESSAGES_PER_MINUTE": "1000"}
    text = lab.invoke("compliance-history", "--history", str(history), "--last", "2")
    assert text.returncode == 0 and "lab3: compliant at " in text.stdout
    assert sum(1 for line in text.stdout.splitlines() if line.startswith("  20")) == 4  # 2 newest per host
    assert len(history.read_text().splitlines()) == 2 + 4  # one line per host per round
    assert oct(history.stat().st_mode & 0o777) == "0o600"
    no_secrets(lab, r.stdout, r.stderr, history.read_text(), h.stdout)


def test_webhook_once_per_new_drift_and_none_when_it_clears(clean: Lab, tmp_path: Path, hook: Hook) -> None:
    lab = clean
    lab.reset("lab5", profile="seed")
    history = tmp_path / "compliance.jsonl"
    r1 = verify(lab, history, "--limit", "lab5", "--webhook", hook.url)
    assert r1.returncode == 2, r1.stdout + r1.stderr
    assert "NEW DRIFT on lab5: env-flags, runtime-env, nginx-directives (alert sent)" in r1.stdout
    r2 = verify(lab, history, "--limit", "lab5", "--webhook", hook.url, "--json")
    assert r2.returncode == 2 and json.loads(r2.stdout)["new_drift"] == []
    assert len(hook.posts) == 1, hook.posts  # the same drift, still there: no second alert
    post = hook.posts[0]
    assert post["type"] == "application/json" and post["path"] == "/hooks/wsguard-SECRETPATH"
    body = post["body"]
    assert body["event"] == "new_drift" and body["source"] == "wsguard" and "lab5" in body["text"]
    [host] = body["hosts"]
    assert host["host"] == "lab5"
    assert [c["id"] for c in host["controls"]] == ["env-flags", "runtime-env", "nginx-directives"]
    env_flags = host["controls"][0]
    assert env_flags["expected"] == {"WS_RATE_LIMIT_ENABLED": "false", "WS_MAX_MESSAGES_PER_MINUTE": "1000"}
    assert env_flags["actual"] == {"WS_RATE_LIMIT_ENABLED": None, "WS_MAX_MESSAGES_PER_MINUTE": None}
    # The drift clears (remediated; the second round is compliant), then stays clear: no alert for either.
    r3 = verify(lab, history, "--limit", "lab5", "--webhook", hook.url, "--remediate")
    assert r3.returncode == 0, r3.stdout + r3.stderr
    r4 = verify(lab, history, "--limit", "lab5", "--webhook", hook.url)
    assert r4.returncode == 0, r4.stdout + r4.stderr
    assert len(hook.posts) == 1
    no_secrets(lab, *(b.decode() for b in hook.raw), r1.stdout, r1.stderr, r3.stdout, history.read_text())


def test_a_failing_webhook_is_a_warning_and_the_alert_is_retried(clean: Lab, tmp_path: Path, hook: Hook) -> None:
    lab = clean
    lab.reset("lab5", profile="seed")
    history = tmp_path / "compliance.jsonl"
    hook.answers = [500]
    r1 = verify(lab, history, "--limit", "lab5", "--webhook", hook.url, "--json")
    assert r1.returncode == 2, r1.stdout + r1.stderr  # the run's own verdict, not the webhook's
    doc = json.loads(r1.stdout)
    assert len(doc["warnings"]) == 1 and "HTTP 500" in doc["warnings"][0]
    assert "warning: webhook http://127.0.0.1:" in r1.stderr and "SECRETPATH" not in r1.stderr + r1.stdout
    r2 = verify(lab, history, "--limit", "lab5", "--webhook", hook.url)
    assert r2.returncode == 2 and "(alert sent)" in r2.stdout
    r3 = verify(lab, history, "--limit", "lab5", "--webhook", hook.url)
    assert r3.returncode == 2 and "NEW DRIFT" not in r3.stdout
    assert len(hook.posts) == 2  # the failed one, its retry; then nothing while the drift persists


# -- without the lab --------------------------------------------------------------------------------

def _run(run_id: str, host: str, statuses: dict[str, str], status: str = "changed") -> RunResult:
    controls = [{"id": c, "title": c, "impact": "high", "status": s, "expected": {"K": "v"},
                 "actual": {"K": "sk-SECRET-VALUE"}, "detail": None} for c, s in statuses.items()]
    h = HostResult(host=host, task="verify", run_id=run_id, status=status, controls=controls)
    return RunResult(task="verify", run_id=run_id, started=run_id, finished=run_id, hosts=[h])


def test_new_drift_and_transitions_from_the_history_file(tmp_path: Path) -> None:
    path = str(tmp_path / "h" / "c.jsonl")
    masker = Masker(["sk-SECRET-VALUE"])
    seen: list[dict[str, list[str]]] = []

    def alert(run: RunResult, new: dict[str, list[str]]) -> str | None:
        seen.append(new)
        return None

    runs = [("t1", {"a": "fail", "b": "pass"}, "changed"),    # a: new drift
            ("t2", {"a": "fail", "b": "pass"}, "changed"),    # persists: nothing new
            ("t3", {"a": "error", "b": "error"}, "unreachable"),  # unknown: neither clears nor renews
            ("t4", {"a": "fail", "b": "fail"}, "changed"),    # b: new; a: still the same drift
            ("t5", {"a": "pass", "b": "fail"}, "changed"),    # a cleared
            ("t6", {"a": "fail", "b": "fail"}, "changed")]    # a: new again
    news = [compliance.observe(path, _run(rid, "h1", st, hs), masker, alert=alert).new_drift
            for rid, st, hs in runs]
    assert news == [{"h1": ["a"]}, {}, {}, {"h1": ["b"]}, {}, {"h1": ["a"]}]
    assert seen == [n for n in news if n]
    text = Path(path).read_text()
    assert "sk-SECRET-VALUE" not in text and len(text.splitlines()) == 6
    doc = compliance.summary(path)
    [h] = doc["hosts"]
    assert h["state"] == "drift" and h["drift_since"] == {"a": "t6", "b": "t4"}
    assert [(e["time"], e["event"], e["control"]) for e in h["events"]] == [
        ("t1", "drift", "a"), ("t3", "unreachable", None), ("t4", "checked again", None), ("t4", "drift", "b"),
        ("t5", "cleared", "a"), ("t6", "drift", "a")]
    assert len(compliance.summary(path, last=2)["hosts"][0]["events"]) == 2
    assert "h1: DRIFT at t6" in compliance.render(doc)


def test_unreadable_lines_are_skipped_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text('{"torn": \n')
    obs = compliance.observe(str(path), _run("t1", "h1", {"a": "fail"}), Masker())
    assert obs.new_drift == {"h1": ["a"]} and "1 unreadable line(s) skipped" in obs.warnings[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_webhook_failures_are_warnings_naming_only_the_host() -> None:
    refused = webhook.post(f"http://127.0.0.1:{_free_port()}/secret-path", {"x": 1}, Masker())
    assert refused and "refused" in refused.lower() and "secret-path" not in refused

    # A server that accepts but never answers: the POST gives up after its timeout.
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        t0 = time.monotonic()
        slow = webhook.post(f"http://127.0.0.1:{srv.getsockname()[1]}/x", {"x": 1}, Masker(), timeout=0.5)
        assert slow and "timed out" in slow and time.monotonic() - t0 < 3
    assert webhook.TIMEOUT == 5.0
    with pytest.raises(webhook.WebhookError, match="http:// or https://"):
        webhook.check_url("ftp://example.com/x")
