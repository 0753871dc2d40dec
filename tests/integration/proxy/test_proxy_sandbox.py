"""The proxy as a sandbox sees it: bwrap from the Debian image, the listener opened inside the
sandbox's network namespace by oshpc-netns-listen, unmodified curl and Python as clients."""
import json
import subprocess

import pytest

from conftest import as_user, sandbox_argv, write_policy

POLICY = """\
version: 1
filesystem_policy:
  read_only: [/usr]
network_policies:
  host_test_server:
    endpoints:
      - host: local.test
        port: {port}
        allowed_ips: [127.0.0.1/32]
  no_private:
    endpoints:
      - host: sneaky.test
        port: {port}
      - host: localhost
        port: {port}
"""


def run_in_sandbox(bin_dir, work_dir, rootfs, user, port, script, extra_bwrap=()):
    policy = write_policy(work_dir, "sandbox-policy.yaml", POLICY.format(port=port))
    events_dir = work_dir / "events"
    events_dir.mkdir(exist_ok=True)
    events_dir.chmod(0o1777)  # the test user writes here too
    events = events_dir / f"sandbox-{user or 'self'}.jsonl"
    events.unlink(missing_ok=True)
    argv = [str(bin_dir / "oshpc-proxy-harness"), "--policy", str(policy),
            "--host", "local.test=127.0.0.1", "--host", "sneaky.test=127.0.0.1",
            "--events", str(events), "--",
            *sandbox_argv(rootfs, extra_bwrap, ["sh", "-c", script])]
    result = subprocess.run(as_user(user, argv), capture_output=True, text=True, timeout=60)
    decisions = [json.loads(line) for line in events.read_text().splitlines()]
    return result, decisions


def test_allowed_destination_via_allowed_ips(bin_dir, work_dir, rootfs, run_user, http_port):
    url = f"http://local.test:{http_port}/"
    script = (f"curl -sS -w ' %{{http_code}}' {url}; echo; "
              f"curl -sS -p -w ' %{{http_code}}' {url}")
    result, decisions = run_in_sandbox(bin_dir, work_dir, rootfs, run_user, http_port, script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("hello from the host\n 200") == 2, result.stdout
    assert [d["method"] for d in decisions] == ["GET", "CONNECT"]
    for decision in decisions:
        assert decision["allowed"] and decision["sandbox_id"] == "sandbox-0"
        assert decision["rule"] == "network_policies.host_test_server.endpoints[0]"
        assert decision["bytes_down"] > 0 and decision["bytes_up"] > 0


def test_host_not_in_policy_gets_403_with_reason(bin_dir, work_dir, rootfs, run_user, http_port):
    script = ("curl -sS -o /tmp/body -w '%{http_code}\\n' http://example.com/; cat /tmp/body; "
              "curl -sS https://example.com/ 2>&1; echo")
    result, decisions = run_in_sandbox(bin_dir, work_dir, rootfs, run_user, http_port, script)
    lines = result.stdout.splitlines()
    assert lines[0] == "403", result.stdout
    assert json.loads(lines[1]) == {"error": "denied", "host": "example.com", "port": 80,
                                    "reason": "no network_policies endpoint matches example.com:80"}
    assert "403" in lines[2]  # curl: CONNECT tunnel failed, response 403
    assert [(d["allowed"], d["port"], d["status"]) for d in decisions] == [
        (False, 80, 403), (False, 443, 403)]


def test_direct_connections_are_unreachable(bin_dir, work_dir, rootfs, http_port):
    script = ("python3 -c \"import socket\n"
              "for target in [('1.1.1.1', 80), ('10.0.0.1', 443)]:\n"
              "    try:\n"
              "        socket.create_connection(target, timeout=5)\n"
              "        print('connected')\n"
              "    except OSError as e:\n"
              "        print(e.strerror)\"; "
              "curl -sS --noproxy '*' http://1.1.1.1/ ; echo curl=$?")
    result, decisions = run_in_sandbox(bin_dir, work_dir, rootfs, None, http_port, script)
    lines = result.stdout.splitlines()
    assert lines[:2] == ["Network is unreachable"] * 2, result.stdout
    assert "curl=7" in result.stdout
    assert decisions == []


def test_names_resolving_to_private_addresses_are_denied(bin_dir, work_dir, rootfs, http_port):
    script = (f"curl -sS -w ' %{{http_code}}' http://sneaky.test:{http_port}/; echo; "
              f"curl -sS -w ' %{{http_code}}' http://localhost:{http_port}/ --proxy "
              f"http://127.0.0.1:3128 --noproxy ''")
    result, decisions = run_in_sandbox(bin_dir, work_dir, rootfs, None, http_port, script)
    assert result.stdout.count(" 403") == 2, result.stdout
    assert all(not d["allowed"] for d in decisions)
    assert [d["host"] for d in decisions] == ["sneaky.test", "localhost"]
    for decision in decisions:
        assert "loopback address" in decision["reason"]


def test_python_urllib_uses_the_proxy_unmodified(bin_dir, work_dir, rootfs, http_port):
    # The image has python3-minimal, whose stdlib lacks http.client: lend it the host's (the
    # same Debian release) read-only. The client code is the standard library's, unmodified.
    version = subprocess.run(["/usr/bin/python3", "-c",
                              "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')"],
                             capture_output=True, text=True, check=True).stdout.strip()
    image_lib = rootfs / "usr" / "lib" / f"python{version}"
    if not image_lib.exists():
        pytest.skip(f"image has no python{version} to pair with the host's standard library")
    lib = f"/usr/lib/python{version}"
    script = ("python3 -c \"import urllib.request, urllib.error\n"
              f"print(urllib.request.urlopen('http://local.test:{http_port}/').read().decode().strip())\n"
              "try:\n"
              "    urllib.request.urlopen('http://example.org/')\n"
              "except urllib.error.HTTPError as e:\n"
              "    print(e.code)\"")
    result, decisions = run_in_sandbox(bin_dir, work_dir, rootfs, None, http_port, script,
                                       ["--ro-bind", lib, lib])
    assert result.stdout.splitlines() == ["hello from the host", "403"], result.stderr
    assert [d["allowed"] for d in decisions] == [True, False]
