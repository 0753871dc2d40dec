#include <catch2/catch.hpp>

#include "launcher/node_setup.hpp"

using oshpc::launcher::plan_slots;
using Slots = std::vector<std::vector<int>>;

TEST_CASE("one rank gets one slot per cpus-per-sandbox CPUs") {
  CHECK(plan_slots({0, 1, 2, 3}, 0, 1, 1, std::nullopt) == Slots{{0}, {1}, {2}, {3}});
  CHECK(plan_slots({0, 1, 2, 3, 4}, 0, 1, 2, std::nullopt) == Slots{{0, 1}, {2, 3}});
}

TEST_CASE("ranks sharing a node divide its CPUs") {
  std::vector<int> cpus = {0, 1, 2, 3, 4, 5, 6};
  CHECK(plan_slots(cpus, 0, 2, 1, std::nullopt) == Slots{{0}, {1}, {2}, {3}});
  CHECK(plan_slots(cpus, 1, 2, 1, std::nullopt) == Slots{{4}, {5}, {6}});
}

TEST_CASE("more ranks than CPUs share CPUs, one slot each") {
  CHECK(plan_slots({0, 1}, 3, 4, 1, std::nullopt) == Slots{{1}});
}

TEST_CASE("fewer CPUs than asked still give one slot with what there is") {
  CHECK(plan_slots({0, 1}, 0, 1, 4, std::nullopt) == Slots{{0, 1}});
}

TEST_CASE("--slots overrides the count and reuses CPUs round-robin") {
  CHECK(plan_slots({0, 1}, 0, 1, 1, 5) == Slots{{0}, {1}, {0}, {1}, {0}});
}
