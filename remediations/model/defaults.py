"""The desired state when the inventory says nothing: the flags, the nginx directives and the app's layout
(taken from the incident this tool was built for). Every default wsguard applies lives here."""

from __future__ import annotations

# .env flags fix-rate-limit sets: the rate limiter stops counting each streamed chunk as a message.
DEFAULT_ENV_FLAGS: dict[str, str] = {"WS_RATE_LIMIT_ENABLED": "false", "WS_MAX_MESSAGES_PER_MINUTE": "1000"}
# Directives fix-nginx ensures in the WebSocket location (README: "The nginx directives fix-nginx ensures").
DEFAULT_NGINX_DIRECTIVES: list[str] = [
    "proxy_http_version 1.1",
    "proxy_set_header Upgrade $http_upgrade",
    'proxy_set_header Connection "upgrade"',
    "proxy_read_timeout 86400s",
    "proxy_send_timeout 86400s",
    "proxy_buffering off",
    "proxy_socket_keepalive on",
    "keepalive_timeout 86400s",
]
# The app's layout on a host.
DEFAULT_APP_DIR = "/opt/wealth-coach-ai"
DEFAULT_COMPOSE_SERVICE = "backend"
DEFAULT_BACKEND_CONTAINER = "wealth_coach_backend"
DEFAULT_WS_LOCATION = "/ws/"
# Journal runs kept per host, and the largest managed files read into memory.
DEFAULT_JOURNAL_KEEP = 20
_MIB = 1024 * 1024
DEFAULT_MAX_ENV_BYTES = _MIB
DEFAULT_MAX_SITE_BYTES = 16 * _MIB
