"""The host agent's own unit tests: run in-process as root against a temporary root directory.

The agent is the program that runs on every host as root; these tests call its operations directly
(no SSH, no lab): the lock, the journal, compare-and-swap on sha256, writes through a symlink inside the
allowed tree, refusals outside it, restore on a failed validation, pending handlers, extended attributes.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remediations.host.programs import agent

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the agent runs as root: these tests need root")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Host:
    """A temporary root: an app dir with a .env, and the journal, as the agent sees them."""

    def __init__(self, root: Path) -> None:
        self.app = root / "app"
        self.app.mkdir()
        self.env = self.app / ".env"
        self.env.write_bytes(b"A=1\nWS_RATE_LIMIT_ENABLED=true\n")
        self.journal_dir = root / "var" / "lib" / "wsguard"
        self.journal_dir.parent.mkdir(parents=True)
        self.boundary = {"files": {str(self.env): {"what": ".env", "trees": [str(self.app)], "max_bytes": 4096}}}

    def journal(self) -> Any:
        return agent.Journal.open(create=True)

    def facts(self, **extra: Any) -> dict[str, Any]:
        req = {"op": "facts", "files": [str(self.env)], "boundary": self.boundary, **extra}
        j = agent.Journal.open(create=False)
        try:
            out: dict[str, Any] = agent.op_facts(req, j)
        finally:
            if j:
                j.close()
        return out

    def apply(self, new: bytes, expect: bytes | None = None, **extra: Any) -> dict[str, Any]:
        old = self.env.read_bytes() if expect is None else expect
        req = {"op": "apply", "run_id": extra.pop("run_id", "20261204T000000Z-aaaaaa"), "task": "test",
               "boundary": self.boundary, "lock_timeout": extra.pop("lock_timeout", 5),
               "files": [{"path": str(self.env), "expect_sha256": sha(old),
                          "content": base64.b64encode(new).decode(), **extra.pop("file", {})}], **extra}
        j = self.journal()
        try:
            out: dict[str, Any] = agent.op_apply(req, j)
        finally:
            j.close()
        return out

    def manifests(self) -> list[dict[str, Any]]:
        runs = self.journal_dir / "runs"
        return [json.loads((d / "manifest.json").read_text()) for d in sorted(runs.iterdir())] if runs.exists() else []


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Host]:
    h = Host(tmp_path)
    monkeypatch.setattr(agent, "JOURNAL", str(h.journal_dir))
    yield h


def test_facts_read_the_file_and_change_nothing(host: Host) -> None:
    before = host.env.stat()
    f = host.facts()["files"][0]
    assert base64.b64decode(f["content"]) == host.env.read_bytes() and f["sha256"] == sha(host.env.read_bytes())
    assert host.env.stat().st_mtime_ns == before.st_mtime_ns and not host.journal_dir.exists()


def test_apply_journals_the_old_bytes_and_writes_the_new(host: Host) -> None:
    old, new = host.env.read_bytes(), b"A=1\nWS_RATE_LIMIT_ENABLED=false\n"
    host.env.chmod(0o640)
    out = host.apply(new)
    assert out["error"] is None and host.env.read_bytes() == new
    assert host.env.stat().st_mode & 0o777 == 0o640  # mode kept
    [m] = host.manifests()
    assert m["status"] == "ok" and m["files"][0]["sha256_before"] == sha(old)
    backup = host.journal_dir / "runs" / m["run_id"] / m["files"][0]["backup"]
    assert backup.read_bytes() == old and backup.stat().st_mode & 0o777 == 0o600
    assert not [p for p in host.app.iterdir() if ".wsguard-" in p.name]


def test_compare_and_swap_refuses_a_file_changed_since_its_facts(host: Host) -> None:
    out = host.apply(b"X=1\n", expect=b"something else\n")
    assert out["error"]["kind"] == "conflict" and "changed on the host since its facts were read" in out["error"][
        "message"]
    assert host.env.read_bytes() == b"A=1\nWS_RATE_LIMIT_ENABLED=true\n"
    assert host.manifests() == []  # nothing happened: no run recorded


def test_write_goes_through_a_symlink_inside_the_tree_and_keeps_the_link(host: Host) -> None:
    real = host.app / "config" / "real.env"
    real.parent.mkdir()
    real.write_bytes(host.env.read_bytes())
    host.env.unlink()
    host.env.symlink_to("config/real.env")
    facts = host.facts()["files"][0]
    assert facts["is_symlink"] and facts["resolved"] == str(real)
    assert host.apply(b"B=2\n")["error"] is None
    assert host.env.is_symlink() and real.read_bytes() == b"B=2\n"


def test_symlink_out_of_the_tree_is_refused_before_reading(host: Host, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"TOP-SECRET\n")
    host.env.unlink()
    host.env.symlink_to(secret)
    f = host.facts()["files"][0]
    assert f["refused"] and "content" not in f and f"is a symlink to {secret}" in f["error"]
    out = host.apply(b"B=2\n", expect=b"TOP-SECRET\n")
    assert out["error"]["kind"] == "boundary" and "TOP-SECRET" not in json.dumps(out)
    assert secret.read_bytes() == b"TOP-SECRET\n" and host.manifests() == []


def test_the_lock_serialises_runs(host: Host) -> None:
    j = host.journal()
    fd = os.open(host.journal_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(agent.Failed, match="another wsguard run holds the host lock"):
            agent.op_apply({"op": "apply", "run_id": "r2", "task": "t", "lock_timeout": 0.3, "files": []}, j)
    finally:
        os.close(fd)
        j.close()


def test_failed_validation_restores_the_old_bytes(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    old = host.env.read_bytes()
    monkeypatch.setattr(agent, "nginx_test", lambda: (False, "nginx: [emerg] test"))
    out = host.apply(b"B=2\n", file={"validate": "nginx"})
    assert out["error"]["kind"] == "validate" and "the old file is restored" in out["error"]["message"]
    assert host.env.read_bytes() == old
    [m] = host.manifests()
    assert m["status"] == "failed" and m["restored"]


def test_a_failed_handler_stays_pending_for_the_next_run(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def flaky(spec: dict[str, Any], journal: Any) -> dict[str, Any]:
        calls.append(spec["name"])
        if len(calls) <= 2:  # the run's own call, and its re-run once the old file is back
            raise agent.Failed("handler", "not today")
        return {}

    monkeypatch.setitem(agent.HANDLERS, "flaky", flaky)
    out = host.apply(b"B=2\n", handlers=[{"name": "flaky"}])
    assert out["error"]["kind"] == "handler"
    pending = json.loads((host.journal_dir / "pending.json").read_text())
    assert "flaky" in pending and host.env.read_bytes() == b"A=1\nWS_RATE_LIMIT_ENABLED=true\n"
    out = host.apply(b"C=3\n", handlers=[{"name": "flaky"}], run_id="20261204T000001Z-bbbbbb")
    assert out["error"] is None and json.loads((host.journal_dir / "pending.json").read_text()) == {}


def test_extended_attributes_go_with_the_new_file(host: Host) -> None:
    os.setxattr(host.env, "user.wsguard-test", b"kept")
    assert host.apply(b"B=2\n")["error"] is None
    assert os.getxattr(host.env, "user.wsguard-test") == b"kept"


def test_journal_another_user_can_write_is_refused(host: Host) -> None:
    host.journal().close()
    host.journal_dir.chmod(0o777)
    with pytest.raises(agent.Failed, match="mode 0777") as e:
        agent.Journal.open(create=False)
    assert e.value.kind == "journal_untrusted" and "chown -R root:root" in e.value.message


def test_oversized_and_non_regular_files_are_refused(host: Host) -> None:
    host.env.write_bytes(b"X=" + b"y" * 5000 + b"\n")
    f = host.facts()["files"][0]
    assert f["refused"] and "over the 4096-byte limit" in f["error"] and "content" not in f
    host.env.unlink()
    os.mkfifo(host.env)
    f = host.facts()["files"][0]
    assert f["refused"] and "is a FIFO" in f["error"]
