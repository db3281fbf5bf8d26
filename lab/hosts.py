"""Lab hosts: each a network + mount + UTS namespace with its own config, users and daemons.

A host is `labN` at 10.231.7.(10+N) on the bridge wsg-br0. Its files live on the controller at
.lab/hosts/labN/ and are bind-mounted over /etc/nginx, /etc/ssh, /opt, /run... inside its mount
namespace, which is kept alive as a file under .lab/ns/. Every process that runs "on" a host is in
its network namespace, which is how `down` finds them all, by PID.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from lab import image
from lab.errors import LabError

REPO = Path(__file__).resolve().parents[1]
FILES = Path(__file__).parent / "files"
# Several labs can run side by side (one per developer or CI job): WSGUARD_LAB_ID picks the subnet,
# the bridge, the namespace names and the state directory.
LAB_ID = int(os.environ.get("WSGUARD_LAB_ID", "0"))
SUBNET = f"10.231.{7 + LAB_ID}"
BRIDGE = f"wsg{LAB_ID}-br"
PREFIX = f"wsg{LAB_ID}-"
SITE_NAME = "api.wealthwarriorshub.test"
APP_DIR = "/opt/wealth-coach-ai"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Directories each host gets its own copy of, bind-mounted over the machine's.
BIND_DIRS = ["etc/nginx", "etc/ssh", "etc/sudoers.d", "etc/containers", "opt", "var/log", "var/lib",
             "tmp", "var/tmp", "home", "root", "run"]
BIND_FILES = ["etc/passwd", "etc/shadow", "etc/group", "etc/gshadow", "etc/hosts", "etc/hostname"]
PROFILES = ("seed", "stock")
# Where a host sees the image store shared by all hosts (bound there from .lab-cache/ at bring-up).
IMAGE_STORE = "/var/lib/wsguard-lab-images"
FAULTS = ("linkdown", "blackhole", "drop", "restore")
REQUIRED = ["ip", "unshare", "nsenter", "sshd", "nginx", "podman", "docker-compose", "docker", "sudo",
            "iptables", "tc", "ssh-keygen", "openssl", "runc", "curl"]


def cache_dir() -> Path:
    """The image cache and store, shared by every lab on the machine (kept by `down`)."""
    return Path(os.environ.get("WSGUARD_LAB_CACHE", REPO / ".lab-cache"))


def lab_dir() -> Path:
    default = REPO / (".lab" if LAB_ID == 0 else f".lab-{LAB_ID}")
    return Path(os.environ.get("WSGUARD_LAB_DIR", default))


@dataclass(frozen=True)
class LabHost:
    name: str
    index: int

    @property
    def address(self) -> str:
        return f"{SUBNET}.{10 + self.index}"

    @property
    def veth(self) -> str:
        return PREFIX + self.name

    @property
    def netns(self) -> str:
        return PREFIX + self.name

    @property
    def root(self) -> Path:
        return lab_dir() / "hosts" / self.name

    @property
    def mnt_ns(self) -> Path:
        return lab_dir() / "ns" / f"{self.name}.mnt"

    @property
    def uts_ns(self) -> Path:
        return lab_dir() / "ns" / f"{self.name}.uts"

    def path(self, inside: str) -> Path:
        """Where a path on the host lives on the controller (for the bind-mounted trees)."""
        return self.root / inside.lstrip("/")


def host(name: str) -> LabHost:
    if not name.startswith("lab") or not name[3:].isdigit() or int(name[3:]) < 1:
        raise LabError(f"unknown lab host {name!r}", hint="lab hosts are named lab1..labN (see `invoke lab.status`)")
    return LabHost(name, int(name[3:]))


def require_lab_support() -> None:
    """The lab needs Linux, root and a few system packages: say which is missing, at once."""
    if platform.system() != "Linux":
        raise LabError(f"the lab needs Linux namespaces; this is {platform.system()}",
                       hint="run the lab on a Linux machine (Debian 12 or Ubuntu) as root")
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates network and mount namespaces)",
                       hint="run as root, e.g. `sudo -E invoke lab.up`")
    missing = [c for c in REQUIRED if shutil.which(c, path=HOST_PATH) is None]
    if missing:
        raise LabError(f"the lab needs these commands, missing here: {', '.join(missing)}",
                       hint="run `bash scripts/setup.sh` (installs openssh-server, nginx, podman, "
                            "docker-compose, sudo, iptables)")


def sh(cmd: str | list[str], check: bool = True, timeout: float = 120,
       **kw: object) -> subprocess.CompletedProcess[str]:
    args = cmd if isinstance(cmd, list) else ["/bin/sh", "-c", cmd]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    if check and proc.returncode != 0:
        shown = cmd if isinstance(cmd, str) else " ".join(cmd)
        raise LabError(f"`{shown[:200]}` failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-1500:]}")
    return proc  # type: ignore[no-any-return]


def nsenter_argv(h: LabHost) -> list[str]:
    return ["nsenter", f"--mount={h.mnt_ns}", f"--uts={h.uts_ns}", f"--net=/run/netns/{h.netns}",
            "--", "env", "-i", f"PATH={HOST_PATH}", "HOME=/root", "LANG=C.UTF-8", "USER=root", "LOGNAME=root"]


def run_on(h: LabHost, cmd: str, check: bool = True, timeout: float = 120,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a shell command on a host as root (the lab's back door, not wsguard's transport)."""
    return sh([*nsenter_argv(h), "/bin/sh", "-c", cmd], check=check, timeout=timeout, input=input)


