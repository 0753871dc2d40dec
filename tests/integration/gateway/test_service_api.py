"""The ComputeDriver API of `oshpc-fanout --serve`, RPC by RPC, against one service of two
ranks with three slots each, running spec commands directly (no supervisor) and without
supervisor capabilities. Each test uses sandbox ids of its own."""
import json
import re
import time

import pytest

from gateway_testing import IMAGE, ready_condition, ready_state, sandbox_pids, token_file

RANKS = 2
SLOTS = 3
MEMORY = "1G"
# The gateway's name is echoed exactly, whatever it holds.
NAME = "Readable Name/1 \u00fc \u6c99\u76d2 'q' \"dq\" $x"


@pytest.fixture(scope="module")
def service(start_service):
    return start_service(RANKS, ["--slots", str(SLOTS), "--cpus-per-sandbox", "1",
                                 "--mem-per-sandbox", MEMORY, "--supervisor-caps=false"])


@pytest.fixture(scope="module")
def watch(service):
    """One stream open for the whole module, as the gateway keeps one."""
    return service.watch()


@pytest.fixture(autouse=True)
def no_sandbox_outlives_its_test(service):
    """Deletes what a failed test left, so that the next one starts from the same slots
    (tests that check placement expect both ranks equally free)."""
    before = {s["id"] for s in service.list()}
    yield
    for sandbox in service.list():
        if sandbox["id"] not in before and sandbox["id"] != "probe":
            service.call("delete", sandbox["id"])


def rank_of(sandbox):
    return int(re.search(r"/rank-(\d+)/", sandbox["status"]["instance_id"]).group(1))


def deleted_id(message):
    return message.get("deleted", {}).get("sandbox_id")


def platform_event(message, sandbox_id):
    event = message.get("platform_event")
    return event["event"] if event and event["sandbox_id"] == sandbox_id else None


# --- capabilities and the RPCs oshpc does not need


def test_capabilities_name_the_driver_and_the_image_as_given(service):
    caps = service.call("caps")
    assert caps["driver_name"] == "oshpc"
    assert caps["driver_version"]
    assert caps["default_image"] == str(IMAGE)
    assert caps["gateway_manages_lifecycle"] is False


def test_listener_requirements_are_empty(service):
    assert service.call("listener-requirements") == {"requirements": []}


@pytest.mark.parametrize("command", ["ensure-workspace", "delete-workspace"])
def test_workspace_rpcs_are_unimplemented(service, command):
    code, _ = service.error(command, "ws-1")
    assert code == "UNIMPLEMENTED"


def test_socket_is_private(service):
    assert service.socket.stat().st_mode & 0o777 == 0o600
    assert service.socket_dir.stat().st_mode & 0o777 == 0o700


# --- ValidateSandboxCreate


def test_validate_accepts_a_request_the_allocation_can_run(service):
    assert service.call("validate", "--id", "v-ok", "--name", "any name",
                        "--image", IMAGE, "--cpu-request", "500m", "--cpu-limit", "1",
                        "--memory-request", "256Mi", "--memory-limit", "1G",
                        "--env", "A=1", "--template-env", "B=2", "--gpus", "0",
                        "--", "sleep", "1") == {}
    # Validation has no side effect.
    assert service.error("get", "v-ok")[0] == "NOT_FOUND"


def spec_json(tmp_path, sandbox):
    path = tmp_path / "sandbox.json"
    path.write_text(json.dumps(sandbox))
    return ["--spec-json", path]


INVALID = {
    "empty id": ["--id", ""],
    "control character in id": ["--id", "a\tb"],
    "control character in name": ["--id", "v", "--name", "a\x01b"],
    "control character in command": ["--id", "v", "--", "echo", "a\nb"],
    "control character in env value": ["--id", "v", "--env", "A=x\x1by"],
    "control character in template env value": ["--id", "v", "--template-env", "A=x\x7f"],
    "control character in image": ["--id", "v", "--image", f"{IMAGE}\n"],
    "cpu 1.5.2": ["--id", "v", "--cpu-limit", "1.5.2"],
    "cpu -1": ["--id", "v", "--cpu-request", "-1"],
    "memory 1gi": ["--id", "v", "--memory-limit", "1gi"],
    "memory 1.5.2": ["--id", "v", "--memory-request", "1.5.2"],
    "memory -1": ["--id", "v", "--memory-limit", "-1"],
    "cpu request above limit": ["--id", "v", "--cpu-request", "1", "--cpu-limit", "500m"],
    "memory request above limit": ["--id", "v", "--memory-request", "512Mi",
                                   "--memory-limit", "256Mi"],
}


