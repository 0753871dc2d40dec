"""The seccomp profiles inside a real bubblewrap sandbox: every blocked call fails with EPERM
(clone3 with ENOSYS) and the allowed ones keep working."""
import errno
import subprocess

import pytest

from conftest import as_user, sandbox_argv

BLOCKED = ["bpf", "perf_event_open", "userfaultfd", "kexec_load", "kexec_file_load",
           "init_module", "finit_module", "delete_module", "keyctl", "add_key", "request_key",
           "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
           "mount_setattr", "mount", "umount2", "pivot_root", "swapon", "swapoff", "reboot",
           "ptrace", "process_vm_readv", "process_vm_writev", "personality_bsd",
           "unshare_user", "clone_user", "ioctl_tiocsti", "ioctl_tioclinux"]


@pytest.fixture(scope="session")
def probe(work_dir):
    source = __file__.replace("test_seccomp.py", "seccomp_probe.c")
    binary = work_dir / "seccomp_probe"
    result = subprocess.run(["cc", "-static", "-O1", "-o", str(binary), source],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot build the static probe (libc6-dev with libc.a?): {result.stderr}")
    return binary


def run_probe(bin_dir, work_dir, rootfs, probe, user, profile):
    """Runs the probe in a sandbox; profile None means no --seccomp."""
    extra = ["--ro-bind", str(probe), "/tmp/oshpc_probe"]
    redirect = ""
    if profile is not None:
        program = work_dir / f"seccomp-{profile}.bpf"
        with open(program, "wb") as out:
            subprocess.run([str(bin_dir / "oshpc-seccomp-export"), profile], stdout=out,
                           check=True)
        extra += ["--seccomp", "5"]
        redirect = f" 5<{program}"
    argv = sandbox_argv(rootfs, extra, ["/tmp/oshpc_probe"])
    script = " ".join(f"'{a}'" for a in argv) + redirect
    result = subprocess.run(as_user(user, ["sh", "-c", "exec " + script]), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {name: int(code) for name, code in (line.split() for line in result.stdout.splitlines())}


@pytest.mark.parametrize("profile", ["default", "strict"])
def test_blocked_calls_fail_with_eperm(bin_dir, work_dir, rootfs, probe, run_user, profile):
    results = run_probe(bin_dir, work_dir, rootfs, probe, run_user, profile)
    wrong = {name: errno.errorcode.get(results[name], results[name])
             for name in BLOCKED if results[name] != errno.EPERM}
    assert not wrong, f"not EPERM under the {profile} profile: {wrong}"
    assert results["clone3"] == errno.ENOSYS
    broken = {name: code for name, code in results.items()
              if name.startswith("allowed_") and code != 0}
    assert not broken, f"allowed calls failed: {broken}"


def test_filter_is_what_blocks_them(bin_dir, work_dir, rootfs, probe):
    """Without the filter these calls fail differently (or work), so EPERM above is the filter's."""
    results = run_probe(bin_dir, work_dir, rootfs, probe, None, None)
    for name in ["perf_event_open", "keyctl", "ptrace", "process_vm_readv", "personality_bsd",
                 "clone3", "ioctl_tiocsti", "add_key"]:
        assert results[name] != errno.EPERM, name
