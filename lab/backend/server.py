"""Lab stand-in for the chat backend: a WebSocket that streams chunks, behind a per-connection rate limiter.

Run by the container's Debian python3 with python3-websockets 10.4 (legacy asyncio API), stdlib otherwise.
Settings come from the environment; see the README of the lab for the chat message format.
"""

import asyncio
import collections
import datetime
import hmac
import http
import itertools
import json
import os
import signal
import sys
import time
import urllib.parse

import websockets

MAX_CHUNKS = 10000
WINDOW = 60.0  # seconds of the sliding rate-limit window
FALSE = {"false", "0", "no", "off"}


def log(msg):
    # One write + flush per whole line: `docker logs --tail` miscounts partial lines.
    ts = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    sys.stdout.write(f"{ts} {msg}\n")
    sys.stdout.flush()


def env_bool(*names, default=True):
    # The first variable that is set wins (WS_RATE_LIMIT_ENABLED before RATE_LIMIT_ENABLED).
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip() != "":
            return value.strip().lower() not in FALSE
    return default


HOST = os.environ.get("WS_HOST", "127.0.0.1")
PORT = int(os.environ.get("WS_PORT", "8000"))
TOKEN = os.environ.get("WS_AUTH_TOKEN", "")
RATE_LIMIT = env_bool("WS_RATE_LIMIT_ENABLED", "RATE_LIMIT_ENABLED")
MAX_PER_MINUTE = int(os.environ.get("WS_MAX_MESSAGES_PER_MINUTE", "20"))
PING_INTERVAL = float(os.environ.get("WS_PING_INTERVAL", "0"))

conn_ids = itertools.count(1)
stopping = False


def text_response(status, body):
    return status, [("Content-Type", "text/plain"), ("Connection", "close")], body.encode()


async def process_request(path, request_headers):
    """Answer /health and refuse bad tokens over plain HTTP, before any upgrade."""
    url = urllib.parse.urlsplit(path)
    if url.path == "/health":
        return text_response(http.HTTPStatus.OK, "ok\n")
    if stopping:
        return text_response(http.HTTPStatus.SERVICE_UNAVAILABLE, "shutting down\n")
    if url.path != "/ws/chat":
        return text_response(http.HTTPStatus.NOT_FOUND, "not found\n")
    # A client may send the token as `Authorization: Bearer` (kept out of nginx's access log) or as ?token=.
    bearer = request_headers.get("Authorization", "")
    token = bearer[7:] if bearer.startswith("Bearer ") else urllib.parse.parse_qs(url.query).get("token", [""])[0]
    if not TOKEN or not hmac.compare_digest(token.encode(), TOKEN.encode()):
        # Never log the token itself, only whether one was given.
        log(f"refused /ws/chat: {'wrong' if token else 'missing'} token (403)")
        return text_response(http.HTTPStatus.FORBIDDEN, "forbidden\n")
    return None


def parse_chat(text):
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return text, 5
    try:
        chunks = int(obj.get("chunks", 5))
    except (TypeError, ValueError):
        chunks = 5
    return str(obj.get("message", "")), max(0, min(chunks, MAX_CHUNKS))


async def handler(ws, path):
    cid = next(conn_ids)
    addr = ws.remote_address or ("?", "?")
    peer = f"{addr[0]}:{addr[1]}"
    log(f"connect conn={cid} peer={peer}")
    sent = collections.deque()  # send times of chunks, for the sliding window
    try:
        async for text in ws:
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            message, n = parse_chat(text)
            for i in range(1, n + 1):
                now = time.monotonic()
                while sent and now - sent[0] >= WINDOW:
                    sent.popleft()
                if RATE_LIMIT and len(sent) >= MAX_PER_MINUTE:
                    log(f"Rate limit exceeded conn={cid} peer={peer}"
                        f" count={len(sent)} limit={MAX_PER_MINUTE}")
                    await ws.close(1008, "Rate limit exceeded")
                    return
                await ws.send(json.dumps({"type": "chunk", "index": i, "text": f"{message} [{i}/{n}]"}))
                sent.append(now)
            await ws.send(json.dumps({"type": "done", "chunks": n}))
    except websockets.ConnectionClosed:
        pass
    finally:
        await ws.wait_closed()
        log(f"disconnect conn={cid} peer={peer} code={ws.close_code} reason={ws.close_reason!r}")


async def main():
    global stopping
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda s=sig: stop.done() or stop.set_result(s))

    ping = PING_INTERVAL if PING_INTERVAL > 0 else None
    async with websockets.serve(
        handler,
        HOST,
        PORT,
        process_request=process_request,
        ping_interval=ping,
        ping_timeout=max(PING_INTERVAL, 20) if ping else None,
        close_timeout=1,  # a client that never answers our close must not hold up shutdown
    ) as server:
        log(f"listening on {HOST}:{PORT}")
        sig = await stop
        log(f"{signal.Signals(sig).name} received: shutting down")
        stopping = True  # new upgrades get 503 while we close the open ones
        open_ws = [ws for ws in server.websockets if ws.open]
        if open_ws:
            await asyncio.wait([asyncio.create_task(ws.close(1001, "server shutting down"))
                                for ws in open_ws])
    log("stopped")


if __name__ == "__main__":
    # Effective settings only: the token's value and other secrets are never logged.
    log(
        f"settings: host={HOST} port={PORT} auth_token={'set' if TOKEN else 'unset'}"
        f" rate_limit_enabled={RATE_LIMIT} max_messages_per_minute={MAX_PER_MINUTE}"
        f" ping_interval={PING_INTERVAL or 'off'} websockets={websockets.__version__}"
    )
    if os.environ.get("WS_FAIL_ON_START", "").strip().lower() not in ("", *FALSE):
        log("WS_FAIL_ON_START set: exiting")
        sys.exit(1)
    asyncio.run(main())
    sys.exit(0)