@pytest.mark.parametrize("options", INVALID.values(), ids=INVALID.keys())
def test_validate_rejects_a_malformed_request(service, options):
    code, message = service.error("validate", *options)
    assert code == "INVALID_ARGUMENT", message


INVALID_ENV_NAMES = {
    "empty name": {"": "x"},
    "name with =": {"A=B": "x"},
    "name with a control character": {"A\u0001": "x"},
}


@pytest.mark.parametrize("field", ["environment", "template"])
@pytest.mark.parametrize("variables", INVALID_ENV_NAMES.values(), ids=INVALID_ENV_NAMES.keys())
def test_validate_rejects_bad_variable_names(service, tmp_path, field, variables):
    spec = ({"environment": variables} if field == "environment"
            else {"template": {"environment": variables}})
    code, message = service.error("validate", *spec_json(tmp_path, {"id": "v", "spec": spec}))
    assert code == "INVALID_ARGUMENT", message


UNSATISFIABLE = {
    "another image": (["--image", "/elsewhere/other.sqsh"], "image"),
    "more CPU than a sandbox gets": (["--cpu-limit", "1500m"], "--cpus-per-sandbox"),
    "more CPU requested than a sandbox gets": (["--cpu-request", "2"], "--cpus-per-sandbox"),
    "more memory than a sandbox gets": (["--memory-limit", "2Gi"], "--mem-per-sandbox"),
    "a GPU where there are none": (["--gpus", "1"], "--gpus-per-sandbox"),
}


@pytest.mark.parametrize("options, names", UNSATISFIABLE.values(), ids=UNSATISFIABLE.keys())
def test_validate_refuses_what_the_allocation_cannot_give(service, options, names):
    code, message = service.error("validate", "--id", "v", *options)
    assert code == "FAILED_PRECONDITION"
    assert names in message


@pytest.mark.parametrize("options", [
    ["--cpu-limit", "1000m"], ["--cpu-request", "1"], ["--memory-limit", "1Gi"],
    ["--memory-request", "1073741824"],
], ids=str)
def test_validate_accepts_exactly_what_a_sandbox_gets(service, options):
    # --cpus-per-sandbox 1 and --mem-per-sandbox 1G (1 GiB).
    assert service.call("validate", "--id", "v", *options) == {}


@pytest.mark.parametrize("options", [
    ["--cpu-limit", "1001m"], ["--memory-limit", "1025Mi"], ["--memory-request", "1073741825"],
], ids=str)
def test_validate_refuses_a_little_more_than_a_sandbox_gets(service, options):
    assert service.error("validate", "--id", "v", *options)[0] == "FAILED_PRECONDITION"


def test_gpu_requirement_without_count_means_one_gpu(service, tmp_path):
    sandbox = {"id": "v", "spec": {"resource_requirements": {"gpu": {}}}}
    code, message = service.error("validate", *spec_json(tmp_path, sandbox))
    assert code == "FAILED_PRECONDITION"
    assert "1 GPU" in message


def test_a_gpu_count_of_zero_is_no_gpu(service):
    assert service.call("validate", "--id", "v", "--gpus", "0") == {}


def test_request_without_sandbox_or_spec_is_invalid(service):
    """driverctl always sends a sandbox with a spec, so this one speaks gRPC itself."""
    grpc = pytest.importorskip("grpc", reason="needs python3-grpcio to send a bare request")
    with grpc.insecure_channel(f"unix:{service.socket}") as channel:
        for rpc in ("ValidateSandboxCreate", "CreateSandbox"):
            call = channel.unary_unary(f"/openshell.compute.v1.ComputeDriver/{rpc}")
            no_sandbox = b""
            # DriverSandbox{id: "bare"} without a spec, in field 1 of the request.
            no_spec = b"\x0a\x06" + b"\x0a\x04bare"
            for request in (no_sandbox, no_spec):
                with pytest.raises(grpc.RpcError) as error:
                    call(request, timeout=10)
                assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (rpc, request)
    assert service.error("get", "bare")[0] == "NOT_FOUND"


# --- CreateSandbox and the Ready condition


