#!/usr/bin/env python3
"""Sandbox start-up: oshpc-fanout vs a raw bubblewrap loop vs ch-run, on one machine.

    /usr/bin/python3 tests/bench/fanout/bench_fanout.py [--count K] [--parallel P] [--repeat R]

Runs the same K sandboxes of /bin/true several ways, each keeping P sandboxes running at once:

  oshpc      mpirun -np 1 oshpc-fanout --slots P --stage-method extract --seccomp S, with
             the image staged by a warm-up run (staging is printed apart, not measured)
  bwrap      a small driver here that runs bubblewrap with the argv oshpc-fanout builds: same
             staged root, same root layout, same flags, same seccomp program, same
             /.oshpc/exec helper, a fresh /sandbox directory each, slots pinned to CPUs as
             oshpc-fanout pins them; stdout and stderr on /dev/null
  bwrap-out  (only with --only) the same, plus oshpc-fanout's per-sandbox output directory
             with stdout and stderr files
  bwrap-entries  (only with --only) the raw loop with the root bound entry by entry on a
             tmpfs, as oshpc-fanout does for an image that lacks the mount points
  ch-run     Charliecloud's ch-run on a hard-linked copy of the same root (plus the /dev it
             needs), running the same helper from a bind mount, driven and pinned alike

Every way runs /.oshpc/exec REPORT_FD -- /bin/true, so start latency means the same thing for
all: from just before the launcher starts work on a sandbox to the helper's "S" line (its
CLOCK_MONOTONIC stamp just before it forks the command). oshpc-fanout's figure is the
start_latency_ms of its events; the driver here reads the same line from the same pipe.

Throughput is K over the span from the first spawn to the last exit (for oshpc-fanout: from
its events), so MPI start-up is not in it; "wall s" is the whole command. The ways alternate
within each repeat (the order rotates); every figure is the median over repeats, and "vs
bwrap" is the median of the per-repeat ratios. "launcher CPU" is the CPU time of the launcher
process alone per sandbox (oshpc-fanout read from /proc, less a one-sandbox run's start-up
and teardown, mpirun not counted; the Python driver's own time for the others); "all CPU"
is that of every process of the run, bubblewrap and the sandboxes included (kernel workers
are not charged to anyone). On a shared machine, run it under `nice -n -20` (root).

Before measuring, the script checks that its bwrap argv is oshpc-fanout's, by reading
/proc/1/cmdline (bubblewrap itself) inside one oshpc-fanout sandbox.

Standard library only; runs as root (adds --allow-run-as-root) or as an ordinary user.
Everything lives in one temp dir (--tmpdir picks its file system), removed at the end.
"""
import argparse
import datetime
import json
import os
import pathlib
import platform
import pwd
import resource
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[3]
RESERVED = {"/proc", "/dev", "/tmp", "/run", "/sandbox", "/.oshpc"}  # as root_layout.cpp
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
COMMAND = ["/bin/true"]
CH_HELPER_DIR = "/mnt"  # an empty directory of the image: ch-run binds only onto what exists
LABELS = {"oshpc": "oshpc-fanout (mpirun -np 1)",
          "bwrap": "raw bwrap loop (same argv)",
          "bwrap-out": "raw bwrap + output files",
          "bwrap-entries": "raw bwrap, root entry by entry",
          "ch-run": "ch-run (same root and helper)"}


def log(text):
    print(f"bench_fanout: {text}", file=sys.stderr, flush=True)


def now_us():
    # CLOCK_MONOTONIC, the clock oshpc-exec stamps its "S" line with.
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def median(values):
    return statistics.median(values) if values else float("nan")


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[round(fraction * (len(ordered) - 1))] if ordered else float("nan")


def own_cpu_seconds():
    times = os.times()
    return times.user + times.system


