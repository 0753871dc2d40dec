"""The fan-out's isolation features end to end: the seccomp filter and the egress proxy,
as wired into oshpc-fanout (the proxy and filter themselves are tested under proxy/)."""
import socket

import pytest

import exit_codes
from oshpc_testing import hello_server


@pytest.fixture
def http_server():
    """A plain HTTP server on the host's loopback, reached by the host's name (the sandbox's
    NO_PROXY keeps "localhost" for its own loopback), standing in for an allowed destination.
    Yields (name, port)."""
    name = socket.gethostname()
    address = socket.gethostbyname(name)
    if not address.startswith("127."):
        pytest.skip(f"the host name {name} does not resolve to a loopback address")
    with hello_server(address) as port:
        yield name, port


def test_seccomp_filter_is_on_by_default_and_can_be_turned_off(fanout):
    probe = "grep ^Seccomp: /proc/self/status; unshare -U true 2>&1 | head -1"
    job = fanout.run(["-n", "1", "-q", "--", "sh", "-c", probe])
    assert job.returncode == exit_codes.OK, job.stderr
    out = job.sandbox_file(0)
    assert "Seccomp:\t2" in out
    assert "Operation not permitted" in out
    job = fanout.run(["-n", "1", "--seccomp", "none", "-q", "--", "grep", "^Seccomp:",
                      "/proc/self/status"])
    assert job.sandbox_file(0).strip() == "Seccomp:\t0"


def test_egress_through_the_proxy_follows_the_policy(fanout, tmp_path, http_server):
    host, port = http_server
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""
network_policies:
  host_server:
    endpoints:
      - host: {host}
        port: {port}
        allowed_ips: [127.0.0.0/8]
""")
    script = (f"curl -sS -m 10 http://{host}:{port}/; "
              "curl -sS -m 10 -o /dev/null -w '%{http_code}\\n' http://example.com/; "
              "python3 -c \"import socket; socket.create_connection(('1.1.1.1', 80), 3)\" "
              "2>&1 | tail -1; "
              "python3 -c \"import os, socket; s = socket.socket(socket.AF_UNIX); "
              "s.connect(os.environ['OSHPC_PROXY_SOCKET']); "
              f"s.sendall(b'GET http://{host}:{port}/ HTTP/1.1\\r\\nHost: {host}\\r\\n\\r\\n'); "
              "print(s.makefile('rb').read().decode().splitlines()[-1])\"")
    job = fanout.run(["-n", "2", "--policy", str(policy), "-q", "--", "sh", "-c", script],
                     ranks=2)
    assert job.returncode == exit_codes.OK, job.stderr
    for index in range(2):
        lines = job.sandbox_file(index).splitlines()
        assert lines[0] == "hello from the host"
        assert lines[1] == "403"
        assert "Network is unreachable" in lines[2]
        assert lines[3] == "hello from the host"  # through the sandbox's UNIX socket too

    egress = job.of_type("egress")
    allowed = [e for e in egress if e["allowed"]]
    denied = [e for e in egress if not e["allowed"]]
    assert sorted(e["index"] for e in allowed) == [0, 0, 1, 1]
    assert sorted(e["index"] for e in denied) == [0, 1]
    for event in allowed:
        assert event["host"] == host and event["port"] == port
        assert event["rule"] == "network_policies.host_server.endpoints[0]"
        assert event["bytes_down"] > 0
        assert event["sandbox"] == f"{job.name}-{event['index']}"
    for event in denied:
        assert event["host"] == "example.com" and event["status"] == 403


def test_a_broken_policy_stops_the_job_before_anything_runs(fanout, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("network_policies:\n  x:\n    endpoints: [{host: a.com, port: nope}]\n")
    job = fanout.run(["-n", "2", "--policy", str(policy), "--", "true"], ranks=2)
    assert job.returncode == exit_codes.BAD_INPUT
    assert str(policy) in job.stderr and ":3" in job.stderr
    assert not job.terminal()


def test_without_a_policy_there_is_no_egress_at_all(fanout):
    job = fanout.run(["-n", "1", "-q", "--", "sh", "-c",
                      "echo ${HTTP_PROXY:-none}; curl -sS -m 5 http://example.com/ 2>&1 | tail -1"])
    lines = job.sandbox_file(0).splitlines()
    assert lines[0] == "none"
    assert "Could not resolve" in lines[1] or "connect" in lines[1].lower()
