#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <map>
#include <set>

#include "topo/cpu_list.hpp"
#include "topo/placement.hpp"
#include "topo_test_support.hpp"

using namespace oshpc::topo;
using namespace oshpc::topo::test;

namespace {

// The rules every plan keeps, checked against hwloc itself rather than against the planner.
void check_locality(const Topology& topology, const NodePlan& plan, const SlotRequest& request) {
  std::set<int> used_cpus;
  std::set<std::string> used_gpus;
  for (std::size_t i = 0; i < plan.slots.size(); ++i) {
    const Slot& slot = plan.slots[i];
    INFO("slot " << i << " cpus " << format_cpu_list(slot.cpus));
    CHECK(slot.id == static_cast<int>(i));
    REQUIRE_FALSE(slot.cpus.empty());
    CHECK(slot.numa == numa_of_pu(topology, slot.cpus.front()));
    if (request.only_package) CHECK(slot.package == *request.only_package);

    for (int cpu : slot.cpus) {
      CHECK(is_allowed_online(topology, cpu));
      CHECK(package_of_pu(topology, cpu) == slot.package);
      CHECK(used_cpus.insert(cpu).second);  // no cpu in two slots
    }
    REQUIRE(slot.gpus.size() == static_cast<std::size_t>(request.gpus_per_sandbox));
    for (const auto& gpu : slot.gpus) {
      CHECK(package_of_pci(topology, gpu.pci) == slot.package);
      CHECK(used_gpus.insert(gpu.pci).second);  // no GPU in two slots
    }
  }
}

// A slot made of whole cores holds every allowed PU of each core it touches, and `cores` of them.
void check_whole_cores(const Topology& topology, const Slot& slot, int cores) {
  std::set<hwloc_obj_t> touched;
  for (int cpu : slot.cpus) touched.insert(core_of_pu(topology, cpu));
  CHECK(touched.size() == static_cast<std::size_t>(cores));
  for (hwloc_obj_t core : touched) {
    for (int cpu : topology.allowed_cpus()) {
      if (core_of_pu(topology, cpu) == core) {
        CHECK(std::find(slot.cpus.begin(), slot.cpus.end(), cpu) != slot.cpus.end());
      }
    }
  }
}

std::vector<int> packages_in_order(const NodePlan& plan) {
  std::vector<int> packages;
  for (const auto& slot : plan.slots) packages.push_back(slot.package);
  return packages;
}

std::string what_of(const Topology& topology, const SlotRequest& request) {
  try {
    plan_node(topology, request);
  } catch (const PlacementError& error) {
    return error.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("DGX-2: GPUs come from the slot's own package, bounded by CPUs and GPUs") {
  const Topology topology = load(kDgx2);
  for (int gpus : {1, 2, 4, 8}) {
    for (auto policy : {PlacementPolicy::kPack, PlacementPolicy::kSpread}) {
      const SlotRequest request{.gpus_per_sandbox = gpus, .policy = policy};
      const NodePlan plan = plan_node(topology, request);
      INFO("gpus per sandbox " << gpus);
      check_locality(topology, plan, request);
      // 2 cores and 8 GPUs per package: the cores bound the slots until 8 GPUs per sandbox.
      CHECK(plan.slots.size() == (gpus == 8 ? 2u : 4u));
    }
  }
}

TEST_CASE("DGX-2: pack fills package 0 first, spread alternates") {
  const Topology topology = load(kDgx2);
  const auto pack = plan_node(topology, {.gpus_per_sandbox = 4});
  CHECK(packages_in_order(pack) == std::vector<int>{0, 0, 1, 1});
  const auto spread =
      plan_node(topology, {.gpus_per_sandbox = 4, .policy = PlacementPolicy::kSpread});
  CHECK(packages_in_order(spread) == std::vector<int>{0, 1, 0, 1});
}

TEST_CASE("DGX-2: impossible requests name the numbers") {
  const Topology topology = load(kDgx2);
  CHECK(what_of(topology, {.gpus_per_sandbox = 9}) ==
        "cannot place 9 GPUs per sandbox: the most GPUs attached to one package is 8 "
        "(package 0: 8, package 1: 8)");
  CHECK_THAT(
      what_of(topology, {.cpus_per_sandbox = 3}),
      Catch::StartsWith("cannot place 3 CPUs per sandbox") &&
          Catch::Contains("most allowed PUs in one package is 2 (package 0: 2, package 1: 2)"));
  CHECK_THAT(what_of(topology, {.cpus_per_sandbox = 0}), Catch::Contains("at least 1"));
  CHECK_THAT(what_of(topology, {.gpus_per_sandbox = -1}), Catch::Contains("0 or more"));
  CHECK_THAT(what_of(topology, {.only_package = 3}),
             Catch::Contains("package 3") && Catch::Contains("packages 0,1"));
}

TEST_CASE("DGX-2: only_package places on that package alone") {
  const Topology topology = load(kDgx2);
  const SlotRequest request{.gpus_per_sandbox = 2, .only_package = 1};
  const auto plan = plan_node(topology, request);
  check_locality(topology, plan, request);
  CHECK(plan.slots.size() == 2);
}

TEST_CASE("Two-socket machine: the single GPU decides the package") {
  const Topology topology = load(kTwoSocketCuda);
  const int gpu_package = package_of_pci(topology, "0000:84:00.0");
  const SlotRequest request{
      .cpus_per_sandbox = 2, .gpus_per_sandbox = 1, .policy = PlacementPolicy::kSpread};
  const auto plan = plan_node(topology, request);
  check_locality(topology, plan, request);
  REQUIRE(plan.slots.size() == 1);
  CHECK(plan.slots[0].package == gpu_package);
  check_whole_cores(topology, plan.slots[0], 2);

  CHECK_THAT(what_of(topology, {.gpus_per_sandbox = 2}),
             Catch::Contains("the most GPUs attached to one package is 1"));
  const int other = gpu_package == 0 ? 1 : 0;
  CHECK_THAT(what_of(topology, {.gpus_per_sandbox = 1, .only_package = other}),
             Catch::Contains("the most GPUs attached to one package is 0"));
}

TEST_CASE("Two-socket machine without GPUs: whole cores, pack and spread use the same slots") {
  const Topology topology = load(kTwoSocketCuda);
  const SlotRequest pack_request{.cpus_per_sandbox = 3};
  const auto pack = plan_node(topology, pack_request);
  check_locality(topology, pack, pack_request);
  REQUIRE(pack.slots.size() == 4);  // 8 cores per package, 2 slots of 3 cores each
  for (const auto& slot : pack.slots) check_whole_cores(topology, slot, 3);
  CHECK(packages_in_order(pack) == std::vector<int>{0, 0, 1, 1});

  const auto spread =
      plan_node(topology, {.cpus_per_sandbox = 3, .policy = PlacementPolicy::kSpread});
  CHECK(packages_in_order(spread) == std::vector<int>{0, 1, 0, 1});
  std::set<std::vector<int>> pack_cpus, spread_cpus;
  for (const auto& slot : pack.slots) pack_cpus.insert(slot.cpus);
  for (const auto& slot : spread.slots) spread_cpus.insert(slot.cpus);
  CHECK(pack_cpus == spread_cpus);
}

TEST_CASE("24-NUMA machine: every core a slot, memory on the slot's NUMA node") {
  const Topology topology = load(kNuma24);
  const SlotRequest request{.policy = PlacementPolicy::kSpread};
  const auto plan = plan_node(topology, request);
  check_locality(topology, plan, request);
  REQUIRE(plan.slots.size() == 192);
  for (const auto& slot : plan.slots) check_whole_cores(topology, slot, 1);

  std::set<int> first_round;
  for (std::size_t i = 0; i < 24; ++i) first_round.insert(plan.slots[i].package);
  CHECK(first_round.size() == 24);

  const auto pack = plan_node(topology, {});
  for (std::size_t i = 0; i < 8; ++i) CHECK(pack.slots[i].package == pack.slots[0].package);
  CHECK(pack.slots[8].package != pack.slots[0].package);
}

TEST_CASE("24-NUMA machine: GPU requests name what was searched") {
  const Topology topology = load(kNuma24);
  CHECK_THAT(what_of(topology, {.gpus_per_sandbox = 1}),
             Catch::StartsWith("cannot place 1 GPU per sandbox: no NVIDIA GPU found in") &&
                 Catch::Contains("NVML, CUDA and OpenCL") && Catch::Contains("I/O discovery"));
}

TEST_CASE("24-NUMA machine: memory per sandbox bounds slots per NUMA node") {
  const Topology topology = load(kNuma24);
  const std::int64_t node_memory = topology.numa_memory(0);
  const SlotRequest request{.mem_per_sandbox = node_memory / 3};
  const auto plan = plan_node(topology, request);
  check_locality(topology, plan, request);
  std::map<int, int> per_numa;
  for (const auto& slot : plan.slots) ++per_numa[slot.numa];
  for (const auto& [numa, count] : per_numa) {
    CHECK(count * request.mem_per_sandbox <= topology.numa_memory(numa));
    CHECK(count == 3);
  }
  CHECK(plan.packages[0].bound_by == "memory");

  CHECK_THAT(what_of(topology, {.mem_per_sandbox = std::int64_t{1} << 50}),
             Catch::Contains("the largest NUMA node with allowed PUs holds"));
}

TEST_CASE("Offline CPUs are never placed; too few cores falls back to PUs") {
  const Topology topology = load(kOfflines);
  for (int cpus : {1, 2, 3}) {
    const SlotRequest request{.cpus_per_sandbox = cpus};
    const auto plan = plan_node(topology, request);
    INFO("cpus per sandbox " << cpus);
    check_locality(topology, plan, request);
  }
  CHECK(plan_node(topology, {.cpus_per_sandbox = 1}).slots.size() == 6);  // one per core
  // Package 0 has 2 cores (PUs 0 and 4,12); package 3 has 2 cores of one PU each.
  const auto two = plan_node(topology, {.cpus_per_sandbox = 2});
  REQUIRE(two.slots.size() == 2);
  CHECK(format_cpu_list(two.slots[0].cpus) == "0,4,12");
  CHECK(format_cpu_list(two.slots[1].cpus) == "3,15");
  // 3 cores are more than any package has: package 0 gives its 3 PUs instead.
  const auto three = plan_node(topology, {.cpus_per_sandbox = 3});
  REQUIRE(three.slots.size() == 1);
  CHECK(format_cpu_list(three.slots[0].cpus) == "0,4,12");
  CHECK(three.packages[0].bound_by == "PUs");
}

TEST_CASE("A restricted topology places nothing outside the restriction") {
  Topology topology = load(kNuma24);
  const auto subset = parse_cpu_list("8-15,200-207,300");
  topology.restrict_to(subset);
  const SlotRequest request{.cpus_per_sandbox = 2};
  const auto plan = plan_node(topology, request);
  check_locality(topology, plan, request);
  for (const auto& slot : plan.slots) {
    for (int cpu : slot.cpus) {
      CHECK(std::find(subset.begin(), subset.end(), cpu) != subset.end());
    }
  }
  // 8-15 and 200-207 are the two threads of package 1's 8 cores: 4 slots of 2 whole cores.
  // 300 is one PU of a core on another package, too few for a slot.
  REQUIRE(plan.slots.size() == 4);
  for (const auto& slot : plan.slots) check_whole_cores(topology, slot, 2);
}

TEST_CASE("The summary says slots used and left per package") {
  const Topology topology = load(kDgx2);
  const auto plan = plan_node(topology, {.gpus_per_sandbox = 4});
  CHECK(plan.summary(3) ==
        "4 slots for 3 sandboxes: package 0: 2 used, 0 left (bound by cores); "
        "package 1: 1 used, 1 left (bound by cores)");
  CHECK_THAT(plan.summary(9), Catch::StartsWith("4 slots for 9 sandboxes in 3 waves:"));
}

TEST_CASE("A plan line is one JSON object with the slot's placement") {
  const Topology topology = load(kDgx2);
  const auto plan = plan_node(topology, {.gpus_per_sandbox = 2});
  const Slot& slot = plan.slots[1];
  const std::string line = plan_line_json(7, "node\"1", 3, slot);
  CHECK(line.find('\n') == std::string::npos);
  const auto json = nlohmann::json::parse(line);
  CHECK(json["index"] == 7);
  CHECK(json["node"] == "node\"1");
  CHECK(json["rank"] == 3);
  CHECK(json["package"] == slot.package);
  CHECK(json["numa"] == slot.numa);
  CHECK(parse_cpu_list(json["cpus"].get<std::string>()) == slot.cpus);
  REQUIRE(json["gpus"].size() == 2);
  CHECK(json["gpus"][1]["index"] == slot.gpus[1].index);
  CHECK(json["gpus"][1]["uuid"] == slot.gpus[1].uuid);
  CHECK(json["gpus"][1]["pci"] == slot.gpus[1].pci);
}
