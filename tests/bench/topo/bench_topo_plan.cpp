// Plans a large job over identical nodes and reports how long it takes: the node is planned
// once, then every sandbox is assigned by arithmetic. Usage:
//   bench_topo_plan [--xml FILE] [--nodes N] [--sandboxes N] [--gpus N] [--json]
// --json also formats every sandbox's --plan line, the cost `oshpc-fanout --plan` pays.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

#include "common/clock.hpp"
#include "topo/job_plan.hpp"
#include "topo/placement.hpp"

namespace {

using namespace oshpc;

struct Options {
  std::string xml = std::string(OSHPC_TOPOLOGY_DIR) + "/nvidiaDGX2.xml";
  std::int32_t nodes = 20000;
  std::int64_t sandboxes = 1000000;
  int gpus = 1;
  bool is_json = false;
};

Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--json") {
      options.is_json = true;
    } else if (arg == "--xml" && has_value) {
      options.xml = argv[++i];
    } else if (arg == "--nodes" && has_value) {
      options.nodes = static_cast<std::int32_t>(std::atol(argv[++i]));
    } else if (arg == "--sandboxes" && has_value) {
      options.sandboxes = std::atoll(argv[++i]);
    } else if (arg == "--gpus" && has_value) {
      options.gpus = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: bench_topo_plan [--xml FILE] [--nodes N] [--sandboxes N] "
                   "[--gpus N] [--json]\n");
      std::exit(2);
    }
  }
  return options;
}

double seconds_since(std::int64_t start_us) {
  return static_cast<double>(clock::mono_us() - start_us) / 1e6;
}

// Visits every sandbox's slot; the checksum keeps the compiler from skipping the loop.
std::uint64_t assign_all(const topo::NodePlan& node, const topo::JobPlan& job) {
  std::uint64_t checksum = 0;
  for (std::int64_t i = 0; i < job.sandboxes(); ++i) {
    const topo::Assignment at = job.at(i);
    const topo::Slot& slot = node.slots[static_cast<std::size_t>(at.slot)];
    checksum += static_cast<std::uint64_t>(at.node) * 31 +
                static_cast<std::uint64_t>(slot.cpus.front()) +
                static_cast<std::uint64_t>(slot.gpus.empty() ? 0 : slot.gpus.front().index) +
                static_cast<std::uint64_t>(at.wave);
  }
  return checksum;
}

std::size_t format_all(const topo::NodePlan& node, const topo::JobPlan& job) {
  std::size_t bytes = 0;
  std::string line;
  for (std::int64_t i = 0; i < job.sandboxes(); ++i) {
    const topo::Assignment at = job.at(i);
    line.clear();
    topo::append_plan_line_json(line, i, "node", at.node,
                                node.slots[static_cast<std::size_t>(at.slot)]);
    bytes += line.size();
  }
  return bytes;
}

void report(const char* what, std::int64_t sandboxes, double seconds) {
  std::printf("%s: %.4f s, %.3g sandboxes/s\n", what, seconds,
              static_cast<double>(sandboxes) / seconds);
}

}  // namespace

int main(int argc, char** argv) try {
  const Options options = parse_options(argc, argv);

  const std::int64_t start = clock::mono_us();
  const topo::Topology topology = topo::Topology::load_xml(options.xml);
  const topo::NodePlan node = topo::plan_node(topology, {.gpus_per_sandbox = options.gpus});
  const topo::JobPlan job = topo::plan_job(node, options.nodes, options.sandboxes);
  const std::uint64_t checksum = assign_all(node, job);
  const double plan_seconds = seconds_since(start);

  std::printf("topology %s: %s\n", options.xml.c_str(), node.summary(job.count_on_node(0)).c_str());
  std::printf("%lld sandboxes over %d nodes, %zu slots per node, %lld waves (checksum %llu)\n",
              static_cast<long long>(job.sandboxes()), job.nodes(), node.slots.size(),
              static_cast<long long>(job.waves()), static_cast<unsigned long long>(checksum));
  report("plan (load XML, plan node, assign every sandbox)", job.sandboxes(), plan_seconds);

  if (options.is_json) {
    const std::int64_t json_start = clock::mono_us();
    const std::size_t bytes = format_all(node, job);
    report("format every --plan JSON line", job.sandboxes(), seconds_since(json_start));
    std::printf("%zu bytes of JSON\n", bytes);
  }
  return 0;
} catch (const std::exception& error) {
  std::fprintf(stderr, "bench_topo_plan: error: %s\n", error.what());
  return 1;
}
