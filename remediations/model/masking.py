"""Secrets never leave the host in clear: values of secret-looking keys are masked everywhere."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "PASS", "CREDENTIAL", "PRIVATE", "DSN",
                "DATABASE_URL", "AUTH", "COOKIE", "SESSION", "SIGNATURE", "CERT")
MASK = "***"
MIN_LEN = 4  # shorter values would mask ordinary words; they are not secrets worth the name
# token=..., key=..., secret=... in URLs and log lines.
_QUERY = re.compile(r"(?i)\b((?:access_|api_|auth_)?(?:token|key|secret|password|sig|signature)=)[^&\s\"';]+")
# Any query parameter of a URL whose name looks secret (access_token, apikey, X-Amz-Signature, jwt...).
_URL_PARAM = re.compile(r"([?&])([^\s=&#?\"']+)=([^&\s\"'#]+)")
_URL_PARAM_NAMES = frozenset({"sig", "jwt"})
# The userinfo of a URL (wss://user:pass@host/, https://TOKEN@host/): a credential, whole.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#@\"']+@")


def is_secret_key(key: str) -> bool:
    k = key.upper()
    return any(word in k for word in SECRET_WORDS)


class Masker:
    """Replaces every known secret value (and token-like query parameters, URL userinfo) with ***."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        # A multi-line value is shown line by line (diffs split on every line boundary str.splitlines
        # knows), so each of its lines is a secret of its own.
        found = set()
        for v in values:
            if not v:
                continue
            found.add(v)
            found.update(line.strip() for line in v.splitlines())
        self._values |= {v for v in found if len(v.strip()) >= MIN_LEN}

    def add_env(self, env: Mapping[str, str | None]) -> None:
        self.add(v for k, v in env.items() if v and is_secret_key(k))

    def __call__(self, text: str) -> str:
        for v in sorted(self._values, key=len, reverse=True):
            text = text.replace(v, MASK)
        text = _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
        text = _URL_PARAM.sub(_mask_param, text)
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


def _mask_param(m: re.Match[str]) -> str:
    name = m.group(2)
    if is_secret_key(name) or name.lower() in _URL_PARAM_NAMES:
        return f"{m.group(1)}{name}={MASK}"
    return m.group(0)

