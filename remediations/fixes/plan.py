"""The plan of a remediation: the file changes and handlers a pure planner computes from a host's facts.

A remediation is a facts request plus a pure plan (remediations/fixes/*); run/transaction.py applies it.
"""

from __future__ import annotations

import base64
import difflib
from dataclasses import dataclass, field
from typing import Any, Protocol

from remediations.model.facts import Facts
from remediations.model.masking import Masker


@dataclass
class FileChange:
    path: str
    old: bytes
    new: bytes
    expect_sha256: str
    validate: str | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None

    @property
    def changed(self) -> bool:
        return self.old != self.new or self.mode is not None

    def diff(self, masker: Masker) -> str:
        old = self.old.decode("utf-8", "replace").splitlines(keepends=True)
        new = self.new.decode("utf-8", "replace").splitlines(keepends=True)
        text = "".join(difflib.unified_diff(old, new, f"a{self.path}", f"b{self.path}"))
        return masker(text)

    def request(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "expect_sha256": self.expect_sha256,
                             "content": base64.b64encode(self.new).decode(), "validate": self.validate}
        for k in ("mode", "uid", "gid"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


@dataclass
class Plan:
    files: list[FileChange] = field(default_factory=list)
    handlers: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    rollback_of: str | None = None
    # Why a remediation with nothing pending has nothing to do here: a no-op must say what it judged by.
    nothing_to_do: list[str] = field(default_factory=list)

    @property
    def changed_files(self) -> list[FileChange]:
        return [f for f in self.files if f.changed]

    @property
    def pending(self) -> bool:
        return bool(self.changed_files or self.handlers)


class Remediation(Protocol):
    task: str

    def facts_request(self) -> dict[str, Any]: ...

    def plan(self, facts: Facts, masker: Masker) -> Plan: ...


