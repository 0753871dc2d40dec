"""Rootfs staging at scale: one stager per (simulated) node, the image file read once per job
when broadcast, the cache shared safely by concurrent jobs, recovery after kill -9, clear
errors for bad images and full disks, `oshpc cache` and `oshpc image import`.

Simulated nodes: a wrapper gives every two ranks their own OSHPC_NODE_NAME and cache
directory, so one machine behaves like several nodes with node-local disks.
"""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

import exit_codes
from oshpc_testing import (BUILD_DIR, FANOUT, IMAGE, IS_ROOT, Job, describe_processes,
                           fuse_usable, mounts_under, my_processes, wait_for)

OSHPC = BUILD_DIR / "bin/oshpc"
RANKS_PER_NODE = 2


def staged_bytes(job):
    return sum(e["bytes_from_shared"] for e in job.of_type("image_staged"))


def entries(cache, complete_only=True):
    images = pathlib.Path(cache) / "images"
    if not images.exists():
        return []
    return sorted(p.name for p in images.iterdir()
                  if p.is_dir() and (".tmp." not in p.name or not complete_only))


def partials(cache):
    images = pathlib.Path(cache) / "images"
    return [p.name for p in images.iterdir() if ".tmp." in p.name] if images.exists() else []


def sweep(cache):
    """What a failed test leaves (a killed launcher's mount) goes the way users clear it."""
    subprocess.run([OSHPC, "cache", "gc", "--cache-dir", cache], capture_output=True)


def check_clean(cache):
    """No mounts, no stager or squashfuse processes, no job state, no partial entries."""
    assert wait_for(lambda: not my_processes("squashfuse_ll", cache), timeout=10)
    assert not mounts_under(cache), "mounts left in the cache dir"
    jobs = pathlib.Path(cache) / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir()), f"job state left: {list(jobs.iterdir())}"
    assert not partials(cache), f"partial entries left: {partials(cache)}"


class Nodes:
    """oshpc-fanout over simulated nodes: RANKS_PER_NODE ranks per node name, one cache dir
    per node (<workdir>/nodes/nodeN)."""

    def __init__(self, fanout):
        self.fanout = fanout
        self.base = fanout.workdir / "nodes"
        self.wrapper = fanout.workdir / "as-node.sh"
        self.wrapper.write_text(
            "#!/bin/sh\n"
            f"n=$((OMPI_COMM_WORLD_RANK / {RANKS_PER_NODE}))\n"
            "export OSHPC_NODE_NAME=node$n\n"
            f'exec {FANOUT} --cache-dir {self.base}/node$n "$@"\n')
        self.wrapper.chmod(0o755)

    def run(self, nodes, args, name, image=IMAGE, env=None, timeout=400):
        argv = self.fanout.mpirun_argv(nodes * RANKS_PER_NODE) + [
            str(self.wrapper), "--image", str(image), "--job-name", name] + list(args)
        proc = subprocess.run(argv, cwd=self.fanout.workdir, capture_output=True, text=True,
                              timeout=timeout, env=self.fanout.environment(env))
        return Job(proc, self.fanout.workdir, name)

    def cache(self, node):
        return self.base / f"node{node}"


@pytest.fixture(scope="module")
def small_image(tmp_path_factory):
    """A few MB squashfs of host binaries (sh, true, cat, sleep) and their libraries."""
    if not shutil.which("mksquashfs"):
        pytest.skip("mksquashfs is not installed")
    work = tmp_path_factory.mktemp("small-image")
    os.chmod(work, 0o755)
    root = work / "root"
    programs = [shutil.which(p) for p in ("sh", "true", "cat", "sleep", "ls", "env", "pwd")]
    files = set(programs)
    for program in programs:
        for line in subprocess.run(["ldd", program], capture_output=True, text=True).stdout.split("\n"):
            for word in line.split():
                if word.startswith("/"):
                    files.add(word)
    for path in files:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), target)
    for name in ("bin", "lib", "lib64"):
        if (root / "usr" / name).exists() and not (root / name).exists():
            (root / name).symlink_to(f"usr/{name}")
    (root / "etc").mkdir(exist_ok=True)
    (root / "etc/marker").write_text("small image\n")
    image = work / "small.sqsh"
    subprocess.run(["mksquashfs", str(root), str(image), "-all-root", "-quiet", "-no-progress"],
                   check=True)
    image.chmod(0o644)
    return image


