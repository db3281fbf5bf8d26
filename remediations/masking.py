"""Secrets never leave the host in clear: values of secret-looking keys are masked everywhere."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "PASS", "CREDENTIAL", "PRIVATE", "DSN",
                "DATABASE_URL", "AUTH", "COOKIE", "SESSION", "SIGNATURE", "CERT")
MASK = "***"
# token=..., key=..., secret=... in URLs and log lines.
_QUERY = re.compile(r"(?i)\b((?:access_|api_|auth_)?(?:token|key|secret|password|sig|signature)=)[^&\s\"']+")


def is_secret_key(key: str) -> bool:
    k = key.upper()
    return any(word in k for word in SECRET_WORDS)


class Masker:
    """Replaces every known secret value (and token-like query parameters) with ***."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        # Very short values would mask ordinary words; they are not secrets worth the name.
        self._values |= {v for v in values if v and len(v) >= 4}

    def add_env(self, env: Mapping[str, str | None]) -> None:
        self.add(v for k, v in env.items() if v and is_secret_key(k))

    def __call__(self, text: str) -> str:
        for v in sorted(self._values, key=len, reverse=True):
            text = text.replace(v, MASK)
        return _QUERY.sub(lambda m: m.group(1) + MASK, text)

    def deep(self, obj: object) -> object:
        """Mask every string inside a JSON-like structure."""
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, dict):
            return {k: self.deep(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.deep(v) for v in obj]
        return obj
