"""wsguard's remote agent: runs ON the host, as root, in ONE process per round trip.

The controller sends this file's source and a JSON request on stdin (never a value in argv) and runs
it under `timeout`, so a dropped link can neither interleave its steps nor leave the lock held.
Stdlib only, Python 3.7+ (whatever python3 the host has). Two operations:

- facts: read files, container, nginx and journal state; changes nothing, not even an mtime.
- apply: lock, journal the old bytes of every file, stage every new file, rename them in, validate
  (nginx -t) and restore on failure, verify sha256, run handlers and confirm their effect, prune.

The privilege boundary (docs/ARCHITECTURE.md, "What root opens"): the agent runs as root in directories
that another user may write (an app checkout owned by the app user). So it never lets the kernel follow
a path for it there: every path is walked one component at a time through directory file descriptors,
symlinks are read and resolved by the agent, and a managed file is opened only when its resolved place
lies inside the trees the request allows for it. New files are created exclusively under unpredictable
names and renamed within the same directory fd. The journal is used only when root alone can write it.
"""

import base64
import errno
import fcntl
import hashlib
import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import time

JOURNAL = "/var/lib/wsguard"
RELOAD_RECORD = "nginx-reload.json"
PENDING = "pending.json"
TMP_MARK = ".wsguard-"
O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
MAX_LINKS = 40  # as the kernel's own limit on symlinks in one lookup
MAX_JOURNAL_JSON = 4 * 1024 * 1024
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
RUN_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,79}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
BACKUP = re.compile(r"^file-[0-9]{1,4}\.orig$")
# The trees nginx's configuration may come from (the request's site trees; set by main).
NGINX_TREES = ["/etc/nginx"]
NGINX_FILE_REF = re.compile(r" in (/[^\s:]+):[0-9]+")
QUOTED = re.compile(r'"[^"]*"')


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


def close_quietly(fd):
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


def owner_name(uid):
    try:
        return "%s (uid %d)" % (pwd.getpwuid(uid).pw_name, uid)
    except KeyError:
        return "uid %d" % uid


def kind_of(mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a regular file"


def scrub_nginx(message):
    """nginx quotes the token it could not parse. In a file outside the nginx tree (a site swapped for a
    link to /etc/shadow) that token is another file's content: it is withheld, the file and line are kept."""
    trees = [t for t in (resolved_tree(t) for t in NGINX_TREES) if t]
    lines = []
    for line in message.splitlines():
        m = NGINX_FILE_REF.search(line)
        if m and not any(inside(os.path.realpath(m.group(1)), t) for t in trees):
            line = QUOTED.sub('"(withheld: outside the nginx configuration tree)"', line)
        lines.append(line)
    return "\n".join(lines)


def root_only(st):
    """Writable by root alone: the test sshd's StrictModes makes of a directory or file."""
    return st.st_uid == 0 and not st.st_mode & 0o022


def inside(path, tree):
    tree = tree.rstrip("/") or "/"
    return path == tree or path.startswith(tree if tree == "/" else tree + "/")


# -- the boundary: paths walked through directory fds -------------------------------------------

class Walked:
    """Where a path leads: the fd of its parent directory, its last name, the resolved path, the links."""

    def __init__(self, parent, name, resolved, links):
        self.parent = parent      # an open directory fd: the caller closes it
        self.name = name
        self.resolved = resolved
        self.links = links        # [(link path, its target, link sits in a root-only directory)]

    def lstat(self):
        try:
            return os.stat(self.name, dir_fd=self.parent, follow_symlinks=False)
        except FileNotFoundError:
            return None


def walk(path, trusted_links_only=False):
    """Resolve `path` as the kernel would, but one component at a time: each directory is opened with
    O_NOFOLLOW relative to the one before, and a symlink is read and resolved here, never by the kernel.
    With trusted_links_only, a symlink in a directory that someone other than root can write is refused."""
    if not path.startswith("/") or "\0" in path:
        raise Failed("boundary", "%r is not an absolute path" % path)
    parts = [p for p in path.split("/") if p]
    stack = [(os.open("/", O_DIR), "")]
    links = []
    try:
        while parts:
            comp = parts.pop(0)
            fd, here = stack[-1]
            if comp == ".":
                continue
            if comp == "..":
                if len(stack) > 1:
                    os.close(stack.pop()[0])
                continue
            try:
                st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if parts:
                    raise
                st = None
            if st is not None and stat.S_ISLNK(st.st_mode):
                target = os.readlink(comp, dir_fd=fd)
                trusted = root_only(os.fstat(fd))
                links.append((here + "/" + comp, target, trusted))
                if len(links) > MAX_LINKS:
                    raise Failed("boundary", "%s: too many levels of symlinks" % path)
                if trusted_links_only and not trusted:
                    raise Failed("boundary", "%s/%s is a symlink (to %s) in a directory that %s can write: "
                                 "wsguard does not follow it as root" % (here, comp, target,
                                                                         owner_name(os.fstat(fd).st_uid)))
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop()[0])
                parts = [p for p in target.split("/") if p] + parts
                continue
            if not parts:
                walked = Walked(stack.pop()[0], comp, here + "/" + comp, links)
                return walked
            if st is None or not stat.S_ISDIR(st.st_mode):
                raise Failed("boundary", "%s: %s/%s is not a directory" % (path, here, comp))
            stack.append((os.open(comp, O_DIR, dir_fd=fd), here + "/" + comp))
        raise Failed("boundary", "%s is a directory, not a file" % path)
    finally:
        for fd, _ in stack:
            close_quietly(fd)


