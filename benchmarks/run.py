"""wsguard against Ansible and pyinfra, side by side on the same lab (issue 12). A script, not a test.

    .venv/bin/python benchmarks/run.py [--hosts 1,10,30] [--rounds 3] [--quick] [--keep-lab] [--no-profile]

The same remediation by each tool: the two `.env` flags and the nginx WebSocket directives, `nginx -t` and a
reload, the backend recreated on change (`docker-compose up -d --no-deps backend`).
  wsguard   `invoke fix` (fix-rate-limit and fix-nginx as one transaction per host)
  Ansible   benchmarks/ansible/playbook.yml (pipelining, ControlPersist, forks = hosts, no facts, strict keys)
  pyinfra   benchmarks/pyinfra/deploy.py (files.line + files.block, `_if` for the restarts)
Ansible and pyinfra are installed in their own venvs under benchmarks/.work/ (gitignored), py-spy in a third.

For each host count, several rounds, the tools' order rotating each round; for each tool: `lab.reset` of the
hosts, then a first apply, a no-change rerun and a check (`--check` / `--dry`) on the now compliant hosts.
Every run is checked before it counts: the apply leaves the hosts compliant (flags in .env and in the
running container, directives in the location, nginx -t ok and reloaded; `invoke verify` in round 1) and the
rerun and the check change nothing (sha256 of .env and site, container id, nginx worker pids).
Measured: wall time, controller CPU (user+sys of every process of the run, from RUSAGE_CHILDREN deltas; the
script is a child subreaper while a tool runs, so ssh ControlPersist masters are counted and reaped too) and
peak memory of the run's process tree (sum of RSS, and of PSS which counts shared pages once; sampled).
Medians are printed as a markdown table and written to benchmarks/results.md with the ratios and goals.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"
VENV_BIN = Path(sys.executable).parent
TOOLS = ("wsguard", "ansible", "pyinfra")
MODES = ("apply", "no-change", "check")
PAGE = os.sysconf("SC_PAGE_SIZE")
SITE_REAL = "/etc/nginx/sites-available/api.wealthwarriorshub.test"  # the lab's site; sites-enabled links here
ENV_FILE = "/opt/wealth-coach-ai/.env"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- tool installs ---------------------------------------------------------------------------------

VENVS = {"ansible-venv": (["ansible-core"], "ansible-playbook"), "pyinfra-venv": (["pyinfra"], "pyinfra"),
         "bench-venv": (["py-spy"], "py-spy")}


def ensure_venvs(names: list[str]) -> None:
    for name in names:
        pkgs, exe = VENVS[name]
        venv = WORK / name
        if (venv / "bin" / exe).exists():
            continue
        log(f"installing {' '.join(pkgs)} into {venv}")
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *pkgs], check=True)


def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except OSError:
        return "?"
    return out.strip().splitlines()[0] if out.strip() else "?"


# --- measuring a run --------------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36


def subreaper(on: bool) -> None:
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0)


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def descendants(pid: int) -> list[int]:
    todo, seen = children(pid), []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += children(p)
    return seen


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@dataclass
class Measure:
    wall: float = 0.0
    cpu: float = 0.0
    rss: int = 0          # peak sum of RSS over the run's process tree
    pss: int = 0          # peak sum of PSS (shared pages counted once)
    codes: list[int] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def measure(cmds: list[list[str]], *, cwd: Path, env: dict[str, str], logfile: Path) -> Measure:
    """Run commands one after the other as one measured unit."""
    m = Measure()
    me = os.getpid()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subreaper(True)
    try:
        t0 = time.perf_counter()
        for cmd in cmds:
            out_path = logfile.with_suffix(".out")
            with open(logfile, "a") as err, open(out_path, "w+") as out:
                err.write(f"$ {' '.join(cmd)}\n")
                err.flush()
                p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
                n = 0
                while p.poll() is None:
                    tree = descendants(me)
                    m.rss = max(m.rss, sum(rss(q) for q in tree))
                    if n % 5 == 0:
                        m.pss = max(m.pss, sum(pss(q) for q in tree))
                    n += 1
                    time.sleep(0.02)
                m.codes.append(p.returncode)
                out.seek(0)
                m.outputs.append(out.read())
        m.wall = time.perf_counter() - t0
        # What outlived the tool (ssh ControlPersist masters) is ours now: end it by pid, reap it, count it.
        for q in descendants(me):
            try:
                os.kill(q, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.02)
    finally:
        subreaper(False)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    m.cpu = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
    with open(logfile, "a") as f:
        for out in m.outputs:
            f.write(out[-20000:] + "\n")
    return m


# --- the tools -----------------------------------------------------------------------------------------

class Tools:
    def __init__(self, lab: Any, n: int) -> None:
        self.n = n
        self.dir = WORK / "inv" / str(n)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.names = [f"lab{i}" for i in range(1, n + 1)]
        ssh = lab.lab_dir() / "ssh"
        from remediations.model.inventory import DEFAULT_ENV_FLAGS, DEFAULT_NGINX_DIRECTIVES

        self.flags, self.directives = dict(DEFAULT_ENV_FLAGS), list(DEFAULT_NGINX_DIRECTIVES)
        addr = {h: lab.host(h).address for h in self.names}
        common = {"app_dir": "/opt/wealth-coach-ai", "env_file": ENV_FILE, "ws_location": "/ws/",
                  "env_flags": self.flags, "nginx_directives": self.directives}
        # wsguard: the lab's own inventory, cut to these hosts.
        import yaml

        inv = yaml.safe_load((lab.lab_dir() / "inventory.yml").read_text())
        hosts = inv["all"]["children"]["lab"]["hosts"]
        inv["all"]["children"]["lab"]["hosts"] = {h: hosts[h] for h in self.names}
        self.wsguard_inv = self.dir / "wsguard.yml"
        self.wsguard_inv.write_text(yaml.safe_dump(inv, sort_keys=False))
        # Ansible: YAML inventory (written as JSON, which YAML reads) and its own config.
        a_vars = {"ansible_user": "root", "ansible_ssh_private_key_file": str(ssh / "id_ed25519"),
                  "ansible_python_interpreter": "/usr/bin/python3", "nginx_site": SITE_REAL, **common}
        (self.dir / "ansible-inventory.yml").write_text(json.dumps(
            {"all": {"vars": a_vars, "children": {"lab": {"hosts": {h: {"ansible_host": addr[h]}
                                                                    for h in self.names}}}}}, indent=1))
        self.ansible_home = WORK / "ansible-home"
        self.cp_dir = WORK / "cp"
        (self.dir / "ansible.cfg").write_text(
            "[defaults]\n"
            f"forks = {n}\nhost_key_checking = True\ngathering = explicit\nretry_files_enabled = False\n"
            "interpreter_python = /usr/bin/python3\n"
            "[ssh_connection]\npipelining = True\n"
            f"ssh_args = -F {ssh / 'ssh_config'} -o ControlMaster=auto -o ControlPersist=60s "
            f"-o UserKnownHostsFile={ssh / 'known_hosts'} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes\n"
            f"control_path_dir = {self.cp_dir}\n")
        # pyinfra: a Python inventory with the same data.
        p_data = {"ssh_user": "root", "ssh_key": str(ssh / "id_ed25519"),
                  "ssh_known_hosts_file": str(ssh / "known_hosts"), "ssh_strict_host_key_checking": "yes",
                  "nginx_site": SITE_REAL, **common}
        (self.dir / "pyinfra_inventory.py").write_text(
            "# generated by benchmarks/run.py\n"
            f"_data = {p_data!r}\n"
            f"lab = [(address, dict(_data)) for address in {[addr[h] for h in self.names]!r}]\n")

    def env(self, tool: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "WSGUARD_SUDO"))}
        env["WSGUARD_LAB_ID"] = os.environ["WSGUARD_LAB_ID"]
        if tool == "ansible":
            env.update(ANSIBLE_CONFIG=str(self.dir / "ansible.cfg"), ANSIBLE_HOME=str(self.ansible_home),
                       ANSIBLE_LOCAL_TEMP=str(self.ansible_home / "tmp"), ANSIBLE_NOCOLOR="1",
                       ANSIBLE_DEPRECATION_WARNINGS="0")
        return env

    def commands(self, tool: str, mode: str) -> tuple[list[list[str]], Path]:
        check = mode == "check"
        if tool == "wsguard":
            inv = ["--inventory", str(self.wsguard_inv), "--forks", str(self.n), "--json"]
            extra = ["--check"] if check else []
            return [[str(VENV_BIN / "invoke"), "fix", *inv, *extra]], REPO
        if tool == "ansible":
            # A fresh control path dir each run: every run connects cold, as the other tools do.
            shutil.rmtree(self.cp_dir, ignore_errors=True)
            self.cp_dir.mkdir(parents=True)
            return [[str(WORK / "ansible-venv/bin/ansible-playbook"), "-i", str(self.dir / "ansible-inventory.yml"),
                     str(HERE / "ansible" / "playbook.yml"), *(["--check"] if check else [])]], self.dir
        return [[str(WORK / "pyinfra-venv/bin/pyinfra"), "-y", "--parallel", str(self.n),
                 "pyinfra_inventory.py", str(HERE / "pyinfra" / "deploy.py"), *(["--dry"] if check else [])]], self.dir


def tool_ok(tool: str, mode: str, m: Measure, n: int) -> str | None:
    """Why the tool's own report says the run went wrong, or None."""
    if tool == "wsguard":
        want = {"apply": "changed", "no-change": "ok", "check": "ok"}[mode]
        for code, out in zip(m.codes, m.outputs, strict=True):
            try:
                doc = json.loads(out)
            except ValueError:
                return f"not JSON (exit {code})"
            bad = [(h["host"], h["status"]) for h in doc["hosts"] if h["status"] != want]
            if code != 0 or bad or len(doc["hosts"]) != n:
                return f"{doc['task']}: exit {code}, hosts not {want}: {bad[:3]}"
        return None
    if any(m.codes):
        return f"exit {m.codes}"
    out = m.outputs[0]
    if tool == "ansible":
        recap = re.findall(r"changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", out)
        if len(recap) != n or any(int(u) or int(f) for _, u, f in recap):
            return "recap shows unreachable/failed hosts"
        changed = [int(c) for c, _, _ in recap]
        if mode == "apply" and not all(changed):
            return "apply changed nothing on some host"
        if mode != "apply" and any(changed):
            return f"{mode} reported changes: {changed}"
    return None


