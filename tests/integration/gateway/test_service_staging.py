"""Sandboxes created while the node still stages the image: the service serves at once, so
the gateway can create sandboxes that wait for the image (Ready False/DependenciesNotReady),
and progress names each step. The image is extracted (--stage-method extract) into a cache of
this module's own, so that staging takes long enough to be seen, as root too."""
import json

import pytest

import exit_codes
from gateway_testing import Service, ready_condition, ready_state

PROGRESS = "openshell.progress."


@pytest.fixture(scope="module")
def service(tmp_path_factory, gateway_cache):
    workdir = tmp_path_factory.mktemp("gw-staging")
    service = Service(workdir, workdir / "cache", 2, ["--stage-method", "extract",
                                                      "--slots", "2"])
    service.start()
    yield service
    service.stop_and_check()


@pytest.fixture(scope="module")
def watch(service):
    # Synced by a sandbox of its own that is left waiting: deleting it would wait for the
    # staging that the tests want to see.
    stream = service.watch(synced=False)
    service.create("sync")
    stream.wait_for(lambda m: "sandbox" in m and m["sandbox"]["sandbox"]["id"] == "sync")
    return stream


def progress_steps(watch, sandbox_id):
    steps = []
    for message in list(watch.messages):
        event = message.get("platform_event")
        if event and event["sandbox_id"] == sandbox_id and event["event"]["reason"] == "Progress":
            metadata = event["event"]["metadata"]
            steps.append((metadata.get(PROGRESS + "complete_step"),
                          metadata.get(PROGRESS + "active_step")))
    return steps


def test_a_sandbox_created_while_staging_waits_for_the_image(service, watch):
    for sandbox_id in ("early", "early-stop", "early-delete"):
        service.create(sandbox_id)
    waiting = service.get("early")
    assert ready_state(waiting) == ("False", "DependenciesNotReady")
    assert "stag" in ready_condition(waiting)["message"]

    # Stop and Delete of a waiting sandbox return once done (after the staging).
    assert service.call("stop", "early-stop") == {}
    assert ready_state(service.get("early-stop")) == ("False", "ContainerStopped")
    assert service.call("delete", "early-delete") == {"deleted": True}
    assert service.error("get", "early-delete")[0] == "NOT_FOUND"

    ready = watch.wait_for_state("early", "True", "BackendReady")

    states = [ready_state(m["sandbox"]["sandbox"]) for m in watch.messages[:ready + 1]
              if "sandbox" in m and m["sandbox"]["sandbox"]["id"] == "early"]
    assert states[0] == ("False", "DependenciesNotReady")
    assert ("False", "Starting") in states
    assert states.index(("False", "Starting")) > 0
    watch.wait_for(lambda m: m.get("platform_event", {}).get("event", {}).get(
        "metadata", {}).get(PROGRESS + "complete_step") == "starting_sandbox")
    assert progress_steps(watch, "early") == [
        ("requesting_sandbox", "pulling_image"),
        ("pulling_image", "starting_sandbox"),
        ("starting_sandbox", None),
    ]


def test_a_sandbox_created_once_staged_skips_the_image_step(service, watch):
    service.create("late")
    service.wait_ready("late")
    watch.wait_for(lambda m: m.get("platform_event", {}).get("sandbox_id") == "late"
                   and m["platform_event"]["event"]["metadata"].get(PROGRESS + "complete_step")
                   == "starting_sandbox")
    assert progress_steps(watch, "late") == [("requesting_sandbox", "starting_sandbox"),
                                             ("starting_sandbox", None)]
    assert service.call("delete", "late") == {"deleted": True}
    for sandbox_id in ("early", "early-stop", "sync"):
        assert service.call("delete", sandbox_id) == {"deleted": True}


def test_a_stop_while_staging_ends_every_waiting_sandbox_in_the_event_file(tmp_path_factory):
    """The allocation ends while the image is still extracted (the scheduler's SIGTERM reaches
    the extraction too): a cancellation, not a node failure, and each sandbox that waited for
    the image gets its one terminal event."""
    workdir = tmp_path_factory.mktemp("gw-staging-stop")
    service = Service(workdir, workdir / "cache", 2, ["--stage-method", "extract"])
    service.start()
    for sandbox_id in ("w-1", "w-2"):
        service.create(sandbox_id)
    assert ready_state(service.get("w-1")) == ("False", "DependenciesNotReady")
    service.terminate()
    events = [json.loads(line)
              for line in (service.output_dir / "events.jsonl").read_text().splitlines()]
    terminal = [e for e in events if e["event"] in ("exited", "failed")]
    assert sorted(e["index"] for e in terminal) == [0, 1], terminal
    assert all(e.get("reason") == "cancelled" for e in terminal), terminal
    assert not [e for e in events if e["event"] == "node_failed"], events
    assert "cannot run sandboxes" not in service.stderr_path.read_text()
    service.stop_and_check()
