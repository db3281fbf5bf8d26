"""The health gate of a rolling fix: after a host changed, is it serving WebSockets again?"""

from __future__ import annotations

import time
from typing import Any

from remediations.checks.controls.backend import testinfra_host
from remediations.checks.controls.catalog import Context, VerifyOptions, ws_upgrade
from remediations.host.agent_call import call_agent
from remediations.host.transport import Transport
from remediations.model.facts import Facts
from remediations.model.masking import Masker
from remediations.model.results import HostResult
from remediations.run.fleet import Gate


def health_gate(connect_timeout: float, attempts: int = 3, pause: float = 1.0) -> Gate:
    """The gate on one changed host: handler effects confirmed, then a 101 upgrade through nginx.

    The upgrade is the verify `ws-upgrade` control, one round trip; it is tried again (up to
    `attempts` times, `pause` s apart) only while it fails, for a backend still binding its port. With a
    token to send, one facts round trip first: the probe reads the token only from the .env the agent
    resolved inside its boundary."""

    def gate(t: Transport, result: HostResult, masker: Masker) -> None:
        evidence: dict[str, Any] = {"status": "pass"}
        result.evidence["gate"] = evidence
        bad = [h["name"] for h in result.handlers if h.get("status") != "ok"]
        evidence["effects"] = {h["name"]: h.get("status") for h in result.handlers}
        if bad:
            evidence["status"] = "fail"
            result.fail("gate", f"{t.host.name}: health gate: the effect of {', '.join(bad)} was not confirmed")
            return
        ws = t.host.ws
        facts = (Facts.parse(call_agent(t, {"op": "facts", "files": [ws.env_file]})) if ws.ws_url and ws.ws_token_key
                 else Facts())
        ctx = Context(inv=t.host, host=testinfra_host(t), facts=facts, masker=masker,
                      options=VerifyOptions(connect_timeout=connect_timeout))
        for attempt in range(1, attempts + 1):
            out = ws_upgrade(ctx)
            evidence["ws_upgrade"] = {"status": out.status, "expected": out.expected, "actual": out.actual,
                                      "detail": out.detail, "attempts": attempt}
            if out.status in ("pass", "skipped") or attempt == attempts:
                break
            time.sleep(pause)
        if out.status == "skipped":
            result.warnings.append(f"health gate: no WebSocket upgrade check ({out.detail})")
        elif out.status != "pass":
            evidence["status"] = "fail"
            result.fail("gate", f"{t.host.name}: health gate: expected {out.expected}, got {out.actual}"
                                + (f" ({out.detail})" if out.detail else ""))

    return gate