def test_create_is_accepted_then_reports_progress_until_ready(service, watch):
    start = len(watch.messages)
    service.create("c-1", "--name", NAME, "--label", "team=x")
    ready = watch.wait_for_state("c-1", "True", "BackendReady", start=start)

    snapshots = [m["sandbox"]["sandbox"] for m in watch.messages[start:ready + 1]
                 if "sandbox" in m and m["sandbox"]["sandbox"]["id"] == "c-1"]
    reasons = [ready_state(s) for s in snapshots]
    # Until it runs, only the transient reasons the gateway waits on.
    for status, reason in reasons[:-1]:
        assert status == "False" and reason in ("DependenciesNotReady", "Starting"), reasons
    assert ("False", "Starting") in reasons

    # The last step's completion follows the Ready snapshot.
    watch.wait_for(lambda m: (platform_event(m, "c-1") or {}).get("metadata", {}).get(
        "openshell.progress.complete_step") == "starting_sandbox", start=start)
    progress = [platform_event(m, "c-1") for m in watch.messages[start:]]
    progress = [e for e in progress if e and e["reason"] == "Progress"]
    assert progress, "no progress events"
    steps = set()
    for event in progress:
        metadata = event["metadata"]
        assert set(metadata) <= {"openshell.progress.complete_step",
                                 "openshell.progress.active_step",
                                 "openshell.progress.active_detail"}, metadata
        steps.update(v for k, v in metadata.items() if k.endswith("_step"))
    assert {"requesting_sandbox", "starting_sandbox"} <= steps, steps
    assert any("openshell.progress.active_detail" in e["metadata"] for e in progress)

    sandbox = snapshots[-1]
    assert sandbox["name"] == NAME
    assert sandbox["namespace"] == service.tag
    assert re.fullmatch(rf"{service.tag}-\d+", sandbox["status"]["sandbox_name"])
    assert re.fullmatch(r"[^/]+/rank-[01]/slot-[0-2]", sandbox["status"]["instance_id"])
    assert sandbox["status"]["deleting"] is False
    assert sandbox["spec"]["template"]["labels"] == {"team": "x"}
    condition = ready_condition(sandbox)
    assert condition["last_transition_time"]
    service.call("delete", "c-1")


def test_create_of_a_known_id_is_already_exists(service):
    service.create("c-dup")
    code, message = service.error("create", "--id", "c-dup", "--", "true")
    assert code == "ALREADY_EXISTS"
    assert "c-dup" in message
    # The first one is untouched.
    assert service.get("c-dup")["spec"]["command"] == ["sleep", "3600"]
    service.call("delete", "c-dup")


@pytest.mark.parametrize("options, code", [
    (["--memory-limit", "1.5.2"], "INVALID_ARGUMENT"),
    (["--image", "/elsewhere/other.sqsh"], "FAILED_PRECONDITION"),
    (["--gpus", "1"], "FAILED_PRECONDITION"),
])
def test_create_checks_like_validate_and_creates_nothing(service, options, code):
    assert service.error("create", "--id", "c-bad", *options, "--", "true")[0] == code
    assert service.error("get", "c-bad")[0] == "NOT_FOUND"
    assert "c-bad" not in [s["id"] for s in service.list()]


def test_a_command_that_ends_is_container_exited_with_its_code(service, watch):
    start = len(watch.messages)
    service.create("c-exit", command=["sh", "-c",
                                      "echo log=$OPENSHELL_LOG_LEVEL; echo err >&2; exit 7"])
    sandbox = service.wait_state("c-exit", "False", "ContainerExited")
    assert "7" in ready_condition(sandbox)["message"]
    watch.wait_for(lambda m: (platform_event(m, "c-exit") or {}).get("reason")
                   == "ContainerExited", start=start)
    # Listed and readable once ended, with its output in the output directory.
    assert "c-exit" in [s["id"] for s in service.list()]
    assert service.sandbox_output(sandbox).read_text() == "log=info\n"  # the default level
    assert service.sandbox_output(sandbox, "stderr").read_text() == "err\n"
    service.call("delete", "c-exit")


def test_a_command_missing_from_the_image_is_container_start_failed(service):
    service.create("c-nocmd", command=["/no/such/program"])
    sandbox = service.wait_state("c-nocmd", "False", "ContainerStartFailed")
    assert "/no/such/program" in ready_condition(sandbox)["message"]
    service.call("delete", "c-nocmd")


# --- Get, List, Stop, Start, Delete


