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

import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
TEST_USER = "oshpc"
# Shared by root and the test user, so not under pytest's private tmp dir.
WORK_ROOT = pathlib.Path("/var/tmp/oshpc-proxy-tests")


def _build_dir():
    for candidate in (os.environ.get("OSHPC_BUILD_DIR"), REPO / "build-proxy", REPO / "build"):
        if candidate and (pathlib.Path(candidate) / "bin" / "oshpc-seccomp-export").exists():
            return pathlib.Path(candidate)
    return None


@pytest.fixture(scope="session")
def bin_dir():
    build = _build_dir()
    if build is None:
        pytest.skip("no build tree with bin/oshpc-seccomp-export (set OSHPC_BUILD_DIR)")
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
        subprocess.run(["unsquashfs", "-q", "-n", "-d", str(target), str(image)], check=True,
                       stdout=subprocess.DEVNULL)
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
