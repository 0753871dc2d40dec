"""Tests of the Slurm test fixture itself: that the localhost cluster runs jobs the ways
oshpc-fanout is started (srun, salloc + mpirun, srun --mpi=pmix, sbatch arrays) and that
scancel leaves nothing behind."""

from __future__ import annotations

import time

import pytest

from slurm_cluster import TEST_USER, is_root

needs_root = pytest.mark.skipif(not is_root(), reason="running as another user needs root")


def test_srun_hostname_as_current_user(slurm_cluster):
    done = slurm_cluster.srun(["-n1", "hostname", "-s"])
    assert done.stdout.split() == [slurm_cluster.node]


@needs_root
def test_srun_hostname_as_root_and_test_user(slurm_cluster):
    for user in ("root", TEST_USER):
        done = slurm_cluster.srun(["-n1", "hostname", "-s"], user=user)
        assert done.stdout.split() == [slurm_cluster.node], user


def test_salloc_runs_steps(slurm_cluster):
    done = slurm_cluster.run_as(None, ["salloc", "-n2", "srun", "hostname", "-s"])
    assert done.stdout.split() == [slurm_cluster.node] * 2


def _ranks(stdout: str) -> list[int]:
    return sorted(int(line.split()[2]) for line in stdout.splitlines()
                  if line.startswith("hello rank"))


def test_salloc_mpirun_four_ranks(slurm_cluster, mpi_hello):
    done = slurm_cluster.run_as(None, ["salloc", "-n4", "mpirun", "--oversubscribe",
                                       str(mpi_hello)], timeout=120)
    assert _ranks(done.stdout) == [0, 1, 2, 3]
    assert "of 4" in done.stdout


def test_srun_pmix_four_ranks(slurm_cluster, mpi_hello):
    done = slurm_cluster.srun(["--mpi=pmix", "-n4", str(mpi_hello)], timeout=120)
    assert _ranks(done.stdout) == [0, 1, 2, 3]


def test_sbatch_array_tasks_see_their_index(slurm_cluster, slurm_shared_dir):
    script = f"""#!/bin/bash
#SBATCH -o {slurm_shared_dir}/out-%A_%a.txt
echo "$SLURM_ARRAY_TASK_ID" > {slurm_shared_dir}/task-$SLURM_ARRAY_TASK_ID
"""
    slurm_cluster.submit_batch(script, array="0-3", timeout=120)
    for index in range(4):
        assert (slurm_shared_dir / f"task-{index}").read_text().strip() == str(index)


def _wait_for_file(path, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} not created in {timeout}s"
        time.sleep(0.2)


@pytest.mark.parametrize("launch", ["batch", "step"])
def test_scancel_leaves_no_process(slurm_cluster, slurm_shared_dir, launch):
    # A marker in argv finds exactly this test's processes, whoever owns them.
    marker = f"oshpc-scancel-{launch}-{time.time_ns()}"
    ready = slurm_shared_dir / "ready"
    body = f'touch {ready}; exec -a {marker} sleep 300'
    if launch == "step":
        body = f"srun -n2 bash -c '{body}'"
    script = f"#!/bin/bash\n#SBATCH -n2 -o {slurm_shared_dir}/out.txt\n{body}\n"
    job = slurm_cluster.submit_batch(script, wait=False)
    _wait_for_file(ready)
    slurm_cluster.wait_state(job.job_id, ["RUNNING"])
    assert [p for p in slurm_cluster.processes_of() if marker in p], "marker not visible"

    slurm_cluster.cancel(job.job_id)

    slurm_cluster.wait_job_gone(job.job_id, timeout=30)
    left = [p for p in slurm_cluster.processes_of() if marker in p]
    assert left == []
    assert slurm_cluster.wait_state(job.job_id, ["CANCELLED", None]) in ("CANCELLED", None)
