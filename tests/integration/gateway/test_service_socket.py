"""Who may talk to the service: the socket's directory must be private to the user who runs
it, the socket is 0600, and a peer of another uid is refused even when it is root (and could
open the socket despite its mode)."""
import os
import pathlib
import pwd
import shutil
import socket as sockets
import subprocess
import tempfile

import pytest

import exit_codes
from gateway_testing import (DRIVERCTL, FANOUT, IMAGE, IS_ROOT, TEST_USER, Service,
                             wait_for)


def finished(service, timeout=60):
    """Starts a service that must refuse to start; its exit status and stderr."""
    service.start(wait=False)
    returncode = service.proc.wait(timeout=timeout)
    return returncode, service.stderr_path.read_text()


@pytest.fixture
def workdir(tmp_path):
    os.chmod(tmp_path, 0o755)
    return tmp_path


def test_a_socket_directory_open_to_others_is_refused(workdir, gateway_cache):
    service = Service(workdir, gateway_cache, socket_dir_mode=0o755)
    returncode, stderr = finished(service)
    assert returncode == exit_codes.BAD_INPUT, stderr
    assert "make it 0700" in stderr
    assert not service.socket.exists()
    service.stop_and_check()


@pytest.mark.parametrize("problem", ["event-file", "output-dir", "socket-path"])
def test_a_service_refused_at_start_leaves_nothing(workdir, gateway_cache, problem):
    service = Service(workdir, gateway_cache)
    service.socket_dir = workdir / "fresh-sock"  # the service must create it, then remove it
    service.socket = service.socket_dir / "driver.sock"
    service.output_dir = workdir / "out" / "run"
    if problem == "event-file":
        service.args = ["--events", str(workdir / "missing" / "events.jsonl")]
    elif problem == "output-dir":
        (workdir / "a-file").write_text("")
        service.output_dir = workdir / "a-file" / "out"
    else:
        service.socket = service.socket_dir / ("s" * 120)
    proc = subprocess.run(service.argv(), cwd=workdir, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == exit_codes.BAD_INPUT, proc.stderr
    assert not service.socket_dir.exists(), proc.stderr
    assert not (workdir / "out").exists(), proc.stderr


def test_a_live_socket_is_not_taken_over(start_service, gateway_cache, tmp_path_factory):
    first = start_service()
    workdir = tmp_path_factory.mktemp("gw-second")
    second = Service(workdir, gateway_cache)
    second.socket_dir = first.socket_dir
    second.socket = first.socket
    second.start(wait=False)
    returncode = second.proc.wait(timeout=60)
    assert returncode == exit_codes.BAD_INPUT
    assert "another service is listening" in second.stderr_path.read_text()
    assert first.call("list") == {"sandboxes": []}  # the first one still serves


def test_a_stale_socket_is_replaced(tmp_path_factory, gateway_cache):
    workdir = tmp_path_factory.mktemp("gw-stale")
    service = Service(workdir, gateway_cache)
    service.socket_dir.mkdir(mode=0o700)
    stale = sockets.socket(sockets.AF_UNIX)
    stale.bind(str(service.socket))
    stale.close()  # bound, never listening: what a killed service leaves
    try:
        service.start()
        assert service.call("caps")["driver_name"] == "oshpc"
    finally:
        service.stop_and_check()


# --- another user (needs root, to run the service as the test user)

needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root: runs the service as the "
                                f"ordinary user '{TEST_USER}' and calls it as root")


def user_can_run_the_build(user):
    check = subprocess.run(["runuser", "-u", user, "--", "sh", "-c",
                            f'test -x "{FANOUT}" && test -r "{IMAGE}"'])
    return check.returncode == 0


@pytest.fixture
def account():
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pytest.skip(f"no user '{TEST_USER}' (tests/run-all.sh creates it)")


@pytest.fixture
def user_workdir(account):
    if not user_can_run_the_build(TEST_USER):
        pytest.skip(f"'{TEST_USER}' cannot run {FANOUT} or read {IMAGE}")
    directory = pathlib.Path(tempfile.mkdtemp(prefix="oshpc-gw-peer-", dir="/tmp"))
    os.chmod(directory, 0o755)
    os.chown(directory, account.pw_uid, account.pw_gid)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@needs_root
def test_a_socket_directory_of_another_user_is_refused(workdir, gateway_cache, account):
    service = Service(workdir, gateway_cache)
    service.socket_dir.mkdir(mode=0o700)
    os.chown(service.socket_dir, account.pw_uid, account.pw_gid)
    returncode, stderr = finished(service)
    assert returncode == exit_codes.BAD_INPUT, stderr
    assert "not a directory owned by uid 0" in stderr
    service.stop_and_check()


@needs_root
def test_a_peer_of_another_uid_is_refused_even_root(user_workdir, account):
    service = Service(user_workdir, user_workdir / "cache", user=TEST_USER)
    try:
        service.start(wait=False)
        as_user = ["runuser", "-u", TEST_USER, "--", str(DRIVERCTL), "--socket",
                   str(service.socket)]
        caps = subprocess.run(as_user + ["--wait-for-socket", "60", "caps"],
                              capture_output=True, text=True, timeout=90)
        assert caps.returncode == 0, caps.stderr
        assert '"driver_name":"oshpc"' in caps.stdout

        assert service.socket_dir.stat().st_uid == account.pw_uid
        assert service.socket.stat().st_uid == account.pw_uid
        assert service.socket.stat().st_mode & 0o777 == 0o600

        for command in (["caps"], ["list"], ["create", "--id", "intruder", "--", "true"]):
            result = service.ctl(*command)
            assert result.returncode == 1, (command, result.stdout)
            assert result.stdout == ""
            assert result.stderr.startswith("oshpc-driverctl: error: UNAVAILABLE: "), \
                result.stderr
        assert wait_for(lambda: "refused a connection" in service.stderr_path.read_text(),
                        timeout=10)
        # Nothing the refused peer asked for happened.
        listed = subprocess.run(as_user + ["list"], capture_output=True, text=True, timeout=30)
        assert listed.stdout.strip() == '{"sandboxes":[]}'
    finally:
        service.stop_and_check()
