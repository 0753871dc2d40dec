#!/usr/bin/python3
"""Fan-out scaling on one machine: oshpc-fanout over 1, 2, 4, 8, 16 ranks (mpirun
--oversubscribe --bind-to none), K sandboxes of /bin/true, next to the wall time of a trivial
MPI program at the same rank count (the MPI start-up cost that every launch pays).

    tests/bench/scaling/bench_scaling.py --build BUILD --image IMAGE [--count 400]
        [--ranks 1,2,4,8,16] [--repeat 1] [--out DIR]

For each rank count it reports, from the `started` events' `ts` relative to the moment
mpirun was started: the time to the first and to the last started sandbox, the wall time of
the whole run, sandboxes per second (count / wall time), and the trivial MPI program's wall
time. It writes DIR/scaling.dat (gnuplot), DIR/scaling.json and prints a Markdown table.
The image is staged once by a warm-up run; the measured runs reuse the node cache.
Standard library only (Debian's /usr/bin/python3).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELLO_SOURCE = HERE.parent.parent / "slurm" / "mpi_hello.cpp"


def mpirun(ranks: int) -> list[str]:
    argv = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)]
    if os.geteuid() == 0:
        argv.append("--allow-run-as-root")
    return argv


def parse_ts(text: str) -> float:
    # "2026-12-03T16:15:24.097734Z"
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=dt.timezone.utc).timestamp()


def build_hello(work: Path) -> Path:
    out = work / "mpi_hello"
    subprocess.run(["mpicxx", "-O1", "-o", str(out), str(HELLO_SOURCE)], check=True,
                   timeout=300)
    return out


def time_hello(hello: Path, ranks: int) -> float:
    start = time.time()
    subprocess.run(mpirun(ranks) + [str(hello)], check=True, capture_output=True, timeout=300)
    return time.time() - start


def run_fanout(fanout: Path, image: Path, work: Path, ranks: int, count: int,
               name: str) -> dict:
    events = work / f"{name}.jsonl"
    argv = mpirun(ranks) + [str(fanout), "--image", str(image), "--count", str(count),
                            "--job-name", name, "--cache-dir", str(work / "cache"),
                            "--output-dir", str(work / f"out-{name}"),
                            "--events", str(events), "-q", "--", "/bin/true"]
    start = time.time()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    wall = time.time() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    parsed = [json.loads(line) for line in events.read_text().splitlines() if line]
    started = sorted(parse_ts(e["ts"]) - start for e in parsed if e["event"] == "started")
    ends = [e for e in parsed if e["event"] in ("exited", "failed")]
    if len(started) != count or len({e["index"] for e in ends}) != count:
        raise RuntimeError(f"{name}: {len(started)} started, {len(ends)} terminal of {count}")
    shutil.rmtree(work / f"out-{name}", ignore_errors=True)
    return {"first_started_s": started[0], "last_started_s": started[-1], "wall_s": wall,
            "sandboxes_per_s": count / wall}


def measure(args, fanout: Path, hello: Path, work: Path) -> list[dict]:
    rows = []
    for ranks in args.ranks:
        runs = [run_fanout(fanout, args.image, work, ranks, args.count, f"r{ranks}-{i}")
                for i in range(args.repeat)]
        hello_s = statistics.median(time_hello(hello, ranks) for _ in range(args.repeat))
        row = {"ranks": ranks, "count": args.count, "mpi_hello_s": hello_s}
        for key in runs[0]:
            row[key] = statistics.median(r[key] for r in runs)
        rows.append(row)
        print(f"bench_scaling: {json.dumps(row)}", file=sys.stderr, flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| ranks | first started (s) | last started (s) | wall (s) | sandboxes/s "
             "| trivial MPI program (s) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['ranks']} | {r['first_started_s']:.2f} | {r['last_started_s']:.2f} "
                     f"| {r['wall_s']:.2f} | {r['sandboxes_per_s']:.0f} "
                     f"| {r['mpi_hello_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", type=Path, default=Path("build"))
    parser.add_argument("--image", type=Path, required=True)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--ranks", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 2, 4, 8, 16])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    fanout = (args.build / "bin" / "oshpc-fanout").resolve()
    args.image = args.image.resolve()
    for need in (fanout, args.image):
        if not need.exists():
            print(f"bench_scaling: error: {need} not found", file=sys.stderr)
            return 3
    if shutil.which("mpirun") is None or shutil.which("mpicxx") is None:
        print("bench_scaling: error: mpirun/mpicxx not found (install libopenmpi-dev)",
              file=sys.stderr)
        return 3

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="oshpc-bench-scaling-") as tmp:
        work = Path(tmp)
        hello = build_hello(work)
        run_fanout(fanout, args.image, work, 1, 2, "warmup")  # stages the image once
        rows = measure(args, fanout, hello, work)

    (args.out / "scaling.json").write_text(json.dumps(rows, indent=1) + "\n")
    with open(args.out / "scaling.dat", "w") as dat:
        dat.write("# ranks first_started_s last_started_s wall_s sandboxes_per_s mpi_hello_s\n")
        for r in rows:
            dat.write(f"{r['ranks']} {r['first_started_s']:.4f} {r['last_started_s']:.4f} "
                      f"{r['wall_s']:.4f} {r['sandboxes_per_s']:.2f} {r['mpi_hello_s']:.4f}\n")
    sys.stdout.write(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
