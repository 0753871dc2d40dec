"""oshpc-fanout end to end: real mpirun, real bubblewrap, the real Debian image."""
import os
import pathlib
import signal
import subprocess
import time

import pytest

import exit_codes
from oshpc_testing import (FANOUT, IMAGE, IS_ROOT, describe_processes, fuse_usable, mounts_under,
                           my_processes, wait_for)


def check_every_index_once(job, count):
    """Each sandbox has exactly one terminal event, and `started` precedes it."""
    terminal = job.terminal()
    indices = sorted(e["index"] for e in terminal)
    assert indices == list(range(count)), f"terminal events: {len(terminal)} for {count}"
    seen_start = set()
    for event in job.events:
        if event["event"] == "started":
            seen_start.add(event["index"])
        elif event["event"] == "exited":
            assert event["index"] in seen_start, f"exited before started: {event}"


def check_nothing_left(fanout, job):
    cache = fanout.cache_dir
    assert wait_for(lambda: not my_processes("bwrap", cache), timeout=10), "bwrap processes left"
    assert not my_processes("squashfuse_ll", cache), "squashfuse left running"
    assert not mounts_under(fanout.cache_dir), "mounts left in the cache dir"
    jobs = fanout.cache_dir / "jobs"
    assert not jobs.exists() or not any(jobs.iterdir()), f"job state left: {list(jobs.iterdir())}"


@pytest.mark.parametrize("ranks", [1, 4])
def test_many_sandboxes_over_ranks(fanout, ranks):
    count = 200
    script = 'echo "{index} $OSHPC_INDEX $OSHPC_SANDBOX_ID $OSHPC_COUNT" > out; cat out'
    job = fanout.run(["-n", str(count), "-q", "--", "sh", "-c", script], ranks=ranks)
    assert job.returncode == exit_codes.OK, job.stderr
    check_every_index_once(job, count)
    assert all(e["event"] == "exited" and e["exit_code"] == 0 for e in job.terminal())
    for index in range(count):
        assert job.sandbox_file(index) == f"{index} {index} {job.name}-{index} {count}\n"
    if ranks > 1:
        assert len({e["rank"] for e in job.of_type("started")}) > 1, "work stayed on one rank"
    check_nothing_left(fanout, job)


@pytest.mark.parametrize("method", ["extract", "mount"])
def test_stage_methods(fanout, method):
    if method == "mount" and not fuse_usable():
        pytest.skip("/dev/fuse is not usable by this user: only extraction can be tested")
    job = fanout.run(["-n", "4", "--stage-method", method, "-q", "--", "cat", "/etc/debian_version"],
                     ranks=2)
    assert job.returncode == exit_codes.OK, job.stderr
    staged = job.of_type("image_staged")
    assert len(staged) == 1 and staged[0]["method"] == method
    assert job.sandbox_file(0).startswith("12")
    check_nothing_left(fanout, job)


def test_sandbox_profile(fanout):
    probe = "; ".join([
        "id -u", "hostname", "pwd",
        "grep -c . /proc/net/dev",                      # header lines + lo only
        "(touch /etc/x 2>&1 || true) | grep -c 'Read-only'",
        "touch /tmp/ok /sandbox/ok && echo writable",
        "grep ^CapEff /proc/self/status",
        "grep ^Cpus_allowed_list /proc/self/status",
        "python3 -c 'import socket; s=socket.socket(); s.connect((\"1.1.1.1\", 80))' 2>&1 | tail -1",
        "grep -m1 -o 'bind:[0-9]*' /proc/self/numa_maps || echo no-numa-maps",
    ])
    job = fanout.run(["-n", "1", "-q", "--", "sh", "-c", probe])
    assert job.returncode == exit_codes.OK, job.stderr
    lines = job.sandbox_file(0).splitlines()
    assert lines[0] == "0"                                # uid 0 inside by default
    assert lines[1] == f"{job.name}-0"                    # own UTS namespace, named after it
    assert lines[2] == "/sandbox"
    assert lines[3] == "3"                                # only the loopback interface
    assert lines[4] == "1"                                # the image root is read-only
    assert lines[5] == "writable"
    assert lines[6].split()[1] == "0000000000000000"      # no capabilities
    started = job.of_type("started")[0]
    assert lines[7].split()[1] == started["cpus"]         # pinned where the event says
    assert "Network is unreachable" in lines[8]
    assert lines[9].startswith("bind:") or lines[9] == "no-numa-maps"  # memory on its node


