"""Runs last (file order): `lab.down` leaves no namespace, veth, bridge, mount or process behind."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from conftest import Lab


def test_lab_down_leaves_nothing_behind(lab: Lab) -> None:
    m = lab.m
    hosts = m.running_hosts()
    assert hosts, "the lab should be up before this test"
    pids = {p for h in hosts for p in m.host_pids(h)}
    assert len(pids) >= 4 * len(hosts)  # sshd, nginx master + workers, podman, conmon, the backend...
    r = lab.invoke("lab.down")
    assert r.returncode == 0, r.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert m.PREFIX not in netns
    assert m.PREFIX not in links and m.BRIDGE not in links
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(lab.dir) not in mounts
    alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
    assert alive == [], f"processes left behind: {alive}"
    assert not (lab.dir / "hosts").exists() and not (lab.dir / "inventory.yml").exists()
