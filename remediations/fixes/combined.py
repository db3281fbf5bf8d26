"""Several remediations as ONE transaction on a host: one facts round trip, one apply.

`invoke fix` runs fix-rate-limit and fix-nginx this way: no-change costs one round trip per host, a
change two, and a failed `nginx -t` restores every file of the run, `.env` included.
"""

from __future__ import annotations

from typing import Any

from remediations.fixes.plan import Plan, Remediation
from remediations.model.facts import Facts
from remediations.model.masking import Masker


def merge_requests(requests: list[dict[str, Any]]) -> dict[str, Any]:
    """The union of facts requests (pure): file lists concatenated, flags or'ed, other keys shared."""
    merged: dict[str, Any] = {"files": []}
    for req in requests:
        for key, value in req.items():
            if key == "files":
                merged["files"] += [f for f in value if f not in merged["files"]]
            elif key in merged and merged[key] != value and not isinstance(value, bool):
                raise ValueError(f"remediations disagree on the facts key {key!r}")
            elif isinstance(value, bool):
                merged[key] = merged.get(key, False) or value
            else:
                merged[key] = value
    return merged


class Combined:
    def __init__(self, task: str, parts: list[Remediation]) -> None:
        self.task = task
        self.parts = parts

    def facts_request(self) -> dict[str, Any]:
        return merge_requests([p.facts_request() for p in self.parts])

    def plan(self, facts: Facts, masker: Masker) -> Plan:
        plan = Plan()
        for part in self.parts:
            p = part.plan(facts, masker)
            plan.files += p.files
            plan.handlers += p.handlers
            plan.warnings += p.warnings
            plan.nothing_to_do += p.nothing_to_do
            plan.evidence.update(p.evidence)
        return plan