def resolved_tree(tree):
    """A tree's resolved path, following only symlinks that root alone could have made; None if it has none."""
    if not tree.strip("/"):
        return "/"
    try:
        w = walk(tree, trusted_links_only=True)
    except (Failed, OSError):
        return None
    try:
        st = w.lstat()
        return w.resolved if st is not None and stat.S_ISDIR(st.st_mode) else None
    finally:
        os.close(w.parent)


class Rule:
    """What the request allows for one managed path: the trees it may resolve into, the most bytes read."""

    def __init__(self, path, spec):
        self.path = path
        self.what = spec.get("what") or "file"
        self.trees = [t for t in spec.get("trees") or [] if isinstance(t, str) and t.startswith("/")]
        self.max_bytes = int(spec.get("max_bytes") or DEFAULT_MAX_BYTES)
        self.limit_var = spec.get("limit_var") or "the size limit"


def rule_for(boundary, path):
    spec = (boundary.get("files") or {}).get(path)
    if spec is None:
        managed = ", ".join(sorted(boundary.get("files") or {})) or "none"
        raise Failed("boundary", "%s is not a file this inventory manages (managed here: %s); wsguard will "
                     "not open it as root" % (path, managed))
    return Rule(path, spec)


class Managed:
    """A managed file, opened safely: parent dir fd, name, resolved path, and (if it exists) fd, stat, bytes."""

    def __init__(self, rule, walked, fd, st, data):
        self.rule, self.walked, self.fd, self.st, self.data = rule, walked, fd, st, data

    @property
    def exists(self):
        return self.fd is not None

    def close(self):
        close_quietly(self.fd)
        close_quietly(self.walked.parent)


def open_managed(rule):
    """Open a managed file for reading without leaving the boundary: its resolved place must be inside an
    allowed tree, it must be a regular file, and at most max_bytes are read. Refused before any byte is read."""
    w = walk(rule.path)
    try:
        trees = [t for t in (resolved_tree(t) for t in rule.trees) if t]
        if not any(inside(w.resolved, t) for t in trees):
            raise Failed("boundary", outside_message(rule, w, trees))
        if w.lstat() is None:
            return Managed(rule, w, None, None, None)
        fd = os.open(w.name, O_READ, dir_fd=w.parent)
    except BaseException:
        os.close(w.parent)
        raise
    m = Managed(rule, w, fd, os.fstat(fd), None)
    try:
        if not stat.S_ISREG(m.st.st_mode):
            raise Failed("boundary", "%s is %s, not a regular file: wsguard manages regular files only"
                         % (describe(rule, w), kind_of(m.st.st_mode)))
        if m.st.st_nlink > 1 and not root_only(os.fstat(w.parent)):
            raise Failed("boundary", "%s has %d hard links in a directory that %s can write: it may be another "
                         "file's contents; replace it with a file of its own" % (describe(rule, w), m.st.st_nlink,
                                                                               owner_name(os.fstat(w.parent).st_uid)))
        if m.st.st_size > rule.max_bytes:
            raise Failed("too_large", too_large(rule, m.st.st_size))
        m.data = read_bounded(fd, rule.max_bytes, lambda n: too_large(rule, n))
    except BaseException:
        m.close()
        raise
    return m


def describe(rule, w):
    return rule.path if w.resolved == rule.path else "%s (resolved to %s)" % (rule.path, w.resolved)


def outside_message(rule, w, trees):
    link = w.links[0] if w.links else None
    where = " or ".join(trees) or "(no allowed tree resolves on this host)"
    head = ("%s is a symlink to %s, which resolves to %s" % (link[0], link[1], w.resolved) if link
            else "%s resolves to %s" % (rule.path, w.resolved))
    return ("%s, outside the trees allowed for the %s (%s): wsguard will not open it as root. Replace the link "
            "with a regular file, or, if that tree belongs to this application, add it to wsguard_allowed_paths"
            % (head, rule.what, where))


def too_large(rule, size):
    return ("%s is %d bytes, over the %d-byte limit for the %s: wsguard reads no more; raise %s in the "
            "inventory if the file really is that large" % (rule.path, size, rule.max_bytes, rule.what,
                                                           rule.limit_var))