def test_broadcast_reads_the_image_once_for_four_nodes(fanout):
    nodes = Nodes(fanout)
    count = 32
    job = nodes.run(4, ["-n", str(count), "-q", "--", "sh", "-c", "test -d /usr"], "b1")
    assert job.returncode == exit_codes.OK, job.stderr
    staged = job.of_type("image_staged")
    assert sorted(e["node"] for e in staged) == [f"node{i}" for i in range(4)]
    assert staged_bytes(job) == IMAGE.stat().st_size
    assert all(e["method"] in ("mount", "extract") and e["seconds"] >= 0 for e in staged)
    assert len(job.terminal()) == count and all(e["exit_code"] == 0 for e in job.terminal())
    for node in range(4):
        assert len(entries(nodes.cache(node))) == 1
        check_clean(nodes.cache(node))

    # A second job finds every node's cache filled: nothing is read or sent.
    job = nodes.run(4, ["-n", "8", "-q", "--", "true"], "b2")
    assert job.returncode == exit_codes.OK, job.stderr
    assert len(job.of_type("image_staged")) == 4
    assert staged_bytes(job) == 0


def test_shared_staging_reads_the_image_once_per_node(fanout, small_image):
    nodes = Nodes(fanout)
    job = nodes.run(4, ["-n", "8", "--stage-from", "shared", "-q", "--", "cat", "/etc/marker"],
                    "s1", image=small_image)
    assert job.returncode == exit_codes.OK, job.stderr
    assert len(job.of_type("image_staged")) == 4
    assert staged_bytes(job) == 4 * small_image.stat().st_size
    assert job.sandbox_file(0) == "small image\n"


def test_sixteen_concurrent_jobs_on_one_node_stage_once(fanout, small_image, tmp_path):
    # Each mpirun gets its own session directory: Open MPI's launchers race to create the
    # shared one under /tmp ("A call to mkdir ... File exists"), which is not what is tested.
    procs = [fanout.start(["-n", "1", "-q", "--", "true"], image=small_image,
                          env={"OMPI_MCA_orte_tmpdir_base": str(tmp_path / f"mpi-{i}")})
             for i in range(16)]
    jobs = [fanout.finish(proc, name, timeout=300) for proc, name in procs]
    for job in jobs:
        assert job.returncode == exit_codes.OK, job.stderr
    read = [staged_bytes(job) for job in jobs]
    assert sorted(read) == [0] * 15 + [small_image.stat().st_size], read
    assert len(entries(fanout.cache_dir)) == 1
    check_clean(fanout.cache_dir)


def test_a_stager_killed_mid_copy_is_recovered(fanout):
    proc, name = fanout.start(["-n", "2", "-q", "--", "true"],
                              env={"OSHPC_TEST_STAGE_DELAY_MS": "400"})
    assert wait_for(lambda: partials(fanout.cache_dir), timeout=60), "staging never began"
    for pid in my_processes("oshpc-fanout", fanout.cache_dir):
        os.kill(pid, signal.SIGKILL)
    proc.kill()
    proc.communicate(timeout=60)
    assert partials(fanout.cache_dir) and not entries(fanout.cache_dir)
    assert any((fanout.cache_dir / "jobs").iterdir())

    job = fanout.run(["-n", "4", "--", "sh", "-c", "test -x /bin/sh"], ranks=2)
    assert job.returncode == exit_codes.OK, job.stderr
    assert staged_bytes(job) == IMAGE.stat().st_size
    assert "interrupted stager" in job.stderr
    assert len(entries(fanout.cache_dir)) == 1
    check_clean(fanout.cache_dir)


