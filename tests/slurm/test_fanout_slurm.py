"""oshpc-fanout on a real Slurm cluster: started by salloc + mpirun, by srun --mpi=pmix, as a
job array of slices, and stopped by scancel.

The jobs run as the ordinary user (`oshpc` when pytest runs as root), so the binaries and the
image are copied into a directory that user can read. Environment, as for the integration
tests: OSHPC_BUILD_DIR (bin/oshpc-fanout, bin/oshpc-exec), OSHPC_IMAGE.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

BUILD_DIR = Path(os.environ.get("OSHPC_BUILD_DIR", "build")).resolve()
IMAGE = Path(os.environ.get("OSHPC_IMAGE", BUILD_DIR / "images/debian-bookworm.sqsh")).resolve()
HELPERS = ("oshpc-fanout", "oshpc-exec", "oshpc-netns-listen")


class Install:
    """oshpc-fanout and the image where the job user can read them, plus a per-test cache."""

    def __init__(self, root: Path):
        self.root = root
        self.fanout = root / "bin/oshpc-fanout"
        self.image = root / "image.sqsh"

    def argv(self, work: Path, name: str, *args: str) -> list[str]:
        return [str(self.fanout), "--image", str(self.image), "--job-name", name,
                "--cache-dir", str(work / "cache"), "--output-dir", str(work / "out"),
                "--events", str(work / f"{name}.jsonl"), *args]


@pytest.fixture(scope="module")
def install(slurm_cluster, slurm_shared_root) -> Install:
    if not (BUILD_DIR / "bin/oshpc-fanout").exists():
        pytest.skip(f"no {BUILD_DIR}/bin/oshpc-fanout (set OSHPC_BUILD_DIR)")
    if not IMAGE.exists():
        pytest.skip(f"no image {IMAGE} (set OSHPC_IMAGE)")
    root = slurm_cluster.shared_dir(slurm_shared_root / "install")
    (root / "bin").mkdir()
    for name in HELPERS:
        if (BUILD_DIR / "bin" / name).exists():
            shutil.copy2(BUILD_DIR / "bin" / name, root / "bin" / name)
            (root / "bin" / name).chmod(0o755)
    (root / "bin").chmod(0o755)
    shutil.copyfile(IMAGE, root / "image.sqsh")
    (root / "image.sqsh").chmod(0o644)
    return Install(root)


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def terminal(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] in ("exited", "failed")]


def assert_each_index_once(events: list[dict], indices: range,
                           outcome: str | None = "exited") -> None:
    ends = terminal(events)
    seen = Counter(e["index"] for e in ends)
    twice = sorted(i for i, n in seen.items() if n > 1)
    missing = sorted(set(indices) - set(seen))
    extra = sorted(set(seen) - set(indices))
    assert (twice, missing, extra) == ([], [], []), \
        f"terminal events: twice {twice}, missing {missing}, unexpected {extra}"
    wrong = [e for e in ends if outcome is not None and (e["event"] != outcome
             or (outcome == "exited" and e.get("exit_code") != 0))]
    assert wrong == [], wrong[:5]


def started_ranks(events: list[dict]) -> set[int]:
    return {e["rank"] for e in events if e["event"] == "started"}


def test_salloc_mpirun_four_ranks(slurm_cluster, install, slurm_shared_dir):
    count = 40
    argv = ["salloc", "-N1", "-n4", "mpirun", "--bind-to", "none",
            *install.argv(slurm_shared_dir, "salloc", "-q", "-n", str(count), "--", "/bin/true")]
    done = slurm_cluster.run_as(None, argv, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    events = read_events(slurm_shared_dir / "salloc.jsonl")
    assert_each_index_once(events, range(count))
    assert started_ranks(events) == {0, 1, 2, 3}


def test_srun_pmix_four_ranks(slurm_cluster, install, slurm_shared_dir):
    count = 40
    argv = ["--mpi=pmix", "-N1", "-n4",
            *install.argv(slurm_shared_dir, "srun", "-q", "-n", str(count), "--", "/bin/true")]
    done = slurm_cluster.srun(argv, timeout=180, check=False)
    assert done.returncode == 0, done.stderr
    events = read_events(slurm_shared_dir / "srun.jsonl")
    assert_each_index_once(events, range(count))
    assert started_ranks(events) == {0, 1, 2, 3}


# Runs with the same --job-name on one node (array tasks, steps) must not share node-local
# state: each run's directory is named by a per-run id, not by the job name.
shared_job_name = pytest.param("arr")


@pytest.mark.parametrize("job_name", [None, shared_job_name], ids=["default-name", "one-name"])
def test_array_slices_cover_every_index_once(slurm_cluster, install, slurm_shared_dir, job_name):
    tasks, per_task = 8, 6
    work = slurm_shared_dir
    name = f"--job-name {job_name}" if job_name else ""
    # One node-local cache for all tasks, as on a real node running several array tasks.
    script = f"""#!/bin/bash
