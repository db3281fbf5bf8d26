"""wsguard's remote agent: runs ON the host, as root, in ONE process per round trip.

The controller sends this file's source and a JSON request on stdin (never a value in argv) and runs
it under `timeout`, so a dropped link can neither interleave its steps nor leave the lock held.
Stdlib only, Python 3.7+ (whatever python3 the host has). Two operations:

- facts: read files, container, nginx and journal state; changes nothing, not even an mtime.
- apply: lock, journal the old bytes, atomic writes through symlinks keeping mode/owner, validate
  (nginx -t) and restore on failure, verify sha256, run handlers and confirm their effect, prune.
"""

import base64
import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

JOURNAL = "/var/lib/wsguard"
RUNS = JOURNAL + "/runs"
RELOAD_RECORD = JOURNAL + "/nginx-reload.json"
PENDING = JOURNAL + "/pending.json"
TMP_MARK = ".wsguard-"


class Failed(Exception):
    def __init__(self, kind, message, evidence=None):
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message
        self.evidence = evidence or {}


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def sh(argv, timeout=60, stdin=None):
    try:
        p = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    except FileNotFoundError:
        return 127, b"", ("%s: command not found" % argv[0]).encode()
    except subprocess.TimeoutExpired:
        return 124, b"", ("%s: timed out after %ss" % (argv[0], timeout)).encode()
    return p.returncode, p.stdout, p.stderr


def text(b):
    return b.decode("utf-8", "replace")


# -- facts -------------------------------------------------------------------------------------

def file_facts(path):
    info = {"path": path, "exists": False}
    try:
        info["is_symlink"] = os.path.islink(path)
        if info["is_symlink"]:
            info["link_target"] = os.readlink(path)
        resolved = os.path.realpath(path)
        info["resolved"] = resolved
        st = os.stat(resolved)
        with open(resolved, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return info
    except OSError as exc:
        info["error"] = "%s: %s" % (path, exc.strerror)
        return info
    info.update(exists=True, content=base64.b64encode(data).decode(), sha256=sha256(data),
                mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid, mtime=st.st_mtime)
    return info


def compose_command():
    """`docker compose` (v2 plugin) where present, else docker-compose v1."""
    code, _, _ = sh(["docker", "compose", "version"], timeout=15)
    if code == 0:
        return ["docker", "compose"]
    # v1 is a Python program that takes ~0.3 s of CPU to print its version: being on PATH is enough.
    return ["docker-compose"] if shutil.which("docker-compose") else None


def container_facts(name):
    code, out, err = sh(["docker", "inspect", name], timeout=30)
    if code != 0:
        return {"exists": False, "error": text(err).strip()[-500:]}
    c = json.loads(out.decode())[0]
    state = c.get("State", {})
    return {"exists": True, "id": c.get("Id"), "env": c.get("Config", {}).get("Env") or [],
            "running": bool(state.get("Running")), "status": state.get("Status"),
            "started_at": state.get("StartedAt"), "restart_count": c.get("RestartCount", 0),
            "image": c.get("Config", {}).get("Image"), "pid": state.get("Pid") or None}


def listening_ports(pid):
    """TCP ports a process (or its children) listens on: the sign that a service accepts connections."""
    # The process and its direct children (workers), from the kernel's own list: no scan of /proc.
    pids = {pid, *children(pid)}
    inodes = set()
    for p in pids:
        try:
            for fd in os.listdir("/proc/%d/fd" % p):
                link = os.readlink("/proc/%d/fd/%s" % (p, fd))
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table)) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return sorted(ports)


def btime():
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime"):
                return int(line.split()[1])
    return 0


def nginx_processes():
    """(master pid, worker pids, oldest worker start as epoch seconds)."""
    master = None
    try:
        with open("/run/nginx.pid") as f:
            master = int(f.read().split()[0])
        os.kill(master, 0)
    except (OSError, ValueError, IndexError):
        master = None
    workers, starts = [], []
    if master is None:
        return None, [], None
    hz, boot = os.sysconf("SC_CLK_TCK"), btime()
    for pid in children(master):  # the kernel's list of the master's children: no scan of /proc
        try:
            with open("/proc/%d/stat" % pid) as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.index("(") + 1:stat.rindex(")")] == "nginx":
            workers.append(pid)
            starts.append(boot + int(stat[stat.rindex(")") + 2:].split()[19]) / hz)
    return master, sorted(workers), (min(starts) if starts else None)


