"""Shared fixtures: ONE lab for the whole session (brought up once, torn down at the end).

The test lab has its own id (WSGUARD_LAB_ID, default 5: its own subnet, bridge, namespaces and
state dir), so running the suite never touches a lab you brought up by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import safety_summary

os.environ.setdefault("WSGUARD_LAB_ID", "5")
os.environ.pop("WSGUARD_SUDO_PASSWORD", None)
os.environ.pop("WSGUARD_INVENTORY", None)
os.environ.pop("WSGUARD_WEBHOOK", None)
# verify appends to a compliance history: the tests' goes to a scratch file, never the user's.
os.environ["WSGUARD_HISTORY"] = os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"wsguard-test-history-{os.getpid()}.jsonl")

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LAB_HOSTS = int(os.environ.get("WSGUARD_TEST_HOSTS", "5"))


def lab_supported() -> str | None:
    if sys.platform != "linux":
        return "the lab needs Linux"
    if os.geteuid() != 0:
        return "the lab needs root"
    return None


class Lab:
    """Handles onto the running test lab for tests: run commands on hosts, reset them, call tasks."""

    def __init__(self) -> None:
        from lab import hosts

        self.m = hosts
        self.dir = hosts.lab_dir()
        self.inventory = str(self.dir / "inventory.yml")
        self.ssh_config = str(self.dir / "ssh" / "ssh_config")
        state = hosts.load_state()
        self.token: str = state["token"]
        self.secret: str = state["openai_key"]
        self.sudo_password: str = state["sudo_password"]

    def host(self, name: str):  # type: ignore[no-untyped-def]
        return self.m.host(name)

    def address(self, name: str) -> str:
        return self.m.host(name).address

    def sh(self, name: str, cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.m.run_on(self.m.host(name), cmd, check=check, timeout=timeout)

    def read(self, name: str, path: str) -> bytes:
        return self.m.host(name).path(path).read_bytes() if _bound(path) else \
            self.sh(name, f"cat {path}").stdout.encode()

    def reset(self, *names: str, profile: str | None = None) -> None:
        for n in names:
            self.m.reset(self.m.host(n), profile=profile)

    def invoke(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a task through the real CLI, as a user would."""
        full_env = {**os.environ, **(env or {})}
        return subprocess.run([str(BIN / "invoke"), *args], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout, env=full_env, input=input)


def _bound(path: str) -> bool:
    from lab.hosts import BIND_DIRS

    return any(path.lstrip("/").startswith(d + "/") for d in BIND_DIRS)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    why = lab_supported()
    if why:
        pytest.skip(f"{why}: lab tests need Linux and root (run `bash scripts/test.sh` as root)")
    from lab import hosts

    hosts.require_own_id()  # another checkout's lab with this id: refuse before touching anything
    try:
        hosts.up(LAB_HOSTS, "seed")
    except BaseException:
        hosts.down()  # a half-made lab is not left behind for the next run
        raise
    yield Lab()
    if not os.environ.get("WSGUARD_KEEP_LAB"):
        hosts.down()


@pytest.fixture
def clean(lab: Lab) -> Iterator[Lab]:
    """Every lab host back to its initial state after the test (the tests share one lab)."""
    yield lab
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=5) as pool:
        list(pool.map(lambda h: lab.m.reset(h, profile="seed"), lab.m.running_hosts()))


# The safety summary (tests/safety_summary.py): outcomes of @pytest.mark.safety tests, printed at the end.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    safety_summary.record(item, outcome.get_result())  # type: ignore[attr-defined]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    safety_summary.terminal_summary(terminalreporter)
