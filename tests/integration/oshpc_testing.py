"""Helpers for integration tests that drive the real oshpc-fanout under the real mpirun.

Environment (set by tests/run-all.sh):
  OSHPC_BUILD_DIR  the CMake build directory (bin/oshpc-fanout, bin/oshpc-exec)
  OSHPC_IMAGE      the example Debian squashfs image
The tests run as whoever starts pytest: run-all.sh runs them once as root and once as an
ordinary user.
"""
import contextlib
import http.server
import json
import os
import pathlib
import subprocess
import threading
import time


BUILD_DIR = pathlib.Path(os.environ.get("OSHPC_BUILD_DIR", "build")).resolve()
IMAGE = pathlib.Path(os.environ.get("OSHPC_IMAGE", BUILD_DIR / "images/debian-bookworm.sqsh")).resolve()
FANOUT = BUILD_DIR / "bin/oshpc-fanout"
IS_ROOT = os.geteuid() == 0


def fuse_usable():
    """Mirrors rootfs_cache::fuse_is_usable: /dev/fuse opens and squashfuse_ll exists."""
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError:
        return False
    return os.access("/usr/bin/squashfuse_ll", os.X_OK)


class Job:
    """A finished (or stopped) oshpc-fanout run and what it left."""

    def __init__(self, proc, workdir, name):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.workdir = workdir
        self.name = name
        self.output_dir = workdir / f"oshpc-{name}"

    @property
    def events(self):
        path = self.output_dir / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def of_type(self, kind):
        return [e for e in self.events if e["event"] == kind]

    def terminal(self):
        return [e for e in self.events if e["event"] in ("exited", "failed")]

    def by_index(self):
        return {e["index"]: e for e in self.terminal()}

    def sandbox_file(self, index, stream="stdout"):
        return (self.output_dir / f"{self.name}-{index}" / stream).read_text()


class Fanout:
    """Runs oshpc-fanout with mpirun in a fresh working and cache directory."""

    def __init__(self, tmp_path):
        self.workdir = tmp_path
        self.cache_dir = tmp_path / "cache"
        self.counter = 0

    def mpirun_argv(self, ranks):
        argv = ["mpirun", "--oversubscribe", "--bind-to", "none", "-np", str(ranks)]
        if IS_ROOT:
            argv.append("--allow-run-as-root")
        return argv

    def command(self, args, ranks=1, name=None, image=IMAGE, cache=True):
        self.counter += 1
        name = name or f"t{self.counter}"
        argv = self.mpirun_argv(ranks) + [str(FANOUT)]
        if image is not None:
            argv += ["--image", str(image)]
        argv += ["--job-name", name]
        if cache:
            argv += ["--cache-dir", str(self.cache_dir)]
        return argv + list(args), name

    def run(self, args, ranks=1, timeout=180, env=None, **kw):
        argv, name = self.command(args, ranks, **kw)
        proc = subprocess.run(argv, cwd=self.workdir, capture_output=True, text=True,
                              timeout=timeout, env=self.environment(env))
        return Job(proc, self.workdir, name)

    def start(self, args, ranks=1, env=None, **kw):
        argv, name = self.command(args, ranks, **kw)
        proc = subprocess.Popen(argv, cwd=self.workdir, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.environment(env))
        return proc, name

    def finish(self, proc, name, timeout=60):
        out, err = proc.communicate(timeout=timeout)
        proc.stdout, proc.stderr = out, err
        return Job(proc, self.workdir, name)

    @staticmethod
    def environment(extra):
        env = dict(os.environ)
        env.pop("OSHPC_NODE_NAME", None)
        env.update(extra or {})
        return env


def wait_for(predicate, timeout=30, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def my_processes(name, mentioning=None):
    """Live (non-zombie) processes of this user whose command name is `name` and, if given,
    whose command line mentions `mentioning` (a test's own cache directory, so that other
    jobs on the machine do not count)."""
    found = []
    uid = os.getuid()
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        if fields.get("Name", "").strip() != name:
            continue
        if fields.get("State", "").startswith("Z"):
            continue
        if int(fields.get("Uid", "-1").split()[0]) != uid:
            continue
        if mentioning is not None:
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(mentioning) not in cmdline:
                continue
        found.append(int(entry.name))
    return found


def describe_processes(pids):
    """pid, parent, state and command line of each process (for a failure message)."""
    lines = []
    for pid in pids:
        try:
            status = pathlib.Path(f"/proc/{pid}/status").read_text()
            cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        lines.append(f"{pid} ppid={fields.get('PPid', '?').strip()} "
                     f"state={fields.get('State', '?').strip()} {cmdline.decode(errors='replace')}")
    return "; ".join(lines)


def mounts_under(path):
    path = str(path)
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello from the host\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def hello_server(address="127.0.0.1"):
    """A plain HTTP server on the host answering every GET with 200 and "hello from the
    host"; yields its port."""
    server = http.server.ThreadingHTTPServer((address, 0), _Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
