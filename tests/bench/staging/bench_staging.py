#!/usr/bin/env python3
"""Image staging: broadcast vs per-node reading over simulated nodes, and mount vs extraction.

    /usr/bin/python3 tests/bench/staging/bench_staging.py --build BUILD --image IMAGE
        [--nodes 1,2,4,8] [--repeat R] [--tmpdir DIR]

Part 1, distribution. For each node count N, mpirun starts N ranks, each its own simulated
node (OSHPC_NODE_NAME=nodeI, its own empty cache directory), and runs N sandboxes of
/bin/true. Twice per N: --stage-from broadcast (rank 0 reads the image and sends it to the
node leaders over MPI) and --stage-from shared (every node reads the image file).
Reported: the slowest node's staging seconds (image_staged "seconds", median over repeats),
the sum of image_staged "bytes_from_shared" (bytes read from the image file by the whole
job), and the wall time of the whole command.

Part 2, use. One node, cold cache, one sandbox that runs python3, importing 45 stdlib
modules (those the image's python3-minimal has) and walking /usr (os.walk: ~10k entries):
time to first sandbox = staging seconds + the sandbox's start latency; walk = its duration;
with --stage-method mount (squashfuse; needs a usable /dev/fuse, so root here) and extract.
Reported: staging seconds, the first sandbox's start latency, the walk's duration.

NB: on one machine the "shared file system" is the local disk and its page cache, so the
time columns compare little beyond MPI and copy overheads; the bytes column is the point:
broadcast reads the image once per job whatever the node count.
Standard library only; runs as root (adds --allow-run-as-root) or as an ordinary user.
"""
import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import tempfile
import time

# The image's python3 is python3-minimal: import what it has, then walk /usr (lstat of ~10k
# entries), the kind of metadata-heavy reading a package manager or an interpreter does.
MODULES = [
    "argparse", "ast", "base64", "bisect", "calendar", "collections", "compileall",
    "configparser", "csv", "datetime", "dis", "email.message", "email.parser", "enum",
    "filecmp", "fnmatch", "getopt", "glob", "hashlib", "heapq", "importlib.util", "inspect",
    "ipaddress", "logging", "optparse", "pathlib", "pickle", "pkgutil", "platform",
    "py_compile", "quopri", "random", "socket", "ssl", "string", "subprocess", "sysconfig",
    "tempfile", "textwrap", "threading", "tokenize", "tracemalloc", "typing", "urllib.parse",
    "zipfile"]
WALK = ("import importlib, os\n"
        f"for m in {MODULES!r}:\n"
        "    try: importlib.import_module(m)\n"
        "    except ImportError: pass\n"
        "sum(len(d) + len(f) for _, d, f in os.walk('/usr'))\n")


def fuse_usable():
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError:
        return False
    return shutil.which("squashfuse_ll") is not None


class Runner:
    def __init__(self, build, image, tmpdir):
        self.fanout = pathlib.Path(build).resolve() / "bin/oshpc-fanout"
        self.image = pathlib.Path(image).resolve()
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="oshpc-bench-staging-", dir=tmpdir))
        os.chmod(self.tmp, 0o755)
        self.wrapper = self.tmp / "as-node.sh"
        self.wrapper.write_text(
            "#!/bin/sh\nexport OSHPC_NODE_NAME=node$OMPI_COMM_WORLD_RANK\n"
            f'exec {self.fanout} --cache-dir "$BENCH_CACHE/node$OMPI_COMM_WORLD_RANK" "$@"\n')
        self.wrapper.chmod(0o755)
        self.counter = 0

    def run(self, ranks, args, env):
        """Runs one job in fresh caches; returns (events, wall seconds)."""
        self.counter += 1
        name = f"b{self.counter}"
        cache = self.tmp / f"cache-{name}"
        argv = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)]
        if os.geteuid() == 0:
            argv.append("--allow-run-as-root")
        argv += [str(self.wrapper), "--image", str(self.image), "--job-name", name, "-q"] + args
        environment = dict(os.environ, BENCH_CACHE=str(cache), **env)
        began = time.monotonic()
        proc = subprocess.run(argv, cwd=self.tmp, capture_output=True, text=True,
                              env=environment, stdin=subprocess.DEVNULL)
        wall = time.monotonic() - began
        if proc.returncode != 0:
            raise SystemExit(f"job failed ({proc.returncode}): {' '.join(argv)}\n{proc.stderr}")
        events_path = self.tmp / f"oshpc-{name}" / "events.jsonl"
        events = [json.loads(line) for line in events_path.read_text().splitlines()]
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(self.tmp / f"oshpc-{name}", ignore_errors=True)
        return events, wall