def children_cpu_seconds():
    """CPU of every reaped descendant: launchers, bubblewrap, helpers, commands."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ---- the bubblewrap argv, built as node-agent/root_layout.cpp and bwrap_argv.cpp do ----------

def root_layout_args(rootfs, whole=True):
    """(mount args, remount args). A root holding every reserved directory is bound whole,
    with a tmpfs at /.oshpc; otherwise (or with whole=False) bwrap's tmpfs root gets one
    --ro-bind or --symlink per top-level image entry."""
    if whole and all(os.path.isdir(rootfs + path) and not os.path.islink(rootfs + path)
                     for path in RESERVED):
        return ["--ro-bind", rootfs, "/", "--tmpfs", "/.oshpc"], ["--remount-ro", "/.oshpc"]
    args = []
    for name in sorted(os.listdir(rootfs)):
        path = "/" + name
        if path in RESERVED:
            continue
        host = os.path.join(rootfs, name)
        if os.path.islink(host):
            args += ["--symlink", os.readlink(host), path]
        elif os.path.isdir(host) or os.path.isfile(host):
            args += ["--ro-bind", host, path]
    return args, ["--remount-ro", "/"]


def bwrap_argv(layout, exec_helper, sandbox, fds, command):
    """layout: (mount args, remount args); sandbox: id, index, count, node, workspace; fds:
    the descriptor numbers bubblewrap gets, "report", "args", "seccomp" (None: no filter),
    "info" and "block"."""
    mounts, remounts = layout
    argv = ["bwrap", "--unshare-all", "--unshare-user", "--uid", "0", "--gid", "0",
            "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--hostname", sandbox["id"], "--disable-userns"]
    argv += mounts
    argv += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp",
             "--tmpfs", "/run",
             "--bind", sandbox["workspace"], "/sandbox", "--ro-bind", exec_helper, "/.oshpc/exec"]
    # The environment is not in the argv: --setenv arguments read from the --args descriptor.
    argv += remounts + ["--args", str(fds["args"]), "--chdir", "/sandbox"]
    if fds["seccomp"] is not None:
        argv += ["--seccomp", str(fds["seccomp"])]
    argv += ["--info-fd", str(fds["info"]), "--block-fd", str(fds["block"])]
    return argv + ["--", "/.oshpc/exec", str(fds["report"]), "--"] + command


def environment_args(sandbox):
    """The --setenv arguments oshpc-fanout gives a sandbox without --env, NUL-separated."""
    env = [("PATH", DEFAULT_PATH), ("HOME", "/sandbox"), ("LANG", "C.UTF-8"),
           ("OSHPC_SANDBOX_ID", sandbox["id"]), ("OSHPC_INDEX", str(sandbox["index"])),
           ("OSHPC_COUNT", str(sandbox["count"])), ("OSHPC_NODE", sandbox["node"]),
           ("OSHPC_RANK", "0")]
    return b"".join(b"--setenv\0" + k.encode() + b"\0" + v.encode() + b"\0" for k, v in env)


# ---- a launcher loop: keeps P sandboxes running, times each through the helper's report -----

class Running:
    def __init__(self, slot, pid, report_fd, spawn_us, workspace, info_fd):
        self.slot, self.pid, self.report_fd = slot, pid, report_fd
        self.spawn_us, self.workspace, self.info_fd = spawn_us, workspace, info_fd
        self.pidfd = os.pidfd_open(pid)
        self.report = b""

    def started_us(self):
        for line in self.report.decode(errors="replace").splitlines():
            if line.startswith("S "):
                return int(line.split()[1])
        return None


class Loop:
    """Runs `count` sandboxes, `parallel` at once, like oshpc-fanout's slots: each slot pinned
    to one CPU (when pin_cpus is given), a workspace directory made before the spawn and
    removed after the exit, stdin/stdout/stderr on /dev/null."""

    def __init__(self, parallel, make_argv, workspaces, env, pin_cpus, seccomp_path=None,
                 outputs=None, environment=None):
        """environment: for bubblewrap, a function giving sandbox i's --setenv arguments;
        bubblewrap then runs as oshpc-fanout runs it: with an empty environment, those
        arguments from a memfd (--args), an --info-fd pipe and a --block-fd pipe written to
        once it runs."""
        self.make_argv, self.workspaces, self.env, self.pin_cpus = (make_argv, workspaces, env,
                                                                    pin_cpus)
        self.seccomp_path, self.outputs = seccomp_path, outputs
        self.environment = environment
        self.free_slots = list(reversed(range(parallel)))  # slot 0 first, as oshpc-fanout
        self.poller = select.poll()
        self.by_fd = {}
        self.latencies, self.lifetimes, self.failures = [], [], 0
        self.all_cpus = os.sched_getaffinity(0)
        self.null_in = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
        self.null_out = os.open("/dev/null", os.O_WRONLY | os.O_CLOEXEC)
        self.actions = [(os.POSIX_SPAWN_DUP2, self.null_in, 0),
                        (os.POSIX_SPAWN_DUP2, self.null_out, 1),
                        (os.POSIX_SPAWN_DUP2, self.null_out, 2)]

    def run(self, count):
        """Returns the seconds from the first spawn to the last exit."""
        began, next_index, running = now_us(), 0, 0
        while next_index < count or running:
            while self.free_slots and next_index < count:
                self.start(next_index, self.free_slots.pop())
                next_index += 1
                running += 1
            for fd, _ in self.poller.poll():
                sandbox = self.by_fd.get(fd)
                if sandbox is None:
                    continue
                if fd == sandbox.report_fd:
                    self.drain(sandbox)
                elif fd == sandbox.pidfd:
                    self.finish(sandbox)
                    running -= 1
        seconds = (now_us() - began) / 1e6
        os.close(self.null_in)
        os.close(self.null_out)
        return seconds

    def start(self, index, slot):
        spawn_us = now_us()
        workspace = None
        if self.workspaces:
            workspace = os.path.join(self.workspaces, str(index))
            os.mkdir(workspace, 0o700)
        actions = self.actions
        if self.outputs:
            # As oshpc-fanout's --output-dir: DIR/<sandbox>/stdout and stderr.
            directory = os.path.join(self.outputs, str(index))
            os.mkdir(directory, 0o755)
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            out = os.open(os.path.join(directory, "stdout"), flags, 0o644)
            err = os.open(os.path.join(directory, "stderr"), flags, 0o644)
            actions = [self.actions[0], (os.POSIX_SPAWN_DUP2, out, 1),
                       (os.POSIX_SPAWN_DUP2, err, 2)]
        read_end, write_end = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        os.set_blocking(write_end, True)
        os.set_inheritable(write_end, True)
        seccomp_fd = None
        if self.seccomp_path:
            # bubblewrap reads the program from this fd: each sandbox needs its own offset.
            seccomp_fd = os.open(self.seccomp_path, os.O_RDONLY)
            os.set_inheritable(seccomp_fd, True)
        fds = {"report": write_end, "seccomp": seccomp_fd}
        passed = [write_end]
        info_read = block_write = None
        env = self.env
        if self.environment:
            fds["args"] = os.memfd_create("environment", 0)
            os.write(fds["args"], self.environment(index))
            os.lseek(fds["args"], 0, os.SEEK_SET)
            info_read, fds["info"] = os.pipe2(os.O_CLOEXEC)
            fds["block"], block_write = os.pipe2(os.O_CLOEXEC)
            for name in ("info", "block"):
                os.set_inheritable(fds[name], True)
            passed += [fds["args"], fds["info"], fds["block"]]
            env = {}
        argv = self.make_argv(index, workspace, fds)
        if self.pin_cpus:
            # The child inherits our affinity: one CPU per slot, as oshpc-fanout's slots.
            os.sched_setaffinity(0, {self.pin_cpus[slot % len(self.pin_cpus)]})
        try:
            program = shutil.which(argv[0]) or argv[0]
            pid = os.posix_spawn(program, argv, env, file_actions=actions, setpgroup=0)
        finally:
            if self.pin_cpus:
                os.sched_setaffinity(0, self.all_cpus)
        for fd in passed:
            os.close(fd)
        if block_write is not None:
            os.write(block_write, b"x")  # the start signal
            os.close(block_write)
        if self.outputs:
            os.close(out)
            os.close(err)
        if seccomp_fd is not None:
            os.close(seccomp_fd)
        sandbox = Running(slot, pid, read_end, spawn_us, workspace, info_read)
        for fd in (sandbox.pidfd, read_end):
            self.by_fd[fd] = sandbox
            self.poller.register(fd, select.POLLIN)

    def forget(self, fd):
        self.poller.unregister(fd)
        del self.by_fd[fd]
        os.close(fd)

    def drain(self, sandbox):
        while sandbox.report_fd is not None:
            try:
                chunk = os.read(sandbox.report_fd, 512)
            except BlockingIOError:
                return
            if not chunk:
                self.forget(sandbox.report_fd)
                sandbox.report_fd = None
                return
            sandbox.report += chunk

    def finish(self, sandbox):
        _, status = os.waitpid(sandbox.pid, 0)
        end_us = now_us()
        self.drain(sandbox)
        self.forget(sandbox.pidfd)
        if sandbox.report_fd is not None:
            self.forget(sandbox.report_fd)
        if sandbox.info_fd is not None:
            os.close(sandbox.info_fd)
        if sandbox.workspace:
            os.rmdir(sandbox.workspace)
        started = sandbox.started_us()
        if status != 0 or started is None:
            self.failures += 1
        else:
            self.latencies.append((started - sandbox.spawn_us) / 1000)
            self.lifetimes.append((end_us - sandbox.spawn_us) / 1000)
        self.free_slots.append(sandbox.slot)


# ---- oshpc-fanout's own CPU time, read from /proc while it runs -----------------------------

def proc_stat(pid):
    """(comm, ppid, utime + stime in ticks) of a process, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    comm = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return comm, int(fields[1]), int(fields[11]) + int(fields[12])


