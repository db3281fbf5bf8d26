"""Errors the user is meant to read: each says what went wrong and what to do next."""

from __future__ import annotations


class RemediationError(Exception):
    """Base of every error wsguard reports to a person (never shown as a traceback)."""

    kind = "error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

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


class LabError(RemediationError):
    kind = "lab"
