"""What a sandbox gets when the service runs the OpenShell supervisor: the supervisor binary
and its flags, the token as an owner-only file, the TLS files, the driver's environment, the
relay to the gateway, capabilities and writable directories. fake_supervisor.sh stands in for
the supervisor and reports what it finds; a TCP server in this process stands in for the
gateway. Two sandboxes, one per rank, so that both rank 0 and a rank reached over MPI are
covered. The token must never show in the service's output, its events or any process's
command line or environment."""
import hashlib
import json
import re
import socketserver
import threading

import pytest

from gateway_testing import (FAKE_SUPERVISOR, processes, ready_state, token_file,
                             wait_for)

SUPERVISOR = "/opt/openshell/bin/openshell-sandbox"
SUPERVISOR_ARGV = [SUPERVISOR, "--workdir", "/sandbox", "--upstream-proxy",
                   "http://127.0.0.1:3128"]
MAIN_COMMAND = ["agent", "--serve", "two words"]
BULK_BYTES = 4 << 20
CAP_NET_ADMIN = 12
CAP_SYS_ADMIN = 21


class GatewayStandIn(socketserver.ThreadingTCPServer):
    """Remembers each connection's first line and answers it: "bulk-up N" is followed by N
    bytes, answered with their count and SHA-256; "bulk-down N" is answered with N zero
    bytes; anything else with "pong LINE"."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        self.lines = []

        class Handler(socketserver.StreamRequestHandler):
            def handle(handler):
                line = handler.rfile.readline().decode().strip()
                self.lines.append(line)
                command, _, size = line.partition(" ")
                if command == "bulk-up":
                    data = handler.rfile.read(int(size))
                    handler.wfile.write(f"{len(data)} {hashlib.sha256(data).hexdigest()}\n"
                                        .encode())
                elif command == "bulk-down":
                    handler.wfile.write(bytes(int(size)))
                else:
                    handler.wfile.write(f"pong {line}\n".encode())

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture(scope="module")
def gateway():
    server = GatewayStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls")
    for name, text in (("ca.crt", "CA-MARKER"), ("tls.crt", "CERT-MARKER"),
                       ("tls.key", "KEY-MARKER")):
        (directory / name).write_text(text + "\n")
    (directory / "tls.key").chmod(0o600)
    return directory


@pytest.fixture(scope="module")
def service(start_service, gateway, tls_dir, tmp_path_factory):
    events = tmp_path_factory.mktemp("events") / "service-events.jsonl"
    service = start_service(2, [
        "--slots", "2", "--supervisor", str(FAKE_SUPERVISOR),
        "--gateway-endpoint", f"http://127.0.0.1:{gateway.server_address[1]}",
        "--tls-dir", str(tls_dir), "--events", str(events)])
    service.events_path = events
    return service


def read_report(path):
    report = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            report[key] = value
    return report


@pytest.fixture(scope="module")
def supervised(service, tmp_path_factory):
    """Two supervised sandboxes, one on each rank, and the reports of their supervisors."""
    directory = tmp_path_factory.mktemp("tokens")
    sandboxes = {}
    for i in range(2):
        sandbox_id = f"sup-{i}"
        path, token = token_file(directory)
        token_sha256 = hashlib.sha256(token.encode()).hexdigest()
        service.create(sandbox_id, "--name", f"Supervised {i}", "--token-file", path,
                       "--log-level", "warn", "--env", f"EXPECTED_TOKEN_SHA256={token_sha256}",
                       "--env", "OPENSHELL_SANDBOX_TOKEN=user-set-value",
                       "--env", f"RELAY_BULK_BYTES={BULK_BYTES}",
                       "--env", "SHARED=spec", "--template-env", "SHARED=template",
                       "--template-env", "FROM_TEMPLATE=yes", command=MAIN_COMMAND)
        sandboxes[sandbox_id] = {"token": token, "token_path": path}
    for sandbox_id, entry in sandboxes.items():
        sandbox = service.wait_ready(sandbox_id)
        report_path = service.workspace(sandbox) / "report.txt"
        assert wait_for(lambda: report_path.exists() and "REPORT-DONE" in report_path.read_text(),
                        timeout=30), f"{sandbox_id}: no complete report"
        entry.update(sandbox=sandbox, report=read_report(report_path))
    ranks = {re.search(r"/rank-(\d+)/", e["sandbox"]["status"]["instance_id"]).group(1)
             for e in sandboxes.values()}
    assert ranks == {"0", "1"}
    return sandboxes


@pytest.fixture(params=["sup-0", "sup-1"])
def one(request, supervised):
    return supervised[request.param] | {"id": request.param}


def test_create_without_a_token_is_failed_precondition(service):
    code, message = service.error("create", "--id", "no-token", "--", "agent")
    assert code == "FAILED_PRECONDITION"
    assert "token" in message
    assert service.error("get", "no-token")[0] == "NOT_FOUND"


def test_the_supervisor_runs_as_the_main_process_with_its_flags(one):
    report = one["report"]
    argv = [report["arg0"]] + [report[f"arg{i}"] for i in range(1, int(report["argc"]) + 1)]
    assert argv == SUPERVISOR_ARGV
    assert report["pwd"] == "/sandbox"
    assert report["supervisor_writable"] == "no"  # bound read-only


def test_the_token_is_an_owner_only_read_only_file_with_the_given_token(one):
    report = one["report"]
    assert report["env.OPENSHELL_SANDBOX_TOKEN_FILE"] == "/etc/openshell/auth/sandbox.jwt"
    assert report["token_sha256"] == hashlib.sha256(one["token"].encode()).hexdigest()
    assert report["token_matches"] == "yes"
    assert report["token_mode"] == "600"
    assert report["token_owner"] == "0"  # the sandbox's own (mapped) user
    assert int(report["token_dir_mode"], 8) & 0o077 == 0
    assert report["token_writable"] == "no"


def test_the_driver_environment_is_set(one):
    report = one["report"]
    env = {k[4:]: v for k, v in report.items() if k.startswith("env.")}
    assert env["OPENSHELL_SANDBOX"] == one["sandbox"]["name"]
    assert env["OPENSHELL_SANDBOX_ID"] == one["id"]
    assert env["OPENSHELL_LOG_LEVEL"] == "warn"
    assert env["OPENSHELL_ENDPOINT"] == "http://127.0.0.1:50051"
    assert json.loads(env["OPENSHELL_MAIN_PROCESS_SPEC"]) == {
        "version": 1, "command": MAIN_COMMAND, "tty": False}
    assert env["OPENSHELL_TLS_CA"] == "/etc/openshell/tls/client/ca.crt"
    assert env["OPENSHELL_TLS_CERT"] == "/etc/openshell/tls/client/tls.crt"
    assert env["OPENSHELL_TLS_KEY"] == "/etc/openshell/tls/client/tls.key"
    assert env["SHARED"] == "spec"
    assert env["FROM_TEMPLATE"] == "yes"
    assert "OPENSHELL_SANDBOX_TOKEN" not in env


def test_the_tls_files_are_bound_read_only(one):
    report = one["report"]
    assert report["tls.OPENSHELL_TLS_CA"] == "CA-MARKER"
    assert report["tls.OPENSHELL_TLS_CERT"] == "CERT-MARKER"
    assert report["tls.OPENSHELL_TLS_KEY"] == "KEY-MARKER"
    for var in ("OPENSHELL_TLS_CA", "OPENSHELL_TLS_CERT", "OPENSHELL_TLS_KEY"):
        assert report[f"tls_writable.{var}"] == "no"


def test_the_endpoint_relays_to_the_gateway(one, gateway):
    assert one["report"]["relay"] == f"pong ping {one['id']}"
    assert f"ping {one['id']}" in gateway.lines


def test_the_relay_carries_bulk_data_both_ways(one):
    zeros = hashlib.sha256(bytes(BULK_BYTES)).hexdigest()
    assert one["report"]["relay_bulk_up"] == f"{BULK_BYTES} {zeros}"
    assert one["report"]["relay_bulk_down"] == zeros


def test_the_token_file_on_the_node_is_private(service, one):
    secrets_dir = service.secrets_dir(one["sandbox"])
    assert secrets_dir.stat().st_mode & 0o777 == 0o700
    token = secrets_dir / "sandbox.jwt"
    assert token.stat().st_mode & 0o777 == 0o600
    assert token.read_text() == one["token"]


def test_the_supervisor_has_its_capabilities_in_its_user_namespace(one):
    report = one["report"]
    cap_eff = int(report["cap_eff"], 16)
    assert cap_eff & (1 << CAP_SYS_ADMIN), report["cap_eff"]
    assert cap_eff & (1 << CAP_NET_ADMIN), report["cap_eff"]
    assert report["unshare_net"] == "ok"


@pytest.mark.parametrize("directory", ["/run/openshell", "/run/netns", "/etc/openshell-tls"])
def test_the_supervisor_directories_are_writable_tmpfs(one, directory):
    assert one["report"][f"writable.{directory}"] == "yes"
    assert one["report"][f"fstype.{directory}"] == "tmpfs"


def test_the_supervisor_output_goes_to_the_output_directory(service, one):
    stdout = service.sandbox_output(one["sandbox"])
    assert wait_for(lambda: "report written" in stdout.read_text(), timeout=10)
    stderr = service.sandbox_output(one["sandbox"], "stderr").read_text()
    assert "this line goes to stderr" in stderr


def test_events_go_to_the_events_file(service, supervised):
    events = [json.loads(line) for line in service.events_path.read_text().splitlines()]
    names = {e["sandbox"]["status"]["sandbox_name"] for e in supervised.values()}
    assert names <= {e.get("sandbox") for e in events if e["event"] == "started"}
    assert not (service.output_dir / "events.jsonl").exists()


def test_the_token_is_in_no_command_line_environment_or_log(service, supervised):
    tokens = [e["token"].encode() for e in supervised.values()]
    seen = 0
    for pid, name, _, cmdline, environ in processes():
        if cmdline or environ:
            seen += 1
        for token in tokens:
            assert token not in cmdline, f"token in the command line of {pid} ({name})"
            assert token not in environ, f"token in the environment of {pid} ({name})"
    assert seen > 10
    logs = [service.stdout_path, service.stderr_path, service.events_path]
    for entry in supervised.values():
        logs += [service.sandbox_output(entry["sandbox"]),
                 service.sandbox_output(entry["sandbox"], "stderr")]
    for path in logs:
        text = path.read_bytes()
        for token in tokens:
            assert token not in text, f"token in {path}"
    # Nor does the driver echo it back.
    for entry in supervised.values():
        assert service.get(entry["sandbox"]["id"])["spec"]["sandbox_token"] == ""


def test_a_restarted_supervisor_gets_its_token_again(service, supervised):
    entry = supervised["sup-1"]
    report_path = service.workspace(entry["sandbox"]) / "report.txt"
    service.call("stop", "sup-1")
    assert ready_state(service.get("sup-1")) == ("False", "ContainerStopped")
    report_path.unlink()
    service.call("start", "sup-1")
    service.wait_ready("sup-1")
    assert wait_for(lambda: report_path.exists() and "REPORT-DONE" in report_path.read_text(),
                    timeout=30)
    report = read_report(report_path)
    assert report["token_matches"] == "yes"
    assert report["relay"] == "pong ping sup-1"
