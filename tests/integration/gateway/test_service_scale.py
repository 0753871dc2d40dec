"""A service over four ranks: a hundred sandboxes created through the API spread over every
rank and run; one killed from the host reports that it exited; SIGTERM to mpirun stops them
all, ends the watch stream and leaves nothing behind. The tests run in order on one service."""
import collections
import os
import re
import signal
import time

import pytest

from gateway_testing import outer_bwrap_pid, ready_condition, ready_state, wait_for

RANKS = 4
SLOTS = 25
COUNT = 100
VICTIM = "m-042"


@pytest.fixture(scope="module")
def service(start_service):
    # A hundred sandboxes on one small machine take longer to stop than mpirun's default 1 s
    # between its SIGTERM and SIGKILL (docs/gateway.md "Stopping").
    return start_service(RANKS, ["--slots", str(SLOTS)], stop_grace=3)


@pytest.fixture(scope="module")
def watch(service):
    return service.watch()


def rank_of(sandbox):
    return int(re.search(r"/rank-(\d+)/", sandbox["status"]["instance_id"]).group(1))


def test_a_hundred_sandboxes_land_on_every_rank_and_become_ready(service, watch):
    for i in range(COUNT):
        service.create(f"m-{i:03d}")

    def all_ready():
        return all(ready_state(s) == ("True", "BackendReady") for s in service.list())
    assert wait_for(all_ready, timeout=120, interval=0.5), collections.Counter(
        ready_state(s) for s in service.list())

    sandboxes = service.list()
    assert sorted(s["id"] for s in sandboxes) == [f"m-{i:03d}" for i in range(COUNT)]
    assert collections.Counter(rank_of(s) for s in sandboxes) == {r: SLOTS for r in range(RANKS)}
    assert len({s["status"]["instance_id"] for s in sandboxes}) == COUNT
    assert len({s["status"]["sandbox_name"] for s in sandboxes}) == COUNT
    # The stream saw each of them become Ready (the stream's own sync sandbox may have too).
    ready_seen = {m["sandbox"]["sandbox"]["id"] for m in list(watch.messages)
                  if "sandbox" in m and m["sandbox"]["sandbox"]["id"].startswith("m-")
                  and ready_state(m["sandbox"]["sandbox"]) == ("True", "BackendReady")}
    assert len(ready_seen) == COUNT


def test_a_sandbox_killed_from_the_host_is_container_exited(service, watch):
    victim = service.get(VICTIM)
    assert ready_state(victim) == ("True", "BackendReady")
    pid = outer_bwrap_pid(victim["status"]["sandbox_name"])
    assert pid, "cannot find the sandbox's bubblewrap"
    start = len(watch.messages)
    os.kill(pid, signal.SIGKILL)

    watch.wait_for_state(VICTIM, "False", "ContainerExited", timeout=30, start=start)
    ended = service.get(VICTIM)
    assert ready_state(ended) == ("False", "ContainerExited")
    assert ready_condition(ended)["message"] == "the main process was killed by signal 9"
    # It stays ended (the driver never restarts a main process), the others run on.
    time.sleep(1)
    states = collections.Counter(ready_state(s) for s in service.list())
    assert states == {("True", "BackendReady"): COUNT - 1, ("False", "ContainerExited"): 1}


def test_sigterm_stops_everything_ends_the_watch_and_leaves_nothing(service, watch):
    running = [s["id"] for s in service.list() if ready_state(s)[0] == "True"]
    start = len(watch.messages)
    service.terminate()

    assert watch.wait_until_ended(timeout=30), "the watch stream did not end"
    assert watch.proc.returncode == 1
    assert "UNAVAILABLE" in watch.stderr
    # Before it ended, the stream said that each running sandbox stopped.
    stopped = {m["sandbox"]["sandbox"]["id"] for m in watch.messages[start:]
               if "sandbox" in m
               and ready_state(m["sandbox"]["sandbox"]) == ("False", "ContainerStopped")}
    assert stopped == set(running)
    service.stop_and_check()


def test_a_clean_shutdown_warns_about_nothing(service):
    """Each rank removes its workspaces and the node leader the job directory; none of them
    should find the other's removal in its way."""
    service.stop_and_check()
    warnings = [line for line in service.stderr_path.read_text().splitlines()
                if ": warning: " in line]
    assert warnings == []
