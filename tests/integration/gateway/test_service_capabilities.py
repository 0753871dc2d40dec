"""With the supervisor's capabilities (the default of --serve) a sandbox holds CAP_SYS_ADMIN in
the user namespace that owns its mounts; the `supervisor` seccomp profile lets it make new
mounts (as `ip netns add` does) but never remount the read-only binds writable, so nothing of
the host can be written through them."""
import time

import pytest


SCRIPT = (
    "r() { \"$@\" >/dev/null 2>&1; echo $?; }; "
    "echo \"remount_etc $(r mount -o remount,bind,rw /etc)\" >> /sandbox/results; "
    "echo \"remount_root $(r mount -o remount,rw /)\" >> /sandbox/results; "
    "echo \"remount_host_file $(r mount -o remount,bind,rw /host/file)\" >> /sandbox/results; "
    "echo \"write_host_file $(r sh -c 'echo changed >> /host/file')\" >> /sandbox/results; "
    "echo \"write_etc $(r sh -c 'echo x > /etc/written')\" >> /sandbox/results; "
    "echo \"unshare_net $(r unshare -n true)\" >> /sandbox/results; "
    "touch /run/netns/probe; "
    "echo \"bind_netns $(r mount --bind /proc/self/ns/net /run/netns/probe)\" >> /sandbox/results; "
    "echo done >> /sandbox/results; exec sleep 3600")


@pytest.fixture(scope="module")
def results(start_service, tmp_path_factory):
    host = tmp_path_factory.mktemp("host")
    host.chmod(0o755)
    (host / "file").write_text("original\n")
    (host / "file").chmod(0o644)
    service = start_service(1, ["--slots", "2", "--bind", f"{host}:/host:ro"])
    service.create("caps", command=["sh", "-c", SCRIPT])
    sandbox = service.wait_ready("caps")
    path = service.workspace(sandbox) / "results"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (path.exists() and "done" in path.read_text()):
        time.sleep(0.1)
    found = dict(line.split() for line in path.read_text().splitlines() if " " in line)
    return found, host


def test_read_only_binds_cannot_be_remounted_writable(results):
    found, host = results
    for probe in ("remount_etc", "remount_root", "remount_host_file", "write_host_file",
                  "write_etc"):
        assert found[probe] != "0", probe
    assert (host / "file").read_text() == "original\n"


def test_the_supervisor_can_still_build_a_network_namespace(results):
    found, _ = results
    assert found["unshare_net"] == "0"
    assert found["bind_netns"] == "0"