# --- state -------------------------------------------------------------------------------------

def _state_path() -> Path:
    return lab_dir() / "lab.json"


def load_state() -> dict:
    try:
        return dict(json.loads(_state_path().read_text()))
    except FileNotFoundError:
        return {}


_STATE_LOCK = threading.Lock()


def _save_state(state: dict) -> None:
    p = _state_path()
    with _STATE_LOCK:  # resets run in parallel threads: one writer at a time, each with its own temp file
        tmp = p.with_name(f".{p.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        os.chmod(tmp, 0o600)
        os.replace(tmp, p)


def _ensure_secrets(state: dict) -> dict:
    state.setdefault("sudo_password", "pw-" + secrets.token_hex(6))
    state.setdefault("token", "lab-token-" + secrets.token_hex(8))
    state.setdefault("openai_key", "sk-lab-" + secrets.token_hex(12))
    state.setdefault("hosts", {})
    return state


def is_mountpoint(path: Path) -> bool:
    """os.path.ismount misses bind mounts within one file system; mountinfo does not."""
    target = str(path.resolve()).encode("unicode_escape").decode().replace(" ", "\\040")
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def is_running(h: LabHost) -> bool:
    if not Path(f"/run/netns/{h.netns}").exists() or not is_mountpoint(h.mnt_ns):
        return False
    pid = h.path("/run/sshd.pid")
    try:
        os.kill(int(pid.read_text().split()[0]), 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def running_hosts() -> list[LabHost]:
    state = load_state()
    hosts = [host(n) for n in state.get("hosts", {})]
    return sorted((h for h in hosts if is_running(h)), key=lambda h: h.index)


# --- files a host starts with ------------------------------------------------------------------

def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def _clear_dir(path: Path) -> None:
    """Empty a directory but keep its inode: it is a bind-mount source inside the host."""
    path.mkdir(parents=True, exist_ok=True)
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def env_text(state: dict) -> str:
    return ("# wealth-coach-ai backend\n"
            "RATE_LIMIT_ENABLED=true\n"
            f"WS_AUTH_TOKEN={state['token']}\n"
            f"OPENAI_API_KEY={state['openai_key']}\n")


def write_nginx(h: LabHost, profile: str) -> None:
    etc = h.path("/etc/nginx")
    _clear_dir(etc)
    shutil.copytree("/etc/nginx", etc, dirs_exist_ok=True, symlinks=True)
    for p in (etc / "sites-enabled").iterdir():
        p.unlink()
    for p in (etc / "conf.d").iterdir():
        p.unlink()
    site = etc / "sites-available" / SITE_NAME
    for p in (etc / "sites-available").iterdir():
        p.unlink()
    site.write_text((FILES / f"site-{profile}.conf").read_text())
    (etc / "sites-enabled" / SITE_NAME).symlink_to(f"/etc/nginx/sites-available/{SITE_NAME}")


def write_app(h: LabHost, state: dict, image_ref: str) -> None:
    app = h.path(APP_DIR)
    _clear_dir(h.path("/opt"))
    app.mkdir(parents=True)
    compose = (FILES / "docker-compose.yml").read_text().replace("@IMAGE@", image_ref)
    _write(app / "docker-compose.yml", compose)
    _write(app / ".env", env_text(state), 0o600)


def _users(h: LabHost, state: dict, client_pub: str) -> None:
    pw_hash = sh(["openssl", "passwd", "-6", "-salt", secrets.token_hex(4), state["sudo_password"]]).stdout.strip()
    base = {f: Path("/", f).read_text() for f in ("etc/passwd", "etc/group", "etc/shadow", "etc/gshadow")}
    keep = lambda text: "".join(  # noqa: E731 - the machine's own accounts, minus any earlier lab users
        line + "\n" for line in text.splitlines() if not line.startswith(("deploy:", "deploypw:")))
    _write(h.path("/etc/passwd"), keep(base["etc/passwd"]) + "deploy:x:1001:1001::/home/deploy:/bin/bash\n"
           "deploypw:x:1002:1002::/home/deploypw:/bin/bash\n")
    _write(h.path("/etc/group"), keep(base["etc/group"]) + "deploy:x:1001:\ndeploypw:x:1002:\n")
    # `*`: no password, yet not locked, so key login works; deploypw has a real one for sudo.
    _write(h.path("/etc/shadow"), keep(base["etc/shadow"]) + "deploy:*:19000:0:99999:7:::\n"
           f"deploypw:{pw_hash}:19000:0:99999:7:::\n", 0o640)
    _write(h.path("/etc/gshadow"), keep(base["etc/gshadow"]) + "deploy:!::\ndeploypw:!::\n", 0o640)
    _write(h.path("/etc/sudoers.d/wsguard-lab"),
           "deploy ALL=(ALL) NOPASSWD: ALL\ndeploypw ALL=(ALL) ALL\n", 0o440)
    for uid, home in ((0, "/root"), (1001, "/home/deploy"), (1002, "/home/deploypw")):
        ssh_dir = h.path(home) / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        _write(ssh_dir / "authorized_keys", client_pub, 0o600)
        for p in (h.path(home), ssh_dir, ssh_dir / "authorized_keys"):
            os.chown(p, uid, uid)
    os.chmod(h.path("/root"), 0o700)


def prepare_files(h: LabHost, profile: str, state: dict, image_ref: str) -> None:
    for d in BIND_DIRS:
        _clear_dir(h.path(d))
    os.chmod(h.path("/tmp"), 0o1777)
    os.chmod(h.path("/var/tmp"), 0o1777)
    for d in ("/var/log/nginx", "/var/lib/nginx", "/var/lib/sudo", "/var/lib/containers", "/run/sshd", "/home"):
        h.path(d).mkdir(parents=True, exist_ok=True)
    os.chmod(h.path("/run/sshd"), 0o755)
    write_nginx(h, profile)
    write_app(h, state, image_ref)
    ssh = h.path("/etc/ssh")
    shutil.copy(FILES / "sshd_config", ssh / "sshd_config")
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{h.name}", "-f", str(ssh / "ssh_host_ed25519_key")])
    containers = h.path("/etc/containers")
    shutil.copytree("/etc/containers", containers, dirs_exist_ok=True)
    shutil.copy(FILES / "containers.conf", containers / "containers.conf")
    _write(containers / "storage.conf",
           '[storage]\ndriver = "overlay"\ngraphroot = "/var/lib/containers/storage"\n'
           'runroot = "/run/containers/storage"\n\n[storage.options]\n'
           f'additionalimagestores = ["{IMAGE_STORE}"]\n')
    _write(h.path("/etc/hosts"), f"127.0.0.1 localhost\n{h.address} {h.name} {SITE_NAME}\n")
    _write(h.path("/etc/hostname"), h.name + "\n")
    _users(h, state, (lab_dir() / "ssh" / "id_ed25519.pub").read_text())


# --- bring-up and tear-down --------------------------------------------------------------------

def _ensure_bridge() -> None:
    if sh(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
        sh(f"ip link add {BRIDGE} type bridge && ip addr add {SUBNET}.1/24 dev {BRIDGE} && ip link set {BRIDGE} up")


def _ensure_ns_dir() -> None:
    """unshare --mount=FILE needs FILE on a privately propagated mount."""
    ns = lab_dir() / "ns"
    ns.mkdir(parents=True, exist_ok=True)
    if not is_mountpoint(ns):
        sh(f"mount --bind '{ns}' '{ns}' && mount --make-private '{ns}'")


def _ensure_client_key() -> None:
    key = lab_dir() / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "wsguard-lab", "-f", str(key)])


def _start_host(h: LabHost, profile: str, state: dict, image_ref: str) -> None:
    _teardown(h)  # a half-made host from an interrupted run is remade whole
    prepare_files(h, profile, state, image_ref)
    sh(f"ip netns add {h.netns} && ip link add {h.veth} type veth peer name eth0 netns {h.netns} "
       f"&& ip link set {h.veth} master {BRIDGE} up "
       f"&& ip -n {h.netns} addr add {h.address}/24 dev eth0 && ip -n {h.netns} link set eth0 up "
       f"&& ip -n {h.netns} link set lo up")
    for f in (h.mnt_ns, h.uts_ns):
        f.touch()
    # Inside the new mount namespace: drop the copies of other namespaces' pins, then bind this host's tree.
    # The sources are reached through a staging tmpfs on /mnt: the checkout may itself live under /tmp or
    # /home, which the first binds hide.
    store = cache_dir() / "images" / "storage"
    binds = "".join(f"mount --bind /mnt/host/{d} /{d}\n" for d in BIND_DIRS + BIND_FILES)
    setup = (f"umount -R -l /run/netns 2>/dev/null; umount -R -l '{lab_dir() / 'ns'}' 2>/dev/null\n"
             "set -e\nmkdir -p /mnt\nmount -t tmpfs -o size=64k,mode=0700 wsguard-stage /mnt\n"
             f"mkdir /mnt/host /mnt/images\nmount --bind '{h.root}' /mnt/host\nmount --bind '{store}' /mnt/images\n"
             f"{binds}mkdir -p {IMAGE_STORE}\nmount --bind /mnt/images {IMAGE_STORE}\n"
             f"umount -l /mnt/host /mnt/images\numount -l /mnt\nhostname {h.name}\n")
    sh(["unshare", f"--mount={h.mnt_ns}", f"--uts={h.uts_ns}", "--propagation", "private", "/bin/sh", "-c", setup])
    start_daemons(h)


# Up and reset return only once the backend answers, so a test's first request never meets a 502.
WAIT_FOR_BACKEND = """
i=0
until curl -sf -o /dev/null http://127.0.0.1:8000/health; do
  i=$((i+1))
  [ $i -lt 300 ] || { echo 'no backend on :8000' >&2; docker logs --tail 20 wealth_coach_backend >&2; exit 1; }
  sleep 0.05
done
"""

DAEMONS = f"""
set -e
/usr/sbin/sshd -f /etc/ssh/sshd_config -E /var/log/sshd.log
nginx
setsid sh -c 'exec podman system service --time=0 unix:///run/docker.sock >/var/log/podman.log 2>&1' &
echo $! > /run/podman-service.pid
i=0
until [ -S /run/docker.sock ]; do
  i=$((i+1)); [ $i -lt 200 ] || {{ echo 'podman service did not start' >&2; exit 1; }}; sleep 0.05
done
cd {APP_DIR}
docker-compose up -d --no-color backend >/var/log/compose-up.log 2>&1 || {{ cat /var/log/compose-up.log >&2; exit 1; }}
""" + WAIT_FOR_BACKEND


def start_daemons(h: LabHost) -> None:
    run_on(h, DAEMONS, timeout=120)


def _netns_inode(netns: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{netns}").st_ino
    except OSError:
        return None


def host_pids(h: LabHost) -> list[int]:
    """Every process on the host: those in its network namespace (found by inode, killed by PID)."""
    ino = _netns_inode(h.netns)
    if ino is None:
        return []
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.stat(f"/proc/{entry.name}/ns/net").st_ino == ino:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _kill_all(pids: Iterable[int]) -> None:
    pids = list(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.05)


def _teardown(h: LabHost) -> None:
    _kill_all(host_pids(h))
    for f in (h.mnt_ns, h.uts_ns):
        while is_mountpoint(f) and sh(["umount", "-l", str(f)], check=False).returncode == 0:
            pass
        if not is_mountpoint(f):
            f.unlink(missing_ok=True)
    if Path(f"/run/netns/{h.netns}").exists():
        sh(["ip", "netns", "del", h.netns], check=False)
    sh(["ip", "link", "del", h.veth], check=False)


def write_client_files(hosts: list[LabHost], state: dict) -> None:
    d = lab_dir()
    ssh = d / "ssh"
    lines, config = [], []
    for h in hosts:
        pub = " ".join(h.path("/etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2])
        lines.append(f"{h.name},{h.address} {pub}\n")
        config.append(f"Host {h.name} {h.address}\n  HostName {h.address}\n  User root\n"
                      f"  IdentityFile {ssh / 'id_ed25519'}\n  IdentitiesOnly yes\n"
                      f"  UserKnownHostsFile {ssh / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
                      "  ConnectTimeout 5\n\n")
    _write(ssh / "known_hosts", "".join(lines))
    _write(d / "known_hosts", "".join(lines))
    _write(ssh / "ssh_config", "".join(config))
    inv = ["# The lab's inventory (Ansible YAML format), written by `invoke lab.up`.\n", "all:\n", "  vars:\n",
           "    ansible_user: root\n", f"    ansible_ssh_private_key_file: {ssh / 'id_ed25519'}\n",
           f"    wsguard_known_hosts: {ssh / 'known_hosts'}\n",
           f"    nginx_site: /etc/nginx/sites-enabled/{SITE_NAME}\n", f"    app_dir: {APP_DIR}\n",
           "    ws_token_key: WS_AUTH_TOKEN\n", "    ws_token_header: Authorization\n",
           "  children:\n", "    lab:\n", "      hosts:\n"]
    for h in hosts:
        inv.append(f"        {h.name}:\n          ansible_host: {h.address}\n"
                   f"          ws_url: ws://{h.address}/ws/chat\n")
    _write(d / "inventory.yml", "".join(inv))


# The lab id is machine-wide (bridge, namespace names, subnet) while the state lives in one checkout's
# lab dir: this file names the lab dir that holds the id, so a second checkout cannot take it over or
# tear it down (a test run in one clone once removed the bridge under a CI run in another).
OWNER = Path("/run/wsguard-lab") / str(LAB_ID)


def _owner() -> str | None:
    try:
        return OWNER.read_text().strip() or None
    except FileNotFoundError:
        return None


def require_own_id() -> None:
    owner = _owner()
    if owner and owner != str(lab_dir()) and Path(owner).is_dir():
        raise LabError(f"lab id {LAB_ID} is in use by the lab in {owner}",
                       hint=f"set WSGUARD_LAB_ID to another number, or run `invoke lab.down` from that checkout "
                            f"(if that lab is gone, remove {OWNER})")


def up(count: int = 3, profile: str = "seed") -> tuple[list[LabHost], list[str]]:
    """Bring lab1..labN up in parallel; hosts already running are kept. Returns (hosts, started)."""
    require_lab_support()
    if profile not in PROFILES:
        raise LabError(f"unknown profile {profile!r}", hint=f"use one of {', '.join(PROFILES)}")
    if count < 1:
        raise LabError("--hosts must be at least 1")
    require_own_id()
    d = lab_dir()
    d.mkdir(parents=True, exist_ok=True)
    OWNER.parent.mkdir(parents=True, exist_ok=True)
    OWNER.write_text(f"{d}\n")
    state = _ensure_secrets(load_state())
    _ensure_client_key()
    _ensure_ns_dir()
    _ensure_bridge()
    ref = image.ensure_image(cache_dir() / "cache", cache_dir() / "images")
    wanted = [LabHost(f"lab{i}", i) for i in range(1, count + 1)]
    todo = [h for h in wanted if not is_running(h)]
    for h in wanted:
        if h not in todo and state["hosts"].get(h.name, {}).get("profile") != profile:
            reset(h, profile=profile, state=state)
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(todo)))) as pool:
        list(pool.map(lambda h: _start_host(h, profile, state, ref), todo))
    for h in wanted:
        state["hosts"][h.name] = {"profile": profile, "address": h.address}
    _save_state(state)
    all_hosts = sorted({*running_hosts(), *wanted}, key=lambda h: h.index)
    write_client_files(all_hosts, state)
    return all_hosts, [h.name for h in todo]


def down() -> list[str]:
    """Remove every namespace, veth, mount, process and file the lab made; keep the image cache."""
    require_lab_support()
    require_own_id()
    d = lab_dir()
    state = load_state()
    names = set(state.get("hosts", {}))
    names |= {p.name for p in (d / "hosts").iterdir()} if (d / "hosts").exists() else set()
    # Namespaces of this lab id that the state no longer lists (an interrupted run, a deleted .lab/).
    netns = sh(["ip", "netns", "list"], check=False).stdout.split()
    names |= {n[len(PREFIX):] for n in netns if n.startswith(PREFIX) and n[len(PREFIX):].startswith("lab")}
    removed = []
    for name in sorted(names):
        _teardown(host(name))
        removed.append(name)
    if sh(["ip", "link", "show", BRIDGE], check=False).returncode == 0:
        sh(["ip", "link", "del", BRIDGE])
    ns = d / "ns"
    while is_mountpoint(ns):
        sh(["umount", "-R", "-l", str(ns)])
    for p in ("hosts", "ns", "ssh", "inventory.yml", "known_hosts", "lab.json"):
        target = d / p
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
    if _owner() == str(d):
        OWNER.unlink(missing_ok=True)
    return removed


def fault(h: LabHost, kind: str) -> None:
    """Inject a network fault between the controller and a host, or undo them all."""
    if kind not in FAULTS:
        raise LabError(f"unknown fault {kind!r}", hint=f"use one of {', '.join(FAULTS)}")
    if kind == "linkdown":
        sh(["ip", "link", "set", h.veth, "down"])
    elif kind == "blackhole":
        sh(["tc", "qdisc", "replace", "dev", h.veth, "root", "blackhole"])
    elif kind == "drop":
        run_on(h, "iptables -C INPUT -i eth0 -j DROP 2>/dev/null || iptables -I INPUT -i eth0 -j DROP")
    else:
        sh(["tc", "qdisc", "del", "dev", h.veth, "root"], check=False)
        run_on(h, "while iptables -D INPUT -i eth0 -j DROP 2>/dev/null; do :; done", check=False)
        sh(["ip", "link", "set", h.veth, "up"])
        # A stale neighbour entry makes ssh say "No route to host" after the fault is gone.
        sh(["ip", "neigh", "flush", "to", h.address], check=False)


# `nginx -s reload` only signals the master: until it has started new workers and told the old ones to stop,
# a connection may still land on an old worker and its old config (a test under load once did). So wait until
# every old worker is gone or shutting down and a new one runs.
RELOAD_NGINX = """
if [ -f /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
  m=$(cat /run/nginx.pid); old=" $(ps -o pid= --ppid "$m" | tr -s ' \n' '  ') "
  nginx -s reload
  i=0
  until ps -o pid=,args= --ppid "$m" | awk -v old="$old" '
      { mine = index(old, " " $1 " ") > 0 }
      mine && $0 !~ /shutting down/ { stale = 1 }
      !mine && $0 ~ /worker process$/ { fresh = 1 }
      END { exit !(fresh && !stale) }'; do
    i=$((i+1)); [ $i -lt 200 ] || { echo 'nginx did not take the new configuration' >&2; exit 1; }
    sleep 0.05
  done
else
  nginx
fi
"""
RESET = f"""
cd {APP_DIR} && docker-compose up -d --no-color --force-recreate backend >/var/log/compose-up.log 2>&1 \
  || {{ cat /var/log/compose-up.log >&2; exit 1; }}
""" + RELOAD_NGINX + WAIT_FOR_BACKEND


def reset(h: LabHost, profile: str | None = None, state: dict | None = None) -> None:
    """Put a running host back to its initial state: site, app files, journal, faults, service."""
    state = state or load_state()
    profile = profile or state.get("hosts", {}).get(h.name, {}).get("profile", "seed")
    if not is_running(h):
        raise LabError(f"{h.name} is not running", hint="run `invoke lab.up` first")
    fault(h, "restore")
    write_nginx(h, profile)
    write_app(h, state, image.image_ref())
    shutil.rmtree(h.path("/var/lib/wsguard"), ignore_errors=True)
    for leftover in h.path("/tmp").iterdir():
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
    run_on(h, RESET)
    state.setdefault("hosts", {})[h.name] = {"profile": profile, "address": h.address}
    _save_state(state)


def status() -> list[dict]:
    state = load_state()
    rows = []
    for name in sorted(state.get("hosts", {}), key=lambda n: host(n).index):
        h = host(name)
        row: dict = {"host": name, "address": h.address, "profile": state["hosts"][name].get("profile"),
                     "running": is_running(h)}
        if row["running"]:
            probe = run_on(h, "nginx -t >/dev/null 2>&1 && echo nginx=ok || echo nginx=bad; "
                              "docker inspect -f 'backend={{.State.Status}}' wealth_coach_backend 2>/dev/null "
                              "|| echo backend=missing", check=False, timeout=20)
            for part in probe.stdout.split():
                k, _, v = part.partition("=")
                row[k] = v
        rows.append(row)
    return rows
