"""Placement end to end: --plan against real machine descriptions, pinning on this machine,
an allocation's restricted cpuset, and impossible requests refused before anything starts."""
import json
import os
import pathlib
import subprocess

import pytest

import exit_codes
from oshpc_testing import BUILD_DIR

TOPOLOGIES = pathlib.Path(os.environ.get(
    "OSHPC_TOPOLOGY_DIR", BUILD_DIR.parent.parent / "shared/data/topologies"))
DGX2 = TOPOLOGIES / "nvidiaDGX2.xml"


def plan_lines(job):
    lines = [json.loads(line) for line in job.stdout.splitlines() if line.startswith("{")]
    return ([l for l in lines if l.get("plan") == "job"],
            [l for l in lines if "index" in l and "plan" not in l],
            [l for l in lines if l.get("plan") == "rank"])


@pytest.mark.skipif(not DGX2.exists(), reason=f"no real topologies at {TOPOLOGIES}")
def test_plan_on_a_dgx2_gives_each_sandbox_gpus_of_its_own_package(fanout):
    job = fanout.run(["-n", "10", "--gpus-per-sandbox", "2", "--placement", "spread",
                      "--topology-xml", str(DGX2), "--plan", "--", "true"], ranks=2)
    assert job.returncode == exit_codes.OK, job.stderr
    header, sandboxes, ranks = plan_lines(job)
    assert header[0]["topology_xml"] == str(DGX2)
    assert [s["index"] for s in sandboxes] == list(range(10))
    # Sandboxes running at the same time (one wave) never share a GPU.
    slots = sum(r["slots"] for r in ranks)
    for wave_start in range(0, 10, slots):
        wave = sandboxes[wave_start:wave_start + slots]
        uuids = [g["uuid"] for s in wave for g in s["gpus"]]
        assert len(uuids) == len(set(uuids)) == 2 * len(wave)
    # Locality: a sandbox's GPUs sit on the package of its CPUs (DGX-2: GPUs 0-7 on package
    # 0, 8-15 on package 1, per the hwloc file).
    for sandbox in sandboxes:
        assert len(sandbox["gpus"]) == 2
        for gpu in sandbox["gpus"]:
            assert (gpu["index"] // 8) == sandbox["package"]
    assert any("node_summary" in r for r in ranks)
    assert not job.output_dir.exists()


@pytest.mark.skipif(not DGX2.exists(), reason=f"no real topologies at {TOPOLOGIES}")
def test_impossible_requests_fail_before_anything_starts_with_the_numbers(fanout):
    job = fanout.run(["-n", "2", "--gpus-per-sandbox", "9", "--topology-xml", str(DGX2),
                      "--plan", "--", "true"])
    assert job.returncode == exit_codes.USAGE
    assert "9" in job.stderr and "8" in job.stderr  # asked for 9, a package holds 8

    job = fanout.run(["-n", "2", "--gpus-per-sandbox", "1", "--", "true"], ranks=2)
    assert job.returncode == exit_codes.USAGE
    assert "no NVIDIA GPU found" in job.stderr
    assert not job.output_dir.exists()


def test_topology_xml_is_for_planning_only(fanout):
    job = fanout.run(["-n", "1", "--topology-xml", str(DGX2), "--", "true"])
    assert job.returncode == exit_codes.USAGE
    assert "--plan" in job.stderr


def test_sandboxes_stay_inside_a_restricted_cpuset(fanout):
    """An allocation's cpuset (here: taskset) is honoured: nothing runs outside it."""
    allowed = sorted(os.sched_getaffinity(0))
    target = str(allowed[-1])
    argv, name = fanout.command(["-n", "6", "-q", "--", "grep", "^Cpus_allowed_list",
                                 "/proc/self/status"], ranks=1)
    proc = subprocess.run(["taskset", "-c", target] + argv, cwd=fanout.workdir,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out_dir = fanout.workdir / f"oshpc-{name}"
    for index in range(6):
        text = (out_dir / f"{name}-{index}" / "stdout").read_text()
        assert text.split()[-1] == target
    events = [json.loads(l) for l in (out_dir / "events.jsonl").read_text().splitlines()]
    assert {e["cpus"] for e in events if e["event"] == "started"} == {target}
