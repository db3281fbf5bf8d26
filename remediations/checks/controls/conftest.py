"""pytest plugin for the controls: `--inventory`/`--limit` options and one test per host x control.

    pytest remediations/checks/controls --inventory .lab/inventory.yml [--limit lab1,lab2] [--probe] \
        [--connect-timeout 10] [--remote-timeout 60] [--junitxml verify.xml] [-n 4]

Each host's facts are gathered once (one round trip) and every control of that host reads them; a
control that fails is a test failure (expected vs actual, secrets masked), one that could not be
checked (host unreachable, refused host key...) is a test error, a skipped control is skipped.
The `host` fixture is testinfra's Host on wsguard's transport, for tests you add beside these.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from remediations.checks.controls.backend import testinfra_host
from remediations.checks.controls.catalog import VerifyOptions, selected
from remediations.checks.verify import verify_one
from remediations.model.errors import RemediationError
from remediations.model.inventory import Host, load_inventory, resolve_inventory_path
from remediations.model.results import HostResult, new_run_id
from remediations.run.runner import Connect

_RESULTS: dict[str, HostResult] = {}
_LOCK = threading.Lock()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("wsguard", "wsguard compliance controls")
    g.addoption("--inventory", help="inventory file or dir (default inventory/ or $WSGUARD_INVENTORY)")
    g.addoption("--limit", help="hosts or groups: names, globs, comma lists, !exclude")
    g.addoption("--connect-timeout", type=float, default=10.0, help="seconds to connect to a host (default 10)")
    g.addoption("--remote-timeout", type=float, default=60.0, help="seconds for each remote step (default 60)")
    g.addoption("--accept-new-host-keys", action="store_true", help="trust and record keys of unknown hosts")
    g.addoption("--probe", action="store_true", help="also run the ws-probe control (stream, then idle)")
    g.addoption("--probe-chunks", type=int, default=30, help="chunks streamed by --probe (default 30)")
    g.addoption("--probe-idle", type=float, default=65.0, help="seconds --probe stays idle (default 65)")


def _options(config: pytest.Config) -> VerifyOptions:
    return VerifyOptions(probe=config.getoption("probe"), probe_chunks=config.getoption("probe_chunks"),
                         probe_idle=config.getoption("probe_idle"),
                         connect_timeout=config.getoption("connect_timeout"))


def _hosts(config: pytest.Config) -> list[Host]:
    cached: list[Host] | None = getattr(config, "_wsguard_hosts", None)
    if cached is None:
        try:
            cached = load_inventory(resolve_inventory_path(config.getoption("inventory"))).select(
                config.getoption("limit"))
        except RemediationError as exc:
            raise pytest.UsageError(str(exc)) from None
        config._wsguard_hosts = cached  # type: ignore[attr-defined]
    return cached


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "inventory_host" in metafunc.fixturenames:
        hosts = _hosts(metafunc.config)
        metafunc.parametrize("inventory_host", hosts, ids=[h.name for h in hosts], scope="session")
    if "control_id" in metafunc.fixturenames:
        ids = [c.id for c in selected(_options(metafunc.config))]
        metafunc.parametrize("control_id", ids, ids=ids)


@pytest.fixture(scope="session")
def connect_options(pytestconfig: pytest.Config) -> Connect:
    return Connect(pytestconfig.getoption("connect_timeout"), pytestconfig.getoption("remote_timeout"),
                   pytestconfig.getoption("accept_new_host_keys"))


@pytest.fixture(scope="session")
def run_id() -> str:
    return new_run_id()


@pytest.fixture
def verified(inventory_host: Host, connect_options: Connect, run_id: str, pytestconfig: pytest.Config) -> HostResult:
    """The host's verify result: every control checked once per host per session (per xdist worker)."""
    with _LOCK:
        if inventory_host.name not in _RESULTS:
            _RESULTS[inventory_host.name] = verify_one(inventory_host, connect_options, _options(pytestconfig), run_id)
        return _RESULTS[inventory_host.name]


class ControlError(Exception):
    """The control could not be checked on this host (reported as a test error, not a failure)."""


@pytest.fixture
def control(verified: HostResult, control_id: str) -> dict[str, Any]:
    c = next(c for c in verified.controls or [] if c["id"] == control_id)
    if c["status"] == "error":
        raise ControlError(f"{verified.host}: {control_id} could not be checked: {c.get('detail')}")
    return c


@pytest.fixture
def host(inventory_host: Host, connect_options: Connect) -> Iterator[Any]:
    """testinfra's Host over wsguard's transport (strict host keys, sudo, timeouts)."""
    t = connect_options.transport(inventory_host)
    try:
        yield testinfra_host(t)
    finally:
        t.close()