def children(pid):
    found = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                found += [int(c) for c in f.read().split()]
    except (OSError, ValueError):
        pass
    return found


def nginx_facts():
    code, _, err = sh(["nginx", "-v"], timeout=15)
    if code == 127:
        return {"installed": False}
    t_code, t_out, t_err = sh(["nginx", "-T"], timeout=30)
    master, workers, started = nginx_processes()
    files = [line.split(":", 1)[1].strip().rstrip(":") for line in text(t_out).splitlines()
             if line.startswith("# configuration file ")]
    mtimes = []
    for p in files:
        try:
            mtimes.append(os.stat(p).st_mtime)
        except OSError:
            pass
    return {"installed": True, "version": text(err).strip(), "test_ok": t_code == 0,
            "test_error": text(t_err).strip()[-2000:] if t_code else "", "dump": text(t_out),
            "dump_sha256": sha256(t_out) if t_code == 0 else None, "master": master, "workers": workers,
            "workers_started": started, "config_mtime": max(mtimes) if mtimes else None,
            "reload_record": read_json(RELOAD_RECORD)}


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


LATEST_CHANGED = "latest-changed"


def rollback_candidate(m):
    """A run that changed files on disk and was not failed-and-restored (what `rollback` undoes by default)."""
    return bool(m.get("files")) and not (m.get("status") == "failed" and m.get("restored"))


def run_order(name, m):
    # Run ids sort by the controller's clock to the second; within one second, the host's start time.
    return (name.split("-", 1)[0], str(m.get("time") or ""), m.get("started") or 0.0, name)


def journal_runs(detail):
    """Manifests, newest first; the old bytes of the run `detail` (an id, or LATEST_CHANGED) come too."""
    runs = []
    try:
        names = os.listdir(RUNS)
    except OSError:
        return []
    found = []
    for name in names:
        m = read_json(os.path.join(RUNS, name, "manifest.json"))
        if m is not None:
            found.append((run_order(name, m), name, m))
    found.sort(key=lambda x: x[0], reverse=True)
    if detail == LATEST_CHANGED:
        detail = next((name for _, name, m in found if rollback_candidate(m)), None)
    for _, name, m in found:
        if detail == name:
            for f in m.get("files", []):
                try:
                    with open(os.path.join(RUNS, name, f["backup"]), "rb") as b:
                        f["old_content"] = base64.b64encode(b.read()).decode()
                except OSError:
                    f["old_content"] = None
        runs.append(m)
    return runs


def op_facts(req):
    out = {"files": [file_facts(p) for p in req.get("files", [])], "euid": os.geteuid()}
    if req.get("container"):
        out["container"] = container_facts(req["container"])
    if req.get("nginx"):
        out["nginx"] = nginx_facts()
    if req.get("journal") is not None:
        runs = journal_runs(req["journal"].get("detail"))
        out["runs"] = runs
        out["pending"] = read_json(PENDING, {})
        detailed = next((m for m in runs if any("old_content" in f for f in m.get("files", []))), None)
        out["detail"] = detailed.get("run_id") if detailed else None
        if detailed and req["journal"].get("detail_files"):
            # The files that run changed, as they are now: rollback compares and plans in this same round trip.
            asked = set(req.get("files", []))
            out["files"] = [file_facts(p) for p in req.get("files", [])] + [
                file_facts(f["path"]) for f in detailed.get("files", []) if f["path"] not in asked]
    if req.get("diagnose"):
        out["diagnose"] = diagnose_facts(req["diagnose"])
    return out


# -- diagnose facts (additive: only when a facts request carries "diagnose") -------------------

MAX_TAIL_LINES = 5000
MAX_TAIL_BYTES = 2 * 1024 * 1024