#SBATCH -N1 -n2 -o {work}/array-%a.out
set -euo pipefail
OFFSET=$((SLURM_ARRAY_TASK_ID * {per_task}))
srun --mpi=pmix -n2 {install.fanout} --image {install.image} {name} \\
  --index-offset "$OFFSET" --count {per_task} \\
  --cache-dir {work}/cache --output-dir {work}/out-$SLURM_ARRAY_TASK_ID \\
  --events {work}/events-$SLURM_ARRAY_TASK_ID.jsonl -q -- \\
  /bin/sh -c 'test "$OSHPC_INDEX" = {{index}} && echo "$OSHPC_SANDBOX_ID"'
"""
    slurm_cluster.submit_batch(script, array=f"0-{tasks - 1}", timeout=300)

    all_events = []
    for task in range(tasks):
        events = read_events(work / f"events-{task}.jsonl")
        assert_each_index_once(events, range(task * per_task, (task + 1) * per_task))
        all_events += events
    assert_each_index_once(all_events, range(tasks * per_task))
    ids = [e["sandbox"] for e in terminal(all_events)]
    assert all(i.endswith(f"-{e['index']}") for i, e in zip(ids, terminal(all_events)))
    if job_name:
        assert set(ids) == {f"{job_name}-{i}" for i in range(tasks * per_task)}
    # The sandbox saw its global index; its output lands under its global id.
    first = 3 * per_task
    out = next((work / "out-3").glob(f"*-{first}")) / "stdout"
    assert out.read_text().strip() == out.parent.name


def wait_for(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(path))]


def job_processes(cluster, work: Path, marker: str) -> list[str]:
    """Processes of the job user that belong to this test: their command line names its
    directory (oshpc-fanout, bwrap, squashfuse) or their environment holds its marker (the
    sandboxes' commands). Other jobs of the same user may run on the machine meanwhile."""
    found = []
    for line in cluster.processes_of():
        pid = line.split()[0]
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        except OSError:
            continue  # gone, or a zombie
        if str(work) in cmdline or marker in environ:
            found.append(line)
    return found


@pytest.mark.parametrize("launcher", ["srun", "mpirun"])
def test_scancel_leaves_nothing_and_ends_every_sandbox(slurm_cluster, install,
                                                       slurm_shared_dir, launcher):
    count, work = 24, slurm_shared_dir
    marker = f"OSHPC_TEST_MARK=scancel-{launcher}-{time.time_ns()}"
    start = {"srun": "srun --mpi=pmix -n4", "mpirun": "mpirun --bind-to none"}[launcher]
    argv = " ".join(install.argv(work, "cancel", "--slots", "2", "-n", str(count),
                                 "--env", marker, "--", "sleep", "60"))
    script = f"#!/bin/bash\n#SBATCH -N1 -n4 -o {work}/cancel.out\n{start} {argv}\necho rc=$?\n"
    job = slurm_cluster.submit_batch(script, wait=False)
    events_path = work / "cancel.jsonl"
    started = lambda: events_path.exists() and events_path.read_text().count('"started"') >= 8
    assert wait_for(started, timeout=90), (work / "cancel.out").read_text() \
        if (work / "cancel.out").exists() else "no output"

    slurm_cluster.cancel(job.job_id)
    slurm_cluster.wait_job_gone(job.job_id, timeout=30)

    left = lambda: job_processes(slurm_cluster, work, marker)
    assert wait_for(lambda: left() == [], timeout=10), left()
    assert mounts_under(work / "cache") == []
    jobs = work / "cache" / "jobs"
    assert not jobs.exists() or list(jobs.iterdir()) == [], list(jobs.iterdir())
    events = read_events(events_path)
    assert_each_index_once(events, range(count), outcome=None)
    # Slurm signals every process of the step, the sandboxes' commands too; the rank handles
    # its own stop signal before reaping, so those sandboxes are reported as cancelled.
    outcomes = Counter((e["event"], e.get("reason") or e.get("signal"))
                       for e in terminal(events))
    assert outcomes == {("failed", "cancelled"): count}, dict(outcomes)
