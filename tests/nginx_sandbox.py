"""`nginx -t` on third-party configs without touching this machine: a sandbox for differential tests.

Why a sandbox: `nginx -t` run as root on a config it has never seen creates and opens every log file
the config names, creates its pid file and its temp directories (chowned to the config's `user`),
binds and listens on its listen sockets (unix sockets included), and resolves its upstream host
names. On configs from other people's repositories that would write all over the real filesystem
(/var/log, /run, /srv, /home...) and open real ports. So nothing runs on the real system:

* One worker process is started with `unshare --mount --net --propagation private`. It checks that
  its mount and network namespaces really differ from the test's before it mounts or sets anything.
  Mounts made inside are invisible outside (private propagation) and vanish when the worker exits.
* The worker mounts a tmpfs on an empty temp directory and builds one chroot per slot on it. A
  chroot holds nothing of the real filesystem but read-only bind mounts of /usr/lib* and
  /usr/sbin/nginx (checked read-only in /proc/self/mountinfo). Each nginx runs chrooted, so every
  path a config names (/etc/nginx/..., /var/log/..., /srv/..., /home/...) lands on the tmpfs, and a
  write to a bind mount fails (EROFS). The files the worker itself writes for a job (the config,
  stubs, certificates) go through `_inside`, which keeps them under the slot's root.
* The network namespace has only its own loopback: listen sockets never reach the host's ports, and
  with `ip_nonlocal_bind` (set in that namespace only) a `listen 10.1.2.3:80` binds as it would on
  the config's own host. Name lookups read only the job's /etc/hosts (nsswitch `hosts: files`), which
  maps the config's upstream names to 127.0.0.1.

Root is needed only for the namespaces, the mounts and chroot; `unavailable()` says why not when a
test must skip.
"""

from __future__ import annotations

import json
import os
import posixpath
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NGINX = "/usr/sbin/nginx"
PREFIX = "/etc/nginx/"  # -p and the conf prefix: relative paths in configs resolve here
# The build's compiled-in paths (nginx -V: temp paths, pid, logs) must have their parents.
BASE_DIRS = ["etc/nginx", "var/log/nginx", "var/lib/nginx", "var/cache/nginx", "run", "tmp", "dev",
             "var/lock", "var/www", "usr/share/nginx"]


def unavailable() -> str | None:
    """Why the sandbox cannot run here, or None."""
    if sys.platform != "linux":
        return "the nginx sandbox needs Linux namespaces"
    if os.geteuid() != 0:
        return "the nginx sandbox needs root (mount and network namespaces, chroot)"
    if not os.access(NGINX, os.X_OK):
        return f"{NGINX} is not installed"
    for tool in ("unshare", "mount", "chroot", "ip"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    return None


@dataclass
class Job:
    """One nginx -t run: files to lay out (absolute paths in the chroot), then `nginx -t -c conf`."""

    conf: str
    files: dict[str, bytes]
    dirs: list[str] = field(default_factory=list)  # parents of paths the config names
    hosts: list[str] = field(default_factory=list)  # names for /etc/hosts -> 127.0.0.1
    users: list[str] = field(default_factory=list)  # `user` names for /etc/passwd and /etc/group


@dataclass
class Result:
    ok: bool
    stderr: str


class Sandbox:
    """The worker process; `run` sends it jobs and returns their results in order."""

    def __init__(self, slots: int = 4) -> None:
        why = unavailable()
        if why:
            raise RuntimeError(why)
        self._mnt = tempfile.mkdtemp(prefix="wsguard-nginx-sandbox-")
        me = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("mnt", "net")}
        self._proc = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "--",
             sys.executable, "-I", __file__, self._mnt, me["mnt"], me["net"], str(slots)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        assert self._proc.stdout is not None
        ready = self._proc.stdout.readline()
        if ready.strip() != "ready":
            err = self._proc.stderr.read() if self._proc.stderr else ""
            self.close()
            raise RuntimeError(f"nginx sandbox did not start: {ready!r} {err}")
        self._lock = threading.Lock()

    def run(self, jobs: Iterable[Job]) -> list[Result]:
        jobs = list(jobs)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with self._lock:
            def feed() -> None:
                assert self._proc.stdin is not None
                for i, job in enumerate(jobs):
                    self._proc.stdin.write(json.dumps(_encode(i, job)) + "\n")
                self._proc.stdin.flush()

            writer = threading.Thread(target=feed, daemon=True)  # the pipes are small: write while reading
            writer.start()
            results: dict[int, Result] = {}
            while len(results) < len(jobs):
                line = self._proc.stdout.readline()
                if not line:
                    raise RuntimeError("the nginx sandbox worker died")
                msg = json.loads(line)
                results[msg["id"]] = Result(msg["rc"] == 0, msg["stderr"])
            writer.join()
        return [results[i] for i in range(len(jobs))]

    def close(self) -> None:
        if self._proc.poll() is None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()  # the worker exits on end of input; its namespaces and tmpfs go with it
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        os.rmdir(self._mnt)  # the tmpfs was mounted in the worker's namespace only: this is still empty


