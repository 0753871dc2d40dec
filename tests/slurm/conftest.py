"""pytest fixtures for tests that run jobs on a real Slurm cluster.

slurm_cluster (session): a SlurmCluster (see slurm_cluster.py). As root it starts the
  one-node localhost cluster with slurm-fixture.sh and stops it at the end of the session
  (set OSHPC_SLURM_KEEP=1 to leave it running). As another user it uses a cluster that is
  already running, or skips.
slurm_shared_root (session): a directory under /tmp (not under pytest's basetemp) holding the
  shared directories; removed at the end unless OSHPC_SLURM_KEEP=1.
slurm_shared_dir (function): a fresh directory that jobs of every user can write.
mpi_hello (session): path of tests/slurm/mpi_hello.cpp built with mpicxx, runnable by all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from slurm_cluster import (HERE, TEST_USER, SlurmCluster, SlurmError, current_user,
                           fixture_script, is_root, node_name, slurm_answers)


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    started_here = False
    if not slurm_answers():
        if not is_root():
            pytest.skip("no Slurm cluster answers and not root, so "
                        "tests/slurm/slurm-fixture.sh cannot start one")
        try:
            fixture_script("start")
        except SlurmError as err:
            pytest.fail(str(err))
        started_here = True
    # Jobs run as the ordinary test user when we can switch to it, else as ourselves.
    user = TEST_USER if is_root() else current_user()
    cluster = SlurmCluster(node=node_name(), user=user, started_here=started_here)
    yield cluster
    if started_here and os.environ.get("OSHPC_SLURM_KEEP") != "1":
        fixture_script("stop")


@pytest.fixture(scope="session")
def slurm_shared_root(slurm_cluster):
    # Not under tmp_path_factory: every pytest session started as root resets
    # /tmp/pytest-of-root to 0700, which would lock the job user out of a concurrent session's
    # directories (seen as "Permission denied" on the image in the middle of a run).
    root = Path(tempfile.mkdtemp(prefix="oshpc-slurm-tests-", dir="/tmp"))
    root.chmod(0o711)
    yield root
    if os.environ.get("OSHPC_SLURM_KEEP") != "1":
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def slurm_shared_dir(slurm_cluster, slurm_shared_root, request):
    path = Path(tempfile.mkdtemp(prefix=request.node.name[:40].replace("/", "_") + "-",
                                 dir=slurm_shared_root))
    return slurm_cluster.shared_dir(path)


@pytest.fixture(scope="session")
def mpi_hello(slurm_cluster, slurm_shared_root):
    if shutil.which("mpicxx") is None:
        pytest.skip("mpicxx not found (install libopenmpi-dev)")
    out = slurm_cluster.shared_dir(slurm_shared_root / "mpi_hello") / "hello"
    subprocess.run(["mpicxx", "-O1", "-o", str(out), str(HERE / "mpi_hello.cpp")],
                   check=True, timeout=120)
    out.chmod(0o755)
    return out
