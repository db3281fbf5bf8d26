"""Facts in, plan out: each remediation's plan from a host's real facts (tests/fixtures/plans/*.json).

A fixture holds the facts the agent returned on a lab host (tests/fixtures/plans/capture.py took them, and
says what was trimmed and redacted), the host's vars, and the plan expected, written by hand: the changed
files with their new bytes, the handlers with their reasons, the warnings, why nothing is to do, a few
evidence keys, or the error a refusal raises. No lab: planning is pure.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from remediations.edit.envfile import read_values
from remediations.fixes.combined import Combined
from remediations.fixes.nginx import NginxFix, running_config_basis
from remediations.fixes.plan import Remediation
from remediations.fixes.ratelimit import RateLimitFix
from remediations.fixes.rollback import Rollback
from remediations.model.errors import RemediationError
from remediations.model.facts import Facts, NginxFact, running_config_stale
from remediations.model.inventory import Host, WsVars
from remediations.model.masking import Masker, is_secret_key

FIXTURES = Path(__file__).parent / "fixtures" / "plans"
CASES = sorted(FIXTURES.glob("*.json"))
IDS = [p.stem for p in CASES]
# Every remediation has its cases; a fixture file left out by a typo in its class would go unnoticed.
CLASSES = {"RateLimitFix", "NginxFix", "Combined", "Rollback"}


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


def make_host(spec: dict[str, Any]) -> Host:
    return Host(name=spec["name"], address="192.0.2.1", port=22, user="root", key_file=None, become=False,
                groups=("all",), vars=MappingProxyType({}), ws=WsVars(**spec["ws"]))


def remediation(doc: dict[str, Any]) -> Remediation:
    host, kind, args = make_host(doc["host"]), doc["remediation"]["class"], doc["remediation"]["args"]
    if kind == "Combined":  # as `invoke fix` builds it
        return Combined("fix", [RateLimitFix(host, **args), NginxFix(host)])
    made: Remediation = {"RateLimitFix": RateLimitFix, "NginxFix": NginxFix, "Rollback": Rollback}[kind](host, **args)
    return made


def planned(doc: dict[str, Any], masker: Masker | None = None) -> dict[str, Any]:
    """The plan for the fixture's facts, in the shape of its "expected"."""
    facts = copy.deepcopy(doc["facts"])  # a plan must not depend on (or change) the caller's copy
    try:
        plan = remediation(doc).plan(Facts.parse(facts), masker or Masker())
    except RemediationError as exc:
        return {"error": {"type": type(exc).__name__, "kind": getattr(exc, "kind", None), "message": exc.message}}
    current = {f["path"]: f.get("sha256") for f in doc["facts"]["files"]}
    files = []
    for f in plan.changed_files:
        # The agent writes only over the bytes the plan was made from.
        assert f.expect_sha256 == current[f.path], f.path
        files.append({"path": f.path, "new": f.new, "mode": f.mode})
    return {"files": files, "handlers": plan.handlers, "warnings": plan.warnings,
            "nothing_to_do": plan.nothing_to_do, "evidence": plan.evidence, "rollback_of": plan.rollback_of}


def compare(expected: dict[str, Any], actual: dict[str, Any]) -> None:
    if "error" in expected or "error" in actual:
        assert actual.get("error") == expected.get("error")
        return
    assert [f["path"] for f in actual["files"]] == [f["path"] for f in expected["files"]]
    for want, got in zip(expected["files"], actual["files"], strict=True):
        if "new_text" in want:
            assert got["new"].decode("utf-8") == want["new_text"], want["path"]
        else:
            assert hashlib.sha256(got["new"]).hexdigest() == want["new_sha256"], want["path"]
        assert got["mode"] == want.get("mode"), want["path"]
    assert [h["name"] for h in actual["handlers"]] == [h["name"] for h in expected["handlers"]]
    for want, got in zip(expected["handlers"], actual["handlers"], strict=True):
        assert {k: got.get(k) for k in want} == want  # every key the fixture names: name, reason, more
    assert actual["warnings"] == expected["warnings"]
    assert actual["nothing_to_do"] == expected["nothing_to_do"]
    assert {k: actual["evidence"].get(k) for k in expected.get("evidence", {})} == expected.get("evidence", {})
    assert actual["rollback_of"] == expected.get("rollback_of")


@pytest.mark.parametrize("path", CASES, ids=IDS)
def test_plan_matches_the_fixture(path: Path) -> None:
    doc = load(path)
    assert doc["expected"] is not None, f"{path.name}: no expected plan written yet"
    compare(doc["expected"], planned(doc))


def test_every_remediation_has_cases() -> None:
    assert {load(p)["remediation"]["class"] for p in CASES} == CLASSES


# -- the fixtures are what the agent returns --------------------------------------------------------------

