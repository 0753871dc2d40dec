"""Helpers for the gateway service-mode tests: `oshpc-fanout --serve SOCKET` under the real
mpirun, driven through oshpc-driverctl the way the OpenShell gateway drives the driver.

A Service runs in a fresh directory (socket directory 0700, its own output directory) and
shares the session's cache directory, so that an ordinary user (who has no FUSE here and must
extract the image) pays for the extraction once. Stopping a Service checks that it left
nothing behind: no process of its job, no job directory in the cache, no socket.

Environment: OSHPC_BUILD_DIR and OSHPC_IMAGE, as for the other integration tests.
"""
import json
import os
import pathlib
import pwd
import re
import secrets
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from oshpc_testing import BUILD_DIR, FANOUT, IMAGE, IS_ROOT, wait_for  # noqa: E402

DRIVERCTL = BUILD_DIR / "bin/oshpc-driverctl"
HERE = pathlib.Path(__file__).resolve().parent
FAKE_SUPERVISOR = HERE / "fake_supervisor.sh"
TEST_USER = "oshpc"
# How long a sandbox may take to become Ready: the first ones wait for the image, which an
# ordinary user (no FUSE here) extracts.
READY_TIMEOUT = 90


class RpcFailed(AssertionError):
    """An RPC that had to succeed returned an error status."""


def mpirun_argv(ranks, as_root, stop_grace=None):
    """stop_grace: seconds mpirun waits after forwarding a SIGTERM before it sends another and
    then SIGKILL (Open MPI's default, 1 s, is short for a node with many sandboxes to stop)."""
    argv = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)]
    if stop_grace is not None:
        argv += ["--mca", "odls_base_sigkill_timeout", str(stop_grace)]
    if as_root:
        argv.append("--allow-run-as-root")
    return argv


def ready_condition(sandbox):
    conditions = [c for c in sandbox.get("status", {}).get("conditions", [])
                  if c["type"] == "Ready"]
    assert len(conditions) == 1, f"want exactly one Ready condition: {sandbox}"
    return conditions[0]


def ready_state(sandbox):
    condition = ready_condition(sandbox)
    return condition["status"], condition["reason"]


# --- processes


def _read(path):
    try:
        return path.read_bytes()
    except OSError:
        return b""


def processes():
    """(pid, name, state, cmdline bytes, environ bytes) of every process we can see."""
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        status = _read(entry / "status").decode(errors="replace")
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        yield (int(entry.name), fields.get("Name", "").strip(), fields.get("State", ""),
               _read(entry / "cmdline"), _read(entry / "environ"))


def sandbox_pids(sandbox_name):
    """Live processes inside the sandbox oshpc calls `sandbox_name`: its command carries
    OSHPC_SANDBOX_NAME, its bubblewrap pair names it as --hostname."""
    env_mark = f"OSHPC_SANDBOX_NAME={sandbox_name}\0".encode()
    host_mark = f"\0--hostname\0{sandbox_name}\0".encode()
    return [pid for pid, name, state, cmdline, environ in processes()
            if not state.startswith("Z") and (env_mark in environ or host_mark in cmdline)]


def outer_bwrap_pid(sandbox_name):
    """The host pid of the sandbox's bubblewrap that oshpc-fanout spawned (the one whose
    parent is not itself a bubblewrap)."""
    host_mark = f"\0--hostname\0{sandbox_name}\0".encode()
    for pid, name, state, cmdline, _ in processes():
        if name != "bwrap" or host_mark not in cmdline or state.startswith("Z"):
            continue
        parent = _read(pathlib.Path(f"/proc/{pid}/stat")).decode().rsplit(")", 1)[-1].split()
        parent_name = _read(pathlib.Path(f"/proc/{parent[1]}/comm")).decode().strip()
        if parent_name != "bwrap":
            return pid
    return None


# --- the client