@pytest.mark.parametrize("scheduler_kills_all", [False, True])
def test_a_mount_left_by_a_killed_launcher_goes(fanout, small_image, scheduler_kills_all):
    """Ranks killed outright (mpirun does that when signalled twice): squashfuse gets SIGTERM
    as its rank dies and unmounts. Everything killed at once (a scheduler killing the job's
    processes): the mount stays, and the next run's sweep removes it."""
    if not fuse_usable():
        pytest.skip("/dev/fuse is not usable: images are extracted, nothing is mounted")
    proc, name = fanout.start(["-n", "2", "-q", "--", "sleep", "97"], ranks=2, image=small_image)
    try:
        assert wait_for(lambda: my_processes("sleep", "97") and
                        mounts_under(fanout.cache_dir / "jobs"), timeout=60), "no sandbox ran"
        fuse = my_processes("squashfuse_ll", fanout.cache_dir)
        if scheduler_kills_all:
            for pid in fuse:
                os.kill(pid, signal.SIGKILL)
        for pid in my_processes("oshpc-fanout", fanout.cache_dir):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.communicate(timeout=60)
        if scheduler_kills_all:
            assert mounts_under(fanout.cache_dir / "jobs"), "the killed job's mount is gone"
        else:
            assert wait_for(lambda: not mounts_under(fanout.cache_dir / "jobs") and
                            not my_processes("squashfuse_ll", fanout.cache_dir), timeout=15), \
                "squashfuse outlived its killed rank: " + describe_processes(fuse)

        job = fanout.run(["-n", "1", "--", "true"], image=small_image)
        assert job.returncode == exit_codes.OK, job.stderr
        assert "left by killed launchers" in job.stderr
        check_clean(fanout.cache_dir)
    finally:
        proc.kill()
        sweep(fanout.cache_dir)


def test_a_truncated_image_is_refused(fanout, tmp_path):
    cut = tmp_path / "cut.sqsh"
    cut.write_bytes(IMAGE.read_bytes()[: IMAGE.stat().st_size // 2])
    job = fanout.run(["-n", "2", "--", "true"], ranks=2, image=cut)
    assert job.returncode == exit_codes.BAD_INPUT, job.stderr
    assert "truncated" in job.stderr and str(cut) in job.stderr
    assert not entries(fanout.cache_dir, complete_only=False)
    check_clean(fanout.cache_dir)


@pytest.mark.parametrize("method", ["mount", "extract"])
def test_an_image_with_a_corrupt_directory_table_is_named(fanout, tmp_path, method):
    """Its superblock is sound (so it passes the up-front checks), its tables are not: the
    error names the image, not a path in the cache."""
    if method == "mount" and not fuse_usable():
        pytest.skip("/dev/fuse is not usable: images are extracted, nothing is mounted")
    data = bytearray(IMAGE.read_bytes())
    # The tables sit at the end of the file; the last 200 kB hold the directory table.
    data[-200_000:-50_000] = os.urandom(150_000)
    broken = tmp_path / "broken.sqsh"
    broken.write_bytes(bytes(data))
    job = fanout.run(["-n", "2", "--stage-method", method, "--", "true"], image=broken)
    assert job.returncode == exit_codes.INFRASTRUCTURE, job.stderr
    assert f"the image {broken}" in job.stderr and "may be corrupt" in job.stderr, job.stderr
    assert str(fanout.cache_dir) not in job.stderr.split("summary")[0], job.stderr
    check_clean(fanout.cache_dir)


def test_a_directory_without_a_shell_fails_each_sandbox_clearly(fanout, tmp_path):
    root = tmp_path / "empty-root"
    (root / "etc").mkdir(parents=True)
    root.chmod(0o755)
    job = fanout.run(["-n", "2", "-q", "--", "sh", "-c", "true"], image=root)
    assert job.returncode == exit_codes.SANDBOX_FAILED
    for event in job.terminal():
        assert event["event"] == "failed" and event["reason"] == "command_not_found"
        assert "sh" in event["message"]
    assert [e["method"] for e in job.of_type("image_staged")] == ["directory"]
    check_clean(fanout.cache_dir)


def test_an_unreadable_image_is_refused(fanout, tmp_path):
    if IS_ROOT:
        pytest.skip("root can read any file")
    path = tmp_path / "secret.sqsh"
    shutil.copy(IMAGE, path)
    path.chmod(0)
    job = fanout.run(["-n", "2", "--", "true"], ranks=2, image=path)
    assert job.returncode == exit_codes.BAD_INPUT
    assert "Permission denied" in job.stderr and str(path) in job.stderr
    assert not entries(fanout.cache_dir, complete_only=False)


def test_a_full_cache_disk_fails_with_the_numbers(fanout, tmp_path):
    if not IS_ROOT:
        pytest.skip("mounting a small tmpfs as the cache needs root")
    small = tmp_path / "small-disk"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(small)],
                   check=True)
    try:
        argv, name = fanout.command(["-n", "2", "--", "true"], ranks=2, cache=False)
        argv[argv.index("--job-name"):argv.index("--job-name")] = ["--cache-dir", str(small)]
        proc = subprocess.run(argv, cwd=fanout.workdir, capture_output=True, text=True,
                              timeout=180, env=fanout.environment(None))
        job = Job(proc, fanout.workdir, name)
        assert job.returncode == exit_codes.INFRASTRUCTURE, job.stderr
        assert "not enough space in" in job.stderr and "MiB free" in job.stderr, job.stderr
        assert str(small) in job.stderr
        assert not entries(small, complete_only=False)
        assert not mounts_under(small / "jobs")
        assert not any((small / "jobs").iterdir())
    finally:
        subprocess.run(["umount", "-l", str(small)])


