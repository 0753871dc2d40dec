#!/usr/bin/env python3
"""CONNECT set-up latency and tunnel throughput: direct loopback vs oshpc's egress proxy vs
tinyproxy, on one machine, side by side.

    /usr/bin/python3 tests/bench/proxy/bench_proxy.py [--build DIR] [--setups N] [--mib N]

Needs the oshpc-proxy-harness binary (build target of the proxy tests) and, for the third
column, tinyproxy on PATH. Everything runs on 127.0.0.1.
"""
import argparse
import json
import os
import pathlib
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parents[3]


def sink_server():
    """Reads an 8-byte length, then that many bytes, and answers with the count. (No
    half-close: tinyproxy closes both directions when the client half-closes.)"""
    server = socket.create_server(("127.0.0.1", 0), backlog=1024)

    def serve(conn):
        buffer = bytearray(1 << 20)
        header = b""
        while len(header) < 8:
            header += conn.recv(8 - len(header))
        expected = int.from_bytes(header, "big")
        total = 0
        while total < expected and (n := conn.recv_into(buffer)) > 0:
            total += n
        conn.sendall(str(total).encode())
        conn.close()

    def accept_loop():
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return server.getsockname()[1]


def tunnel(proxy_port, target_port):
    if proxy_port is None:
        return socket.create_connection(("127.0.0.1", target_port))
    sock = socket.create_connection(("127.0.0.1", proxy_port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(f"CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\n"
                 f"Host: 127.0.0.1:{target_port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"proxy closed during CONNECT: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
        raise RuntimeError(f"proxy refused: {head[:100]!r}")
    return sock


def measure_setup(proxy_port, target_port, count):
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        sock = tunnel(proxy_port, target_port)
        samples.append((time.perf_counter() - started) * 1e6)
        sock.sendall((0).to_bytes(8, "big"))
        sock.recv(64)
        sock.close()
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.99) - 1]


def measure_throughput(proxy_port, target_port, mib):
    sock = tunnel(proxy_port, target_port)
    chunk = b"\0" * (1 << 20)
    started = time.perf_counter()
    sock.sendall((mib << 20).to_bytes(8, "big"))
    for _ in range(mib):
        sock.sendall(chunk)
    answer = sock.recv(64)
    elapsed = time.perf_counter() - started
    assert int(answer) == mib << 20, answer
    sock.close()
    return mib / 1024 / elapsed


def start_oshpc(build, target_port, work):
    policy = work / "policy.yaml"
    policy.write_text("network_policies:\n  bench:\n    endpoints:\n"
                      f"      - host: 127.0.0.1\n        port: {target_port}\n"
                      "        allowed_ips: [127.0.0.1]\n")
    events = work / "events.jsonl"
    process = subprocess.Popen([str(build / "bin" / "oshpc-proxy-harness"), "--policy",
                                str(policy), "--tcp-listeners", "1", "--events", str(events)])
    while not events.exists() or not events.read_text().endswith("\n"):
        time.sleep(0.02)
    return process, json.loads(events.read_text().splitlines()[0])["ports"][0]


def start_tinyproxy(target_port, work):
    if shutil.which("tinyproxy") is None:
        return None, None
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    conf = work / "tinyproxy.conf"
    user = "User nobody\nGroup nogroup\n" if os.geteuid() == 0 else ""
    conf.write_text(f"{user}Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 1000\n"
                    f"Allow 127.0.0.1\nConnectPort {target_port}\nLogLevel Critical\n")
    process = subprocess.Popen(["tinyproxy", "-d", "-c", str(conf)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    return None, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=pathlib.Path, default=REPO / "build-proxy")
    parser.add_argument("--setups", type=int, default=2000)
    parser.add_argument("--mib", type=int, default=2048)
    args = parser.parse_args()

    target = sink_server()
    work = pathlib.Path(tempfile.mkdtemp(prefix="oshpc-bench-proxy-"))
    oshpc, oshpc_port = start_oshpc(args.build, target, work)
    tiny, tiny_port = start_tinyproxy(target, work)
    try:
        rows = [("direct loopback", None), ("oshpc proxy", oshpc_port)]
        if tiny_port:
            rows.append(("tinyproxy", tiny_port))
        results = {}
        for name, port in rows:
            print(f"measuring {name} ...", flush=True)
            measure_setup(port, target, 50)  # warm up
            median, p99 = measure_setup(port, target, args.setups)
            gib_s = measure_throughput(port, target, args.mib)
            results[name] = (median, p99, gib_s)
        print(f"{'path':<16} {'setup median µs':>16} {'setup p99 µs':>13} {'GiB/s':>7}"
              f" {'setup ×direct':>14} {'GiB/s ×direct':>14}")
        base = results["direct loopback"]
        for name, (median, p99, gib_s) in results.items():
            print(f"{name:<16} {median:>16.0f} {p99:>13.0f} {gib_s:>7.2f}"
                  f" {median / base[0]:>14.2f} {gib_s / base[2]:>14.2f}")
        if "tinyproxy" in results:
            ours, theirs = results["oshpc proxy"], results["tinyproxy"]
            print(f"oshpc vs tinyproxy: set-up {ours[0] / theirs[0]:.2f}× the latency, "
                  f"{ours[2] / theirs[2]:.2f}× the throughput")
    finally:
        oshpc.terminate()
        if tiny:
            tiny.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
