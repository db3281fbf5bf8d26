"""The project's one WebSocket client (RFC 6455), stdlib only and synchronous.

Written by hand because the probe, the verify upgrade control and the fleet health gate need what
libraries hide: client pings stay OFF (an idle connection must look idle to nginx), server pings are
recorded, and a TCP drop without a close frame is reported as 1006 rather than smoothed over.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import ssl
import struct
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

from remediations.model.errors import RemediationError

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_WAIT = 2.0  # how long close() waits for the peer's close frame


class WSError(RemediationError):
    """The connection could not be opened (refused, timeout, handshake answered with status != 101)."""

    kind = "websocket"

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


@dataclass
class Closed:
    code: int
    reason: str
    clean: bool  # False: the TCP connection ended without a close frame (reported as 1006)


class ConnectionClosed(Exception):
    def __init__(self, closed: Closed) -> None:
        super().__init__(f"connection closed: {closed.code} {closed.reason!r} clean={closed.clean}")
        self.closed = closed


def ping_intervals(pings: list[float]) -> list[float]:
    """Seconds between consecutive server pings."""
    return [b - a for a, b in zip(pings, pings[1:], strict=False)]


def mask_url(url: str, token_param: str = "token") -> str:  # noqa: S107 (a parameter name)
    """The URL with the token's value replaced by ***, for messages and repr."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, "***" if k == token_param else v) for k, v in urllib.parse.parse_qsl(parts.query, True)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query, safe="*")))


def _with_token(url: str, token: str | None, token_param: str) -> str:
    if token is None:
        return url
    parts = urllib.parse.urlsplit(url)
    query = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, True) if k != token_param]
    query.append((token_param, token))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def token_header(name: str, token: str) -> tuple[str, str]:
    """The header that carries a token: `Authorization: Bearer TOKEN`, or the token itself in another header."""
    return name, (f"Bearer {token}" if name.lower() == "authorization" else token)


def connect(
    url: str,
    *,
    token: str | None = None,
    token_param: str = "token",  # noqa: S107 (a parameter name)
    token_in_header: str | None = None,
    timeout: float = 10.0,
    headers: Mapping[str, str] | None = None,
    insecure: bool = False,
) -> WSConnection:
    """Open a ws:// or wss:// connection. The token goes in the query string, or in the header
    `token_in_header` names (kept out of nginx's access log, which records the request line); never in messages."""
    if token is not None and token_in_header:
        headers = dict(headers or {}, **dict([token_header(token_in_header, token)]))
        token = None
    full = _with_token(url, token, token_param)
    shown = mask_url(full, token_param)
    parts = urllib.parse.urlsplit(full)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise WSError(f"not a ws:// or wss:// URL: {shown}")
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        sock: socket.socket = socket.create_connection((parts.hostname, port), timeout=timeout)
    except TimeoutError as e:
        raise WSError(f"{shown}: connect timed out after {timeout:g}s", hint="is the port filtered?") from e
    except OSError as e:
        raise WSError(f"{shown}: cannot connect: {e.strerror or e}", hint="is the service listening?") from e
    try:
        if parts.scheme == "wss":
            ctx = ssl.create_default_context()
            if insecure:  # lab certificates only
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=parts.hostname)
        return WSConnection._handshake(sock, parts, shown, timeout, headers or {})
    except BaseException:
        sock.close()
        raise