def test_identity_self_keeps_uid(fanout):
    job = fanout.run(["-n", "1", "--identity", "self", "-q", "--", "id", "-u"])
    assert job.returncode == exit_codes.OK, job.stderr
    assert job.sandbox_file(0).strip() == str(os.getuid())


def test_placeholders_env_and_binds(fanout, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "input").write_text("payload\n")
    results = tmp_path / "results"
    results.mkdir()
    os.chmod(results, 0o777)
    script = ('cat /opt/data/input; echo "$TAG" > /results/{index}; '
              'touch /opt/data/nope 2>/dev/null || echo ro')
    job = fanout.run(["-n", "3", "--env", "TAG=t-{index}-{node}",
                      "--bind", f"{data}:/opt/data", "--bind", f"{results}:/results:rw",
                      "-q", "--", "sh", "-c", script])
    assert job.returncode == exit_codes.OK, job.stderr
    node = job.of_type("started")[0]["node"]
    for index in range(3):
        assert job.sandbox_file(index) == "payload\nro\n"
        assert (results / str(index)).read_text() == f"t-{index}-{node}\n"


def test_directory_image(fanout, tmp_path):
    root = tmp_path / "rootfs"
    subprocess.run(["unsquashfs", "-no-progress", "-no-xattrs", "-excludes", "-d", str(root),
                    str(IMAGE), "dev"], check=True, capture_output=True)
    job = fanout.run(["-n", "2", "-q", "--", "python3", "-c", "print('dir ok')"], image=root)
    assert job.returncode == exit_codes.OK, job.stderr
    assert job.of_type("image_staged")[0]["method"] == "directory"
    assert job.sandbox_file(1) == "dir ok\n"


def test_failures_are_reported_per_sandbox(fanout):
    script = ('case {index} in 0) exit 3;; 1) kill -SEGV $$;; 2) sleep 30;; '
              '3) exec /no/such/program;; 4) kill -TERM $$;; *) true;; esac')
    job = fanout.run(["-n", "6", "--timeout", "2", "-q", "--", "sh", "-c", script], ranks=2)
    assert job.returncode == exit_codes.SANDBOX_FAILED, job.stderr
    check_every_index_once(job, 6)
    ends = job.by_index()
    assert ends[0]["event"] == "exited" and ends[0]["exit_code"] == 3
    assert ends[1]["event"] == "exited" and ends[1]["signal"] == signal.SIGSEGV
    assert ends[2]["event"] == "failed" and ends[2]["reason"] == "timeout"
    assert ends[3]["event"] == "exited" and ends[3]["exit_code"] == 127
    # Killed by SIGTERM while the job goes on: the command's own end, reported as such.
    assert ends[4]["event"] == "exited" and ends[4]["signal"] == signal.SIGTERM
    assert ends[5]["exit_code"] == 0


def test_missing_command_fails_only_its_sandbox(fanout):
    job = fanout.run(["-n", "3", "-q", "--", "sh", "-c",
                      "test {index} = 1 && exec nosuchcommand-{index}; true"])
    # The shell finds no command: exit 127 from the shell, the sandbox itself ran.
    assert job.by_index()[1]["exit_code"] == 127
    job = fanout.run(["-n", "3", "-q", "--", "no-such-command"])
    assert job.returncode == exit_codes.SANDBOX_FAILED
    for event in job.terminal():
        assert event["event"] == "failed" and event["reason"] == "command_not_found"
        assert "no-such-command" in event["message"]
    assert not job.of_type("started")


def test_a_command_that_is_not_an_executable_file_fails_to_run(fanout):
    job = fanout.run(["-n", "1", "-q", "--", "/etc"])
    assert job.returncode == exit_codes.SANDBOX_FAILED
    (end,) = job.terminal()
    assert end["event"] == "failed" and end["reason"] == "exec_failed"
    assert "Is a directory" in end["message"]
    assert not job.of_type("started")


@pytest.mark.parametrize("with_proxy", [False, True])
def test_a_sandbox_bubblewrap_cannot_build_fails_alone(fanout, tmp_path, with_proxy):
    # A bind below a file bound on oshpc's own /tmp (the image is not involved, so set-up
    # cannot see it coming): bubblewrap gives up after reporting the sandbox's pid, before it
    # reads the start signal; the rank must survive sending it, and with the egress proxy the
    # failure is still bubblewrap's, not the proxy's.
    policy = tmp_path / "policy.yaml"
    policy.write_text("network_policies: {}\n")
    extra = ["--policy", str(policy)] if with_proxy else []
    binds = ["--bind", "/etc/hostname:/tmp/x", "--bind", "/etc/hostname:/tmp/x/y"]
    job = fanout.run(["-n", "4"] + binds + extra + ["--", "true"], ranks=2)
    # A sandbox that cannot be built is the node's failure, not the command's.
    assert job.returncode == exit_codes.INFRASTRUCTURE, job.stderr
    check_every_index_once(job, 4)
    for event in job.terminal():
        assert event["event"] == "failed" and event["reason"] == "spawn_failed", event
        assert "proxy" not in event["message"], event
    check_nothing_left(fanout, job)