class WatchStream:
    """`oshpc-driverctl watch` in the background: every message it prints, in order."""

    def __init__(self, service):
        self.proc = subprocess.Popen(service.ctl_argv("watch"), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.messages = []
        self.stderr = ""
        self.ended = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stdout:
            message = json.loads(line)
            with self._changed:
                self.messages.append(message)
                self._changed.notify_all()
        stderr = self.proc.stderr.read()
        self.proc.wait()
        with self._changed:
            self.stderr = stderr
            self.ended = True
            self._changed.notify_all()

    def wait_for(self, predicate, timeout=30, start=0):
        """The index of the first message from `start` on that satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for i in range(start, len(self.messages)):
                    if predicate(self.messages[i]):
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or self.ended:
                    raise AssertionError(
                        f"no such watch message within {timeout} s (ended={self.ended}, "
                        f"stderr={self.stderr!r}); last ones: {self.messages[-5:]}")
                self._changed.wait(left)

    def wait_for_state(self, sandbox_id, status, reason, timeout=READY_TIMEOUT, start=0):
        def matches(message):
            sandbox = message.get("sandbox", {}).get("sandbox")
            return (sandbox is not None and sandbox["id"] == sandbox_id
                    and ready_state(sandbox) == (status, reason))
        return self.wait_for(matches, timeout, start)

    def wait_until_ended(self, timeout=60):
        with self._changed:
            self._changed.wait_for(lambda: self.ended, timeout)
        return self.ended

    def snapshots_of(self, sandbox_id):
        return [m["sandbox"]["sandbox"] for m in list(self.messages)
                if "sandbox" in m and m["sandbox"]["sandbox"]["id"] == sandbox_id]

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._thread.join(timeout=10)


class Service:
    """One `mpirun -np N oshpc-fanout --serve SOCKET` and a client for it."""

    def __init__(self, workdir, cache_dir, ranks=1, args=(), tag=None, user=None,
                 socket_dir_mode=0o700, stop_grace=None):
        self.workdir = pathlib.Path(workdir)
        self.cache_dir = pathlib.Path(cache_dir)
        self.ranks = ranks
        self.args = list(args)
        self.tag = tag or f"gw{secrets.token_hex(3)}"
        self.user = user  # run mpirun as this user (root only)
        self.socket_dir_mode = socket_dir_mode
        self.stop_grace = stop_grace
        self.socket_dir = self.workdir / "sock"
        self.socket = self.socket_dir / "driver.sock"
        self.output_dir = self.workdir / "out"
        self.stdout_path = self.workdir / "service.out"
        self.stderr_path = self.workdir / "service.err"
        self.proc = None
        self.watches = []

    # -- lifecycle

    def argv(self):
        return mpirun_argv(self.ranks, IS_ROOT and self.user is None, self.stop_grace) + [
            str(FANOUT), "--serve", str(self.socket), "--image", str(IMAGE),
            "--job-name", self.tag, "--cache-dir", str(self.cache_dir),
            "--output-dir", str(self.output_dir), "-v"] + self.args

    def start(self, wait=True):
        self.socket_dir.mkdir(exist_ok=True)
        os.chmod(self.socket_dir, self.socket_dir_mode)
        popen_user = {}
        env = dict(os.environ)
        env.pop("OSHPC_NODE_NAME", None)
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            for path in (self.workdir, self.socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
            popen_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            env = {"PATH": os.environ["PATH"], "HOME": account.pw_dir}
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(self.argv(), cwd=self.workdir, stdout=out, stderr=err,
                                         env=env, start_new_session=True, **popen_user)
        if wait:
            self.wait_until_serving()
        return self

    def wait_until_serving(self, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the service exited with {self.proc.returncode}: "
                                     f"{self.stderr_path.read_text()}")
            if self.socket.exists():
                result = self.ctl("--wait-for-socket", "5", "caps")
                if result.returncode == 0:
                    return
            time.sleep(0.1)
        raise AssertionError(f"the service did not serve on {self.socket} within {timeout} s")

    def terminate(self, timeout=90):
        """SIGTERM to mpirun, as the allocation's end would send; returns its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"the service did not stop within {timeout} s of SIGTERM")

    def stop_and_check(self):
        """Stops the service (if still running) and checks that it left nothing behind;
        returns mpirun's exit status (1 when it was signalled, see docs/guide.md)."""
        for watch in self.watches:
            watch.close()
        returncode = self.terminate()
        assert wait_for(lambda: not self.leftover_processes(), timeout=15), \
            f"processes left behind: {self.leftover_processes()}"
        assert self.job_dirs() == [], f"job directories left behind: {self.job_dirs()}"
        assert not self.socket.exists(), "the socket was left behind"
        return returncode

    # -- what the job owns

    def job_dirs(self):
        return sorted((self.cache_dir / "jobs").glob(f"{self.tag}.*"))

    def job_dir(self):
        dirs = self.job_dirs()
        assert len(dirs) == 1, dirs
        return dirs[0]

    def workspace(self, sandbox):
        rank = re.search(r"/rank-(\d+)/", sandbox["status"]["instance_id"]).group(1)
        return self.job_dir() / f"rank-{rank}" / sandbox["status"]["sandbox_name"]

    def secrets_dir(self, sandbox):
        return self.job_dir() / "secrets" / sandbox["status"]["sandbox_name"]

    def sandbox_output(self, sandbox, stream="stdout"):
        return self.output_dir / sandbox["status"]["sandbox_name"] / stream

    def leftover_processes(self):
        """Processes of this job still alive: mpirun and the ranks (they name the socket),
        bubblewrap and squashfuse (they name the job directory), sandbox commands (their
        environment names the job tag)."""
        job_mark = f"/jobs/{self.tag}.".encode()
        socket_mark = str(self.socket).encode()
        env_mark = f"OSHPC_SANDBOX_NAME={self.tag}-".encode()
        left = []
        for pid, name, state, cmdline, environ in processes():
            if pid == os.getpid() or state.startswith("Z") or name == "oshpc-driverctl":
                continue
            if job_mark in cmdline or socket_mark in cmdline or env_mark in environ:
                left.append(f"{pid} {name} {cmdline[:120]!r}")
        return left

    # -- the client

    def ctl_argv(self, *args):
        return [str(DRIVERCTL), "--socket", str(self.socket), *map(str, args)]

    def ctl(self, *args, timeout=120):
        return subprocess.run(self.ctl_argv(*args), capture_output=True, text=True,
                              timeout=timeout)

    def call(self, *args, timeout=120):
        """Runs one RPC that must succeed; its response as a dict."""
        result = self.ctl(*args, timeout=timeout)
        if result.returncode != 0:
            raise RpcFailed(f"driverctl {' '.join(map(str, args))}: exit {result.returncode}: "
                            f"{result.stderr.strip()}")
        lines = result.stdout.splitlines()
        assert len(lines) == 1, result.stdout
        return json.loads(lines[0])

    def error(self, *args, timeout=120):
        """Runs one RPC that must fail; (status code name, message)."""
        result = self.ctl(*args, timeout=timeout)
        assert result.returncode == 1, (
            f"driverctl {' '.join(map(str, args))}: expected an RPC error, got exit "
            f"{result.returncode}: {result.stdout}{result.stderr}")
        match = re.fullmatch(r"oshpc-driverctl: error: ([A-Z_]+): (.*)\n?", result.stderr,
                             re.DOTALL)
        assert match, result.stderr
        return match.group(1), match.group(2)

    def get(self, sandbox_id):
        return self.call("get", sandbox_id)["sandbox"]

    def list(self):
        return self.call("list")["sandboxes"]

    def create(self, sandbox_id, *options, command=("sleep", "3600")):
        self.call("create", "--id", sandbox_id, *options, "--", *command)

    def wait_state(self, sandbox_id, status, reason, timeout=READY_TIMEOUT):
        """Polls GetSandbox until the Ready condition is (status, reason); the sandbox."""
        deadline = time.monotonic() + timeout
        sandbox = None
        while time.monotonic() < deadline:
            sandbox = self.get(sandbox_id)
            if ready_state(sandbox) == (status, reason):
                return sandbox
            time.sleep(0.1)
        raise AssertionError(f"{sandbox_id} is not {status}/{reason} after {timeout} s: "
                             f"{sandbox and ready_condition(sandbox)}")

    def wait_ready(self, sandbox_id, timeout=READY_TIMEOUT):
        return self.wait_state(sandbox_id, "True", "BackendReady", timeout)

    def watch(self, synced=True):
        """A new WatchSandboxes stream. `synced`: returns once the stream is known to be
        subscribed (it has seen a throwaway sandbox come and go), so that no change made
        after this call can be missed by it."""
        stream = WatchStream(self)
        self.watches.append(stream)
        if synced:
            sentinel = f"watch-sync-{secrets.token_hex(3)}"
            self.create(sentinel, command=["true"])
            stream.wait_for(lambda m: "sandbox" in m
                            and m["sandbox"]["sandbox"]["id"] == sentinel)
            self.call("delete", sentinel)
            stream.wait_for(lambda m: m.get("deleted", {}).get("sandbox_id") == sentinel)
        return stream

    def service_output(self):
        return self.stdout_path.read_text() + self.stderr_path.read_text()


def token_file(directory, value=None):
    """A file holding a fresh sandbox token (driverctl reads tokens only from files)."""
    value = value or f"tok-{secrets.token_hex(16)}"
    path = pathlib.Path(directory) / f"token-{secrets.token_hex(4)}"
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path, value
