#!/usr/bin/env python3
"""CONNECT set-up latency and tunnel throughput: direct loopback vs oshpc's egress proxy vs
tinyproxy, on one machine, side by side.

    /usr/bin/python3 tests/bench/proxy/bench_proxy.py [--build DIR] [--setups N] [--mib N]
                                                      [--rounds N] [--buffer-bytes N]
                                                      [--small-pipes-too] [--link RATE]

Needs the oshpc-proxy-harness binary (build target of the proxy tests), a C compiler (cc) for
the client and sink in bench_peer.c, and, for the third row, tinyproxy on PATH. By default
everything runs on 127.0.0.1. With --link RATE (root only; a tc rate such as 10gbit) the sink
sits in its own network namespace behind a veth pair whose sending side is paced at RATE, the
way a compute node's egress leaves through a network interface; the client and the proxies stay
on 127.0.0.1. The same C client and sink serve all three paths, and the paths take turns: each
round measures every path (in a rotating order), so a machine that gets busier or quieter
during the run shifts all rows alike.
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
import time

REPO = pathlib.Path(__file__).resolve().parents[3]
HERE = pathlib.Path(__file__).resolve().parent


def build_peer(work):
    binary = work / "bench_peer"
    if shutil.which("cc") is None:
        raise SystemExit("bench_proxy: needs a C compiler (cc) to build bench_peer.c")
    subprocess.run(["cc", "-O2", "-o", str(binary), str(HERE / "bench_peer.c")], check=True)
    return binary


class Link:
    """A network namespace holding the sink, joined to this one by a veth pair whose host side
    sends at most RATE."""

    HOST_ADDRESS, SINK_ADDRESS = "10.213.77.1", "10.213.77.2"

    def __init__(self, rate):
        if os.geteuid() != 0:
            raise SystemExit("bench_proxy: --link needs root (a network namespace and tc)")
        self.namespace = f"oshpc-bench-{os.getpid()}"
        self.host_side = f"obench{os.getpid() % 100000}"
        ip = ["ip", "-netns", self.namespace]
        steps = [["ip", "netns", "add", self.namespace],
                 ["ip", "link", "add", self.host_side, "type", "veth", "peer", "name", "sink0",
                  "netns", self.namespace],
                 ["ip", "addr", "add", f"{self.HOST_ADDRESS}/30", "dev", self.host_side],
                 ["ip", "link", "set", self.host_side, "up"],
                 ip + ["addr", "add", f"{self.SINK_ADDRESS}/30", "dev", "sink0"],
                 ip + ["link", "set", "sink0", "up"],
                 ip + ["link", "set", "lo", "up"],
                 # A token bucket: sch_tbf is in every distribution kernel (sch_fq, whose
                 # pacing would be finer, is not always). A 2 MB bucket is under 2 ms of a
                 # 10gbit link and a negligible share of a run's hundreds of MiB.
                 ["tc", "qdisc", "replace", "dev", self.host_side, "root", "tbf", "rate", rate,
                  "burst", "2mb", "limit", "8mb"]]
        try:
            for step in steps:
                subprocess.run(step, check=True)
        except (OSError, subprocess.CalledProcessError):
            self.close()
            raise

    def run_prefix(self):
        return ["ip", "netns", "exec", self.namespace]

    def close(self):
        subprocess.run(["ip", "netns", "del", self.namespace], stderr=subprocess.DEVNULL)


def start_sink(peer, address, link):
    prefix = link.run_prefix() if link else []
    process = subprocess.Popen([*prefix, str(peer), "sink", address], stdout=subprocess.PIPE,
                               text=True)
    return process, (address, int(process.stdout.readline()))


def start_oshpc(build, target, work, buffer_bytes, bulk_pipes=None):
    address, target_port = target
    policy = work / "policy.yaml"
    policy.write_text("network_policies:\n  bench:\n    endpoints:\n"
                      f"      - host: {address}\n        port: {target_port}\n"
                      f"        allowed_ips: [{address}/32]\n")
    events = work / ("events.jsonl" if bulk_pipes is None else f"events-{bulk_pipes}-bulk.jsonl")
    tuning = ["--buffer-bytes", str(buffer_bytes)] if buffer_bytes else []
    if bulk_pipes is not None:
        tuning += ["--bulk-pipes", str(bulk_pipes)]
    process = subprocess.Popen([str(build / "bin" / "oshpc-proxy-harness"), "--policy",
                                str(policy), "--tcp-listeners", "1", "--events", str(events),
                                *tuning])
    while not events.exists() or not events.read_text().endswith("\n"):
        time.sleep(0.02)
    return process, json.loads(events.read_text().splitlines()[0])["ports"][0]


def start_tinyproxy(target, work):
    target_port = target[1]
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


def run_peer(peer, mode, proxy_port, target, count):
    address, target_port = target
    out = subprocess.run([str(peer), mode, str(proxy_port or 0), address, str(target_port),
                          str(count)],
                         check=True, capture_output=True, text=True).stdout
    return [float(line) for line in out.split()]


def measure_round(peer, paths, target, setups, mib, samples, rates):
    for name, port in paths:
        samples[name] += run_peer(peer, "setup", port, target, setups)
        (seconds,) = run_peer(peer, "throughput", port, target, mib)
        rates[name].append(mib / 1024 / seconds)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def print_table(samples, rates):
    print(f"{'path':<18} {'setup median µs':>16} {'setup p99 µs':>13} {'GiB/s':>7}"
          f" {'setup ×direct':>14} {'GiB/s ×direct':>14} {'adds µs':>8}")
    rows = {name: (statistics.median(samples[name]), percentile(samples[name], 0.99),
                   statistics.median(rates[name])) for name in samples}
    base = rows["direct"]
    for name, (median, p99, gib_s) in rows.items():
        print(f"{name:<18} {median:>16.0f} {p99:>13.0f} {gib_s:>7.2f}"
              f" {median / base[0]:>14.2f} {gib_s / base[2]:>14.2f} {median - base[0]:>8.0f}")
    spread = {name: (min(r), max(r)) for name, r in rates.items()}
    print("GiB/s per round (min-max): " +
          ", ".join(f"{name} {lo:.2f}-{hi:.2f}" for name, (lo, hi) in spread.items()))
    if "tinyproxy" in rows:
        ours, theirs = rows["oshpc proxy"], rows["tinyproxy"]
        print(f"oshpc vs tinyproxy: set-up {ours[0] / theirs[0]:.2f}× the latency, "
              f"{ours[2] / theirs[2]:.2f}× the throughput")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=pathlib.Path, default=REPO / "build-proxy")
    parser.add_argument("--setups", type=int, default=2000, help="set-ups per path, all rounds")
    parser.add_argument("--mib", type=int, default=1024, help="MiB per path per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--buffer-bytes", type=int, default=0,
                        help="the oshpc proxy's buffer_bytes (pipe size); default: its default")
    parser.add_argument("--small-pipes-too", action="store_true",
                        help="add a row for the oshpc proxy without bulk pipes (every "
                        "direction spliced through a buffer_bytes pipe)")
    parser.add_argument("--link", metavar="RATE",
                        help="put the sink behind a veth link paced at RATE (tc units, e.g. "
                        "10gbit); root only")
    args = parser.parse_args()

    work = pathlib.Path(tempfile.mkdtemp(prefix="oshpc-bench-proxy-"))
    peer = build_peer(work)
    link = Link(args.link) if args.link else None
    sink = oshpc = small = tiny = None
    try:
        address = link.SINK_ADDRESS if link else "127.0.0.1"
        print(f"sink: {address}" + (f" behind a veth link paced at {args.link}" if link else
                                    " (loopback)"))
        sink, target = start_sink(peer, address, link)
        oshpc, oshpc_port = start_oshpc(args.build, target, work, args.buffer_bytes)
        tiny, tiny_port = start_tinyproxy(target, work)
        paths = [("direct", None), ("oshpc proxy", oshpc_port)]
        if args.small_pipes_too:
            small, small_port = start_oshpc(args.build, target, work, args.buffer_bytes, 0)
            paths.append(("oshpc small pipes", small_port))
        if tiny_port:
            paths.append(("tinyproxy", tiny_port))
        samples = {name: [] for name, _ in paths}
        rates = {name: [] for name, _ in paths}
        for name, port in paths:
            run_peer(peer, "setup", port, target, 50)  # warm up
        per_round = max(1, args.setups // args.rounds)
        for round_index in range(args.rounds):
            print(f"round {round_index + 1}/{args.rounds} ...", flush=True)
            turn = round_index % len(paths)
            measure_round(peer, paths[turn:] + paths[:turn], target, per_round, args.mib,
                          samples, rates)
        print_table(samples, rates)
    finally:
        for process in (oshpc, small, tiny, sink):
            if process:
                process.terminate()
                process.wait()
        if link:
            link.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
