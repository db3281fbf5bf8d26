"""`invoke monitor`: the runbook's three terminals in one.

Follows, on every selected host at once, the backend's log (filtered to WebSocket, disconnect,
rate-limit, restart and error lines) and nginx's error log; each line is prefixed with its host and
source and coloured by kind (rich on a terminal, plain otherwise). Secret values and token query
parameters are masked.

No remote process outlives the monitor: each follower runs as `sh -c 'echo $$; exec timeout ...'`,
so it is bounded by `timeout` even if the controller vanishes, and its pid (the first line it prints)
is killed explicitly when the monitor stops (--duration reached, Ctrl-C), after its channel is closed.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from remediations.checks.diagnose import ERROR_LOG
from remediations.checks.logpatterns import (
    RE_CODE,
    RE_DISCONNECT,
    RE_ERROR,
    RE_HEARTBEAT,
    RE_NGINX_ERROR,
    RE_NGINX_WARN,
    RE_RATE,
    RE_SHUTDOWN,
    RE_START,
    RE_UPSTREAM_TIMEOUT,
    RE_WEBSOCKET,
)
from remediations.edit.envfile import read_values
from remediations.host.agent_call import call_agent
from remediations.host.transport import Transport
from remediations.model.errors import RemediationError
from remediations.model.facts import Facts
from remediations.model.inventory import Host
from remediations.model.masking import Masker

FOREVER_CHUNK = 3600  # without --duration, followers are bounded to an hour each and restarted
# The follower scripts: values travel as positional arguments, never inside the shell text.
_BACKEND = 'echo "$$"; exec timeout -k 2 "$1" docker logs -f --tail="$2" "$3" 2>&1'
_NGINX = 'echo "$$"; exec timeout -k 2 "$1" tail -n "$2" -F "$3" 2>&1'
_KILL = 'for p; do grep -q timeout "/proc/$p/cmdline" 2>/dev/null && kill -TERM "$p"; done; true'


def kind_of(source: str, line: str, show_all: bool = False) -> str | None:
    """The kind of one log line, or None when the filter drops it (pure)."""
    if source == "nginx":
        if RE_UPSTREAM_TIMEOUT.search(line):
            return "timeout"
        if RE_NGINX_ERROR.search(line):
            return "error"
        if RE_NGINX_WARN.search(line):
            return "warn"
        return "info"
    if source == "monitor":
        return "monitor"
    if RE_RATE.search(line):
        return "rate_limit"
    if RE_HEARTBEAT.search(line):
        return "heartbeat"
    if RE_SHUTDOWN.search(line) or RE_START.search(line):
        return "restart"
    if RE_ERROR.search(line):
        return "error"
    if RE_DISCONNECT.search(line) or RE_CODE.search(line):
        return "disconnect"
    if RE_WEBSOCKET.search(line):
        return "websocket"
    return "info" if show_all else None


@dataclass
class Line:
    host: str
    source: str  # backend | nginx | monitor
    kind: str
    text: str


def format_line(line: Line, width: int) -> str:
    if not line.host:  # the monitor's own start and stop lines
        return f"-- {line.text}"
    return f"{line.host:<{width}} {line.source:<7} {line.kind:<10} {line.text}"


@dataclass
class _Follower:
    host: Host
    t: Transport
    masker: Masker
    pids: list[int] = field(default_factory=list)
    channels: list[Any] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _plain(text: str, kind: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class Monitor:
    def __init__(self, hosts: list[Host], *, duration: float = 0, lines: int = 0, show_all: bool = False,
                 connect: Callable[[Host], Transport], show: Callable[[str, str], None] | None = None) -> None:
        self.hosts = hosts
        self.duration = duration
        self.lines = lines
        self.show_all = show_all
        self.connect = connect
        # show(text, kind): the caller's printer (output/console.py colours by kind on a terminal).
        self.show = show or _plain
        self.q: queue.Queue[Line | None] = queue.Queue()
        self.stop = threading.Event()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.errors: dict[str, str] = {}
        self.width = max([len(h.name) for h in hosts] + [4])

    # -- output ------------------------------------------------------------------------------

    def emit(self, line: Line) -> None:
        self.show(format_line(line, self.width), line.kind)

    # -- followers ---------------------------------------------------------------------------

    def _prepare(self, host: Host) -> _Follower:
        t = self.connect(host)
        t.connect()
        masker = Masker()
        facts = Facts.parse(call_agent(t, {"op": "facts", "files": [host.ws.env_file],
                                           "container": host.ws.backend_container}))
        env = facts.file(host.ws.env_file)
        if env and env.exists:
            masker.add_env(read_values(env.data.decode("utf-8", "replace")))
        masker.add_env(facts.container_env() or {})
        return _Follower(host, t, masker)

    def _follow(self, f: _Follower, source: str) -> None:
        ws = f.host.ws
        first = True
        while not self.stop.is_set():
            bound = FOREVER_CHUNK if not self.duration else int(self.duration) + 3
            n = str(self.lines if first else 0)
            if source == "backend":
                argv = ["sh", "-c", _BACKEND, "sh", str(bound), n, ws.backend_container]
            else:
                argv = ["sh", "-c", _NGINX, "sh", str(bound), n, ERROR_LOG]
            first = False
            started = time.monotonic()
            try:
                chan = f.t.open_stream(argv)
            except RemediationError as e:
                self.q.put(Line(f.host.name, "monitor", "error", f"{source}: {e.message}"))
                return
            with f.lock:
                f.channels.append(chan)
            self._read(f, source, chan)
            chan.close()
            if not self.stop.is_set() and time.monotonic() - started < 5:
                self.q.put(Line(f.host.name, "monitor", "error", f"{source} follower ended at once; not restarted"))
                return

    def _read(self, f: _Follower, source: str, chan: Any) -> None:
        buf = b""
        got_pid = False
        chan.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data = chan.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            buf += data
            *whole, buf = buf.split(b"\n")
            for raw in whole:
                text = raw.decode("utf-8", "replace").rstrip("\r")
                if not got_pid:
                    got_pid = True
                    if text.strip().isdigit():
                        with f.lock:
                            f.pids.append(int(text.strip()))
                        continue
                kind = kind_of(source, text, self.show_all)
                if kind is not None:
                    self.q.put(Line(f.host.name, source, kind, f.masker(text)))

    def _cleanup(self, f: _Follower) -> None:
        with f.lock:
            for chan in f.channels:
                chan.close()
            pids = list(f.pids)
        try:
            if pids:
                f.t.run(["sh", "-c", _KILL, "sh", *map(str, pids)], timeout=15)
        except RemediationError as e:
            self.errors.setdefault(f.host.name, f"could not stop followers {pids}: {e.message}")
        finally:
            f.t.close()

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> int:
        start = time.monotonic()
        followers: list[_Follower] = []
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(self.hosts)))) as pool:
            futs = {h.name: pool.submit(self._prepare, h) for h in self.hosts}
        for name, fut in futs.items():
            try:
                followers.append(fut.result())
            except RemediationError as e:
                self.errors[name] = e.message
                self.emit(Line(name, "monitor", "error", e.message))
            except Exception as e:  # noqa: BLE001 - one host's failure must not end the others
                self.errors[name] = f"{type(e).__name__}: {e}"
                self.emit(Line(name, "monitor", "error", self.errors[name]))
        threads = [threading.Thread(target=self._follow, args=(f, src), daemon=True)
                   for f in followers for src in ("backend", "nginx")]
        for th in threads:
            th.start()
        if followers:
            names = ", ".join(f.host.name for f in followers)
            until = f"for {self.duration:g}s" if self.duration else "until Ctrl-C"
            self.emit(Line("", "monitor", "monitor", f"monitor: following {names} {until}"))
        interrupted = False
        try:
            deadline = start + self.duration if self.duration else None
            while any(th.is_alive() for th in threads) or not self.q.empty():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                try:
                    item = self.q.get(timeout=0.2 if left is None else min(0.2, left))
                except queue.Empty:
                    continue
                if item is not None:
                    self.counts[(item.host, item.source)] += 1
                    self.emit(item)
        except KeyboardInterrupt:
            interrupted = True
        self.stop.set()
        for th in threads:
            th.join(timeout=3)
        while not self.q.empty():
            item = self.q.get()
            if item is not None and not interrupted:
                self.counts[(item.host, item.source)] += 1
                self.emit(item)
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(followers) or 1))) as pool:
            list(pool.map(self._cleanup, followers))
        took = time.monotonic() - start
        per_host = "; ".join(
            f"{f.host.name} backend {self.counts[(f.host.name, 'backend')]} nginx {self.counts[(f.host.name, 'nginx')]}"
            for f in followers)
        how = "interrupted" if interrupted else "stopped"
        self.emit(Line("", "monitor", "monitor", f"monitor: {how} after {took:.1f}s; lines: {per_host or 'none'}"))
        for name, err in self.errors.items():
            print(f"error: {name}: {err}", file=sys.stderr)
        return 1 if self.errors else 0