class WSConnection:
    """An open client connection; create it with connect()."""

    def __init__(self, sock: socket.socket, shown_url: str, status: int, response_headers: dict[str, str],
                 leftover: bytes, timeout: float) -> None:
        self._sock = sock
        self._url = shown_url  # already masked
        self._buf = bytearray(leftover)  # bytes read past the handshake belong to the first frames
        self._timeout = timeout
        self._fragments: list[bytes] = []
        self._frag_op = OP_TEXT
        self.status = status
        self.response_headers = response_headers
        self.pings: list[float] = []
        self.closed: Closed | None = None
        self._close_sent = False

    def __repr__(self) -> str:
        return f"<WSConnection {self._url} closed={self.closed}>"

    @classmethod
    def _handshake(cls, sock: socket.socket, parts: urllib.parse.SplitResult, shown: str, timeout: float,
                   headers: Mapping[str, str]) -> WSConnection:
        key = base64.b64encode(os.urandom(16)).decode()
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {parts.netloc.rpartition('@')[2]}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        deadline = time.monotonic() + timeout
        data = b""
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            while b"\r\n\r\n" not in data:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                more = sock.recv(4096)
                if not more:
                    raise WSError(f"{shown}: connection closed during the handshake")
                data += more
                if len(data) > 65536:
                    raise WSError(f"{shown}: handshake response headers too large")
        except TimeoutError as e:
            raise WSError(f"{shown}: no handshake response within {timeout:g}s") from e
        except OSError as e:
            raise WSError(f"{shown}: handshake failed: {e.strerror or e}") from e
        head, _, leftover = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(status_line.split()[1])
        except (IndexError, ValueError):
            raise WSError(f"{shown}: not an HTTP response: {status_line[:80]!r}") from None
        resp: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            resp[name.strip().lower()] = value.strip()
        if status != 101:
            hint = "check the token" if status in (401, 403) else None
            raise WSError(f"{shown}: handshake refused with HTTP {status}", hint=hint, status=status)
        digest = hashlib.sha1((key + GUID).encode(), usedforsecurity=False).digest()
        expected = base64.b64encode(digest).decode()
        if resp.get("sec-websocket-accept") != expected:
            raise WSError(f"{shown}: bad Sec-WebSocket-Accept in the handshake", status=status)
        return cls(sock, shown, status, resp, leftover, timeout)

    # -- frames ---------------------------------------------------------------

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        if self.closed is not None:
            raise ConnectionClosed(self.closed)
        n = len(payload)
        header = bytes([0x80 | opcode])
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 1 << 16:
            header += struct.pack("!BH", 0x80 | 126, n)
        else:
            header += struct.pack("!BQ", 0x80 | 127, n)
        mask = os.urandom(4)  # client frames must be masked (RFC 6455 5.3)
        try:
            self._sock.settimeout(self._timeout)
            self._sock.sendall(header + mask + _xor(payload, mask))
        except OSError as e:
            self._drop()
            raise ConnectionClosed(self.closed or Closed(1006, "", False)) from e

    def _parse_frame(self) -> tuple[bool, int, bytes] | None:
        """(fin, opcode, payload) of the first complete frame in the buffer, or None if incomplete."""
        buf = self._buf
        if len(buf) < 2:
            return None
        fin, opcode, masked, n = buf[0] & 0x80, buf[0] & 0x0F, buf[1] & 0x80, buf[1] & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            (n,) = struct.unpack_from("!H", buf, 2)
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            (n,) = struct.unpack_from("!Q", buf, 2)
            pos = 10
        mask = b""
        if masked:  # servers must not mask, but unmasking costs nothing
            mask, pos = bytes(buf[pos:pos + 4]), pos + 4
        if len(buf) < pos + n:
            return None
        payload = bytes(buf[pos:pos + n])
        del buf[:pos + n]
        return bool(fin), opcode, _xor(payload, mask) if mask else payload

    def _fill(self, deadline: float | None) -> bool:
        """Read more bytes into the buffer; False on timeout. A dropped connection becomes 1006."""
        if deadline is None:
            self._sock.settimeout(None)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._sock.settimeout(remaining)
        try:
            data = self._sock.recv(65536)
        except TimeoutError:  # partial frames stay in the buffer for the next call
            return False
        except OSError:
            data = b""
        if not data:
            self._drop()
            raise ConnectionClosed(self.closed or Closed(1006, "", False))
        self._buf += data
        return True

    def _drop(self) -> None:
        if self.closed is None:
            self.closed = Closed(1006, "", False)
        self._sock.close()

    def _on_close_frame(self, payload: bytes) -> Closed:
        code, reason = 1005, ""
        if len(payload) >= 2:
            (code,) = struct.unpack("!H", payload[:2])
            reason = payload[2:].decode("utf-8", "replace")
        if not self._close_sent:  # echo code and reason: the peer logs what it got
            self._close_sent = True
            try:
                self._send_frame(OP_CLOSE, payload)
            except ConnectionClosed:
                pass
        self.closed = Closed(code, reason, True)
        self._sock.close()
        return self.closed

    # -- public API -----------------------------------------------------------

    def recv(self, timeout: float | None = None) -> str | None:
        """Next text (or decoded binary) message; None on timeout; raises ConnectionClosed once closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.closed is not None:
                raise ConnectionClosed(self.closed)
            frame = self._parse_frame()
            if frame is None:
                if not self._fill(deadline):
                    return None
                continue
            fin, opcode, payload = frame
            if opcode == OP_PING:
                self.pings.append(time.monotonic())
                self._send_frame(OP_PONG, payload)
            elif opcode == OP_PONG:
                pass  # we never ping; an unsolicited pong needs no answer
            elif opcode == OP_CLOSE:
                raise ConnectionClosed(self._on_close_frame(payload))
            elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                if opcode != OP_CONT:
                    self._frag_op, self._fragments = opcode, []
                self._fragments.append(payload)
                if fin:
                    data, self._fragments = b"".join(self._fragments), []
                    return data.decode("utf-8", "replace")

    def send_text(self, s: str) -> None:
        self._send_frame(OP_TEXT, s.encode())

    def send_json(self, obj: object) -> None:
        self.send_text(json.dumps(obj))

    def chat(self, message: str, chunks: int, timeout: float = 10.0) -> tuple[int, Closed | None]:
        """Lab protocol: ask for `chunks` chunks; (chunks received, Closed if the server closed first).

        Raises WSError if neither "done" nor a close arrives within `timeout`.
        """
        try:
            self.send_json({"message": message, "chunks": chunks})
        except ConnectionClosed as e:  # already closed (e.g. rate-limited earlier): nothing received
            return 0, e.closed
        deadline = time.monotonic() + timeout
        received = 0
        while True:
            try:
                text = self.recv(max(deadline - time.monotonic(), 0.0))
            except ConnectionClosed as e:
                return received, e.closed
            if text is None:
                raise WSError(f"{self._url}: no reply to the chat message within {timeout:g}s "
                              f"({received} chunks received)")
            try:
                msg = json.loads(text)
            except ValueError:
                continue
            kind = msg.get("type") if isinstance(msg, dict) else None
            if kind == "chunk":
                received += 1
            elif kind == "done":
                return received, None

    def idle(self, seconds: float) -> Closed | None:
        """Read for `seconds` without sending (pings answered); Closed if the peer closed or dropped."""
        deadline = time.monotonic() + seconds
        try:
            while time.monotonic() < deadline:
                self.recv(max(deadline - time.monotonic(), 0.0))
        except ConnectionClosed as e:
            return e.closed
        return None

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Closing handshake: send our close, wait briefly for the peer's, then close the socket."""
        if self.closed is not None:
            return
        try:
            self._close_sent = True
            self._send_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:123])
            deadline = time.monotonic() + CLOSE_WAIT
            while self.closed is None and self.recv(max(deadline - time.monotonic(), 0.0)) is not None:
                pass  # discard messages still in flight
        except ConnectionClosed:
            pass
        if self.closed is None:  # the peer never answered: we still closed cleanly from our side
            self.closed = Closed(code, reason, True)
        self._sock.close()

    def __enter__(self) -> WSConnection:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _xor(data: bytes, mask: bytes) -> bytes:
    # Whole-buffer XOR through int arithmetic: fast enough without numpy.
    n = len(data)
    if n == 0:
        return data
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
