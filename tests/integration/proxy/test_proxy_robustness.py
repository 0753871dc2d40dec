"""The proxy under load and misbehaving peers, on host loopback listeners (no sandbox needed):
many concurrent tunnels, half-closes, resets, slow clients, limits, site-proxy chaining."""
import socket
import struct
import time

import pytest

from conftest import Harness, open_tunnel, write_policy

POLICY = """\
network_policies:
  echo:
    endpoints:
      - host: echo.test
        port: {port}
        allowed_ips: [127.0.0.1]
      - host: 127.0.0.1
        port: {port}
        allowed_ips: [127.0.0.1]
"""


@pytest.fixture
def harness_factory(bin_dir, work_dir, echo_server):
    started = []

    def start(listeners=1, extra=()):
        policy = write_policy(work_dir, "echo-policy.yaml", POLICY.format(port=echo_server.port))
        harness = Harness(bin_dir, work_dir, policy, listeners,
                          ["--host", "echo.test=127.0.0.1", *extra])
        started.append(harness)
        return harness

    yield start
    for harness in started:
        assert harness.alive(), "the proxy died"
        harness.close()


def test_thousand_concurrent_tunnels_from_fifty_listeners(harness_factory, echo_server):
    harness = harness_factory(listeners=50, extra=["--max-per-sandbox", "100"])
    target = f"echo.test:{echo_server.port}"
    tunnels = []
    for i in range(1000):
        sock = socket.create_connection(("127.0.0.1", harness.ports[i % 50]), timeout=30)
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\n\r\n".encode())
        tunnels.append(sock)
    for sock in tunnels:
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        assert head.startswith(b"HTTP/1.1 200")
    # Every tunnel open at once: each echoes its own payload.
    for i, sock in enumerate(tunnels):
        sock.sendall(f"payload {i:04d}\n".encode())
    for i, sock in enumerate(tunnels):
        expected = f"payload {i:04d}\n".encode()
        got = b""
        while len(got) < len(expected):
            got += sock.recv(64)
        assert got == expected
    for sock in tunnels:
        sock.close()
    events = harness.events(1000)
    assert len(events) == 1000
    assert all(e["allowed"] and e["bytes_up"] == 13 for e in events)
    assert len({e["sandbox_id"] for e in events}) == 50


@pytest.mark.parametrize("relay", ["splice", "copy"])
def test_half_close_is_passed_on_and_late_data_still_arrives(harness_factory, echo_server, relay):
    harness = harness_factory(extra=["--no-splice"] if relay == "copy" else [])
    sock, status, rest = open_tunnel(harness.ports[0], f"echo.test:{echo_server.port}")
    assert status.startswith("HTTP/1.1 200")
    payload = b"x" * 300_000  # more than the proxy's buffers: back-pressure on the way
    sock.sendall(payload)
    sock.shutdown(socket.SHUT_WR)
    got = b""
    while chunk := sock.recv(65536):
        got += chunk
    assert got == payload
    sock.close()
    (event,) = harness.events(1)
    assert event["bytes_up"] == len(payload) and event["bytes_down"] == len(payload)