# --- the hosts' own state (the lab's back door, never a tool's transport) ----------------------------

def host_state(lab: Any, name: str) -> dict[str, Any]:
    h = lab.host(name)
    env_bytes = h.path(ENV_FILE).read_bytes()
    site_bytes = h.path(SITE_REAL).read_bytes()
    probe = lab.run_on(h, "docker inspect -f '{{.Id}} {{.State.Running}}' wealth_coach_backend; "
                          "docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' wealth_coach_backend; "
                          "echo '--nginx-t'; nginx -t >/dev/null 2>&1 && echo ok || echo bad",
                       check=False, timeout=60).stdout
    head, _, rest = probe.partition("\n")
    env_part, _, nginx_t = rest.partition("--nginx-t\n")
    cid, _, running = head.partition(" ")
    try:
        master = int(h.path("/run/nginx.pid").read_text().split()[0])
        workers = sorted(children(master))
    except (OSError, ValueError, IndexError):
        workers = []
    return {"env_sha": hashlib.sha256(env_bytes).hexdigest(), "site_sha": hashlib.sha256(site_bytes).hexdigest(),
            "env_text": env_bytes.decode(), "site_text": site_bytes.decode(), "container": cid,
            "running": running.strip() == "true", "container_env": dict(
                line.split("=", 1) for line in env_part.splitlines() if "=" in line),
            "nginx_t": nginx_t.strip() == "ok", "workers": workers,
            "site_is_link": h.path("/etc/nginx/sites-enabled/api.wealthwarriorshub.test").is_symlink()}


