"""The lab's error: a lab host or image that cannot be made, with what to do about it."""

from __future__ import annotations

from remediations.model.errors import RemediationError


class LabError(RemediationError):
    kind = "lab"