def test_a_directory_bound_onto_a_file_of_the_image_is_refused_once(fanout, tmp_path):
    source = tmp_path / "dir"
    source.mkdir()
    source.chmod(0o755)
    job = fanout.run(["-n", "3", "--bind", f"{source}:/etc/hostname", "--", "true"], ranks=2)
    assert job.returncode == exit_codes.INFRASTRUCTURE, job.stderr
    assert f"{source} is a directory and /etc/hostname a file in the image" in job.stderr
    check_every_index_once(job, 3)
    assert not job.of_type("started")
    check_nothing_left(fanout, job)


def test_a_timeout_shorter_than_the_start_kills_cleanly(fanout):
    job = fanout.run(["-n", "6", "--timeout", "0.005", "--", "sleep", "5"], ranks=2)
    assert job.returncode == exit_codes.SANDBOX_FAILED, job.stderr
    check_every_index_once(job, 6)
    for event in job.terminal():
        assert event["event"] == "failed" and event["reason"] == "timeout", event
    check_nothing_left(fanout, job)


def test_loader_variables_reach_the_sandbox_but_not_bubblewrap(fanout, tmp_path):
    """--env LD_PRELOAD is the sandbox's: the host's loader must not act on it for bubblewrap,
    which runs outside the sandbox (a workspace library preloaded there would escape it)."""
    marker = tmp_path / "preloaded"
    source = tmp_path / "preload.c"
    source.write_text(
        '#include <stdio.h>\n'
        '__attribute__((constructor)) static void mark(void) {\n'
        f'  FILE *f = fopen("{marker}", "a"); if (f) {{ fputs("loaded\\n", f); fclose(f); }}\n'
        '}\n')
    library = tmp_path / "libpreload.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    os.chmod(tmp_path, 0o755)
    job = fanout.run(["-n", "2", "--env", f"LD_PRELOAD={library}",
                      "--env", f"LD_LIBRARY_PATH={tmp_path}", "--env", "LD_DEBUG=libs",
                      "-q", "--", "sh", "-c", 'echo "$LD_PRELOAD"'], ranks=2)
    assert job.returncode == exit_codes.OK, job.stderr
    assert not marker.exists(), "the host's loader preloaded a sandbox's library into bubblewrap"
    for index in range(2):
        assert job.sandbox_file(index) == f"{library}\n"


def test_an_event_file_that_cannot_be_opened_leaves_nothing(fanout, tmp_path):
    job = fanout.run(["-n", "2", "--events", str(tmp_path / "missing" / "events.jsonl"),
                      "--output-dir", str(tmp_path / "out" / "run"), "--", "true"], ranks=2)
    assert job.returncode == exit_codes.BAD_INPUT, job.stderr
    assert "events.jsonl" in job.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, code, message", [
    (["-n", "0", "--", "true"], exit_codes.USAGE, "--count must be at least 1"),
    (["-n", "2", "--frobnicate", "--", "true"], exit_codes.USAGE, "frobnicate"),
    (["-n", "2"], exit_codes.USAGE, "no COMMAND"),
    (["-n", "2", "--", ""], exit_codes.USAGE, "COMMAND is an empty string"),
    (["-n", "2", "--bind", "/nonexistent:/x", "--", "true"], exit_codes.USAGE, "does not exist"),
])
def test_usage_errors(fanout, args, code, message):
    job = fanout.run(args, ranks=2)
    assert job.returncode == code
    assert message in job.stderr
    # One message, not one per rank.
    assert job.stderr.count("error:") == 1, job.stderr
    assert not job.output_dir.exists()