def states(lab: Any, names: list[str]) -> dict[str, dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(names, pool.map(lambda n: host_state(lab, n), names), strict=True))


def ws_block(site: str) -> str:
    m = re.search(r"location\s+/ws/\s*\{(.*?)\}", site, re.S)
    return m.group(1) if m else ""


def compliance_problems(tools: Tools, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    from remediations.edit.envfile import read_values

    problems = []
    for name, s in after.items():
        values = read_values(s["env_text"])
        block = {" ".join(line.split()).rstrip(";") for line in ws_block(s["site_text"]).splitlines()}
        missing_flags = [k for k, v in tools.flags.items() if values.get(k) != v]
        stale_env = [k for k, v in tools.flags.items() if s["container_env"].get(k) != v]
        missing_dirs = [d for d in tools.directives if " ".join(d.split()) not in block]
        for what, bad in (("flags not in .env", missing_flags), ("container lacks", stale_env),
                          ("directives not in the location", missing_dirs)):
            if bad:
                problems.append(f"{name}: {what}: {bad}")
        if not s["running"]:
            problems.append(f"{name}: backend not running")
        if not s["nginx_t"]:
            problems.append(f"{name}: nginx -t fails")
        if not s["site_is_link"]:
            problems.append(f"{name}: sites-enabled symlink replaced by a file")
        if before[name]["container"] == s["container"]:
            problems.append(f"{name}: container not recreated")
        if set(before[name]["workers"]) & set(s["workers"]):
            problems.append(f"{name}: nginx not reloaded (same workers)")
    return problems


def unchanged_problems(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    problems = []
    for name, s in after.items():
        for k in ("env_sha", "site_sha", "container", "workers"):
            if before[name][k] != s[k]:
                problems.append(f"{name}: {k} changed")
    return problems


def verify_json(tools: Tools, notes: list[str], label: str) -> list[str]:
    """`invoke verify` on every host; a failing control is retried twice, 3 s apart (ws-upgrade probes the
    backend through nginx, which may still be starting right after a recreate); what persists is a problem."""
    first: list[str] = []
    for attempt in range(3):
        problems = _verify_once(tools)
        if not problems:
            if attempt:
                notes.append(f"{label}: verify passed only {3 * attempt} s after the run (first: {first[:2]})")
            return []
        first = first or problems
        time.sleep(3)
    return problems


def _verify_once(tools: Tools) -> list[str]:
    r = subprocess.run([str(VENV_BIN / "invoke"), "verify", "--inventory", str(tools.wsguard_inv), "--json",
                        "--forks", str(tools.n)], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env=tools.env("wsguard"))
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        return [f"verify: no JSON (exit {r.returncode}): {r.stderr[-300:]}"]
    return [f"{h['host']}: verify {c['id']} {c['status']}" for h in doc["hosts"]
            for c in h.get("controls", []) if c["status"] not in ("pass", "skip", "skipped", "na")]


# --- start-up and profile ---------------------------------------------------------------------------

def startup_figures() -> dict[str, float]:
    def best(cmd: list[str], k: int = 5) -> float:
        times = []
        for _ in range(k):
            t0 = time.perf_counter()
            subprocess.run(cmd, cwd=REPO, capture_output=True, check=False)
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    imp = subprocess.run([sys.executable, "-X", "importtime", "-c", "import tasks"], cwd=REPO,
                         capture_output=True, text=True).stderr
    total = next((int(line.split("|")[1]) for line in imp.splitlines() if line.rstrip().endswith("| tasks")), 0)
    return {"python -c pass": best([sys.executable, "-c", "pass"]),
            "import tasks (importtime, s)": total / 1e6,
            "invoke --list": best([str(VENV_BIN / "invoke"), "--list"]),
            "invoke fix-rate-limit --help": best([str(VENV_BIN / "invoke"), "fix-rate-limit", "--help"])}


CATEGORIES = [  # first match wins, searched over the whole stack (root to leaf)
    ("import (module loading)", ("_find_and_load",)),
    ("SSH connect (fabric Connection, handshake, auth)", ("Transport.connect (remediations/host/transport.py",)),
    ("remote round trip (waiting on the agent)", ("_exec (remediations/host/transport.py",)),
    ("plan (pure: .env / nginx editors)", ("plan (remediations/", "site_plan", "set_flags", "plan_site")),
    ("inventory (YAML)", ("load_inventory",)),
    ("report / JSON", ("print_json", "remediations/output/")),
    ("main thread waiting for the host pool", ("as_completed", "_shutdown", "shutdown (concurrent")),
    ("paramiko transport threads (kex, crypto, packets)", ("paramiko/transport.py",)),
    ("invoke (CLI parsing, config)", ("invoke/",)),
    ("no Python frame (interpreter start/exit)", ("<empty>",)),
]


def summarize_profile(raw: str) -> list[tuple[str, int]]:
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        stack = stack.strip() or "<empty>"
        cat = next((c for c, keys in CATEGORIES if any(k in stack for k in keys)), "other")
        counts[cat] += int(n)
    return counts.most_common()


def profile(tools: Tools) -> dict[str, Any]:
    """py-spy over a no-change run of both tasks: all threads, on-CPU samples and (with --idle) wall samples."""
    out: dict[str, Any] = {}
    for label, extra in (("cpu", []), ("wall", ["--idle"])):
        raw = ""
        for cmd in tools.commands("wsguard", "no-change")[0]:
            dest = WORK / f"profile-{label}-{cmd[1]}.txt"
            subprocess.run([str(WORK / "bench-venv/bin/py-spy"), "record", "--format", "raw", "--rate", "250",
                            "--nonblocking", *extra, "-o", str(dest), "--", sys.executable, *cmd],
                           cwd=REPO, capture_output=True, env=tools.env("wsguard"), check=False)
            raw += dest.read_text() if dest.exists() else ""
        out[label] = summarize_profile(raw)
        total = sum(c for _, c in out[label]) or 1
        out[label + "_pct"] = [(c, round(100 * k / total, 1)) for c, k in out[label]]
    return out


# --- main -------------------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", default="1,10,30", help="host counts, comma list (default 1,10,30)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="1 and 10 hosts, 1 round")
    ap.add_argument("--lab-id", default=os.environ.get("WSGUARD_LAB_ID", "8"))
    ap.add_argument("--keep-lab", action="store_true", help="leave the lab up at the end")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--tools", default=",".join(TOOLS))
    args = ap.parse_args()
    counts = [1, 10] if args.quick else sorted({int(x) for x in args.hosts.split(",")})
    rounds = 1 if args.quick else args.rounds
    tools_used = [t for t in args.tools.split(",") if t in TOOLS]
    os.environ["WSGUARD_LAB_ID"] = str(args.lab_id)
    sys.path.insert(0, str(REPO))
    from lab import hosts as lab

    WORK.mkdir(exist_ok=True)
    logdir = WORK / "logs"
    shutil.rmtree(logdir, ignore_errors=True)
    logdir.mkdir()
    started = time.monotonic()
    ensure_venvs([{"ansible": "ansible-venv", "pyinfra": "pyinfra-venv"}[t] for t in tools_used if t != "wsguard"]
                 + ([] if args.no_profile else ["bench-venv"]))
    versions = {"wsguard": tool_version([str(VENV_BIN / "python"), "-c",
                                         "import importlib.metadata as m; print('wsguard', m.version('wsguard'), "
                                         "'fabric', m.version('fabric'), 'paramiko', m.version('paramiko'))"]),
                "ansible": tool_version([str(WORK / "ansible-venv/bin/ansible-playbook"), "--version"]),
                "pyinfra": tool_version([str(WORK / "pyinfra-venv/bin/pyinfra"), "--version"])}
    log(f"lab {args.lab_id}: bringing up {max(counts)} hosts")
    t0 = time.monotonic()
    lab.up(max(counts), "seed")
    log(f"lab up in {time.monotonic() - t0:.1f}s")
    startup = startup_figures()
    results: dict[tuple[int, str, str], list[Measure]] = defaultdict(list)
    failures: list[str] = []
    verified: list[str] = []
    notes: list[str] = []

    # lab.reset saves lab.json through one fixed temporary name: resets in parallel must take turns there.
    save_lock = threading.Lock()
    save_state = lab._save_state

    def locked_save(state: dict) -> None:
        with save_lock:
            save_state(state)

    lab._save_state = locked_save

    def reset(names: list[str]) -> None:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda n: lab.reset(lab.host(n), profile="seed"), names))

    prof: dict[str, Any] = {}
    try:
        for n in counts:
            tools = Tools(lab, n)
            for r in range(rounds):
                order = tools_used[r % len(tools_used):] + tools_used[:r % len(tools_used)]
                for tool in order:
                    reset(tools.names)
                    s0 = states(lab, tools.names)
                    for mode in MODES:
                        time.sleep(0.5)  # let the hosts settle after the last run's restarts
                        cmds, cwd = tools.commands(tool, mode)
                        m = measure(cmds, cwd=cwd, env=tools.env(tool), logfile=logdir / f"{tool}-{n}-{mode}-{r}.log")
                        problems = [f"{tool} {mode}: {p}" for p in [tool_ok(tool, mode, m, n)] if p]
                        s = states(lab, tools.names)
                        if mode == "apply":
                            problems += [f"{tool} {mode}: {p}" for p in compliance_problems(tools, s0, s)]
                            if r == 0:
                                problems += [f"{tool} {mode}: {p}"
                                             for p in verify_json(tools, notes, f"{tool} @ {n} hosts")]
                                if not problems:
                                    verified.append(f"{tool} @ {n}")
                            s_ref = s
                        else:
                            problems += [f"{tool} {mode}: {p}" for p in unchanged_problems(s_ref, s)]
                        log(f"{n:>2} hosts round {r + 1} {tool:8} {mode:9} wall {m.wall:6.2f}s cpu {m.cpu:6.2f}s "
                            f"rss {m.rss / 2**20:6.1f}MB pss {m.pss / 2**20:6.1f}MB"
                            + (f"  PROBLEM: {problems[:3]}" if problems else ""))
                        failures += [f"{n} hosts, round {r + 1}: {p}" for p in problems]
                        if not problems:
                            results[(n, tool, mode)].append(m)
        if not args.no_profile and "wsguard" in tools_used:
            n = max(counts)
            tools = Tools(lab, n)
            log(f"profiling a {n}-host no-change wsguard run (py-spy)")
            prof = profile(tools)
    finally:
        elapsed = time.monotonic() - started
        if not args.keep_lab:
            log("lab down")
            lab.down()
    report = render(counts, rounds, tools_used, results, failures, verified, startup, prof, versions, elapsed, notes)
    print(report)
    (HERE / "results.md").write_text(report)
    return 1 if failures else 0


