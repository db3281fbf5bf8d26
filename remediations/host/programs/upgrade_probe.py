# Runs ON the host (python3, stdlib only, 3.7+), sent on stdin by the ws-upgrade control.
# It reads the client token from the app's .env ITSELF, so the token never travels and is never
# in argv; it prints one JSON line that holds the HTTP status, never the token.
import base64
import hashlib
import json
import os
import socket
import ssl
import stat
import sys
from urllib.parse import parse_qsl, urlencode, urlsplit

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


MAX_ENV_BYTES = 16 * 1024 * 1024


def read_env(path, expect_sha256):
    """The .env at the path the agent resolved inside its boundary, and only if it still holds the bytes
    the agent read there (sha256): a link or another file swapped in since is never read as root."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError(f"{path} is not a regular file")
        chunks, total = [], 0
        while total <= MAX_ENV_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if hashlib.sha256(data).hexdigest() != expect_sha256:
        raise ValueError(f"{path} changed since wsguard read it: run again")
    return data.decode("utf-8", "replace")


def env_value(path, key, expect_sha256):
    """The value of KEY's last assignment, read as docker-compose's env_file reader would."""
    value = None
    for line in read_env(path, expect_sha256).splitlines():
        s = line.strip()
        if s.startswith("export "):
            s = s[7:].lstrip()
        if not s or s.startswith("#") or "=" not in s:
            continue
        k, v = s.split("=", 1)
        if k.strip().strip("'") != key:
            continue
        v = v.strip()
        if v[:1] in ("'", '"'):
            end = v.find(v[0], 1)
            v = v[1:end] if end > 0 else v[1:]
        else:
            v = v.split(" #", 1)[0].strip()
        value = v
    return value


def main():
    p = json.loads(sys.stdin.read())
    out = {"status": None, "accept_ok": False, "token_key": p.get("token_key"), "token_found": None,
           "target": None, "error": None}
    try:
        token = None
        if p.get("token_key"):
            token = env_value(p["env_file"], p["token_key"], p["env_sha256"])
            out["token_found"] = token is not None
            if token is None:
                out["error"] = "{} is not set in {}".format(p["token_key"], p["env_file"])
                return out
        u = urlsplit(p["url"])
        secure = u.scheme == "wss"
        port = u.port or (443 if secure else 80)
        query = [(k, v) for k, v in parse_qsl(u.query, True) if k != p["token_param"]]
        extra = ""
        if token is not None and p.get("token_header"):  # out of the request line nginx logs
            name = p["token_header"]
            extra = "{}: {}\r\n".format(name, "Bearer " + token if name.lower() == "authorization" else token)
        elif token is not None:
            query.append((p["token_param"], token))
        target = (u.path or "/") + ("?" + urlencode(query) if query else "")
        out["target"] = "{}:{} {}".format(p["address"], port, u.path or "/")
        sock = socket.create_connection((p["address"], port), timeout=p["timeout"])
        if secure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False  # 127.0.0.1 never matches the certificate's name
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=u.hostname)
        key = base64.b64encode(os.urandom(16)).decode()
        host = u.netloc.rpartition("@")[2]
        request = (f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n")
        sock.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            more = sock.recv(4096)
            if not more:
                break
            data += more
        head = data.partition(b"\r\n\r\n")[0].decode("latin-1")
        lines = head.split("\r\n")
        try:
            out["status"] = int(lines[0].split()[1])
        except (IndexError, ValueError):
            out["error"] = f"not an HTTP response: {lines[0][:80]!r}"
            return out
        headers = dict((n.strip().lower(), v.strip()) for n, _, v in (h.partition(":") for h in lines[1:]))
        digest = hashlib.sha1((key + GUID).encode()).digest()  # noqa: S324 - RFC 6455's accept hash
        accept = base64.b64encode(digest).decode()
        out["accept_ok"] = headers.get("sec-websocket-accept") == accept
        if out["status"] == 101:
            try:  # a polite close frame (masked, code 1000), then the socket
                sock.sendall(b"\x88\x82" + b"\x00\x00\x00\x00" + b"\x03\xe8")
            except OSError:
                pass
        sock.close()
    except Exception as exc:  # reported, never raised: the controller reads the JSON
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


if __name__ == "__main__":  # `python3 -c` exec's this source in __main__
    sys.stdout.write(json.dumps(main()))
