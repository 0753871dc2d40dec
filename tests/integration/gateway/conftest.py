"""Fixtures for the gateway service-mode tests (helpers in gateway_testing.py)."""
import os

import pytest

from gateway_testing import DRIVERCTL, FANOUT, IMAGE, BUILD_DIR, Service


# --- fixtures


@pytest.fixture(scope="session")
def gateway_cache(tmp_path_factory):
    """The node-local cache shared by every service of the session (each job still gets a
    job directory of its own, which must be gone after it)."""
    if not FANOUT.exists() or not DRIVERCTL.exists():
        pytest.skip(f"oshpc-fanout or oshpc-driverctl is not built in {BUILD_DIR}")
    if not IMAGE.exists():
        pytest.skip(f"no image at {IMAGE} (set OSHPC_IMAGE)")
    return tmp_path_factory.mktemp("gateway-cache")


@pytest.fixture(scope="module")
def start_service(tmp_path_factory, gateway_cache):
    """start_service(ranks, args): a running Service, stopped and checked when the module
    ends (a test that stops it itself leaves the check to this fixture)."""
    started = []

    def start(ranks=1, args=(), **kw):
        workdir = tmp_path_factory.mktemp("gw")
        os.chmod(workdir, 0o755)
        service = Service(workdir, gateway_cache, ranks, args, **kw)
        started.append(service)
        return service.start()

    yield start
    for service in started:
        service.stop_and_check()
