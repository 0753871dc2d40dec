"""Without --slots, a rank runs as many sandboxes at once as it has CPUs for
(CPUs / --cpus-per-sandbox); a sandbox keeps its slot until it is deleted."""
import os

import pytest

CPUS = len(os.sched_getaffinity(0))
CPUS_PER_SANDBOX = max(1, CPUS // 2)
EXPECTED_SLOTS = CPUS // CPUS_PER_SANDBOX


@pytest.fixture(scope="module")
def service(start_service):
    return start_service(1, ["--cpus-per-sandbox", str(CPUS_PER_SANDBOX)])


def test_validate_allows_up_to_the_cpus_of_a_sandbox(service):
    assert service.call("validate", "--id", "v", "--cpu-limit", str(CPUS_PER_SANDBOX)) == {}
    over = f"{CPUS_PER_SANDBOX * 1000 + 1}m"
    code, message = service.error("validate", "--id", "v", "--cpu-limit", over)
    assert code == "FAILED_PRECONDITION"
    assert "--cpus-per-sandbox" in message


def test_a_rank_has_a_slot_per_cpus_per_sandbox(service):
    created = []
    for i in range(EXPECTED_SLOTS):
        service.create(f"slot-{i}")
        created.append(f"slot-{i}")
    code, message = service.error("create", "--id", "one-too-many", "--", "true")
    assert code == "FAILED_PRECONDITION"
    assert f"all {EXPECTED_SLOTS} slots" in message
    instance_ids = {service.wait_ready(i)["status"]["instance_id"] for i in created}
    assert {i.rsplit("/", 1)[1] for i in instance_ids} == {
        f"slot-{s}" for s in range(EXPECTED_SLOTS)}

    # Ended, its slot is still its own; deleted, the slot is free.
    service.call("stop", created[0])
    assert service.error("create", "--id", "one-too-many", "--", "true")[0] == \
        "FAILED_PRECONDITION"
    service.call("delete", created[0])
    service.create("one-too-many")
    service.wait_ready("one-too-many")