def test_forwarded_request_body_follows_its_rewritten_head(harness_factory, echo_server):
    """Plain HTTP: the head the proxy rewrote goes first, then the body bytes that came with
    the client's head, then the rest of the body (spliced)."""
    harness = harness_factory()
    sock = socket.create_connection(("127.0.0.1", harness.ports[0]), timeout=10)
    body = bytes(i % 251 for i in range(200_000))
    head = (f"POST http://echo.test:{echo_server.port}/upload HTTP/1.1\r\n"
            f"Host: echo.test\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    sock.sendall(head + body[:1000])
    sock.sendall(body[1000:])
    sock.shutdown(socket.SHUT_WR)
    echoed = b""
    while chunk := sock.recv(65536):
        echoed += chunk
    echoed_head, _, echoed_body = echoed.partition(b"\r\n\r\n")
    assert echoed_head.startswith(b"POST /upload HTTP/1.1\r\n")
    assert b"Connection: close" in echoed_head
    assert echoed_body == body


def test_abruptly_closed_peers_do_not_hurt_the_proxy(harness_factory, echo_server):
    harness = harness_factory()
    for _ in range(20):
        sock, _, _ = open_tunnel(harness.ports[0], f"echo.test:{echo_server.port}")
        sock.sendall(b"y" * 100_000)
        # RST instead of FIN: SO_LINGER with a zero timeout.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    # A client that vanishes mid-request, and one that resets before saying anything.
    half = socket.create_connection(("127.0.0.1", harness.ports[0]))
    half.sendall(b"CONNECT echo.test:1 HTT")
    half.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    half.close()
    sock, status, rest = open_tunnel(harness.ports[0], f"echo.test:{echo_server.port}")
    assert status.startswith("HTTP/1.1 200")
    sock.sendall(b"still here")
    assert sock.recv(100) == b"still here"
    sock.close()
    events = harness.events(22)
    assert len(events) >= 21


def test_destination_reset_gives_the_client_an_end(harness_factory, work_dir, bin_dir):
    resetter = socket.create_server(("127.0.0.1", 0))
    port = resetter.getsockname()[1]
    policy = write_policy(work_dir, "reset-policy.yaml", POLICY.format(port=port))
    harness = Harness(bin_dir, work_dir, policy, 1, ["--host", "echo.test=127.0.0.1"])
    try:
        sock, status, rest = open_tunnel(harness.ports[0], f"echo.test:{port}")
        assert status.startswith("HTTP/1.1 200")
        conn, _ = resetter.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        sock.settimeout(5)
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
        (event,) = harness.events(1)
        assert event["allowed"]
    finally:
        harness.close()
        resetter.close()


def test_closed_port_gives_502(harness_factory, work_dir, bin_dir):
    unused = socket.create_server(("127.0.0.1", 0))
    port = unused.getsockname()[1]
    unused.close()
    policy = write_policy(work_dir, "closed-policy.yaml", POLICY.format(port=port))
    harness = Harness(bin_dir, work_dir, policy, 1, ["--host", "echo.test=127.0.0.1"])
    try:
        sock, status, rest = open_tunnel(harness.ports[0], f"echo.test:{port}")
        assert status.startswith("HTTP/1.1 502")
        assert b"Connection refused" in rest + sock.recv(4096)
        (event,) = harness.events(1)
        assert event["allowed"] and event["status"] == 502
    finally:
        harness.close()


def test_slow_client_times_out_with_408(harness_factory):
    harness = harness_factory(extra=["--request-timeout-ms", "300"])
    sock = socket.create_connection(("127.0.0.1", harness.ports[0]), timeout=5)
    sock.sendall(b"CONNECT echo.test:1 HTTP/1.1\r\n")
    started = time.monotonic()
    answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408")
    assert time.monotonic() - started < 3
    # A client that connects and says nothing is closed without a report.
    silent = socket.create_connection(("127.0.0.1", harness.ports[0]), timeout=5)
    assert silent.recv(10) == b""
    assert [e["status"] for e in harness.events(1)] == [408]


def test_idle_tunnel_is_closed(harness_factory, echo_server):
    harness = harness_factory(extra=["--idle-timeout-ms", "300"])
    sock, _, _ = open_tunnel(harness.ports[0], f"echo.test:{echo_server.port}")
    sock.settimeout(5)
    assert sock.recv(10) == b""
    (event,) = harness.events(1)
    assert event["reason"].startswith("idle for 300 ms")


def test_per_sandbox_connection_limit(harness_factory, echo_server):
    harness = harness_factory(listeners=2, extra=["--max-per-sandbox", "5"])
    target = f"echo.test:{echo_server.port}"
    tunnels = [open_tunnel(harness.ports[0], target)[0] for _ in range(5)]
    sock, status, rest = open_tunnel(harness.ports[0], target)
    assert status.startswith("HTTP/1.1 503")
    other, status, _ = open_tunnel(harness.ports[1], target)  # another sandbox is not affected
    assert status.startswith("HTTP/1.1 200")
    for s in tunnels + [sock, other]:
        s.close()


def test_oversized_and_malformed_requests(harness_factory):
    harness = harness_factory()
    sock = socket.create_connection(("127.0.0.1", harness.ports[0]), timeout=5)
    sock.sendall(b"GET http://echo.test/ HTTP/1.1\r\nX: " + b"a" * 20000)
    assert sock.recv(4096).startswith(b"HTTP/1.1 431")
    sock = socket.create_connection(("127.0.0.1", harness.ports[0]), timeout=5)
    sock.sendall(b"\x16\x03\x01 not http\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 400")


def test_chaining_through_an_upstream_site_proxy(harness_factory, echo_server, bin_dir, work_dir):
    site = harness_factory()  # the "site proxy": it allows 127.0.0.1:echo
    node = harness_factory(extra=["--upstream-proxy", f"http://127.0.0.1:{site.ports[0]}"])
    sock, status, rest = open_tunnel(node.ports[0], f"echo.test:{echo_server.port}")
    assert status.startswith("HTTP/1.1 200")
    sock.sendall(b"via the site proxy")
    assert sock.recv(100) == b"via the site proxy"
    sock.close()
    (site_event,) = site.events(1)
    assert site_event["host"] == "127.0.0.1"  # the address we checked, not a re-resolved name
    (node_event,) = node.events(1)
    assert node_event["host"] == "echo.test" and node_event["allowed"]
    # Denials stay local: the site proxy never sees them.
    sock, status, rest = open_tunnel(node.ports[0], "example.com:443")
    assert status.startswith("HTTP/1.1 403")
    assert len(site.events(1, timeout=0.5)) == 1