def find_descendant(ancestor, comm):
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = proc_stat(int(entry))
        if not stat or stat[0] != comm:
            continue
        pid, seen = int(entry), 0
        while stat and seen < 16:  # walk up: only a process under our mpirun counts
            if stat[1] == ancestor:
                return int(entry)
            pid, seen = stat[1], seen + 1
            stat = proc_stat(pid)
    return None


def run_watching_cpu(argv, cwd, env, comm):
    """Runs argv; returns (exit code, stdout, stderr, CPU seconds of its descendant `comm`
    (last read at most 50 ms before that process ended), CPU seconds of all its processes)."""
    children = children_cpu_seconds()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    pid, ticks = None, 0
    while process.poll() is None:
        if pid is None:
            pid = find_descendant(process.pid, comm)
        stat = proc_stat(pid) if pid else None
        if stat and stat[0] == comm:
            ticks = stat[2]
        time.sleep(0.05)
    stdout, stderr = process.communicate()
    total = children_cpu_seconds() - children
    return process.returncode, stdout, stderr, ticks / os.sysconf("SC_CLK_TCK"), total


# ---- the ways ------------------------------------------------------------------------------

class Bench:
    def __init__(self, args, tmp):
        self.args, self.tmp = args, tmp
        build = pathlib.Path(args.build).resolve()
        self.fanout = str(build / "bin" / "oshpc-fanout")
        self.seccomp_export = str(build / "bin" / "oshpc-seccomp-export")
        self.exec_helper = str(build / "bin" / "oshpc-exec")
        self.image = str(pathlib.Path(args.image).resolve())
        self.cache = os.path.join(tmp, "cache")
        self.node = platform.node()
        self.tags = 0
        user = pwd.getpwuid(os.getuid()).pw_name
        self.env = {"PATH": os.environ.get("PATH", DEFAULT_PATH), "HOME": tmp, "LANG": "C.UTF-8",
                    "USER": user}  # ch-run refuses to start without $USER
        self.pin_cpus = sorted(os.sched_getaffinity(0)) if args.pin else None
        self.ch_run_version = None
        self.seccomp_path = None
        if args.seccomp != "none":
            # The program oshpc-fanout loads, from the same code, for the raw bwrap loop.
            self.seccomp_path = os.path.join(tmp, "seccomp.bpf")
            with open(self.seccomp_path, "wb") as f:
                subprocess.run([self.seccomp_export, args.seccomp], stdout=f, check=True)

    def fanout_job(self, count, extra, command):
        """Runs oshpc-fanout once. Its outputs stay until the end: removing them now would
        put freed inodes in the way of the next run's (see the docs on ext4 without a
        journal)."""
        self.tags += 1
        tag = f"b{self.tags}"
        out = os.path.join(self.tmp, "out-" + tag)
        argv = ["mpirun"] + (["--allow-run-as-root"] if os.getuid() == 0 else [])
        argv += ["--oversubscribe", "--bind-to", "none", "-np", "1", self.fanout,
                 "--image", self.image, "--stage-method", "extract", "--cache-dir", self.cache,
                 "--output-dir", out, "--job-name", tag, "-n", str(count),
                 "--seccomp", self.args.seccomp] + extra
        argv += ["--"] + command
        began = time.monotonic()
        code, _, stderr, cpu, total = run_watching_cpu(argv, self.tmp, self.env, "oshpc-fanout")
        wall = time.monotonic() - began
        if code != 0:
            raise RuntimeError(f"oshpc-fanout failed ({code}): {stderr.strip()}")
        with open(os.path.join(out, "events.jsonl")) as f:
            events = [json.loads(line) for line in f if line.strip()]
        return {"events": events, "stderr": stderr, "wall": wall, "out": out, "cpu": cpu,
                "total_cpu": total}

    def warm_up(self):
        """Stages the image into the cache (timed apart) and finds the staged root."""
        job = self.fanout_job(1, [], COMMAND)
        staged = [e for e in job["events"] if e["event"] == "image_staged"]
        self.staging_seconds = staged[0]["seconds"] if staged else float("nan")
        roots = list(pathlib.Path(self.cache, "images").glob("*/rootfs"))
        if len(roots) != 1:
            raise RuntimeError(f"expected one staged root under {self.cache}/images: {roots}")
        self.rootfs = str(roots[0])
        self.layout = root_layout_args(self.rootfs)

    def check_argv(self):
        """Our bwrap argv must be oshpc-fanout's: bubblewrap is pid 1 of every sandbox, and
        its /proc/1/cmdline is the argv it was given."""
        command = ["/bin/cat", "/proc/1/cmdline"]
        job = self.fanout_job(1, [], command)
        # Start-up and teardown CPU of oshpc-fanout (one sandbox), taken off the runs' figure.
        self.fanout_fixed_cpu = job["cpu"]
        self.mpirun_fixed_cpu = job["total_cpu"]
        started = next(e for e in job["events"] if e["event"] == "started")
        with open(os.path.join(job["out"], started["sandbox"], "stdout"), "rb") as f:
            theirs = f.read().decode().split("\0")[:-1]
        theirs[0] = os.path.basename(theirs[0])
        sandbox = {"id": started["sandbox"], "index": 0, "count": 1, "node": started["node"],
                   "workspace": theirs[theirs.index("/sandbox") - 1]}
        fds = {"report": theirs[theirs.index("--") + 2]}  # -- /.oshpc/exec FD -- COMMAND
        for name in ("args", "seccomp", "info", "block"):
            option = "--" + name + ("-fd" if name in ("info", "block") else "")
            fds[name] = theirs[theirs.index(option) + 1] if option in theirs else None
        if (fds["seccomp"] is None) != (self.seccomp_path is None):
            raise RuntimeError(f"oshpc-fanout --seccomp {self.args.seccomp} gave "
                               f"{'no ' if fds['seccomp'] is None else ''}--seccomp to "
                               "bubblewrap")
        ours = bwrap_argv(self.layout, self.exec_helper, sandbox, fds, command)
        if ours != theirs:
            raise RuntimeError("the raw bwrap argv differs from oshpc-fanout's:\n  ours:   " +
                               " ".join(ours) + "\n  theirs: " + " ".join(theirs))

    def prepare_ch_run(self):
        """Returns why ch-run cannot run here, or None."""
        self.ch_run = shutil.which("ch-run")
        if not self.ch_run:
            return "ch-run not found (apt-get install charliecloud-runtime)"
        version = subprocess.run([self.ch_run, "--version"], capture_output=True, text=True,
                                 env=self.env)
        self.ch_run_version = (version.stdout + version.stderr).strip()
        # Hard links: the same files (and page cache) as the staged root, plus the /dev that
        # ch-run binds the host's /dev onto (staging leaves /dev out).
        self.ch_root = os.path.join(self.tmp, "ch-root")
        copied = subprocess.run(["cp", "-al", self.rootfs, self.ch_root], stderr=subprocess.PIPE)
        if copied.returncode != 0:
            shutil.rmtree(self.ch_root, ignore_errors=True)
            subprocess.run(["unsquashfs", "-no-progress", "-no-xattrs", "-excludes", "-d",
                            self.ch_root, self.image, "dev"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        os.makedirs(os.path.join(self.ch_root, "dev"), exist_ok=True)
        if not os.path.isdir(self.ch_root + CH_HELPER_DIR):
            return f"the image has no {CH_HELPER_DIR} to bind the helper onto"
        self.ch_helper = os.path.join(self.tmp, "helper")
        os.mkdir(self.ch_helper)
        shutil.copy2(self.exec_helper, self.ch_helper)
        return None

    def run_oshpc(self):
        k, p = self.args.count, self.args.parallel
        job = self.fanout_job(k, ["--slots", str(p), "-q"], COMMAND)
        started = {e["index"]: e for e in job["events"] if e["event"] == "started"}
        exited = {e["index"]: e for e in job["events"]
                  if e["event"] == "exited" and e.get("exit_code") == 0}
        if len(exited) != k:
            raise RuntimeError(f"oshpc-fanout: only {len(exited)} of {k} sandboxes exited 0")

        def stamp(event):
            return datetime.datetime.fromisoformat(event["ts"].replace("Z", "+00:00")).timestamp()

        # First spawn (a started stamp less its latency) to the last exit: the span the
        # driver below times for the other two.
        first = min(stamp(e) - e["start_latency_ms"] / 1000 for e in started.values())
        last = max(stamp(e) for e in exited.values())
        return {"seconds": last - first,
                "latency": [e["start_latency_ms"] for e in started.values()],
                "lifetime": [started[i]["start_latency_ms"] + exited[i]["duration_ms"]
                             for i in exited],
                "wall": job["wall"], "launcher_cpu": max(0.0, job["cpu"] - self.fanout_fixed_cpu),
                "total_cpu": job["total_cpu"] - self.mpirun_fixed_cpu}

    def run_driver(self, name, make_argv, workspaces, seccomp=None, outputs=None,
                   environment=None):
        k, p = self.args.count, self.args.parallel
        if workspaces:
            os.makedirs(workspaces, exist_ok=True)
        if outputs:
            os.makedirs(outputs)
        loop = Loop(p, make_argv, workspaces, self.env, self.pin_cpus, seccomp, outputs,
                    environment)
        began, cpu, children = time.monotonic(), own_cpu_seconds(), children_cpu_seconds()
        seconds = loop.run(k)
        cpu, wall = own_cpu_seconds() - cpu, time.monotonic() - began
        children = children_cpu_seconds() - children
        if loop.failures:
            raise RuntimeError(f"{name}: {loop.failures} of {k} sandboxes failed")
        return {"seconds": seconds, "latency": loop.latencies, "lifetime": loop.lifetimes,
                "wall": wall, "launcher_cpu": cpu, "total_cpu": cpu + children}

    def run_bwrap(self, outputs=False, layout=None):
        """outputs: also give each sandbox an output directory with stdout and stderr files,
        as oshpc-fanout does (kept to the end, as oshpc-fanout's are); layout: another root
        layout than oshpc-fanout's."""
        def sandbox(index, workspace=None):
            return {"id": f"raw-{index}", "index": index, "count": self.args.count,
                    "node": self.node, "workspace": workspace}

        def make_argv(index, workspace, fds):
            return bwrap_argv(layout or self.layout, self.exec_helper, sandbox(index, workspace),
                              fds, COMMAND)

        out = None
        if outputs:
            self.tags += 1
            out = os.path.join(self.tmp, f"out-raw{self.tags}")
        return self.run_driver("raw bwrap", make_argv, os.path.join(self.tmp, "ws-bwrap"),
                               self.seccomp_path, out,
                               lambda index: environment_args(sandbox(index)))

    def run_ch_run(self):
        def make_argv(index, workspace, fds):
            fd = fds["report"]
            return [self.ch_run, "-b", f"{self.ch_helper}:{CH_HELPER_DIR}", self.ch_root, "--",
                    f"{CH_HELPER_DIR}/oshpc-exec", str(fd), "--"] + COMMAND

        return self.run_driver("ch-run", make_argv, None)


# ---- report ---------------------------------------------------------------------------------

def summarise(runs, base_runs, count):
    """Medians over repeats of one way; ratios against raw bwrap are taken per repeat (the
    two ran back to back), then the median of those."""
    rates = [count / r["seconds"] for r in runs]
    latencies = [median(r["latency"]) for r in runs]
    summary = {
        "rate": median(rates),
        "latency_p50": median(latencies),
        "latency_p95": median([percentile(r["latency"], 0.95) for r in runs]),
        "spawn_to_exit_p50": median([median(r["lifetime"]) for r in runs]),
        "launcher_cpu_ms": median([1000 * r["launcher_cpu"] / count for r in runs]),
        "total_cpu_ms": median([1000 * r["total_cpu"] / count for r in runs]),
        "wall": median([r["wall"] for r in runs]),
    }
    if base_runs:
        base_rates = [count / r["seconds"] for r in base_runs]
        base_latencies = [median(r["latency"]) for r in base_runs]
        summary["rate_vs_bwrap"] = median([a / b for a, b in zip(rates, base_rates)])
        summary["latency_vs_bwrap"] = median([a / b for a, b in zip(latencies, base_latencies)])
    return summary


def print_table(results, skipped, args):
    print(f"K={args.count} sandboxes of /bin/true, P={args.parallel} at once, "
          f"median of {args.repeat} repeats; times in ms")
    head = (f"{'way':<31} {'sandboxes/s':>11} {'vs bwrap':>8} {'start p50':>9} {'p95':>6} "
            f"{'vs bwrap':>8} {'spawn→exit':>10} {'launcher CPU':>12} {'all CPU':>7} "
            f"{'wall s':>6}")
    print(head)
    print("-" * len(head))
    nan = float("nan")
    for way, label in LABELS.items():
        if way in skipped:
            print(f"{label:<31} skipped: {skipped[way]}")
        if way not in results:
            continue
        r = results[way]
        print(f"{label:<31} {r['rate']:>11.1f} {r.get('rate_vs_bwrap', nan):>8.0%} "
              f"{r['latency_p50']:>9.1f} {r['latency_p95']:>6.1f} "
              f"{r.get('latency_vs_bwrap', nan):>7.2f}x {r['spawn_to_exit_p50']:>10.1f} "
              f"{r['launcher_cpu_ms']:>12.2f} {r['total_cpu_ms']:>7.2f} {r['wall']:>6.2f}")


def filesystem_of(path):
    """The type of the filesystem holding path, and whether ext4 has a journal."""
    best, kind, device = "", "?", ""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            mount_point = fields[1].replace("\\040", " ")
            inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best):
                best, kind, device = mount_point, fields[2], fields[0]
    if kind == "ext4":
        journal = pathlib.Path("/sys/fs/ext4", os.path.basename(device), "journal_task")
        if journal.exists() and journal.read_text().strip() == "<none>":
            kind += " without a journal"
    return f"{kind} ({best})"


def machine_line(bench):
    bwrap = subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.strip()
    filesystem = filesystem_of(bench.tmp)
    return (f"{os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), kernel "
            f"{platform.release()}, {bwrap}, "
            f"{'ch-run ' + bench.ch_run_version if bench.ch_run_version else 'no ch-run'}, "
            f"temp dir on {filesystem}, user {pwd.getpwuid(os.getuid()).pw_name}")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300, help="sandboxes per way (default 300)")
    parser.add_argument("--parallel", type=int, default=2,
                        help="sandboxes running at once, every way (default 2)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats (default 3); medians")
    parser.add_argument("--build", default=str(REPO / "build"), help="build tree (bin/ inside)")
    parser.add_argument("--image", default=str(REPO / "build/images/debian-bookworm.sqsh"))
    parser.add_argument("--seccomp", default="default", choices=["default", "strict", "none"],
                        help="oshpc-fanout's --seccomp; the raw bwrap loop loads the same program")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="leave the bwrap and ch-run slots unpinned (oshpc-fanout pins)")
    parser.add_argument("--only", default="oshpc,bwrap,ch-run",
                        help="comma-separated ways among oshpc, bwrap, ch-run, bwrap-out "
                             "(the raw loop plus oshpc-fanout's per-sandbox output files) and "
                             "bwrap-entries (the raw loop with the root bound entry by entry, "
                             "as for an image without the mount points)")
    parser.add_argument("--tmpdir", default=None,
                        help="where the temp dir goes: image cache, outputs, workspaces "
                             "(default: $TMPDIR or /tmp)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    return parser.parse_args()


def measure(bench, args, ways):
    runners = {"oshpc": bench.run_oshpc, "bwrap": bench.run_bwrap,
               "bwrap-out": lambda: bench.run_bwrap(outputs=True),
               "bwrap-entries": lambda: bench.run_bwrap(
                   layout=root_layout_args(bench.rootfs, whole=False)),
               "ch-run": bench.run_ch_run}
    runs = {way: [] for way in ways}
    for repeat in range(args.repeat):
        # Rotate the order, so that no way always runs first or right after the same one.
        order = ways[repeat % len(ways):] + ways[:repeat % len(ways)]
        for way in order:
            run = runners[way]()
            runs[way].append(run)
            log(f"repeat {repeat + 1}/{args.repeat} {way}: {args.count / run['seconds']:.1f}/s, "
                f"start p50 {median(run['latency']):.1f} ms")
    return runs


def main():
    args = parse_args()
    ways = [way for way in LABELS if way in args.only.split(",")]
    tmp = tempfile.mkdtemp(prefix="oshpc-bench-fanout-", dir=args.tmpdir)
    try:
        bench = Bench(args, tmp)
        log(f"staging {args.image} into {tmp}/cache (warm-up, not measured)")
        bench.warm_up()
        bench.check_argv()
        log("the raw bwrap argv is oshpc-fanout's (read from /proc/1/cmdline in a sandbox)")
        skipped = {}
        if "ch-run" in ways:
            why = bench.prepare_ch_run()
            if why:
                skipped["ch-run"] = why
                ways.remove("ch-run")
        runs = measure(bench, args, ways)
        results = {way: summarise(runs[way], runs.get("bwrap"), args.count) for way in ways}

        print(f"machine: {machine_line(bench)}")
        print(f"staging (extract, in the warm-up, not in the table): {bench.staging_seconds:.2f} s;"
              f" oshpc-fanout start-up and teardown CPU (not in the table): "
              f"{1000 * bench.fanout_fixed_cpu:.0f} ms")
        print_table(results, skipped, args)
        if "oshpc" in results and "bwrap" in results:
            ratio = results["oshpc"]["rate_vs_bwrap"]
            print(f"oshpc-fanout throughput is {ratio:.0%} of raw bwrap's (goal: at least 90%): "
                  f"{'met' if ratio >= 0.9 else 'NOT met'}")
        if args.json:
            print(json.dumps({"results": results, "runs": {
                way: [{k: v for k, v in r.items() if k not in ("latency", "lifetime")}
                      for r in runs[way]] for way in ways}}, indent=1))
    finally:
        shutil.rmtree(tmp, onerror=make_writable_and_retry)


def make_writable_and_retry(function, path, _):
    # The image keeps its modes; a read-only directory blocks the removal of what is in it.
    try:
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
        function(path)
    except OSError as e:
        log(f"cannot remove {path}: {e}")


if __name__ == "__main__":
    sys.exit(main())
