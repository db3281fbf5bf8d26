"""What in a config is a secret: the values a masker must learn from a .env or an nginx config.

The masker (model/masking.py) replaces what it knows; these readers teach it, each with the parser of the
format it reads, so a value is masked as the file spells it (escaped quotes, every line of a PEM key).
"""

from __future__ import annotations

import re

from remediations.edit.envfile import written_values
from remediations.edit.nginxconf import _lex, split_nginx_T
from remediations.model.errors import NginxConfError
from remediations.model.masking import Masker, is_secret_key

# nginx arguments that only name variables ("$http_authorization", "$scheme://$host") hold no secret.
_NGINX_VARIABLES = re.compile(r"(?:\$\{?\w+\}?|[^\w\s$])*")
# "Bearer abc", "Basic dXNlcjpw": the credential is also masked on its own (a log line may show it bare).
_AUTH_SCHEME = re.compile(r"(?i)(?:bearer|basic|token)\s+(\S+)")
_NGINX_SETTING = re.compile(r"(?i)on|off|none|any|all|always|builtin(?::\d+)?|[\d.]+[kmgsdhwy]?|\w+=[\d.]+\w?")
_PASS_ON = re.compile(r"(?i)_pass(?=_|$)")
_MAP_KEYWORDS = frozenset({"default", "hostnames", "volatile", "include"})
_NGINX_LINE = re.compile(r"^[ \t]*#?[ \t]*(\S+)[ \t]+(\S+?)(?:[ \t]+(.*?))?[ \t]*;[ \t]*\r?$", re.M)


def learn_env_text(masker: Masker, text: str) -> None:
    """The secret values of a .env file: as python-dotenv reads them and as the file spells them."""
    masker.add(v for key, value, spelling in written_values(text) if is_secret_key(key)
               for v in (value, spelling) if v)


def learn_nginx(masker: Masker, text: str) -> None:
    """The secret arguments of an nginx config (see nginx_secrets)."""
    masker.add(nginx_secrets(text))


def learn_nginx_secrets(masker: Masker, site: str, dump: str) -> None:
    """The secret arguments of the site and of every file `nginx -T` showed (includes, snippets)."""
    learn_nginx(masker, site)
    for loaded in split_nginx_T(dump).values():
        learn_nginx(masker, loaded)


def nginx_secrets(text: str) -> list[str]:
    """Secret-looking arguments of nginx directives, as nginx reads them and as the text spells them.

    A directive whose name looks secret (auth_basic_user_file, secure_link_secret) gives all its
    arguments; one whose first argument does (proxy_set_header Authorization, set $api_key,
    fastcgi_param DB_PASSWORD, env API_TOKEN=x) the arguments after it; a `map $http_x_api_key ...`
    block its keys. Commented-out directives count too: a diff shows comments.
    """
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