def test_unknown_ids_are_not_found(service):
    assert service.error("get", "never-created")[0] == "NOT_FOUND"
    assert service.error("stop", "never-created")[0] == "NOT_FOUND"
    assert service.error("start", "never-created")[0] == "NOT_FOUND"
    assert service.call("delete", "never-created") == {"deleted": False}


def test_stop_returns_once_the_processes_are_gone_and_is_idempotent(service):
    ids = ["s-stop-a", "s-stop-b"]  # one on each rank: rank 0 and one reached over MPI
    for sandbox_id in ids:
        service.create(sandbox_id)
    sandboxes = {i: service.wait_ready(i) for i in ids}
    assert {rank_of(s) for s in sandboxes.values()} == {0, 1}

    for sandbox_id, sandbox in sandboxes.items():
        name = sandbox["status"]["sandbox_name"]
        assert sandbox_pids(name), "the sandbox's processes are not visible"
        assert service.call("stop", sandbox_id) == {}
        assert sandbox_pids(name) == []
        assert ready_state(service.get(sandbox_id)) == ("False", "ContainerStopped")

        assert service.call("stop", sandbox_id) == {}
        assert ready_state(service.get(sandbox_id)) == ("False", "ContainerStopped")
    # Stopped sandboxes are listed, in their place.
    listed = {s["id"]: s for s in service.list()}
    for sandbox_id, sandbox in sandboxes.items():
        assert listed[sandbox_id]["status"]["instance_id"] == sandbox["status"]["instance_id"]
        service.call("delete", sandbox_id)


def test_start_runs_again_in_the_same_workspace(service):
    count_runs = ["sh", "-c", "echo run >> /sandbox/runs; echo run $(wc -l < /sandbox/runs); "
                  "exec sleep 3600"]
    service.create("s-restart", command=count_runs)
    first = service.wait_ready("s-restart")
    workspace = service.workspace(first)
    stdout = service.sandbox_output(first)
    assert service.call("start", "s-restart") == {}  # running: nothing to do
    service.call("stop", "s-restart")
    assert workspace.joinpath("runs").read_text() == "run\n"

    assert service.call("start", "s-restart") == {}
    second = service.wait_ready("s-restart")
    assert second["status"]["instance_id"] == first["status"]["instance_id"]
    assert second["status"]["sandbox_name"] == first["status"]["sandbox_name"]
    assert service.call("start", "s-restart") == {}  # idempotent
    assert wait_for_text(stdout, "run 1\nrun 2\n")
    time.sleep(0.5)
    assert workspace.joinpath("runs").read_text() == "run\nrun\n"
    assert stdout.read_text() == "run 1\nrun 2\n"  # appended across runs, one run per start
    service.call("delete", "s-restart")