def of_type(events, kind):
    return [e for e in events if e["event"] == kind]


def distribution(runner, nodes_list, repeat):
    print("## Distribution: N simulated nodes, one rank each, cold caches\n")
    print("| nodes | from | method | slowest node staging s | bytes read from image "
          "| x image size | wall s |")
    print("|---:|---|---|---:|---:|---:|---:|")
    size = runner.image.stat().st_size
    for nodes in nodes_list:
        for source in ("broadcast", "shared"):
            stage, wall, read, method = [], [], set(), set()
            for _ in range(repeat):
                events, seconds = runner.run(
                    nodes, ["-n", str(nodes), "--stage-from", source, "--", "true"], {})
                staged = of_type(events, "image_staged")
                assert len(staged) == nodes, staged
                stage.append(max(e["seconds"] for e in staged))
                wall.append(seconds)
                read.add(sum(e["bytes_from_shared"] for e in staged))
                method.update(e["method"] for e in staged)
            total = max(read)
            print(f"| {nodes} | {source} | {','.join(sorted(method))} "
                  f"| {statistics.median(stage):.2f} | {total:,} | {total / size:.0f} "
                  f"| {statistics.median(wall):.2f} |", flush=True)
    print()


def use(runner, repeat):
    methods = ["mount", "extract"] if fuse_usable() else ["extract"]
    print("## Use: one node, cold cache, example image\n")
    print("| method | staging s | first sandbox start latency ms | time to first sandbox s "
          "| import + walk ms | wall s |")
    print("|---|---:|---:|---:|---:|---:|")
    for method in methods:
        stage, latency, first, walk, wall = [], [], [], [], []
        for _ in range(repeat):
            events, seconds = runner.run(1, ["--stage-method", method, "-n", "1", "--",
                                             "python3", "-B", "-c", WALK], {})
            staged = of_type(events, "image_staged")[0]
            started = {e["index"]: e for e in of_type(events, "started")}
            ends = {e["index"]: e for e in events if e["event"] in ("exited", "failed")}
            assert ends[0].get("exit_code") == 0, ends[0]
            stage.append(staged["seconds"])
            latency.append(started[0]["start_latency_ms"])
            first.append(staged["seconds"] + started[0]["start_latency_ms"] / 1000)
            walk.append(ends[0]["duration_ms"])
            wall.append(seconds)
        print(f"| {method} | {statistics.median(stage):.2f} | {statistics.median(latency):.1f} "
              f"| {statistics.median(first):.2f} | {statistics.median(walk):.0f} "
              f"| {statistics.median(wall):.2f} |", flush=True)
    if "mount" not in methods:
        print("\nmount: skipped (/dev/fuse is not usable by this user)")
    print()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--nodes", default="1,2,4,8")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tmpdir", default=None)
    args = parser.parse_args()
    runner = Runner(args.build, args.image, args.tmpdir)
    size = runner.image.stat().st_size
    print(f"image {runner.image.name}: {size:,} bytes; repeats {args.repeat}; uid {os.geteuid()}\n")
    try:
        distribution(runner, [int(n) for n in args.nodes.split(",")], args.repeat)
        use(runner, args.repeat)
    finally:
        shutil.rmtree(runner.tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