def tail_file(path, n):
    """The last n lines of a file, reading at most MAX_TAIL_BYTES from its end."""
    info = {"path": path, "lines": [], "error": None}
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - MAX_TAIL_BYTES))
            data = f.read()
        info["size"] = size
    except OSError as exc:
        info["error"] = f"{path}: {exc.strerror}"
        return info
    lines = text(data).splitlines()
    if size > MAX_TAIL_BYTES and lines:
        lines = lines[1:]  # the first line read is cut
    info["lines"] = lines[-n:] if n else []
    return info


def diagnose_facts(spec):
    """Bounded log tails for `invoke diagnose`: the backend container's log and nginx's error log."""
    n = max(0, min(int(spec.get("tail", 500)), MAX_TAIL_LINES))
    # nginx's error log uses local time: the offset lets the controller place its lines in time.
    out = {"now": time.time(), "utc_offset": time.localtime().tm_gmtoff}  # type: dict
    container = spec.get("container")
    if container:
        code, data, err = sh(["sh", "-c", 'exec docker logs --tail="$1" "$2" 2>&1', "sh", str(n), container],
                             timeout=int(spec.get("timeout", 20)))
        data = data[-MAX_TAIL_BYTES:]
        out["backend_logs"] = {"container": container, "lines": text(data).splitlines()[-n:] if n else [],
                               "error": None if code == 0 else (text(data + err).strip()[-500:] or f"exit {code}")}
    if spec.get("error_log"):
        out["nginx_error_log"] = tail_file(spec["error_log"], max(0, min(int(spec.get("error_log_tail", n)),
                                                                        MAX_TAIL_LINES)))
    return out


# -- apply -------------------------------------------------------------------------------------

def ensure_journal():
    for d in (JOURNAL, RUNS):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            pass
        os.chmod(d, 0o700)