def med(ms: list[Measure], attr: str) -> float | None:
    return statistics.median(getattr(m, attr) for m in ms) if ms else None


def render(counts: list[int], rounds: int, tools: list[str], results: dict[tuple[int, str, str], list[Measure]],
           failures: list[str], verified: list[str], startup: dict[str, float], prof: dict[str, Any],
           versions: dict[str, str], elapsed: float, notes: list[str]) -> str:
    def fmt(v: float | None, unit: str = "") -> str:
        return "-" if v is None else f"{v:.2f}{unit}"

    def mb(v: float | None) -> str:
        return "-" if v is None else f"{v / 2**20:.0f}"

    def ratio(n: int, mode: str, other: str, attr: str = "wall") -> float | None:
        a, b = med(results[(n, "wsguard", mode)], attr), med(results[(n, other, mode)], attr)
        return a / b if a is not None and b else None

    lines = ["# wsguard vs Ansible vs pyinfra: benchmark results", "",
             f"Generated by `benchmarks/run.py` on {time.strftime('%Y-%m-%d %H:%M')} ({os.cpu_count()} cores), "
             f"{rounds} round(s), hosts {counts}, total {elapsed / 60:.1f} min.", "",
             "Versions: " + "; ".join(f"{k}: {v}" for k, v in versions.items()), "",
             "Medians. wall = seconds; cpu = controller user+sys seconds (all processes of the run, ssh included); "
             "rss/pss = peak MB of the run's process tree (RSS summed; PSS counts shared pages once). "
             "wsguard = `invoke fix` (both remediations, one transaction per host). "
             "check = `--check` / `--check` / `--dry` on hosts already compliant.", "",
             "| hosts | mode | tool | wall s | cpu s | rss MB | pss MB | runs |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    for n in counts:
        for mode in MODES:
            for tool in tools:
                ms = results[(n, tool, mode)]
                lines.append(f"| {n} | {mode} | {tool} | {fmt(med(ms, 'wall'))} | {fmt(med(ms, 'cpu'))} | "
                             f"{mb(med(ms, 'rss'))} | {mb(med(ms, 'pss'))} | {len(ms)} |")
    if "ansible" in tools and "pyinfra" in tools and "wsguard" in tools:
        lines += ["", "## Ratios (wsguard / other, medians of the same run)", "",
                  "| hosts | mode | wall vs Ansible | wall vs pyinfra | cpu vs Ansible | cpu vs pyinfra |",
                  "|---:|---|---:|---:|---:|---:|"]
        for n in counts:
            for mode in MODES:
                cells = [ratio(n, mode, o, a) for a in ("wall", "cpu") for o in ("ansible", "pyinfra")]
                lines.append(f"| {n} | {mode} | " + " | ".join(fmt(c, "x") for c in cells) + " |")
        lines += ["", "## Goals", ""]
        for n in [c for c in counts if c >= 10]:
            for mode in ("no-change", "check"):
                rp, ra = ratio(n, mode, "pyinfra"), ratio(n, mode, "ansible")
                lines.append(f"- {n} hosts {mode}: wall {fmt(rp, 'x')} pyinfra (goal <= 0.5x: "
                             f"{'met' if rp is not None and rp <= 0.5 else 'NOT met'}), {fmt(ra, 'x')} Ansible "
                             f"(goal <= 0.15x: {'met' if ra is not None and ra <= 0.15 else 'NOT met'})")
        for n in counts:
            rp = ratio(n, "apply", "pyinfra")
            lines.append(f"- {n} hosts apply: wall {fmt(rp, 'x')} pyinfra (goal <= 0.8x: "
                         f"{'met' if rp is not None and rp <= 0.8 else 'NOT met'})")
        big = max(counts)
        peak = max((m.rss for mode in MODES for m in results[(big, "wsguard", mode)]), default=None)
        lines.append(f"- controller peak RSS at {big} hosts (wsguard, worst run): {mb(peak)} MB (goal < 150 MB: "
                     f"{'met' if peak is not None and peak < 150 * 2**20 else 'NOT met'})")
    lines += ["", "## Checks before timing", "",
              "Every timed run was checked; a run that failed a check is left out of the medians and listed here. "
              "Apply: flags in .env and in the recreated container, every directive in the /ws/ location, "
              "nginx -t ok, nginx reloaded (new workers), the sites-enabled symlink kept; in round 1 also "
              "`invoke verify --json` on every host. No-change and check: sha256 of .env and of the site, the "
              "container id and nginx's worker pids all unchanged.", "",
              f"- apply verified compliant by `invoke verify` (round 1): {', '.join(verified) or 'none'}",
              f"- failed checks: {len(failures)}"]
    lines += [f"  - {f}" for f in failures[:40]]
    lines += [f"- note: {x}" for x in notes]
    lines += ["", "## wsguard start-up", "", "| what | seconds |", "|---|---:|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in startup.items()]
    if prof:
        lines += ["", f"## Profile: wsguard no-change run on {max(counts)} hosts (py-spy, both tasks, all threads)",
                  "", "| where | on-CPU % | wall % (incl. idle threads) |", "|---|---:|---:|"]
        wall = dict(prof.get("wall_pct", []))
        for cat, pct in prof.get("cpu_pct", []):
            lines.append(f"| {cat} | {pct} | {wall.get(cat, '-')} |")
        lines += ["", "Raw samples: benchmarks/.work/profile-*.txt (py-spy --format raw)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
