"""New-drift alerts: one JSON POST per verify round that found drift the history had not seen.

The body (masked by the run's masker, then checked once more) is

    {"source": "wsguard", "event": "new_drift", "run_id", "time", "text": one line for chat webhooks,
     "hosts": [{"host", "controls": [{"id", "title", "impact", "expected", "actual", "detail"}]}]}

`text` makes Slack/Mattermost-style incoming webhooks show something readable. A failure (timeout 5 s,
connection refused, a non-2xx answer, redirects included: a POST is never silently turned into a GET)
is returned as a warning, never raised: an alert channel being down must not fail a compliance run.
Webhook URLs are often credentials themselves (Slack's are): messages name only scheme://host[:port].
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from remediations.model.errors import RemediationError
from remediations.model.masking import Masker
from remediations.model.results import RunResult

TIMEOUT = 5.0


class WebhookError(RemediationError):
    kind = "webhook"


def check_url(url: str) -> str:
    """A usable http(s) URL, or a clear error before any host is contacted."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError(f"--webhook must be an http:// or https:// URL, got {redact(url)!r}",
                           hint="e.g. --webhook https://hooks.example.com/wsguard (or set WSGUARD_WEBHOOK)")
    return url


def redact(url: str) -> str:
    """scheme://host[:port]/… : the path and query of a webhook URL are often its secret."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return "<unparsable URL>"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname}{port}/…"


def payload(run: RunResult, new: dict[str, list[str]], masker: Masker) -> dict[str, Any]:
    hosts: list[dict[str, Any]] = []
    for h in run.hosts:
        ids = new.get(h.host)
        if not ids:
            continue
        controls = [{k: c.get(k) for k in ("id", "title", "impact", "expected", "actual", "detail")}
                    for c in h.controls or [] if c["id"] in ids]
        hosts.append({"host": h.host, "controls": controls})
    text = "wsguard: new drift on " + "; ".join(f"{h['host']} ({', '.join(c['id'] for c in h['controls'])})"
                                                 for h in hosts)
    body = {"source": "wsguard", "event": "new_drift", "run_id": run.run_id, "time": run.finished or run.started,
            "text": text, "hosts": hosts}
    masked: dict[str, Any] = masker.deep(body)  # type: ignore[assignment]
    return masked


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 3xx is then raised as an HTTPError: reported, not followed


def post(url: str, body: dict[str, Any], masker: Masker, timeout: float = TIMEOUT) -> str | None:
    """POST the body as JSON; None when the server answered 2xx, else a warning naming what failed."""
    data = masker(json.dumps(body)).encode("utf-8")
    req = urllib.request.Request(url, data=data, method="POST",  # noqa: S310 - scheme checked by check_url
                                 headers={"Content-Type": "application/json", "User-Agent": "wsguard"})
    opener = urllib.request.build_opener(_NoRedirect)
    where = redact(url)
    try:
        with opener.open(req, timeout=timeout) as resp:
            status = resp.status
    except urllib.error.HTTPError as exc:
        return f"webhook {where}: HTTP {exc.code} {exc.reason}; the alert was not delivered (retried next run)"
    except urllib.error.URLError as exc:
        reason = exc.reason
        why = "timed out" if isinstance(reason, TimeoutError) else str(getattr(reason, "strerror", None) or reason)
        return f"webhook {where}: {why}; the alert was not delivered (retried next run)"
    except (TimeoutError, OSError) as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        return f"webhook {where}: {why}; the alert was not delivered (retried next run)"
    if not 200 <= status < 300:
        return f"webhook {where}: HTTP {status}; the alert was not delivered (retried next run)"
    return None


def alerter(url: str, masker: Masker):  # type: ignore[no-untyped-def]
    """The compliance.Alert for one URL: build the body for the round's new drift and POST it."""

    def alert(run: RunResult, new: dict[str, list[str]]) -> str | None:
        return post(url, payload(run, new, masker), masker)

    return alert
