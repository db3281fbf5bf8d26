"""The privilege boundary, tried by a hostile app user (issue 16).

wsguard runs as root on hosts where an unprivileged app user (here `deploy`) owns the app checkout, as
app checkouts commonly are. Each attack below is played by that user on the lab against real root runs,
and each test asserts: no file outside the boundary changed (sha256 of /etc/shadow, nginx.conf and a
root-only canary before and after), nothing of theirs appears in any output, and the error says what to do.
Counted in the safety summary as hostile-user attempts / refused.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, REPO, Lab

APP = "/opt/wealth-coach-ai"
ENV = f"{APP}/.env"
SITE = "/etc/nginx/sites-available/api.wealthwarriorshub.test"
ENABLED = "/etc/nginx/sites-enabled/api.wealthwarriorshub.test"
CANARY = "/root/wsguard-canary"
WATCHED = ("/etc/shadow", "/etc/nginx/nginx.conf", CANARY)
HOST = "lab5"


class Attack:
    """One host played against: the app user owns the app dir; the watched files are hashed before."""

    def __init__(self, lab: Lab, host: str) -> None:
        self.lab, self.host = lab, host
        self.canary = "CANARY-" + secrets.token_hex(12)
        # Shaped like a directive, so that nginx, reading it through a swapped link, would quote it in its error.
        lab.sh(host, f"umask 077; printf '%s;\\n' {self.canary} > {CANARY}; chown -R deploy:deploy {APP}")
        self.before = self.hashes()

    def hashes(self) -> dict[str, str]:
        out = self.lab.sh(self.host, "sha256sum " + " ".join(WATCHED) + "; stat -c '%n %U %a' " + " ".join(WATCHED))
        return {line.split()[-1] if len(line.split()) == 2 else line: line for line in out.stdout.splitlines()}

    def as_app_user(self, cmd: str) -> None:
        self.lab.sh(self.host, "su deploy -s /bin/sh -c " + shlex.quote(cmd))

    def invoke(self, *args: str, inventory: str | None = None,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.lab.invoke(*args, "--inventory", inventory or self.lab.inventory, "--limit", self.host,
                               env=env, timeout=120)

    def refused(self, r: subprocess.CompletedProcess[str], *needles: str) -> str:
        """Exit 1, a clear message with each needle, no traceback, nothing the attacker aimed at."""
        out = r.stdout + r.stderr
        assert r.returncode == 1, out
        assert "Traceback" not in out, out
        for n in needles:
            assert n in out, (n, out)
        self.nothing_leaked(out)
        return out

    def nothing_leaked(self, out: str) -> None:
        assert self.canary not in out, "the root-only canary leaked"
        shadow_root = self.lab.sh(self.host, "grep '^root:' /etc/shadow").stdout.strip()
        assert shadow_root not in out, "/etc/shadow leaked"

    def unchanged(self) -> None:
        assert self.hashes() == self.before, "a file outside the boundary changed"


@pytest.fixture
def attack(lab: Lab) -> Iterator[Attack]:
    a = Attack(lab, HOST)
    yield a
    lab.sh(HOST, f"rm -f {CANARY}; umount /var/lib/wsguard 2>/dev/null; true", check=False)
    lab.reset(HOST, profile="seed")


def tmp_inventory(lab: Lab, tmp_path: Path, extra: str) -> str:
    inv = tmp_path / "inventory.yml"
    inv.write_text(Path(lab.inventory).read_text().replace("  vars:\n", "  vars:\n" + extra, 1))
    return str(inv)


@pytest.mark.safety("hostile")
def test_env_symlink_leading_out_of_the_app_is_refused_by_every_task(attack: Attack) -> None:
    assert attack.invoke("fix-rate-limit").returncode == 0  # a run in the journal, for rollback --force
    attack.as_app_user(f"rm -f {ENV}.tmp; ln -s {CANARY} {ENV}.tmp && mv -f {ENV}.tmp {ENV}")
    why = f"{ENV} is a symlink to {CANARY}"
    attack.refused(attack.invoke("fix-rate-limit", "--check", "--diff"), why, "wsguard_allowed_paths")
    attack.refused(attack.invoke("fix-rate-limit", "--diff"), why)
    attack.refused(attack.invoke("fix", "--diff"), why)
    attack.refused(attack.invoke("rollback", "--force", "--diff"), why)
    # The read-only looks say what they could not read; diagnose names it as a note beside its causes.
    for task in (["verify", "--report", "json"], ["diagnose"], ["diagnose", "--json"]):
        r = attack.invoke(*task)
        out = r.stdout + r.stderr
        assert r.returncode in ((0, 2) if task[0] == "diagnose" else (1, 2)) and "Traceback" not in out, out
        assert why in out, out
        attack.nothing_leaked(out)
    attack.unchanged()


@pytest.mark.safety("hostile")
def test_site_resolving_into_the_app_users_tree_is_refused_unless_allowed(attack: Attack, tmp_path: Path) -> None:
    """An admin linked the site to a copy in the app checkout: the app user can then swap it for a link."""
    lab = attack.lab
    lab.sh(HOST, f"mkdir -p {APP}/nginx && cp {SITE} {APP}/nginx/site.conf && chown -R deploy:deploy {APP}/nginx "
                 f"&& ln -sfn {APP}/nginx/site.conf {ENABLED}")
    inv_site = tmp_inventory(lab, tmp_path, f"    nginx_site: {ENABLED}\n")
    out = attack.refused(attack.invoke("fix-nginx", "--check", inventory=inv_site),
                         f"resolves to {APP}/nginx/site.conf", "outside the trees allowed for the nginx site")
    assert "wsguard_allowed_paths" in out
    allowed = tmp_inventory(lab, tmp_path, f"    nginx_site: {ENABLED}\n    wsguard_allowed_paths: [{APP}/nginx]\n")
    r = attack.invoke("fix-nginx", "--check", inventory=allowed)
    assert r.returncode == 2, r.stdout + r.stderr  # inside an allowed tree: read, and a change is pending
    attack.as_app_user(f"ln -sfn {CANARY} {APP}/nginx/site.conf")
    attack.refused(attack.invoke("fix-nginx", "--check", "--diff", inventory=allowed), f"resolves to {CANARY}")
    attack.refused(attack.invoke("fix-nginx", inventory=allowed), f"resolves to {CANARY}")
    # nginx itself now reads the canary through the link; its error names the file but not what is in it.
    for task in (["diagnose"], ["verify", "--report", "json"]):
        r = attack.invoke(*task, inventory=allowed)
        assert r.returncode in (1, 2) and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
        attack.nothing_leaked(r.stdout + r.stderr)
    assert attack.canary in lab.sh(HOST, "nginx -t 2>&1", check=False).stdout  # nginx would have said it
    attack.unchanged()


@pytest.mark.safety("hostile")
def test_symlink_planted_under_the_temporary_name_during_a_run(attack: Attack) -> None:
    lab = attack.lab
    old = lab.sh(HOST, f"cat {ENV}").stdout
    # Links under every name a run might be expected to use: created exclusively, a run never writes through them.
    attack.as_app_user(f"for n in 1 2 3; do ln -s {CANARY} {APP}/..env.wsguard-planted$n; done")
    p = subprocess.Popen([str(BIN / "invoke"), "fix-rate-limit", "--inventory", lab.inventory, "--limit", HOST],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env={**os.environ, "WSGUARD_TEST_PAUSE": "4"})
    try:
        folder = lab.host(HOST).path(APP)
        t0 = time.monotonic()
        staged: list[str] = []
        while not staged:
            staged = [f.name for f in folder.iterdir() if f.name.startswith("..env.wsguard-") and not f.is_symlink()]
            assert time.monotonic() - t0 < 30 and p.poll() is None, "the run never reached its pause"
            time.sleep(0.05)
        # At the pause: the staged file is swapped for a link to the canary, under the very same name.
        attack.as_app_user(f"cd {APP} && mv {staged[0]} moved-away && ln -s {CANARY} {staged[0]}")
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    attack.refused(r, "is not the file this run wrote", "the old bytes go back")
    assert lab.sh(HOST, f"test -f {ENV} && ! test -L {ENV} && cat {ENV}").stdout == old
    assert not [f for f in lab.host(HOST).path(APP).iterdir() if f.name.startswith("..env.wsguard-planted")]
    attack.unchanged()


@pytest.mark.safety("hostile")
def test_journal_that_root_alone_cannot_write_is_refused_by_every_task(attack: Attack) -> None:
    lab = attack.lab
    assert attack.invoke("fix-rate-limit").returncode == 0
    run_id = json.loads(attack.invoke("history", "--json").stdout)["hosts"][0]["evidence"]["runs"][0]["run_id"]
    # Loose mode: the app user plants the lock as a link to nginx.conf (an O_CREAT+ftruncate would empty it).
    lab.sh(HOST, "chmod 0777 /var/lib/wsguard")
    attack.as_app_user("rm -f /var/lib/wsguard/lock; ln -s /etc/nginx/nginx.conf /var/lib/wsguard/lock")
    for task in (["fix-nginx"], ["fix-rate-limit"], ["history"], ["rollback"], ["verify"], ["diagnose"]):
        attack.refused(attack.invoke(*task), "the journal /var/lib/wsguard", "mode 0777",
                       "chown -R root:root /var/lib/wsguard")
    attack.unchanged()
    # Another owner: the app user forges a manifest whose backup would be written over nginx.conf.
    lab.sh(HOST, "chmod 0700 /var/lib/wsguard && rm /var/lib/wsguard/lock && chown -R deploy /var/lib/wsguard/runs")
    forged = {"run_id": run_id, "task": "fix-nginx", "time": "2026-01-01T00:00:00Z", "status": "ok",
              "files": [{"path": "/etc/nginx/nginx.conf", "resolved": "/etc/nginx/nginx.conf", "backup": "file-0.orig",
                         "sha256_before": "0" * 64, "sha256_after": "1" * 64, "mode": 0o644, "uid": 0, "gid": 0}],
              "handlers_run": [], "handlers_pending": [], "handler_specs": []}
    lab.m.run_on(lab.host(HOST), f"cat > /var/lib/wsguard/runs/{run_id}/manifest.json; "
                                 f"echo 'events {{}}' > /var/lib/wsguard/runs/{run_id}/file-0.orig; "
                                 "chown -R deploy /var/lib/wsguard/runs", input=json.dumps(forged))
    for task in (["rollback", "--run", run_id, "--force"], ["history"]):
        attack.refused(attack.invoke(*task), "is owned by deploy (uid 1001)")
    attack.unchanged()


@pytest.mark.safety("bad_input")
def test_unreadable_manifest_is_named_by_history_and_stops_a_default_rollback(attack: Attack) -> None:
    lab = attack.lab
    assert attack.invoke("fix-rate-limit").returncode == 0
    runs = lab.host(HOST).path("/var/lib/wsguard/runs")
    run_id = next(runs.iterdir()).name
    (runs / run_id / "manifest.json").write_text('{"run_id": "' + run_id + '", "files": 7}')
    r = attack.invoke("history")
    assert r.returncode == 0 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert run_id in r.stdout and "unreadable: manifest.json: task is not a string" in r.stdout, r.stdout
    doc = json.loads(attack.invoke("history", "--json").stdout)
    assert doc["hosts"][0]["evidence"]["runs"][0]["status"] == "unreadable"
    out = attack.refused(attack.invoke("rollback"), f"run {run_id}", "unreadable manifest", "--run")
    assert "rollback will not guess" in out
    attack.refused(attack.invoke("rollback", "--run", run_id), f"run {run_id} cannot be rolled back")


@pytest.mark.safety("hostile")
def test_fifo_directory_and_oversized_env_are_refused_without_reading(attack: Attack, tmp_path: Path) -> None:
    attack.as_app_user(f"rm -f {ENV} && mkfifo {ENV}")
    t0 = time.monotonic()
    attack.refused(attack.invoke("fix-rate-limit", "--check"), f"{ENV} is a FIFO, not a regular file")
    assert time.monotonic() - t0 < 60  # a FIFO opened for reading would block for ever: it is never read
    attack.as_app_user(f"rm -f {ENV} && mkdir {ENV}")
    attack.refused(attack.invoke("fix-rate-limit", "--check"), f"{ENV} is a directory")
    attack.as_app_user(f"rmdir {ENV} && head -c 1100000 /dev/zero | tr '\\0' 'x' | sed 's/^/BIG=/' > {ENV}")
    size = attack.lab.sh(HOST, f"stat -c %s {ENV}").stdout.strip()
    attack.refused(attack.invoke("fix-rate-limit", "--check"), f"{size} bytes, over the 1048576-byte limit",
                   "wsguard_max_env_bytes")
    bigger = tmp_inventory(attack.lab, tmp_path, "    wsguard_max_env_bytes: 4000000\n")
    r = attack.invoke("fix-rate-limit", "--check", inventory=bigger)
    assert r.returncode == 2, r.stdout + r.stderr
    attack.unchanged()


@pytest.mark.safety("hostile")
def test_hard_link_in_the_app_dir_is_not_read(attack: Attack) -> None:
    # protected_hardlinks stops the app user from linking root's files; a file of theirs with two names is
    # refused all the same, since wsguard cannot tell whose contents it is.
    attack.as_app_user(f"cp {ENV} {APP}/other && rm {ENV} && ln {APP}/other {ENV}")
    attack.refused(attack.invoke("fix-rate-limit", "--check"), "has 2 hard links")
    attack.unchanged()


def test_acls_and_xattrs_of_the_env_survive_a_fix_and_its_rollback(attack: Attack) -> None:
    lab = attack.lab
    lab.sh(HOST, f"chown root:root {ENV} && chmod 0600 {ENV} && setfacl -m u:deploypw:r {ENV} "
                 f"&& setfattr -n user.wsguard-test -v kept {ENV}")
    before = lab.sh(HOST, f"getfacl -cp {ENV}").stdout
    assert "user:deploypw:r--" in before
    assert attack.invoke("fix-rate-limit").returncode == 0
    assert lab.sh(HOST, f"getfacl -cp {ENV}").stdout == before
    assert lab.sh(HOST, f"getfattr --only-values -n user.wsguard-test {ENV}").stdout == "kept"
    assert attack.invoke("rollback").returncode == 0
    assert lab.sh(HOST, f"getfacl -cp {ENV}").stdout == before
    attack.unchanged()


@pytest.mark.safety("fault")
def test_full_journal_disk_changes_no_file_of_a_two_file_fix(attack: Attack) -> None:
    lab = attack.lab
    before = lab.sh(HOST, f"sha256sum {ENV} {SITE}").stdout
    # A journal with room for one backup of the two: the second fails before any managed file changes.
    lab.sh(HOST, "rm -rf /var/lib/wsguard && mkdir -m 0700 /var/lib/wsguard && "
                 "mount -t tmpfs -o size=8k,mode=0700 tmpfs /var/lib/wsguard && "
                 "head -c 4096 /dev/zero > /var/lib/wsguard/filler && chmod 0600 /var/lib/wsguard/filler")
    r = attack.invoke("fix", "--json")
    doc = json.loads(r.stdout)
    err = doc["hosts"][0]["error"]
    assert r.returncode == 1 and err["kind"] == "journal", r.stdout + r.stderr
    assert "No space left on device; no file was changed" in err["message"], err
    assert lab.sh(HOST, f"sha256sum {ENV} {SITE}").stdout == before
    leftovers = lab.sh(HOST, f"ls -A {APP} /etc/nginx/sites-available /var/lib/wsguard/runs").stdout
    assert ".wsguard-" not in leftovers, leftovers