@pytest.mark.parametrize("path", CASES, ids=IDS)
def test_facts_are_consistent(path: Path) -> None:
    """Trimmed and redacted, each file's bytes still match their sha256, as the agent sent them."""
    facts = load(path)["facts"]
    assert facts["euid"] == 0 and isinstance(facts["files"], list)
    for f in facts["files"]:
        if f["exists"]:
            assert hashlib.sha256(base64.b64decode(f["content"])).hexdigest() == f["sha256"], f["path"]
    for run in facts.get("runs") or []:
        for f in run.get("files") or []:
            if f.get("old_content") is not None:
                assert hashlib.sha256(base64.b64decode(f["old_content"])).hexdigest() == f["sha256_before"]


# -- a wrong expectation fails ----------------------------------------------------------------------------

def wrong_versions(expected: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The expectation changed in each way a plan can differ: every one of them must fail the comparison."""
    out = []

    def variant(what: str, change: Any) -> None:
        e = copy.deepcopy(expected)
        change(e)
        out.append((what, e))

    if "error" in expected:
        variant("another error kind", lambda e: e["error"].update(kind="other"))
        variant("another message", lambda e: e["error"].update(message=e["error"]["message"] + "."))
        variant("no error", lambda e: e.clear() or e.update(files=[], handlers=[], warnings=[], nothing_to_do=[]))
        return out
    if expected["files"]:
        def flip(e: dict[str, Any]) -> None:
            f = e["files"][0]
            if "new_text" in f:
                f["new_text"] += " "
            else:
                f["new_sha256"] = f["new_sha256"][::-1]
        variant("other new bytes", flip)
        variant("no file change", lambda e: e.update(files=[]))
    else:
        variant("a file change", lambda e: e["files"].append({"path": "/etc/hosts", "new_text": ""}))
    if expected["handlers"]:
        variant("another reason", lambda e: e["handlers"][0].update(reason="because"))
        variant("no handler", lambda e: e.update(handlers=[]))
    else:
        variant("a handler", lambda e: e["handlers"].append({"name": "nginx_reload"}))
    variant("one more warning", lambda e: e["warnings"].append("a warning"))
    if expected["nothing_to_do"]:
        variant("another no-op reason", lambda e: e["nothing_to_do"].__setitem__(0, e["nothing_to_do"][0] + "."))
    variant("one more no-op reason", lambda e: e["nothing_to_do"].append("nothing"))
    return out


@pytest.mark.parametrize("path", CASES, ids=IDS)
def test_a_wrong_expectation_fails(path: Path) -> None:
    doc = load(path)
    actual = planned(doc)
    for what, wrong in wrong_versions(doc["expected"]):
        with pytest.raises(AssertionError):
            compare(wrong, actual)
            pytest.fail(f"{path.name}: {what}: still passes")


# -- a no-op explains itself without giving a secret away ----------------------------------------------------

def secrets_of(doc: dict[str, Any]) -> list[str]:
    """The secret-looking values of every .env in the fixture's facts."""
    out = []
    for f in doc["facts"]["files"]:
        if f["exists"] and f["path"].endswith(".env"):
            values = read_values(base64.b64decode(f["content"]).decode("utf-8"))
            out += [v for k, v in values.items() if v and is_secret_key(k)]
    return out


@pytest.mark.parametrize("path", CASES, ids=IDS)
def test_no_op_reasons_never_hold_a_secret(path: Path) -> None:
    doc = load(path)
    actual = planned(doc)
    for secret in secrets_of(doc):
        for line in actual.get("nothing_to_do", []):
            assert secret not in line


def test_a_secret_flag_shows_as_stars() -> None:
    doc = load(FIXTURES / "ratelimit-compliant-secret-flag.json")
    assert "WS_AUTH_TOKEN" in doc["host"]["ws"]["env_flags"]
    (line,) = planned(doc)["nothing_to_do"]
    assert "WS_AUTH_TOKEN=***" in line and doc["host"]["ws"]["env_flags"]["WS_AUTH_TOKEN"] not in line


@pytest.mark.parametrize(("ng", "said"), [
    ({"master": 1, "workers": [2, 3], "dump_sha256": "a", "reload_record": {"workers": [3, 2], "dump_sha256": "a"}},
     "nginx runs the configuration on disk"),
    ({"master": 1, "workers": [4], "config_mtime": 10.0, "workers_started": 11.0,
      "reload_record": {"workers": [2], "dump_sha256": "a"}},
     "nginx's workers started after the last change to its configuration files"),
    ({"master": 1, "workers": [4], "config_mtime": None, "workers_started": 11.0, "reload_record": None},
     "nginx has no confirmed reload on record and no file times to compare: taken as running what is on disk"),
])
def test_the_no_op_says_how_it_knows_nginx_runs_the_disk(ng: dict[str, Any], said: str) -> None:
    fact = NginxFact.parse({"installed": True, **ng})
    assert running_config_stale(fact) is None
    assert running_config_basis(fact) == said