def test_cache_list_and_gc_keep_entries_in_use(fanout, small_image):
    job = fanout.run(["-n", "1", "-q", "--", "true"])
    assert job.returncode == exit_codes.OK, job.stderr
    proc, name = fanout.start(["-n", "1", "-q", "--", "sleep", "30"], image=small_image)
    events = fanout.workdir / f"oshpc-{name}" / "events.jsonl"
    assert wait_for(lambda: events.exists() and '"started"' in events.read_text(), timeout=60)

    listing = subprocess.run([OSHPC, "cache", "list", "--cache-dir", fanout.cache_dir],
                             capture_output=True, text=True, check=True).stdout
    assert "2 entries" in listing and "in use" in listing

    gc = subprocess.run([OSHPC, "cache", "gc", "--max-size", "0", "--cache-dir",
                         fanout.cache_dir], capture_output=True, text=True, check=True).stdout
    assert "removed" in gc and "kept" in gc
    assert len(entries(fanout.cache_dir)) == 1  # the one in use

    proc.send_signal(signal.SIGTERM)
    fanout.finish(proc, name)
    subprocess.run([OSHPC, "cache", "gc", "--max-size", "0", "--cache-dir", fanout.cache_dir],
                   check=True, capture_output=True)
    assert not entries(fanout.cache_dir)


@pytest.fixture(scope="module")
def oci_layout(tmp_path_factory, small_image):
    """A small OCI image built locally with umoci from the small image's root."""
    for tool in ("umoci", "skopeo", "unsquashfs"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    work = tmp_path_factory.mktemp("oci")
    layout = work / "layout"
    run = lambda *argv: subprocess.run(argv, check=True, capture_output=True, cwd=work)
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:v1")
    run("umoci", "unpack", "--rootless", "--image", f"{layout}:v1", str(work / "bundle"))
    run("unsquashfs", "-f", "-d", str(work / "bundle/rootfs"), str(small_image))
    (work / "bundle/rootfs/srv").mkdir()
    (work / "bundle/rootfs/etc/marker").write_text("from oci\n")
    run("umoci", "repack", "--image", f"{layout}:v1", str(work / "bundle"))
    run("umoci", "config", "--image", f"{layout}:v1", "--config.env", "GREETING=hello",
        "--config.workingdir", "/srv", "--config.cmd", "/bin/sh")
    return layout


def test_oci_import_round_trip(fanout, tmp_path, oci_layout):
    out = tmp_path / "imported.sqsh"
    result = subprocess.run([OSHPC, "image", "import", f"oci:{oci_layout}:v1", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    metadata = json.loads(pathlib.Path(f"{out}.json").read_text())
    assert metadata["oshpc_image_metadata"] == 1
    assert metadata["env"] == ["GREETING=hello"] and metadata["working_dir"] == "/srv"
    assert metadata["args"] == ["/bin/sh"]
    assert not list(tmp_path.glob("imported.sqsh.tmp.*"))

    out.chmod(0o644)
    job = fanout.run(["-n", "4", "-q", "--", "sh", "-c", 'cat /etc/marker; echo "$GREETING"; pwd'],
                     ranks=2, image=out)
    assert job.returncode == exit_codes.OK, job.stderr
    # The image's own environment and working directory apply in every sandbox.
    assert job.sandbox_file(3) == "from oci\nhello\n/srv\n"


def test_oci_import_refuses_bad_sources(tmp_path):
    for source, message in [("nosuch:/x", "expected docker-archive"),
                            (f"oci:{tmp_path}/missing:v1", "No such file")]:
        result = subprocess.run([OSHPC, "image", "import", source, str(tmp_path / "o.sqsh")],
                                capture_output=True, text=True)
        assert result.returncode == exit_codes.BAD_INPUT
        assert message in result.stderr
    assert not list(tmp_path.iterdir())