def _encode(i: int, job: Job) -> dict[str, object]:
    return {"id": i, "conf": job.conf, "dirs": job.dirs, "hosts": job.hosts, "users": job.users,
            "files": {p: c.decode("latin-1") for p, c in job.files.items()}}


# --- the worker: runs inside the namespaces ------------------------------------------------------

def _mountinfo() -> list[list[str]]:
    return [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def _mount_of(path: str) -> list[str] | None:
    found = [m for m in _mountinfo() if m[4] == path]
    return found[-1] if found else None


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def _ro_bind(src: str, dst: str) -> None:
    _sh("mount", "--bind", src, dst)
    _sh("mount", "-o", "remount,bind,ro", dst)  # `bind`: this mount only, never the filesystem below
    m = _mount_of(dst)
    if m is None or "ro" not in m[5].split(","):
        raise RuntimeError(f"{dst} is not a read-only bind mount")


def _inside(root: str, path: str) -> str:
    """`path` (as the config names it) under `root`, never outside it."""
    full = root + posixpath.normpath("/" + path)
    real = os.path.realpath(os.path.dirname(full))
    if real != root and not real.startswith(root + "/"):
        raise ValueError(f"{path} leaves the sandbox")
    return full


class _Slot:
    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root)
        for top in ("lib", "lib32", "lib64", "libx32"):  # merged /usr: the loader lives behind these links
            if os.path.islink("/" + top):
                os.symlink(os.readlink("/" + top), f"{root}/{top}")
            elif os.path.isdir("/" + top):
                os.makedirs(f"{root}/{top}")
                _ro_bind("/" + top, f"{root}/{top}")
        for lib in ("usr/lib", "usr/lib64", "usr/lib32", "usr/libx32"):
            if os.path.isdir("/" + lib) and not os.path.islink("/" + lib):
                os.makedirs(f"{root}/{lib}")
                _ro_bind("/" + lib, f"{root}/{lib}")
        os.makedirs(f"{root}/usr/sbin")
        Path(f"{root}{NGINX}").touch()
        _ro_bind(NGINX, f"{root}{NGINX}")
        self.mounts = {m[4] for m in _mountinfo() if m[4].startswith(root + "/")}

    def wipe(self) -> None:
        """Remove everything the last job made, keeping the read-only mounts (never entered)."""
        def clean(d: str) -> None:
            for e in os.scandir(d):
                if e.path in self.mounts or os.path.ismount(e.path):
                    continue
                if e.is_dir(follow_symlinks=False):
                    if any(m.startswith(e.path + "/") for m in self.mounts):
                        clean(e.path)
                    else:
                        shutil.rmtree(e.path)
                elif e.path.removeprefix(self.root) not in ("/lib", "/lib32", "/lib64", "/libx32"):
                    os.unlink(e.path)
        clean(self.root)

    def run(self, job: Job) -> tuple[int, str]:
        self.wipe()
        root = self.root
        for d in BASE_DIRS:
            os.makedirs(f"{root}/{d}", exist_ok=True)
        users = [u for u in job.users if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", u)]
        etc = {
            "passwd": Path("/etc/passwd").read_text() + "".join(f"{u}:x:64000:64000::/nonexistent:/bin/false\n"
                                                                for u in users),
            "group": Path("/etc/group").read_text() + "".join(f"{u}:x:64000:\n" for u in users),
            "hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost\n" + "".join(f"127.0.0.1 {h}\n"
                                                                                     for h in job.hosts),
            "nsswitch.conf": "passwd: files\ngroup: files\nhosts: files\n",
        }
        for name, text in etc.items():
            Path(f"{root}/etc/{name}").write_text(text)
        if os.path.exists("/etc/ld.so.cache"):
            shutil.copyfile("/etc/ld.so.cache", f"{root}/etc/ld.so.cache")
        for path, content in job.files.items():
            try:
                full = _inside(root, path)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                Path(full).write_bytes(content)
            except (OSError, ValueError):
                pass  # e.g. a path under a read-only bind: nginx then reports the missing file
        for d in job.dirs:
            try:
                os.makedirs(_inside(root, d), exist_ok=True)
            except (OSError, ValueError):
                pass
        try:
            r = subprocess.run(["chroot", root, NGINX, "-t", "-q", "-p", PREFIX, "-c", job.conf, "-e", "stderr"],
                               capture_output=True, text=True, errors="replace", timeout=60, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return 124, "nginx -t timed out"
        return r.returncode, r.stderr


def _decode(msg: dict[str, Any]) -> tuple[int, Job]:
    files = {p: c.encode("latin-1") for p, c in msg["files"].items()}
    return msg["id"], Job(msg["conf"], files, msg["dirs"], msg["hosts"], msg["users"])


def _worker(mnt: str, parent_mnt: str, parent_net: str, slots: int) -> None:
    if os.readlink("/proc/self/ns/mnt") == parent_mnt or os.readlink("/proc/self/ns/net") == parent_net:
        raise SystemExit("not in private namespaces: refusing to mount or change anything")
    if os.listdir(mnt):
        raise SystemExit(f"{mnt} is not empty")
    _sh("mount", "-t", "tmpfs", "-o", "size=1g,mode=700", "wsguard-nginx-sandbox", mnt)
    m = _mount_of(mnt)
    if m is None or m[m.index("-") + 1] != "tmpfs":
        raise SystemExit(f"{mnt} is not a tmpfs")
    if any(tag.startswith("shared:") for tag in m[6 : m.index("-")]):  # would propagate to other namespaces
        raise SystemExit(f"{mnt} is a shared mount")
    _sh("ip", "link", "set", "lo", "up")
    for proto in ("ipv4", "ipv6"):  # this namespace's loopback only (checked above)
        knob = Path(f"/proc/sys/net/{proto}/ip_nonlocal_bind")
        if knob.exists():
            knob.write_text("1\n")
    pool = [_Slot(f"{mnt}/slot{i}") for i in range(slots)]
    jobs: queue.Queue[tuple[int, Job] | None] = queue.Queue()
    out_lock = threading.Lock()

    def serve(slot: _Slot) -> None:
        while (item := jobs.get()) is not None:
            i, job = item
            try:
                rc, err = slot.run(job)
            except Exception as e:  # reported as this job's failure
                rc, err = 125, f"sandbox error: {e!r}"
            with out_lock:
                sys.stdout.write(json.dumps({"id": i, "rc": rc, "stderr": err}) + "\n")
                sys.stdout.flush()

    threads = [threading.Thread(target=serve, args=(s,)) for s in pool]
    for t in threads:
        t.start()
    print("ready", flush=True)
    for line in sys.stdin:
        jobs.put(_decode(json.loads(line)))
    for _ in threads:
        jobs.put(None)
    for t in threads:
        t.join()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