def wait_for_text(path, text, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text() == text:
            return True
        time.sleep(0.1)
    return False


def test_start_after_the_command_ended_runs_it_again(service):
    service.create("s-rerun", command=["sh", "-c", "echo ran >> /sandbox/log; exit 3"])
    sandbox = service.wait_state("s-rerun", "False", "ContainerExited")
    service.call("start", "s-rerun")
    assert wait_for_text(service.workspace(sandbox) / "log", "ran\nran\n")
    service.wait_state("s-rerun", "False", "ContainerExited")
    service.call("delete", "s-rerun")


def test_delete_removes_every_file_and_then_reports_nothing_to_delete(service, watch, tmp_path):
    ids = ["d-a", "d-b"]  # one on each rank
    path, _ = token_file(tmp_path)
    for sandbox_id in ids:
        service.create(sandbox_id, "--token-file", path,
                       command=["sh", "-c", "echo data > /sandbox/file; echo hi; sleep 3600"])
    sandboxes = {i: service.wait_ready(i) for i in ids}
    assert {rank_of(s) for s in sandboxes.values()} == {0, 1}

    for sandbox_id, sandbox in sandboxes.items():
        workspace = service.workspace(sandbox)
        secrets_dir = service.secrets_dir(sandbox)
        output = service.sandbox_output(sandbox).parent
        assert wait_for_text(workspace / "file", "data\n")
        assert (secrets_dir / "sandbox.jwt").exists()
        assert output.is_dir()

        start = len(watch.messages)
        assert service.call("delete", sandbox_id) == {"deleted": True}
        assert not workspace.exists()
        assert not secrets_dir.exists()
        assert not output.exists()
        assert sandbox_pids(sandbox["status"]["sandbox_name"]) == []

        deleting = watch.wait_for(
            lambda m: "sandbox" in m and m["sandbox"]["sandbox"]["id"] == sandbox_id
            and m["sandbox"]["sandbox"]["status"]["deleting"], start=start)
        gone = watch.wait_for(lambda m: deleted_id(m) == sandbox_id, start=start)
        assert deleting < gone
        assert service.error("get", sandbox_id)[0] == "NOT_FOUND"
        assert sandbox_id not in [s["id"] for s in service.list()]
        assert service.call("delete", sandbox_id) == {"deleted": False}
        assert service.error("stop", sandbox_id)[0] == "NOT_FOUND"


def test_delete_of_a_stopped_sandbox_removes_its_files(service):
    service.create("d-stopped", command=["sh", "-c", "touch /sandbox/x; sleep 3600"])
    sandbox = service.wait_ready("d-stopped")
    workspace = service.workspace(sandbox)
    service.call("stop", "d-stopped")
    assert workspace.exists()
    assert service.call("delete", "d-stopped") == {"deleted": True}
    assert not workspace.exists()
    assert not service.sandbox_output(sandbox).parent.exists()


def test_an_id_can_be_created_again_after_delete(service):
    service.create("d-again")
    first = service.wait_ready("d-again")
    service.call("delete", "d-again")
    service.create("d-again")
    second = service.wait_ready("d-again")
    assert second["status"]["sandbox_name"] != first["status"]["sandbox_name"]
    service.call("delete", "d-again")


# --- WatchSandboxes


def test_a_new_stream_gets_a_snapshot_of_every_sandbox_then_changes(service):
    service.create("w-run")
    service.create("w-stop")
    service.wait_ready("w-run")
    service.wait_ready("w-stop")
    service.call("stop", "w-stop")
    known = {s["id"]: s for s in service.list()}

    second = service.watch(synced=False)  # its snapshot is what this test checks
    second.wait_for(lambda m: True)
    time.sleep(0.5)
    head = second.messages[:len(known)]
    assert all("sandbox" in m for m in head), head
    snapshot = {m["sandbox"]["sandbox"]["id"]: m["sandbox"]["sandbox"] for m in head}
    assert set(snapshot) == set(known)
    assert ready_state(snapshot["w-stop"]) == ("False", "ContainerStopped")
    assert ready_state(snapshot["w-run"]) == ("True", "BackendReady")

    start = len(second.messages)
    service.call("stop", "w-run")
    second.wait_for_state("w-run", "False", "ContainerStopped", start=start)
    service.call("delete", "w-run")
    second.wait_for(lambda m: deleted_id(m) == "w-run", start=start)
    service.call("delete", "w-stop")
    second.wait_for(lambda m: deleted_id(m) == "w-stop", start=start)
    second.close()


# --- slots


def test_every_slot_taken_is_failed_precondition_until_a_delete(service):
    created = []
    for i in range(RANKS * SLOTS + 1):
        result = service.ctl("create", "--id", f"slot-{i}", "--", "sleep", "3600")
        if result.returncode != 0:
            break
        created.append(f"slot-{i}")
    else:
        pytest.fail(f"{len(created)} sandboxes fit in {RANKS * SLOTS} slots")
    assert "FAILED_PRECONDITION" in result.stderr
    assert "slots" in result.stderr
    assert len(created) >= 1

    # A stopped sandbox keeps its slot.
    service.call("stop", created[0])
    assert service.error("create", "--id", "slot-x", "--", "true")[0] == "FAILED_PRECONDITION"
    # A deleted one frees it.
    service.call("delete", created[0])
    service.create("slot-x")
    service.wait_ready("slot-x")
    for sandbox_id in created[1:] + ["slot-x"]:
        assert service.call("delete", sandbox_id) == {"deleted": True}


# --- the workload without a supervisor


@pytest.fixture(scope="module")
def probe(service, tmp_path_factory):
    """A sandbox whose command reports what it sees, then waits."""
    path, token = token_file(tmp_path_factory.mktemp("token"))
    script = ("env > /sandbox/env.txt; cat /proc/self/status > /sandbox/status.txt; "
              "for d in /run/openshell /run/netns /etc/openshell-tls; do "
              "touch $d/probe && echo $d >> /sandbox/writable; done; "
              "cat /proc/self/mountinfo > /sandbox/mountinfo; "
              "stat -c '%a' /etc/openshell/auth/sandbox.jwt > /sandbox/token_mode; "
              "cat /etc/openshell/auth/sandbox.jwt > /sandbox/token; "
              "echo done > /sandbox/done; exec sleep 3600")
    service.create("probe", "--name", "probe name", "--log-level", "debug", "--tty",
                   "--env", "SHARED=from-spec", "--env", "ONLY_SPEC=1",
                   "--env", "OPENSHELL_SANDBOX_TOKEN=leaked",
                   "--template-env", "SHARED=from-template", "--template-env", "ONLY_TEMPLATE=2",
                   "--token-file", path, command=["sh", "-c", script])
    sandbox = service.wait_ready("probe")
    workspace = service.workspace(sandbox)
    assert wait_for_text(workspace / "done", "done\n")
    env = dict(line.split("=", 1) for line in
               (workspace / "env.txt").read_text().splitlines() if "=" in line)
    return {"sandbox": sandbox, "workspace": workspace, "env": env, "token": token,
            "script": script}


def test_the_spec_command_runs_directly_with_the_driver_environment(probe):
    env, sandbox = probe["env"], probe["sandbox"]
    assert env["OPENSHELL_SANDBOX"] == "probe name"
    assert env["OPENSHELL_SANDBOX_ID"] == "probe"
    assert env["OPENSHELL_LOG_LEVEL"] == "debug"
    assert json.loads(env["OPENSHELL_MAIN_PROCESS_SPEC"]) == {
        "version": 1, "command": ["sh", "-c", probe["script"]], "tty": True}
    assert env["OSHPC_SANDBOX_NAME"] == sandbox["status"]["sandbox_name"]
    # No gateway endpoint, no TLS directory: nothing that points at them.
    for absent in ("OPENSHELL_ENDPOINT", "OPENSHELL_TLS_CA", "OPENSHELL_TLS_CERT",
                   "OPENSHELL_TLS_KEY"):
        assert absent not in env


def test_user_environment_merges_template_under_spec(probe):
    env = probe["env"]
    assert env["SHARED"] == "from-spec"
    assert env["ONLY_SPEC"] == "1"
    assert env["ONLY_TEMPLATE"] == "2"


def test_a_token_in_the_user_environment_is_stripped(probe):
    assert "OPENSHELL_SANDBOX_TOKEN" not in probe["env"]
    assert "leaked" not in (probe["workspace"] / "env.txt").read_text()


def test_the_token_is_a_file_not_an_environment_variable(probe):
    env = probe["env"]
    assert env["OPENSHELL_SANDBOX_TOKEN_FILE"] == "/etc/openshell/auth/sandbox.jwt"
    assert (probe["workspace"] / "token").read_text() == probe["token"]
    assert (probe["workspace"] / "token_mode").read_text() == "600\n"
    assert probe["token"] not in (probe["workspace"] / "env.txt").read_text()


def test_without_supervisor_caps_the_sandbox_has_no_capabilities(probe):
    status = (probe["workspace"] / "status.txt").read_text()
    assert re.search(r"^CapEff:\s+0+$", status, re.M), status


def test_the_supervisor_directories_are_writable_tmpfs(probe):
    dirs = ["/run/openshell", "/run/netns", "/etc/openshell-tls"]
    assert (probe["workspace"] / "writable").read_text().split() == dirs
    mounts = {}
    for line in (probe["workspace"] / "mountinfo").read_text().splitlines():
        fields = line.split()
        mounts[fields[4]] = fields[fields.index("-") + 1]
    for d in dirs:
        assert mounts.get(d) == "tmpfs", (d, mounts.get(d))


def test_events_go_to_the_output_directory(service, probe):
    name = probe["sandbox"]["status"]["sandbox_name"]
    events = [json.loads(line) for line in
              (service.output_dir / "events.jsonl").read_text().splitlines()]
    started = [e for e in events if e["event"] == "started" and e.get("sandbox") == name]
    assert started, events[-5:]


def test_log_lines_name_their_component(service):
    """Every log line carries its component (docs/STYLE.md, 8): the gateway's own lines say
    'gateway', whichever component logged last."""
    lines = [line for line in service.stderr_path.read_text().splitlines()
             if "created sandbox" in line or "serving the OpenShell" in line]
    assert len(lines) > 1
    wrong = [line for line in lines if not line.startswith("oshpc-fanout[rank 0]: info: gateway: ")]
    assert wrong == []
