"""Shared fixtures for the proxy and seccomp integration tests.

Environment:
  OSHPC_BUILD_DIR      build tree with bin/ (default: <repo>/build-proxy, then <repo>/build)
  OSHPC_TEST_ROOTFS    an extracted image to use as the sandbox root
  OSHPC_TEST_IMAGE     a squashfs image to extract when OSHPC_TEST_ROOTFS is unset
                       (default: <repo>/build/images/debian-bookworm.sqsh)
Tests skip, saying why, when bwrap, the image or the binaries are missing.
"""
import os
import pathlib
import pwd
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from oshpc_testing import hello_server  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[3]
TEST_USER = "oshpc"
# Shared by root and the test user, so not under pytest's private tmp dir.
# One per user: root's run and an ordinary user's run of the suite must not share it.
WORK_ROOT = pathlib.Path(f"/var/tmp/oshpc-proxy-tests-{os.getuid()}")


def _build_dir():
    for candidate in (os.environ.get("OSHPC_BUILD_DIR"), REPO / "build-proxy", REPO / "build"):
        if candidate and (pathlib.Path(candidate) / "bin" / "oshpc-proxy-harness").exists():
            return pathlib.Path(candidate)
    return None


@pytest.fixture(scope="session")
def bin_dir():
    build = _build_dir()
    if build is None:
        pytest.skip("no build tree with bin/oshpc-proxy-harness (set OSHPC_BUILD_DIR)")
    return build / "bin"


@pytest.fixture(scope="session")
def work_dir():
    WORK_ROOT.mkdir(mode=0o755, exist_ok=True)
    os.chmod(WORK_ROOT, 0o755)
    return WORK_ROOT


@pytest.fixture(scope="session")
def rootfs(work_dir):
    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed")
    if os.environ.get("OSHPC_TEST_ROOTFS"):
        return pathlib.Path(os.environ["OSHPC_TEST_ROOTFS"])
    image = pathlib.Path(os.environ.get(
        "OSHPC_TEST_IMAGE", REPO / "build" / "images" / "debian-bookworm.sqsh"))
    if not image.exists():
        pytest.skip(f"no test image at {image} (build it with examples/images/build-debian.sh)")
    target = work_dir / "rootfs"
    stamp = work_dir / "rootfs.stamp"
    identity = f"{image}:{image.stat().st_size}:{image.stat().st_mtime_ns}"
    if not stamp.exists() or stamp.read_text() != identity:
        shutil.rmtree(target, ignore_errors=True)
        # /dev is left out: its device nodes need root to create, and bwrap makes its own.
        subprocess.run(["unsquashfs", "-q", "-n", "-excludes", "-d", str(target), str(image),
                        "dev"], check=True,
                       stdout=subprocess.DEVNULL)
        (target / "dev").mkdir(exist_ok=True)  # the mount point for bwrap's --dev
        stamp.write_text(identity)
    return target


def user_available(user):
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return os.geteuid() == 0 and shutil.which("runuser") is not None


def as_user(user, argv):
    """argv run as user (via runuser) when user is not None, else as ourselves."""
    return argv if user is None else ["runuser", "-u", user, "--"] + list(argv)


@pytest.fixture(params=["self", TEST_USER])
def run_user(request):
    """Each test runs as the current user and, when we are root, as the ordinary test user."""
    if request.param == "self":
        return None
    if not user_available(request.param):
        pytest.skip(f"needs root and user {request.param} to test as an ordinary user")
    return request.param


def sandbox_argv(rootfs, extra=(), command=()):
    """bwrap arguments for the design's default sandbox shape."""
    return ["bwrap", "--unshare-all", "--unshare-user", "--uid", "0", "--gid", "0",
            "--disable-userns", "--die-with-parent", "--new-session",
            "--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev",
            "--tmpfs", "/tmp", "--tmpfs", "/run", *extra, *command]


# ---- servers and the proxy harness ----

import json
import resource
import selectors
import socket
import threading
import time


@pytest.fixture(scope="session")
def http_port():
    """A plain HTTP server on the host's loopback."""
    with hello_server() as port:
        yield port


class EchoServer:
    """Echoes every connection; on the client's half-close, flushes and half-closes too."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            for key, _ in self.selector.select(0.1):
                if key.fileobj is self.listener:
                    try:
                        conn, _ = self.listener.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(True)
                    self.selector.register(conn, selectors.EVENT_READ)
                    continue
                conn = key.fileobj
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = None
                if data:
                    try:
                        conn.sendall(data)
                        continue
                    except OSError:
                        pass  # the peer reset: drop it like an end of stream
                self.selector.unregister(conn)
                try:
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                conn.close()

    def close(self):
        self.stop = True
        self.thread.join()
        self.listener.close()


@pytest.fixture(scope="session")
def echo_server():
    server = EchoServer()
    yield server
    server.close()


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))


def write_policy(work_dir, name, text):
    path = work_dir / name
    path.write_text(text)
    os.chmod(path, 0o644)
    return path


class Harness:
    """oshpc-proxy-harness serving host listeners; events are JSON lines in a file."""

    def __init__(self, bin_dir, work_dir, policy, listeners=1, extra=()):
        raise_fd_limit()
        self.events_path = work_dir / f"events-{os.getpid()}-{time.monotonic_ns()}.jsonl"
        self.process = subprocess.Popen(
            [str(bin_dir / "oshpc-proxy-harness"), "--policy", str(policy),
             "--tcp-listeners", str(listeners), "--events", str(self.events_path), *extra],
            stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.events_path.exists() and self.events_path.read_text().endswith("\n"):
                break
            assert self.process.poll() is None, self.process.stderr.read()
            time.sleep(0.02)
        self.ports = json.loads(self.events_path.read_text().splitlines()[0])["ports"]

    def events(self, count=0, timeout=10):
        """Decision events so far, waiting until there are at least count of them."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.events_path.read_text().splitlines()[1:]
            if len(lines) >= count or time.monotonic() > deadline:
                return [json.loads(line) for line in lines]
            time.sleep(0.05)

    def alive(self):
        return self.process.poll() is None

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=10)


def open_tunnel(port, target, timeout=10):
    """A socket through the proxy on port, CONNECTed to target: (socket, status line, rest)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    return sock, head.split(b"\r\n", 1)[0].decode(), rest
