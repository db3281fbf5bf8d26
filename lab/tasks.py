"""`invoke lab.*`: production-like hosts on this machine."""

from __future__ import annotations

import sys
import time

from invoke import Collection, Context, task

from remediations.cli.common import fail_on_error
from remediations.cli.flags import Flag, RunFlags, flag_task

# Each host's address is the lab subnet's .(10 + N): .254 is the last.
UP = [Flag("hosts", int, 3, "how many hosts (lab1..labN)", minimum=1, maximum=244),
      Flag("profile", str, "seed", "seed (the incident's site) or stock (5 s read timeout)", metavar="PROFILE")]


@flag_task(own=UP)
def up(c: Context, flags: RunFlags, hosts: int, profile: str) -> None:
    """Bring up lab1..labN (kept if already running) and write .lab/inventory.yml."""
    from lab import hosts as lab

    t0 = time.monotonic()
    all_hosts, started = lab.up(hosts, profile)
    took = time.monotonic() - t0
    for h in all_hosts:
        print(f"{h.name:6} {h.address:14} {'started' if h.name in started else 'kept'}")
    print(f"lab up: {len(all_hosts)} host(s), {len(started)} started in {took:.1f}s; "
          f"inventory {lab.lab_dir() / 'inventory.yml'}")


@task
@fail_on_error
def down(c: Context) -> None:
    """Remove every namespace, veth, bridge, mount and process of the lab."""
    from lab import hosts as lab

    removed = lab.down()
    print(f"lab down: removed {', '.join(removed) or 'nothing'}")


@task
@fail_on_error
def status(c: Context) -> None:
    """Each host's address, profile and services; the deploypw sudo password."""
    from lab import hosts as lab

    rows = lab.status()
    if not rows:
        print("no lab hosts: run `invoke lab.up`")
        return
    for r in rows:
        extra = " ".join(f"{k}={r[k]}" for k in ("nginx", "backend") if k in r)
        print(f"{r['host']:6} {r['address']:14} profile={r['profile']} "
              f"{'running' if r['running'] else 'DOWN'} {extra}")
    print(f"deploypw sudo password: {lab.load_state().get('sudo_password')}")


@task(positional=["host", "command"])
@fail_on_error
def exec(c: Context, host: str, command: str) -> None:  # noqa: A001 - the task's name
    """Run a shell command on a host as root; exit with its status."""
    from lab import hosts as lab

    h = lab.host(host)
    proc = lab.run_on(h, command, check=False, timeout=3600)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    raise SystemExit(proc.returncode)


@task(positional=["host", "kind"], help={"kind": "linkdown | blackhole | drop | restore"})
@fail_on_error
def fault(c: Context, host: str, kind: str) -> None:
    """Inject a network fault towards a host, or restore it."""
    from lab import hosts as lab

    lab.fault(lab.host(host), kind)
    print(f"{host}: {kind}")


@task(help={"host": "one host to reset (default: all)"})
@fail_on_error
def reset(c: Context, host: str | None = None) -> None:
    """Put hosts back to their initial state (site, .env, journal, faults, container)."""
    from lab import hosts as lab

    targets = [lab.host(host)] if host else lab.running_hosts()
    for h in targets:
        lab.reset(h)
        print(f"{h.name}: reset")


NAMESPACE = ("lab", Collection(up, down, status, exec, fault, reset))