def take_lock(run_id, wait):
    fd = os.open(JOURNAL + "/lock", os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.time() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if time.time() >= deadline:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
                raise Failed("locked", "another wsguard run holds the host lock (run %s); waited %ss"
                             % (holder, wait)) from None
            time.sleep(0.1)
    os.ftruncate(fd, 0)
    os.pwrite(fd, run_id.encode(), 0)
    return fd


def write_json_atomic(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.rename(tmp, path)


def fsync_dir(d):
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sweep(directory, name, run_id):
    """Temporary files of killed runs (`.NAME.wsguard-RUNID`) go; ours are never left."""
    prefix = "." + name + TMP_MARK
    try:
        for entry in os.listdir(directory):
            if entry.startswith(prefix) and not entry.endswith(run_id):
                os.unlink(os.path.join(directory, entry))
    except OSError:
        pass


def atomic_write(resolved, data, mode, uid, gid, run_id, pause=0.0):
    directory, name = os.path.split(resolved)
    tmp = os.path.join(directory, "." + name + TMP_MARK + run_id)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        if pause:
            time.sleep(pause)  # test-only: widens the window between upload and rename
        os.rename(tmp, resolved)
        fsync_dir(directory)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        advice = WRITE_ADVICE.get(exc.errno or 0, "fix the cause, then run again")
        raise Failed("write", "cannot write %s: %s; the old file is intact: %s"
                     % (resolved, exc.strerror, advice)) from None


WRITE_ADVICE = {
    errno.ENOSPC: "free space on the file system that holds it, then run again",
    errno.EDQUOT: "raise the quota or free space there, then run again",
    errno.EROFS: "the file system is mounted read-only: remount it read-write, then run again",
    errno.EACCES: "wsguard needs root there (ansible_become or ansible_user: root), or the directory is protected",
    errno.EPERM: "the file or its directory is protected (immutable attribute?): lift that, then run again",
}


def nginx_test():
    code, _, err = sh(["nginx", "-t"], timeout=30)
    return code == 0, text(err).strip()


def record_reload(workers):
    code, out, _ = sh(["nginx", "-T"], timeout=30)
    write_json_atomic(RELOAD_RECORD, {"dump_sha256": sha256(out) if code == 0 else None, "workers": workers,
                                      "time": time.time()})


def handler_nginx_reload(spec):
    ok, message = nginx_test()
    if not ok:
        raise Failed("validate", "nginx -t failed; not reloading: " + message)
    _, before, _ = nginx_processes()
    method = spec.get("method", "auto")
    if method == "auto":
        method = "systemd" if os.path.exists("/run/systemd/system") else "signal"
    argv = {"systemd": ["systemctl", "reload", "nginx"], "service": ["service", "nginx", "reload"],
            "signal": ["nginx", "-s", "reload"]}[method]
    code, out, err = sh(argv, timeout=30)
    if code != 0:
        raise Failed("reload", "nginx reload (%s) failed: %s" % (method, text(err or out).strip()))
    deadline = time.time() + spec.get("confirm_timeout", 10)
    while True:
        master, workers, _ = nginx_processes()
        if workers and not set(workers) & set(before):
            record_reload(workers)
            return {"method": method, "workers_before": before, "workers_after": workers}
        if time.time() > deadline:
            raise Failed("reload", "nginx did not start new workers after the reload (%s)" % method,
                         {"workers_before": before, "workers_now": workers})
        time.sleep(0.05)


def handler_compose_recreate(spec):
    app_dir, service, container = spec["app_dir"], spec["service"], spec["container"]
    cmd = compose_command()
    if cmd is None:
        raise Failed("handler", "neither `docker compose` nor `docker-compose` works on this host")
    old = container_facts(container)
    # Recreate, not restart: a restart keeps the container and its OLD environment.
    began = time.time()
    code, out, err = sh(["sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", app_dir] + cmd
                        + ["up", "-d", "--no-deps", service], timeout=spec.get("timeout", 120))
    evidence = {"command": " ".join(cmd + ["up", "-d", "--no-deps", service]), "old_id": old.get("id"),
                "up_seconds": round(time.time() - began, 3)}
    if code != 0:
        evidence["logs"] = logs_tail(container)
        raise Failed("handler", "%s failed: %s" % (evidence["command"], text(err or out).strip()[-800:]), evidence)
    expect = spec.get("expect_env") or {}
    started = time.time()
    deadline = started + spec.get("confirm_timeout", 15)

    def failed(now, what, **extra):
        evidence.update(new_id=now.get("id"), status=now.get("status"), logs=logs_tail(container), **extra)
        raise Failed("handler", "container %s %s after `up -d`" % (container, what), evidence)

    # `docker inspect` is a process and an API call: ask it only until the new container runs, then
    # watch that process through /proc, which costs nothing (this matters on a fleet of small hosts).
    while True:
        now = container_facts(container)
        if now.get("running") and now.get("pid"):
            break
        if time.time() > deadline or now.get("status") in ("exited", "dead"):
            failed(now, "is not running (%s)" % now.get("status"))
        time.sleep(0.25)
    env = dict(e.split("=", 1) for e in now.get("env", []) if "=" in e)
    wrong = {k: env.get(k) for k, v in expect.items() if env.get(k) != v}
    if wrong:
        failed(now, "does not hold the new environment", env_wrong=wrong)
    evidence.update(new_id=now["id"], running=True, env_checked=sorted(expect))
    # Running is not serving: wait (bounded) until it accepts connections, as a proxy would need. A
    # backend that dies at start must show as failed: it never listens, and its process goes away.
    pid, ready = now["pid"], time.time() + spec.get("ready_timeout", 10)
    ports = listening_ports(pid)
    while not ports and time.time() < ready and os.path.exists("/proc/%d" % pid):
        time.sleep(0.05)
        ports = listening_ports(pid)
    if not ports:
        time.sleep(spec.get("settle", 1.0) if os.path.exists("/proc/%d" % pid) else 0)
        now = container_facts(container)
        if not now.get("running") or now.get("id") != evidence["new_id"]:
            failed(now, "is not running (%s)" % now.get("status"), running=False)
    evidence["listening"] = ports or "no listening socket seen"
    return evidence


def logs_tail(container, n=20):
    code, out, err = sh(["docker", "logs", "--tail", str(n), container], timeout=20)
    return text(out + err).splitlines()[-n:]


HANDLERS = {"nginx_reload": handler_nginx_reload, "compose_recreate": handler_compose_recreate}


def prune(keep, current):
    """Keep the newest `keep` runs (in journal order); the current run is never removed."""
    try:
        names = os.listdir(RUNS)
    except OSError:
        return []
    names.sort(key=lambda n: run_order(n, read_json(os.path.join(RUNS, n, "manifest.json"), {}) or {}))
    old = [n for n in names if n != current][: max(0, len(names) - keep)]
    for n in old:
        shutil.rmtree(os.path.join(RUNS, n), ignore_errors=True)
    return old


def unchanged(path, old):
    try:
        with open(path, "rb") as fh:
            return fh.read() == old
    except OSError:
        return False


def restore_service(manifest, specs):
    """After the old files went back: re-run the handlers that acted on the new ones, so the service
    runs what is on disk again (a backend recreated from a bad .env is recreated from the old one)."""
    acted = set(manifest["handlers_run"]) | set(manifest["handlers_pending"])
    outcome = []
    for spec in specs:
        if spec["name"] not in acted:
            continue
        spec = dict(spec, expect_env={})  # the restored file's values, whatever they are
        try:
            HANDLERS[spec["name"]](spec)
            outcome.append({"name": spec["name"], "ok": True})
        except Failed as exc:
            outcome.append({"name": spec["name"], "ok": False, "error": exc.message,
                            "logs": exc.evidence.get("logs")})
    return outcome


def restore(done, run_id):
    for f in reversed(done):
        atomic_write(f["resolved"], f["old"], f["mode"], f["uid"], f["gid"], run_id)


def op_apply(req):
    run_id = req["run_id"]
    ensure_journal()
    lock = take_lock(run_id, req.get("lock_timeout", 30))
    run_dir = os.path.join(RUNS, run_id)
    manifest = {"run_id": run_id, "task": req["task"], "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "controller": req.get("controller", {}), "files": [], "handlers": [], "handlers_run": [],
                "handlers_pending": [], "status": "applying", "rollback_of": req.get("rollback_of"),
                "started": time.time()}
    result = {"run_id": run_id, "files": [], "handlers": [], "error": None, "pruned": []}
    done = []
    pending = read_json(PENDING, {})
    try:
        os.mkdir(run_dir, 0o700)
        for i, f in enumerate(req.get("files", [])):
            path = f["path"]
            resolved = os.path.realpath(path)
            directory, name = os.path.split(resolved)
            sweep(directory, name, run_id)
            try:
                st = os.stat(resolved)
                with open(resolved, "rb") as fh:
                    old = fh.read()
            except OSError as exc:
                raise Failed("read", "cannot read %s: %s" % (path, exc.strerror)) from None
            new = base64.b64decode(f["content"])
            if old == new and "mode" not in f:
                continue  # a concurrent run already wrote exactly these bytes: nothing to do
            if sha256(old) != f["expect_sha256"]:
                raise Failed("conflict", "%s changed on the host since its facts were read (sha256 %s, expected %s)"
                             % (path, sha256(old)[:12], f["expect_sha256"][:12]))
            backup = "file-%d.orig" % i
            with open(os.path.join(run_dir, backup), "wb") as b:
                b.write(old)
                b.flush()
                os.fsync(b.fileno())
            os.chmod(os.path.join(run_dir, backup), 0o600)
            mode = f.get("mode", st.st_mode & 0o7777)
            uid, gid = f.get("uid", st.st_uid), f.get("gid", st.st_gid)
            entry = {"path": path, "resolved": resolved, "sha256_before": sha256(old), "sha256_after": sha256(new),
                     "mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid, "mode_after": mode,
                     "uid_after": uid, "gid_after": gid, "backup": backup, "validate": f.get("validate")}
            manifest["files"].append(entry)
            write_json_atomic(os.path.join(run_dir, "manifest.json"), manifest)
            try:
                atomic_write(resolved, new, mode, uid, gid, run_id, req.get("pause_before_rename", 0))
            except Failed:
                if unchanged(resolved, old):
                    manifest["files"].pop()  # never written: the journal must not claim a change
                else:  # renamed, then failed (fsync of the directory): the old bytes go back below
                    done.append({"resolved": resolved, "old": old, "mode": st.st_mode & 0o7777, "uid": st.st_uid,
                                 "gid": st.st_gid})
                raise
            done.append({"resolved": resolved, "old": old, "mode": st.st_mode & 0o7777, "uid": st.st_uid,
                         "gid": st.st_gid})
        if any(f.get("validate") == "nginx" for f in req.get("files", [])):
            ok, message = nginx_test()
            if not ok:
                restore(done, run_id)
                ok_after, _ = nginx_test()
                done = []
                manifest["restored"] = True
                raise Failed("validate", "nginx -t failed after the edit; the old file is restored%s:\n%s"
                             % ("" if ok_after else " (but nginx -t still fails: the cause is elsewhere)", message),
                             {"nginx_t": message, "restored": True, "nginx_t_after_restore": ok_after})
        for entry in manifest["files"]:
            with open(entry["resolved"], "rb") as fh:
                landed = sha256(fh.read())
            if landed != entry["sha256_after"]:
                raise Failed("verify", "%s holds sha256 %s after the write, expected %s"
                             % (entry["path"], landed[:12], entry["sha256_after"][:12]))
            result["files"].append({"path": entry["path"], "resolved": entry["resolved"],
                                    "sha256_before": entry["sha256_before"], "sha256_after": landed})
        manifest["handler_specs"] = req.get("handlers", [])
        for spec in req.get("handlers", []):
            name = spec["name"]
            began = time.time()
            try:
                evidence = HANDLERS[name](spec)
                evidence["seconds"] = round(time.time() - began, 3)
            except Failed as exc:
                pending[name] = spec
                manifest["handlers_pending"].append(name)
                result["handlers"].append({"name": name, "ok": False, "error": exc.message, "evidence": exc.evidence})
                raise
            pending.pop(name, None)
            manifest["handlers_run"].append(name)
            result["handlers"].append({"name": name, "ok": True, "evidence": evidence})
        manifest["status"] = "ok"
    except Failed as exc:
        manifest["status"] = "failed"
        manifest["error"] = {"kind": exc.kind, "message": exc.message}
        result["error"] = {"kind": exc.kind, "message": exc.message, "evidence": exc.evidence}
        if done:  # a failure before validation: the old bytes go back
            try:
                restore(done, run_id)
                manifest["restored"] = True
            except Failed:
                pass
            else:
                again = restore_service(manifest, req.get("handlers", []))
                if again:
                    manifest["service_restored"] = again
                    result["error"]["evidence"]["service_restored"] = again
                    for h in again:
                        if h["ok"]:
                            pending.pop(h["name"], None)
                    ok = all(h["ok"] for h in again)
                    result["error"]["message"] += (
                        "; the old files were restored and %s re-run: %s"
                        % (", ".join(h["name"] for h in again),
                           "the service runs the old configuration again" if ok else
                           "it failed too (%s)" % "; ".join(h.get("error") or "" for h in again if not h["ok"])))
    finally:
        if os.path.isdir(run_dir):
            if not manifest["files"] and manifest["status"] == "failed" and not manifest["handlers_pending"]:
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing happened: no run to record
            else:
                write_json_atomic(os.path.join(run_dir, "manifest.json"), manifest)
        write_json_atomic(PENDING, pending)
        result["pruned"] = prune(max(1, int(req.get("keep", 20))), run_id)
        os.close(lock)
    return result


def main():
    # argv: [-c, agent source length, request length]; the source was read off stdin already.
    req = json.loads(sys.stdin.buffer.read(int(sys.argv[2])).decode())
    op = {"facts": op_facts, "apply": op_apply}[req["op"]]
    try:
        out = op(req)
    except Failed as exc:
        out = {"error": {"kind": exc.kind, "message": exc.message, "evidence": exc.evidence}}
    except OSError as exc:
        out = {"error": {"kind": "os", "message": "%s: %s" % (getattr(exc, "filename", "") or "", exc.strerror or exc)}}
    sys.stdout.write(json.dumps(out))


main()