@pytest.mark.parametrize("kind", ["missing", "not-squashfs", "unreadable"])
def test_bad_images(fanout, tmp_path, kind):
    path = tmp_path / "image.sqsh"
    if kind == "not-squashfs":
        path.write_text("definitely not squashfs\n")
    elif kind == "unreadable":
        if IS_ROOT:
            pytest.skip("root can read any file")
        path.write_bytes(IMAGE.read_bytes()[:4096])
        os.chmod(path, 0)
    job = fanout.run(["-n", "2", "--", "true"], ranks=2, image=path)
    assert job.returncode == exit_codes.BAD_INPUT, job.stderr
    expected = {"missing": "No such file", "not-squashfs": "not a squashfs file",
                "unreadable": "Permission denied"}[kind]
    assert expected in job.stderr and str(path) in job.stderr
    assert not mounts_under(fanout.cache_dir)


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_everything_and_every_sandbox_gets_its_end(fanout, signo):
    count = 40
    proc, name = fanout.start(["-n", str(count), "--", "sleep", "60"], ranks=4)
    events = fanout.workdir / f"oshpc-{name}" / "events.jsonl"
    assert wait_for(lambda: events.exists() and events.read_text().count('"started"') >= 4,
                    timeout=60), "sandboxes never started"
    proc.send_signal(signo)
    job = fanout.finish(proc, name)
    check_every_index_once(job, count)
    cancelled = [e for e in job.terminal() if e.get("reason") == "cancelled"]
    assert len(cancelled) == count, [e for e in job.terminal() if e.get("reason") != "cancelled"]
    assert "cancelled" in job.stderr
    # Two fresh-clone CI runs found sandbox commands alive 10 s after the stop (not reproduced
    # outside a full run; cause not known yet): allow 30 s, and name what is left.
    assert wait_for(lambda: not my_processes("sleep", "60"), timeout=30), \
        f"sandbox processes left: {describe_processes(my_processes('sleep', '60'))}"
    check_nothing_left(fanout, job)


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_stop_while_the_image_is_unpacked_is_a_cancellation(fanout, ranks):
    """The scheduler's SIGTERM reaches the image's unsquashfs too: the job is cancelled, no
    node failed."""
    proc, name = fanout.start(["-n", "4", "--stage-method", "extract", "--", "true"],
                              ranks=ranks)
    assert wait_for(lambda: my_processes("unsquashfs", fanout.cache_dir), timeout=60), "the image was not unpacked"
    proc.send_signal(signal.SIGTERM)
    job = fanout.finish(proc, name)
    check_every_index_once(job, 4)
    assert all(e.get("reason") == "cancelled" for e in job.terminal()), job.terminal()
    assert not job.of_type("node_failed"), job.stderr
    assert "cannot run sandboxes" not in job.stderr
    check_nothing_left(fanout, job)


def test_a_second_run_under_the_same_name_warns_that_it_replaces_the_first(fanout):
    first = fanout.run(["-n", "2", "-q", "--", "true"], name="same")
    assert first.returncode == exit_codes.OK, first.stderr
    second = fanout.run(["-n", "1", "--", "true"], name="same")
    assert second.returncode == exit_codes.OK, second.stderr
    assert "holds the events of an earlier run" in second.stderr
    assert "holds the events" not in first.stderr


def test_plan_creates_nothing(fanout):
    job = fanout.run(["-n", "10", "--plan", "--", "true"], ranks=2)
    assert job.returncode == exit_codes.OK, job.stderr
    lines = job.stdout.splitlines()
    assert '"plan":"job"' in lines[0]
    assert sum('"plan":"rank"' in line for line in lines) == 2
    assert not job.output_dir.exists()
    assert not fanout.cache_dir.exists()


def test_check_reports_host_support(fanout):
    proc = subprocess.run([str(FANOUT), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
    for probe in ("user namespaces", "bubblewrap", "FUSE", "unsquashfs", "seccomp", "cgroups",
                  "hwloc"):
        assert probe in proc.stdout


def test_help_and_version():
    assert "--image" in subprocess.run([str(FANOUT), "--help"], capture_output=True,
                                       text=True).stdout
    assert subprocess.run([str(FANOUT), "--version"], capture_output=True,
                          text=True).stdout.startswith("oshpc-fanout ")


def test_the_readme_demo_runs(tmp_path):
    """`make demo` runs scripts/demo.sh: a broken demo is a broken first impression."""
    from oshpc_testing import BUILD_DIR
    demo = pathlib.Path(__file__).resolve().parents[2] / "scripts/demo.sh"
    if not demo.exists():
        pytest.skip(f"no {demo} in this copy of the tests")
    build = tmp_path / "build"
    build.mkdir()
    (build / "bin").symlink_to(BUILD_DIR / "bin")
    proc = subprocess.run([str(demo), str(build), str(IMAGE), "8", "2"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sandboxes: 8, ok 8, failed 0" in proc.stderr
    assert "sandbox 0 of 8" in proc.stdout
