"""Errors the user is meant to read: each says what went wrong and what to do next."""

from __future__ import annotations

from typing import Any


class RemediationError(Exception):
    """Base of every error wsguard reports to a person (never shown as a traceback).

    One constructor shape for all of them: the message first, then by keyword what to do next (`hint`),
    a more precise `kind` than the class's own (as the result's error.kind), and `evidence` for the report.
    """

    kind = "error"

    def __init__(self, message: str, *, hint: str | None = None, kind: str | None = None,
                 evidence: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if kind:
            self.kind = kind
        self.evidence: dict[str, Any] = evidence or {}

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class InventoryError(RemediationError):
    kind = "inventory"


class EnvFileError(RemediationError):
    kind = "envfile"


class NginxConfError(RemediationError):
    kind = "nginxconf"


class LocationNotFound(NginxConfError):
    kind = "location_not_found"


class TransportError(RemediationError):
    kind = "transport"


class HostKeyError(TransportError):
    kind = "host_key"


class UnreachableError(TransportError):
    kind = "unreachable"


class RemoteTimeout(TransportError):
    kind = "timeout"


class OutputLimitError(TransportError):
    """A host sent more output than the controller keeps in memory."""

    kind = "output_limit"


class JumpHostError(TransportError):
    """The user's ssh config routes a host through a jump host whose key wsguard would not check."""

    kind = "jump_host"


class AgentError(RemediationError):
    """The agent reported a failure on the host, or a fact it returned cannot be used (kind as named there)."""

    kind = "agent"


class JournalError(RemediationError):
    """A journal question the host cannot answer (an unknown run, missing old bytes)."""

    kind = "journal"
