#include <catch2/catch.hpp>

#include <set>
#include <tuple>

#include "topo/job_plan.hpp"
#include "topo_test_support.hpp"

using namespace oshpc::topo;
using namespace oshpc::topo::test;

TEST_CASE("A job plan gives every sandbox a distinct (node, slot, wave) in node blocks") {
  for (auto [nodes, slots, sandboxes] :
       {std::tuple{3, 4, 10}, {1, 1, 5}, {5, 3, 0}, {4, 2, 4}, {7, 5, 100}}) {
    const JobPlan plan(nodes, slots, sandboxes);
    INFO(nodes << " nodes, " << slots << " slots, " << sandboxes << " sandboxes");
    std::set<std::tuple<int, int, std::int64_t>> seen;
    std::int64_t total = 0;
    for (int node = 0; node < nodes; ++node) {
      const std::int64_t first = plan.first_on_node(node);
      const std::int64_t count = plan.count_on_node(node);
      CHECK(first == total);
      CHECK(count >= sandboxes / nodes);
      CHECK(count <= sandboxes / nodes + 1);
      for (std::int64_t i = first; i < first + count; ++i) {
        const Assignment at = plan.at(i);
        CHECK(at.node == node);
        CHECK(at.slot == (i - first) % slots);
        CHECK(at.wave == (i - first) / slots);
        CHECK(at.wave < plan.waves());
        CHECK(seen.insert({at.node, at.slot, at.wave}).second);
      }
      total += count;
    }
    CHECK(total == sandboxes);
  }
}

TEST_CASE("A job plan refuses out-of-range questions and empty shapes") {
  const JobPlan plan(3, 4, 10);
  CHECK(plan.waves() == 1);
  CHECK_THROWS_WITH(plan.at(10), Catch::Contains("index 10") && Catch::Contains("10 sandboxes"));
  CHECK_THROWS_AS(plan.at(-1), PlacementError);
  CHECK_THROWS_WITH(plan.first_on_node(3), Catch::Contains("node 3") && Catch::Contains("3 nodes"));
  CHECK_THROWS_AS(JobPlan(0, 4, 10), PlacementError);
  CHECK_THROWS_AS(JobPlan(2, 0, 10), PlacementError);
  CHECK_THROWS_AS(JobPlan(2, 4, -1), PlacementError);
}

TEST_CASE("A million sandboxes over 20,000 DGX-2 nodes") {
  const Topology topology = load(kDgx2);
  const NodePlan node = plan_node(topology, {.gpus_per_sandbox = 4});
  const JobPlan job = plan_job(node, 20000, 1000000);
  CHECK(job.count_on_node(0) == 50);
  CHECK(job.waves() == 13);  // 50 sandboxes on 4 slots
  const Assignment last = job.at(999999);
  CHECK(last.node == 19999);
  CHECK(last.slot == 49 % 4);
  CHECK(last.wave == 49 / 4);
}
