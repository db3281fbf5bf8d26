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
# nginx arguments that only name variables ("$http_authorization", "$scheme://$host") hold no secret.
_NGINX_VARIABLES = re.compile(r"(?:\$\{?\w+\}?|[^\w\s$])*")
# "Bearer abc", "Basic dXNlcjpw": the credential is also masked on its own (a log line may show it bare).
_AUTH_SCHEME = re.compile(r"(?i)(?:bearer|basic|token)\s+(\S+)")
_NGINX_SETTING = re.compile(r"(?i)on|off|none|any|all|always|builtin(?::\d+)?|[\d.]+[kmgsdhwy]?|\w+=[\d.]+\w?")
_PASS_ON = re.compile(r"(?i)_pass(?=_|$)")
_MAP_KEYWORDS = frozenset({"default", "hostnames", "volatile", "include"})
_NGINX_LINE = re.compile(r"^[ \t]*#?[ \t]*(\S+)[ \t]+(\S+?)(?:[ \t]+(.*?))?[ \t]*;[ \t]*\r?$", re.M)


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

    def add_env_text(self, text: str) -> None:
        """The secret values of a .env file: as python-dotenv reads them and as the file spells them."""
        from remediations.envfile import written_values

        self.add(v for key, value, spelling in written_values(text) if is_secret_key(key)
                 for v in (value, spelling) if v)

    def add_nginx(self, text: str) -> None:
        """The secret arguments of an nginx config (see nginx_secrets)."""
        self.add(nginx_secrets(text))

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


def nginx_secrets(text: str) -> list[str]:
    """Secret-looking arguments of nginx directives, as nginx reads them and as the text spells them.

    A directive whose name looks secret (auth_basic_user_file, secure_link_secret) gives all its
    arguments; one whose first argument does (proxy_set_header Authorization, set $api_key,
    fastcgi_param DB_PASSWORD, env API_TOKEN=x) the arguments after it; a `map $http_x_api_key ...`
    block its keys. Commented-out directives count too: a diff shows comments.
    """
    from remediations.errors import NginxConfError
    from remediations.nginxconf import _lex

    try:
        tokens = list(_lex(text))
    except NginxConfError:  # not nginx syntax nginx would take: fall back to one directive per line
        return _nginx_secrets_by_line(text)
    out: list[str] = []
    words: list[tuple[str, str]] = []  # (value, spelling) of the statement being read
    secret_map: list[bool] = []  # per open block: is it a map keyed by a secret?
    for t in tokens:
        if t.kind == "word":
            words.append((t.value, text[t.start : t.end]))
            continue
        if t.kind == "#":
            if t.value.rstrip().endswith(";"):  # a directive commented out (prose is left alone)
                out += nginx_secrets(t.value[1:])
            continue
        if words:
            in_map = bool(secret_map and secret_map[-1])
            out += _statement_secrets(words, in_map)
        if t.kind == "{":
            secret_map.append(bool(words) and words[0][0] == "map" and len(words) > 1
                              and is_secret_key(words[1][0]))
        elif t.kind == "}" and secret_map:
            secret_map.pop()
        words = []
    if words:
        out += _statement_secrets(words, False)
    return out


def _statement_secrets(words: list[tuple[str, str]], in_secret_map: bool) -> list[str]:
    name, args = words[0][0], words[1:]
    first = args[0][0] if args else ""
    key, eq, inline = first.partition("=")
    if in_secret_map and name not in _MAP_KEYWORDS:
        secret = words  # `"the-api-key" client_one;`: the key is the secret
    elif _secret_directive(name):
        # keywords, numbers and sizes (ssl_session_cache none, smtp_auth plain) are settings, not secrets
        secret = [a for a in args if not _NGINX_SETTING.fullmatch(a[0])]
    elif eq and is_secret_key(key):
        secret = [(inline, inline)]  # env API_TOKEN=value
    elif is_secret_key(first):
        secret = args[1:2]  # the header's or variable's value; not a trailing flag such as `always`
    else:
        secret = []
    out = []
    for value, spelling in secret:
        if _NGINX_VARIABLES.fullmatch(value):
            continue
        out += [value, spelling, spelling.strip("\"'")]
        out += _AUTH_SCHEME.findall(value)
    return out


def _secret_directive(name: str) -> bool:
    # proxy_pass, fastcgi_pass, proxy_pass_header: "pass" there means "hand on", not a password.
    return is_secret_key(_PASS_ON.sub("", name))


def _nginx_secrets_by_line(text: str) -> list[str]:
    out = []
    for m in _NGINX_LINE.finditer(text):
        name, first, rest = m.group(1), m.group(2), m.group(3) or ""
        values = [first + " " + rest] if _secret_directive(name) else [rest] if is_secret_key(first) else []
        for v in values:
            v = v.strip().strip("\"'")
            if not _NGINX_VARIABLES.fullmatch(v):
                out += [v, *_AUTH_SCHEME.findall(v)]
    return out