def read_upto(fd, n):
    chunks, total = [], 0
    while total < n:
        chunk = os.read(fd, min(1 << 20, n - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def read_bounded(fd, limit, message):
    """All of a file, but never more than `limit` bytes: one more byte means it is too large."""
    data = read_upto(fd, limit + 1)
    if len(data) > limit:
        raise Failed("too_large", message(len(data)))
    return data


def copy_xattrs(src_fd, dst_fd):
    """Extended attributes (POSIX ACLs and SELinux labels among them) go with the bytes to the new file."""
    try:
        names = os.listxattr(src_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise
    for name in names:
        os.setxattr(dst_fd, name, os.getxattr(src_fd, name))
    return names


def create_exclusive(dir_fd, name_prefix, mode=0o600):
    """A new file under an unpredictable name, created here and nowhere else (O_EXCL|O_NOFOLLOW)."""
    for _ in range(8):
        name = name_prefix + base64.b32encode(os.urandom(10)).decode().lower()
        try:
            return name, os.open(name, O_NEW, mode, dir_fd=dir_fd)
        except FileExistsError:
            continue
    raise Failed("write", "could not create a temporary file beside %s" % name_prefix)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def same_inode(a, b):
    return a is not None and b is not None and (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


# -- the journal: trusted only when root alone can write it -------------------------------------

JOURNAL_FIX = ("check who changed it, then: chown -R root:root %s && chmod -R go-w %s "
               "&& find %s -type l -delete" % (JOURNAL, JOURNAL, JOURNAL))


def untrusted(path, why):
    return Failed("journal_untrusted", "the journal %s %s; wsguard trusts its journal only when root alone can "
                  "write every part of it, so it runs no task on this host: %s" % (path, why, JOURNAL_FIX),
                  {"path": path})


def loose(path, st):
    return untrusted(path, "is owned by %s with mode %04o" % (owner_name(st.st_uid), stat.S_IMODE(st.st_mode)))


class Journal:
    """/var/lib/wsguard through directory fds: runs/RUN_ID/{manifest.json,file-N.orig}, lock, pending.json,
    nginx-reload.json. Opened only after every entry was checked to be root's and not group/other-writable."""

    def __init__(self, fd):
        self.fd = fd

    @classmethod
    def open(cls, create):
        w = walk(JOURNAL, trusted_links_only=True)
        try:
            parent = os.fstat(w.parent)
            if not root_only(parent):
                raise loose(w.resolved.rsplit("/", 1)[0], parent)
            st = w.lstat()
            if st is None:
                if not create:
                    return None
                os.mkdir(w.name, 0o700, dir_fd=w.parent)
            elif not stat.S_ISDIR(st.st_mode):
                raise untrusted(JOURNAL, "is %s" % kind_of(st.st_mode))
            fd = os.open(w.name, O_DIR, dir_fd=w.parent)
        finally:
            os.close(w.parent)
        journal = cls(fd)
        try:
            journal.audit(fd, JOURNAL, 0)
            if create:
                try:
                    os.mkdir("runs", 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
        except BaseException:
            journal.close()
            raise
        return journal

    def close(self):
        close_quietly(self.fd)

    def audit(self, fd, path, depth):
        st = os.fstat(fd)
        if not root_only(st):
            raise loose(path, st)
        for name in os.listdir(fd):
            entry = path + "/" + name
            est = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(est.st_mode):
                raise untrusted(entry, "is a symlink (to %s)" % os.readlink(name, dir_fd=fd))
            if not root_only(est):
                raise loose(entry, est)
            if stat.S_ISDIR(est.st_mode):
                if depth >= 2:
                    raise untrusted(entry, "is a directory where the journal keeps none")
                sub = os.open(name, O_DIR, dir_fd=fd)
                try:
                    self.audit(sub, entry, depth + 1)
                finally:
                    os.close(sub)
            elif not stat.S_ISREG(est.st_mode):
                raise untrusted(entry, "is %s" % kind_of(est.st_mode))

    # -- files inside it (every name here is the journal's own) --

    def read_json(self, name, default=None, dir_fd=None):
        """(value, problem): a missing file is the default; one that does not parse says why."""
        try:
            fd = os.open(name, O_READ, dir_fd=self.fd if dir_fd is None else dir_fd)
        except FileNotFoundError:
            return default, None
        try:
            data = read_bounded(fd, MAX_JOURNAL_JSON, lambda n: "%s is over %d bytes" % (name, MAX_JOURNAL_JSON))
            return json.loads(data.decode("utf-8")), None
        except Failed as exc:
            return default, exc.message
        except ValueError as exc:
            return default, "%s does not parse: %s" % (name, exc)
        finally:
            os.close(fd)

    def write_json(self, name, obj, dir_fd=None):
        write_replace(self.fd if dir_fd is None else dir_fd, name,
                      json.dumps(obj, indent=1, sort_keys=True).encode(), 0o600)

    def runs_fd(self):
        try:
            return os.open("runs", O_DIR, dir_fd=self.fd)
        except FileNotFoundError:
            return None

    def lock(self, run_id, wait):
        fd = os.open("lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=self.fd)
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
                    os.close(fd)
                    raise Failed("locked", "another wsguard run holds the host lock (run %s); waited %ss"
                                 % (holder, wait)) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, run_id.encode(), 0)
        return fd

    def manifests(self):
        """[(order key, run id, manifest or None, problem or None)], newest first."""
        runs = self.runs_fd()
        if runs is None:
            return []
        found = []
        try:
            for name in os.listdir(runs):
                try:
                    sub = os.open(name, O_DIR, dir_fd=runs)
                except OSError as exc:
                    found.append((run_order(name, {}), name, None, "%s: %s" % (name, exc.strerror)))
                    continue
                try:
                    m, problem = self.read_json("manifest.json", dir_fd=sub)
                finally:
                    os.close(sub)
                if problem is None:
                    problem = manifest_problem(name, m) if m is not None else "manifest.json is missing"
                found.append((run_order(name, m if problem is None else {}), name,
                              m if problem is None else None, problem))
        finally:
            os.close(runs)
        found.sort(key=lambda x: x[0], reverse=True)
        return found

    def read_backup(self, run_id, backup, limit):
        runs = self.runs_fd()
        try:
            sub = os.open(run_id, O_DIR, dir_fd=runs)
            try:
                fd = os.open(backup, O_READ, dir_fd=sub)
            finally:
                os.close(sub)
        finally:
            close_quietly(runs)
        try:
            return read_bounded(fd, limit, lambda n: "the backup %s of run %s is over %d bytes"
                                % (backup, run_id, limit))
        finally:
            os.close(fd)

    def remove_run(self, run_id):
        runs = self.runs_fd()
        if runs is None:
            return
        try:
            sub = os.open(run_id, O_DIR, dir_fd=runs)
            try:
                for name in os.listdir(sub):
                    os.unlink(name, dir_fd=sub)
            finally:
                os.close(sub)
            os.rmdir(run_id, dir_fd=runs)
        except OSError:
            pass
        finally:
            os.close(runs)


def write_replace(dir_fd, name, data, mode):
    """Write a file of the journal: staged under a fresh name, fsynced, renamed over `name`."""
    tmp, fd = create_exclusive(dir_fd, "." + name + ".")
    try:
        write_all(fd, data)
        os.fchmod(fd, mode)
        os.fsync(fd)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    finally:
        os.close(fd)


def manifest_problem(name, m):
    """Why a manifest cannot be trusted as the journal's own (None when it can)."""
    def bad(what):
        return "manifest.json: %s" % what

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool)

    if not isinstance(m, dict):
        return bad("not a JSON object")
    if m.get("run_id") != name:
        return bad("run_id %r does not match its directory %s" % (m.get("run_id"), name))
    for key in ("task", "time", "status"):
        if not isinstance(m.get(key), str):
            return bad("%s is not a string" % key)
    if not isinstance(m.get("files"), list):
        return bad("files is not a list")
    for i, f in enumerate(m["files"]):
        if not isinstance(f, dict):
            return bad("files[%d] is not an object" % i)
        for key in ("path", "resolved"):
            v = f.get(key)
            if not isinstance(v, str) or not v.startswith("/") or "\0" in v or "/../" in v + "/":
                return bad("files[%d].%s is not an absolute path" % (i, key))
        if not isinstance(f.get("backup"), str) or not BACKUP.match(f["backup"]):
            return bad("files[%d].backup is not a backup of this journal (file-N.orig)" % i)
        for key in ("sha256_before", "sha256_after"):
            if not isinstance(f.get(key), str) or not HEX64.match(f[key]):
                return bad("files[%d].%s is not a sha256" % (i, key))
        for key in ("mode", "uid", "gid", "mode_after", "uid_after", "gid_after"):
            if key in f and not is_int(f[key]):
                return bad("files[%d].%s is not an integer" % (i, key))
    for key in ("handlers_run", "handlers_pending"):
        v = m.get(key, [])
        if not isinstance(v, list) or not all(isinstance(h, str) for h in v):
            return bad("%s is not a list of names" % key)
    specs = m.get("handler_specs", [])
    if not isinstance(specs, list) or not all(isinstance(h, dict) and h.get("name") in HANDLERS for h in specs):
        return bad("handler_specs is not a list of known handlers")
    if m.get("rollback_of") is not None and not isinstance(m["rollback_of"], str):
        return bad("rollback_of is not a run id")
    return None


LATEST_CHANGED = "latest-changed"


def rollback_candidate(m):
    """A run that changed files on disk and was not failed-and-restored (what `rollback` undoes by default)."""
    return bool(m.get("files")) and not (m.get("status") == "failed" and m.get("restored"))


def run_order(name, m):
    # Run ids sort by the controller's clock to the second; within one second, the host's start time.
    started = m.get("started")
    return (name.split("-", 1)[0], str(m.get("time") or ""),
            started if isinstance(started, (int, float)) else 0.0, name)


def journal_runs(journal, detail, boundary):
    """Manifests, newest first; an unreadable one is listed by name with the reason (never skipped).
    The old bytes of the run `detail` (an id, or LATEST_CHANGED) come too."""
    found = journal.manifests() if journal else []
    if detail == LATEST_CHANGED:
        detail = None
        for _, name, m, problem in found:
            if problem is not None:
                raise Failed("journal", "run %s in %s/runs has an unreadable manifest (%s) and may be the newest "
                             "run that changed a file: rollback will not guess past it. Name the run to undo with "
                             "--run, or move that run's directory out of the journal" % (name, JOURNAL, problem))
            if rollback_candidate(m):
                detail = name
                break
    runs = []
    for _, name, m, problem in found:
        if problem is not None:
            if detail == name:
                raise Failed("journal", "run %s cannot be rolled back: its manifest is unreadable (%s)"
                             % (name, problem))
            runs.append({"run_id": name, "invalid": problem})
            continue
        if detail == name:
            for f in m["files"]:
                rule = rule_for(boundary, f["path"])
                try:
                    old = journal.read_backup(name, f["backup"], rule.max_bytes)
                    f["old_content"] = base64.b64encode(old).decode()
                except OSError:
                    f["old_content"] = None
        runs.append(m)
    return runs


# -- facts -------------------------------------------------------------------------------------

def file_facts(path, boundary):
    info = {"path": path, "exists": False}
    try:
        m = open_managed(rule_for(boundary, path))
    except FileNotFoundError:
        return info  # a directory on the way is missing
    except Failed as exc:
        info.update(error=exc.message, refused=exc.kind in ("boundary", "too_large"))
        return info
    except OSError as exc:
        info["error"] = "%s: %s" % (path, exc.strerror)
        return info
    try:
        link = next((ln for ln in m.walked.links if ln[0] == os.path.normpath(path)), None)
        info.update(is_symlink=link is not None, resolved=m.walked.resolved)
        if link:
            info["link_target"] = link[1]
        if m.exists:
            st = m.st
            info.update(exists=True, content=base64.b64encode(m.data).decode(), sha256=sha256(m.data),
                        mode=st.st_mode & 0o7777, uid=st.st_uid, gid=st.st_gid, mtime=st.st_mtime)
    finally:
        m.close()
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


def nginx_facts(journal):
    code, _, err = sh(["nginx", "-v"], timeout=15)
    if code == 127:
        return {"installed": False}
    t_code, t_out, t_err = sh(["nginx", "-T"], timeout=30)
    master, workers, started = nginx_processes()
    head = "# configuration file "  # nginx -T: "# configuration file /etc/nginx/nginx.conf:"
    files = [line[len(head):].rstrip().rstrip(":") for line in text(t_out).splitlines() if line.startswith(head)]
    mtimes = []
    for p in files:
        try:
            mtimes.append(os.stat(p).st_mtime)
        except OSError:
            pass
    return {"installed": True, "version": text(err).strip(), "test_ok": t_code == 0,
            "test_error": scrub_nginx(text(t_err).strip()[-2000:]) if t_code else "", "dump": text(t_out),
            "dump_sha256": sha256(t_out) if t_code == 0 else None, "master": master, "workers": workers,
            "workers_started": started, "config_mtime": max(mtimes) if mtimes else None,
            "reload_record": journal.read_json(RELOAD_RECORD)[0] if journal else None}


def op_facts(req, journal):
    boundary = req.get("boundary") or {}
    out = {"files": [file_facts(p, boundary) for p in req.get("files", [])], "euid": os.geteuid()}  # type: dict
    if req.get("container"):
        out["container"] = container_facts(req["container"])
    if req.get("nginx"):
        out["nginx"] = nginx_facts(journal)
    if req.get("journal") is not None:
        runs = journal_runs(journal, req["journal"].get("detail"), boundary)
        out["runs"] = runs
        out["pending"] = journal.read_json(PENDING, {})[0] if journal else {}
        detailed = next((m for m in runs if any("old_content" in f for f in m.get("files", []))), None)
        out["detail"] = detailed.get("run_id") if detailed else None
        if detailed and req["journal"].get("detail_files"):
            # The files that run changed, as they are now: rollback compares and plans in this same round trip.
            asked = set(req.get("files", []))
            out["files"] += [file_facts(f["path"], boundary) for f in detailed.get("files", [])
                             if f["path"] not in asked]
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
        # A log is not a managed file, but root still neither follows a planted link nor blocks on a FIFO.
        fd = os.open(path, O_READ)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                info["error"] = "%s is %s, not a log file: not read" % (path, kind_of(st.st_mode))
                return info
            size = st.st_size
            os.lseek(fd, max(0, size - MAX_TAIL_BYTES), os.SEEK_SET)
            data = read_upto(fd, MAX_TAIL_BYTES)
        finally:
            os.close(fd)
        info["size"] = size
    except OSError as exc:
        info["error"] = ("%s is a symlink: not followed" % path if exc.errno == errno.ELOOP
                         else "%s: %s" % (path, exc.strerror))
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


# -- apply: journal every old file, stage every new one, then rename them in ---------------------

WRITE_ADVICE = {
    errno.ENOSPC: "free space on the file system that holds it, then run again",
    errno.EDQUOT: "raise the quota or free space there, then run again",
    errno.EROFS: "the file system is mounted read-only: remount it read-write, then run again",
    errno.EACCES: "wsguard needs root there (ansible_become or ansible_user: root), or the directory is protected",
    errno.EPERM: "the file or its directory is protected (immutable attribute?): lift that, then run again",
}


def advice(exc):
    return WRITE_ADVICE.get(exc.errno or 0, "fix the cause, then run again")


def stage(parent, name, data, mode, uid, gid, attrs_from, run_id):
    """`data` in a new file beside `name`, created exclusively under a fresh name and never reopened by
    name: ownership, extended attributes (ACLs, SELinux label) and mode set on the fd. -> (name, fd)."""
    tmp, fd = create_exclusive(parent, "." + name + TMP_MARK + run_id + "-")
    try:
        write_all(fd, data)
        os.fchown(fd, uid, gid)
        if attrs_from is not None:
            copy_xattrs(attrs_from, fd)
        os.fchmod(fd, mode)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(parent, tmp)
        raise
    return tmp, fd


def unlink_quietly(dir_fd, name):
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def sweep(parent, name, keep):
    """Temporary files of killed runs (`.NAME.wsguard-...`) go; an entry is only unlinked, never followed."""
    prefix = "." + name + TMP_MARK
    try:
        for entry in os.listdir(parent):
            if entry.startswith(prefix) and entry not in keep:
                unlink_quietly(parent, entry)
    except OSError:
        pass


class Target:
    """One file of the transaction: where it is (a directory fd and a name), what it held, what it will hold."""

    def __init__(self, index, req, managed):
        st = managed.st
        self.index, self.m, self.path = index, managed, req["path"]
        self.old, self.new = managed.data, base64.b64decode(req["content"])
        self.mode = req.get("mode", st.st_mode & 0o7777)
        self.uid, self.gid = req.get("uid", st.st_uid), req.get("gid", st.st_gid)
        self.validate = req.get("validate")
        self.backup = "file-%d.orig" % index
        self.tmp, self.tmp_fd = "", -1
        self.committed = False  # the new bytes are under the name now
        self.renamed = False    # they were at some point (restored or not): the journal records the file

    @property
    def parent(self):
        return self.m.walked.parent

    @property
    def name(self):
        return self.m.walked.name

    @property
    def resolved(self):
        return self.m.walked.resolved

    def entry(self):
        st = self.m.st
        return {"path": self.path, "resolved": self.resolved, "sha256_before": sha256(self.old),
                "sha256_after": sha256(self.new), "mode": st.st_mode & 0o7777, "uid": st.st_uid, "gid": st.st_gid,
                "mode_after": self.mode, "uid_after": self.uid, "gid_after": self.gid, "backup": self.backup,
                "validate": self.validate}

    def stage(self, run_id):
        try:
            self.tmp, self.tmp_fd = stage(self.parent, self.name, self.new, self.mode, self.uid, self.gid,
                                          self.m.fd, run_id)
        except OSError as exc:
            raise Failed("write", "cannot write %s: %s; the old file is intact: %s"
                         % (self.resolved, exc.strerror, advice(exc))) from None

    def commit(self):
        """Rename the staged file over the name, within the one directory fd; a rename never follows a link."""
        before = self.m.walked.lstat()
        if not same_inode(before, self.m.st):
            raise Failed("conflict", "%s was replaced while this run held it (someone else writes in its "
                         "directory): nothing more was written" % self.resolved)
        try:
            os.rename(self.tmp, self.name, src_dir_fd=self.parent, dst_dir_fd=self.parent)
        except OSError as exc:
            raise Failed("write", "cannot write %s: %s; the old file is intact: %s"
                         % (self.resolved, exc.strerror, advice(exc))) from None
        self.committed = self.renamed = True
        if not same_inode(self.m.walked.lstat(), os.fstat(self.tmp_fd)):
            raise Failed("boundary", "%s is not the file this run wrote: something replaced the staged file "
                         "during the run (another writer in its directory); the old bytes go back" % self.resolved)
        try:
            os.fsync(self.parent)
        except OSError as exc:
            raise Failed("write", "cannot write %s: %s; %s" % (self.resolved, exc.strerror, advice(exc))) from None

    def landed_sha256(self):
        fd = os.open(self.name, O_READ, dir_fd=self.parent)
        try:
            if not same_inode(os.fstat(fd), os.fstat(self.tmp_fd)):
                return None
            return sha256(read_upto(fd, len(self.new) + 1))
        finally:
            os.close(fd)

    def restore(self, run_id):
        """The old bytes, mode, owner and attributes back under the name (a new inode, renamed in)."""
        st = self.m.st
        tmp, fd = stage(self.parent, self.name, self.old, st.st_mode & 0o7777, st.st_uid, st.st_gid, self.m.fd,
                        run_id)
        try:
            os.rename(tmp, self.name, src_dir_fd=self.parent, dst_dir_fd=self.parent)
            os.fsync(self.parent)
        finally:
            os.close(fd)
        self.committed = False

    def close(self):
        if self.tmp_fd >= 0:
            if not self.committed:
                unlink_quietly(self.parent, self.tmp)
            os.close(self.tmp_fd)
            self.tmp_fd = -1
        self.m.close()


class Apply:
    """One apply, in phases: prepare, journal, stage, commit, validate, verify, handlers, record.
    Until commit no managed file has changed, so any failure before it (a full journal disk, a full app
    disk, a refused path) leaves every file as it was."""

    def __init__(self, req, journal):
        self.req, self.journal, self.run_id = req, journal, req["run_id"]
        self.boundary = req.get("boundary") or {}
        self.targets = []
        self.run_fd = None
        self.manifest = {"run_id": self.run_id, "task": req["task"],
                         "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "controller": req.get("controller", {}), "files": [], "handlers": [], "handlers_run": [],
                         "handlers_pending": [], "status": "applying", "rollback_of": req.get("rollback_of"),
                         "started": time.time()}
        self.result = {"run_id": self.run_id, "files": [], "handlers": [], "error": None, "pruned": []}
        pending = journal.read_json(PENDING, {})[0]
        self.pending = pending if isinstance(pending, dict) else {}

    def run(self):
        try:
            for phase in (self.prepare, self.journal_old, self.stage, self.commit, self.validate, self.verify,
                          self.handlers):
                phase()
            self.manifest["status"] = "ok"
        except Failed as exc:
            self.fail(exc)
        finally:
            self.record()
            for t in self.targets:
                t.close()
            close_quietly(self.run_fd)
        return self.result

    @property
    def committed(self):
        return [t for t in self.targets if t.committed]

    def prepare(self):
        for i, f in enumerate(self.req.get("files", [])):
            try:
                m = open_managed(rule_for(self.boundary, f["path"]))
            except FileNotFoundError:
                raise Failed("read", "cannot read %s: No such file or directory" % f["path"]) from None
            if not m.exists:
                m.close()
                raise Failed("read", "cannot read %s: No such file or directory" % f["path"])
            t = Target(i, f, m)
            if t.old == t.new and "mode" not in f:
                m.close()
                continue  # a concurrent run already wrote exactly these bytes: nothing to do
            self.targets.append(t)
            if sha256(t.old) != f["expect_sha256"]:
                raise Failed("conflict", "%s changed on the host since its facts were read (sha256 %s, expected %s)"
                             % (f["path"], sha256(t.old)[:12], f["expect_sha256"][:12]))
            sweep(t.parent, t.name, ())

    def journal_old(self):
        """Every old file's bytes are on disk in the journal before any managed file changes."""
        runs = self.journal.runs_fd()
        try:
            os.mkdir(self.run_id, 0o700, dir_fd=runs)
            self.run_fd = os.open(self.run_id, O_DIR, dir_fd=runs)
            for t in self.targets:
                fd = os.open(t.backup, O_NEW, 0o600, dir_fd=self.run_fd)
                try:
                    write_all(fd, t.old)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self.manifest["files"].append(t.entry())
            self.journal.write_json("manifest.json", self.manifest, dir_fd=self.run_fd)
            os.fsync(self.run_fd)
        except OSError as exc:
            raise Failed("journal", "cannot record the old bytes in %s/runs/%s: %s; no file was changed: %s"
                         % (JOURNAL, self.run_id, exc.strerror, advice(exc))) from None
        finally:
            os.close(runs)

    def stage(self):
        for t in self.targets:
            t.stage(self.run_id)

    def commit(self):
        if self.targets and self.req.get("pause_before_rename"):
            time.sleep(float(self.req["pause_before_rename"]))  # test-only: the window between stage and rename
        for t in self.targets:
            t.commit()

    def validate(self):
        if not any(t.validate == "nginx" for t in self.committed):
            return
        ok, message = nginx_test()
        if ok:
            return
        self.restore()
        ok_after, _ = nginx_test()
        raise Failed("validate", "nginx -t failed after the edit; the old file is restored%s:\n%s"
                     % ("" if ok_after else " (but nginx -t still fails: the cause is elsewhere)", message),
                     {"nginx_t": message, "restored": True, "nginx_t_after_restore": ok_after})

    def restore(self):
        for t in reversed(self.committed):
            try:
                t.restore(self.run_id)
            except OSError as exc:
                raise Failed("write", "cannot restore %s: %s; its old bytes are in %s/runs/%s/%s"
                             % (t.resolved, exc.strerror, JOURNAL, self.run_id, t.backup)) from None
        self.manifest["restored"] = True

    def verify(self):
        for t in self.targets:
            landed = t.landed_sha256()
            if landed != sha256(t.new):
                raise Failed("verify", "%s does not hold the bytes written (sha256 %s, expected %s)"
                             % (t.path, (landed or "another file")[:12], sha256(t.new)[:12]))
            self.result["files"].append({"path": t.path, "resolved": t.resolved, "sha256_before": sha256(t.old),
                                         "sha256_after": landed})

    def handlers(self):
        self.manifest["handler_specs"] = self.req.get("handlers", [])
        for spec in self.req.get("handlers", []):
            name = spec["name"]
            began = time.time()
            try:
                evidence = HANDLERS[name](spec, self.journal)
                evidence["seconds"] = round(time.time() - began, 3)
            except Failed as exc:
                self.pending[name] = spec
                self.manifest["handlers_pending"].append(name)
                self.result["handlers"].append({"name": name, "ok": False, "error": exc.message,
                                                "evidence": exc.evidence})
                raise
            self.pending.pop(name, None)
            self.manifest["handlers_run"].append(name)
            self.result["handlers"].append({"name": name, "ok": True, "evidence": evidence})

    def fail(self, exc):
        m = self.manifest
        m["status"] = "failed"
        m["error"] = {"kind": exc.kind, "message": exc.message}
        error = self.result["error"] = {"kind": exc.kind, "message": exc.message, "evidence": exc.evidence}
        if not self.committed:
            return
        try:  # a failure after the rename: the old bytes go back, and the service with them
            self.restore()
        except Failed as again:
            error["message"] += "; " + again.message
            return
        restored = restore_service(m, self.req.get("handlers", []), self.journal)
        if restored:
            m["service_restored"] = error["evidence"]["service_restored"] = restored
            for h in restored:
                if h["ok"]:
                    self.pending.pop(h["name"], None)
            ok = all(h["ok"] for h in restored)
            error["message"] += ("; the old files were restored and %s re-run: %s"
                                 % (", ".join(h["name"] for h in restored),
                                    "the service runs the old configuration again" if ok else
                                    "it failed too (%s)" % "; ".join(h.get("error") or "" for h in restored
                                                                      if not h["ok"])))

    def record(self):
        m = self.manifest
        written = [t for t in self.targets if t.renamed]
        try:
            if self.run_fd is not None:
                if m["status"] == "failed" and not written and not m["handlers_pending"]:
                    self.journal.remove_run(self.run_id)  # nothing happened: no run to record
                else:
                    m["files"] = [e for e in m["files"] if any(t.backup == e["backup"] for t in written)] \
                        if m["status"] == "failed" else m["files"]
                    self.journal.write_json("manifest.json", m, dir_fd=self.run_fd)
            self.journal.write_json(PENDING, self.pending)
            self.result["pruned"] = prune(self.journal, max(1, int(self.req.get("keep", 20))), self.run_id)
        except OSError as exc:
            note = "the journal could not record the outcome (%s): %s" % (exc.strerror, advice(exc))
            if self.result["error"]:
                self.result["error"]["message"] += "; " + note
            else:
                self.result["error"] = {"kind": "journal", "message": note, "evidence": {}}


def nginx_test():
    code, _, err = sh(["nginx", "-t"], timeout=30)
    return code == 0, scrub_nginx(text(err).strip())


def record_reload(journal, workers):
    code, out, _ = sh(["nginx", "-T"], timeout=30)
    journal.write_json(RELOAD_RECORD, {"dump_sha256": sha256(out) if code == 0 else None, "workers": workers,
                                      "time": time.time()})


def handler_nginx_reload(spec, journal):
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
            record_reload(journal, workers)
            return {"method": method, "workers_before": before, "workers_after": workers}
        if time.time() > deadline:
            raise Failed("reload", "nginx did not start new workers after the reload (%s)" % method,
                         {"workers_before": before, "workers_now": workers})
        time.sleep(0.05)


def handler_compose_recreate(spec, journal):
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


def restore_service(manifest, specs, journal):
    """After the old files went back: re-run the handlers that acted on the new ones, so the service
    runs what is on disk again (a backend recreated from a bad .env is recreated from the old one)."""
    acted = set(manifest["handlers_run"]) | set(manifest["handlers_pending"])
    outcome = []
    for spec in specs:
        if spec["name"] not in acted:
            continue
        spec = dict(spec, expect_env={})  # the restored file's values, whatever they are
        try:
            HANDLERS[spec["name"]](spec, journal)
            outcome.append({"name": spec["name"], "ok": True})
        except Failed as exc:
            outcome.append({"name": spec["name"], "ok": False, "error": exc.message,
                            "logs": exc.evidence.get("logs")})
    return outcome


def prune(journal, keep, current):
    """Keep the newest `keep` runs (in journal order); the current run is never removed."""
    names = [name for _, name, _, _ in reversed(journal.manifests())]
    old = [n for n in names if n != current][: max(0, len(names) - keep)]
    for n in old:
        journal.remove_run(n)
    return old


def op_apply(req, journal):
    if not isinstance(req.get("run_id"), str) or not RUN_ID.match(req["run_id"]):
        raise Failed("request", "bad run id %r" % req.get("run_id"))
    lock = journal.lock(req["run_id"], req.get("lock_timeout", 30))
    try:
        return Apply(req, journal).run()
    finally:
        os.close(lock)


def main():
    # argv: [-c, agent source length, request length]; the source was read off stdin already.
    req = json.loads(sys.stdin.buffer.read(int(sys.argv[2])).decode())
    journal = None
    sites = [r for r in ((req.get("boundary") or {}).get("files") or {}).values() if r.get("what") == "nginx site"]
    if sites:
        NGINX_TREES[:] = [t for r in sites for t in r.get("trees") or []]
    try:
        op = {"facts": op_facts, "apply": op_apply}[req["op"]]
        journal = Journal.open(create=req["op"] == "apply")
        out = op(req, journal)
    except Failed as exc:
        out = {"error": {"kind": exc.kind, "message": exc.message, "evidence": exc.evidence}}
    except OSError as exc:
        out = {"error": {"kind": "os", "message": "%s: %s" % (getattr(exc, "filename", "") or "", exc.strerror or exc)}}
    finally:
        if journal is not None:
            journal.close()
    sys.stdout.write(json.dumps(out))


if __name__ == "__main__":
    main()
