"""oshpc-driverctl's command line without a driver: help, usage errors, input files, an absent
socket, and that a sandbox token never reaches the output. Its RPCs against a fake driver are in
tests/unit/launcher/gateway/test_driverctl.cpp; against the real gateway service, in the
contract tests."""
import json
import subprocess
import time

import pytest

import exit_codes
from oshpc_testing import BUILD_DIR

DRIVERCTL = BUILD_DIR / "bin/oshpc-driverctl"
RPC_FAILED = 1  # oshpc-driverctl only: the RPC failed or the socket could not be reached


def driverctl(*args, timeout=30):
    return subprocess.run([str(DRIVERCTL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def test_help_lists_every_command():
    result = driverctl("--help")
    assert result.returncode == exit_codes.OK
    for command in ("caps", "listener-requirements", "validate", "create", "get", "list", "stop",
                    "start", "delete", "watch", "ensure-workspace", "delete-workspace"):
        assert command in result.stdout


@pytest.mark.parametrize("args, expected", [
    ([], "no COMMAND"),
    (["caps"], "--socket PATH is required"),
    (["--socket", "s", "frob"], "unknown command 'frob'"),
    (["--socket", "s", "get"], "get needs the sandbox id"),
    (["--socket", "s", "create"], "create needs --id"),
    (["--socket", "s", "list", "--image", "x"], "--image is an option of validate and create"),
    (["--socket", "s", "watch", "--count", "-2"], "--count"),
    (["--socket", "s", "caps", "--", "true"], "after --"),
    (["--socket", "s", "create", "--id", "a", "--gpus", "two"], "--gpus"),
])
def test_usage_errors_exit_2_with_one_clear_line(args, expected):
    result = driverctl(*args)
    assert result.returncode == exit_codes.USAGE
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first.startswith("oshpc-driverctl: error: ")
    assert expected in first


def test_absent_socket_is_unavailable(tmp_path):
    result = driverctl("--socket", tmp_path / "absent.sock", "caps")
    assert result.returncode == RPC_FAILED
    assert result.stdout == ""
    assert result.stderr.startswith("oshpc-driverctl: error: UNAVAILABLE: ")


def test_wait_for_socket_gives_up_after_its_time(tmp_path):
    socket = tmp_path / "absent.sock"
    started = time.monotonic()
    result = driverctl("--socket", socket, "--wait-for-socket", "1", "list")
    elapsed = time.monotonic() - started
    assert result.returncode == RPC_FAILED
    assert result.stderr.startswith("oshpc-driverctl: error: UNAVAILABLE: ")
    assert str(socket) in result.stderr
    assert 0.9 < elapsed < 10


def test_dry_run_prints_the_request_without_the_token(tmp_path):
    token = tmp_path / "token"
    token.write_text("tok-never-printed\n")
    result = driverctl("create", "--dry-run", "--id", "sb-1", "--image", "agent.sqsh",
                       "--env", "A=1,2", "--label", "team=x", "--gpus", "1",
                       "--memory-limit", "4Gi", "--token-file", token, "--", "sleep", "3600")
    assert result.returncode == exit_codes.OK, result.stderr
    assert "tok-never-printed" not in result.stdout + result.stderr
    sandbox = json.loads(result.stdout)["sandbox"]
    assert sandbox["id"] == sandbox["name"] == "sb-1"
    spec = sandbox["spec"]
    assert spec["sandbox_token"] == "(redacted)"
    assert spec["command"] == ["sleep", "3600"]
    assert spec["environment"] == {"A": "1,2"}
    assert spec["resource_requirements"]["gpu"]["count"] == 1
    assert spec["template"]["image"] == "agent.sqsh"
    assert spec["template"]["labels"] == {"team": "x"}
    assert spec["template"]["resources"]["memory_limit"] == "4Gi"


def test_unreadable_input_files_exit_3(tmp_path):
    result = driverctl("--socket", tmp_path / "s", "validate", "--token-file", tmp_path / "none")
    assert result.returncode == exit_codes.BAD_INPUT
    assert "--token-file" in result.stderr and "none" in result.stderr

    spec = tmp_path / "spec.json"
    spec.write_text('{"id": "x", "spec": {"sandbox_token": "tok-in-json" "tty": true}}')
    result = driverctl("--socket", tmp_path / "s", "validate", "--spec-json", spec)
    assert result.returncode == exit_codes.BAD_INPUT
    assert "spec.json" in result.stderr
    assert "tok-in-json" not in result.stderr
