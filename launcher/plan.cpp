#include "launcher/plan.hpp"

#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "common/exit_codes.hpp"
#include "common/log.hpp"
#include "launcher/placement.hpp"
#include "node-agent/seccomp/seccomp_filter.hpp"
#include "proxy/policy.hpp"
#include "rootfs-cache/staging.hpp"

namespace oshpc::launcher {
namespace {

// Rank 0's view of the job, or the exit code for an unusable image.
int describe_job(const Options& options, const MpiSession& mpi, nlohmann::json& job) {
  try {
    auto image = rootfs_cache::inspect_image(options.image);
    if (!options.policy_path.empty()) proxy::load_policy_file(options.policy_path);
    std::string why;
    bool fuse = rootfs_cache::fuse_is_usable(&why);
    job = {{"plan", "job"},
           {"count", options.count},
           {"index_offset", options.index_offset},
           {"ranks", mpi.size()},
           {"image", image.path},
           {"image_kind", image.is_directory ? "directory" : "squashfs"},
           {"stage_method_here", image.is_directory ? "directory"
                                 : fuse             ? "mount"
                                                    : "extract"},
           {"cpus_per_sandbox", options.cpus_per_sandbox},
           {"gpus_per_sandbox", options.gpus_per_sandbox},
           {"seccomp", seccomp::profile_name(options.seccomp)},
           {"egress", options.policy_path.empty() ? "none" : options.policy_path},
           {"timeout_seconds", options.timeout_seconds},
           {"command", options.command}};
    if (!options.topology_xml.empty()) job["topology_xml"] = options.topology_xml;
    return 0;
  } catch (const std::exception& e) {
    log::get("launcher")->error("{}", e.what());
    return to_int(ExitCode::kBadInput);
  }
}

// Gathers one string from every rank at rank 0.
std::vector<std::string> gather_strings(const std::string& mine, const MpiSession& mpi) {
  int length = static_cast<int>(mine.size());
  std::vector<int> lengths(static_cast<std::size_t>(mpi.size()));
  MPI_Gather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, 0, MPI_COMM_WORLD);
  std::vector<int> offsets(lengths.size(), 0);
  int total = 0;
  for (std::size_t r = 0; r < lengths.size(); ++r) {
    offsets[r] = total;
    total += lengths[r];
  }
  std::string all(static_cast<std::size_t>(mpi.rank() == 0 ? total : 0), '\0');
  MPI_Gatherv(mine.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR,
              0, MPI_COMM_WORLD);
  std::vector<std::string> result;
  if (mpi.rank() != 0) return result;
  for (std::size_t r = 0; r < lengths.size(); ++r) {
    result.push_back(
        all.substr(static_cast<std::size_t>(offsets[r]), static_cast<std::size_t>(lengths[r])));
  }
  return result;
}

// How many of `count` sandboxes rank `rank` takes when sandboxes go round-robin over all
// ranks' slots: the same prediction on every rank.
std::int64_t sandboxes_of_rank(const std::vector<int>& slots_per_rank, int rank,
                               std::int64_t count) {
  std::int64_t total = 0;
  for (int slots : slots_per_rank) total += slots;
  std::int64_t before = 0;
  for (int r = 0; r < rank; ++r) before += slots_per_rank[static_cast<std::size_t>(r)];
  std::int64_t mine = slots_per_rank[static_cast<std::size_t>(rank)];
  std::int64_t full_waves = count / total, rest = count % total;
  return full_waves * mine + std::clamp<std::int64_t>(rest - before, 0, mine);
}

// Each rank's lines come wave by wave, slots_per_rank[r] lines a wave; interleaving them wave
// by wave restores index order without parsing a line.
void print_in_index_order(const std::vector<std::string>& per_rank,
                          const std::vector<int>& slots_per_rank) {
  std::vector<std::size_t> cursor(per_rank.size(), 0);
  bool more = true;
  while (more) {
    more = false;
    for (std::size_t r = 0; r < per_rank.size(); ++r) {
      for (int line = 0; line < slots_per_rank[r] && cursor[r] < per_rank[r].size(); ++line) {
        std::size_t end = per_rank[r].find('\n', cursor[r]);
        std::fwrite(per_rank[r].data() + cursor[r], 1, end + 1 - cursor[r], stdout);
        cursor[r] = end + 1;
        more = true;
      }
    }
  }
}

}  // namespace

int print_plan(const Options& options, const MpiSession& mpi) {
  std::optional<RankPlacement> placement = place_rank(options, mpi);
  if (!placement) return to_int(ExitCode::kUsage);

  nlohmann::json job;
  int status = mpi.rank() == 0 ? describe_job(options, mpi, job) : 0;
  MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (status != 0) return status;

  int my_slots = static_cast<int>(placement->slots.size());
  std::vector<int> slots_per_rank(static_cast<std::size_t>(mpi.size()));
  MPI_Allgather(&my_slots, 1, MPI_INT, slots_per_rank.data(), 1, MPI_INT, MPI_COMM_WORLD);
  std::int64_t mine = sandboxes_of_rank(slots_per_rank, mpi.rank(), options.count);

  // Each rank writes its own sandbox lines (the slot objects stay where they are); rank 0
  // prints them in index order. Sandbox i goes to global slot i % total.
  std::int64_t total_slots = 0, first_slot = 0;
  for (int r = 0; r < mpi.size(); ++r) {
    if (r < mpi.rank()) first_slot += slots_per_rank[static_cast<std::size_t>(r)];
    total_slots += slots_per_rank[static_cast<std::size_t>(r)];
  }
  std::string lines;
  for (std::int64_t wave = 0; wave * total_slots < options.count; ++wave) {
    for (int s = 0; s < my_slots; ++s) {
      std::int64_t index = wave * total_slots + first_slot + s;
      if (index >= options.count) break;
      topo::append_plan_line_json(lines, index + options.index_offset, mpi.node_name(), mpi.rank(),
                                  placement->slots[static_cast<std::size_t>(s)]);
      lines += '\n';
    }
  }
  // The node's one-line summary comes from its leader, for all sandboxes of the node.
  std::int64_t on_node = 0;
  MPI_Reduce(&mine, &on_node, 1, MPI_INT64_T, MPI_SUM, 0, mpi.node_comm());
  nlohmann::json summary = {{"plan", "rank"},
                            {"rank", mpi.rank()},
                            {"node", mpi.node_name()},
                            {"slots", my_slots},
                            {"sandboxes", mine}};
  if (mpi.is_node_leader()) summary["node_summary"] = placement->node_plan.summary(on_node);
  std::string tail = summary.dump() + '\n';

  auto all_lines = gather_strings(lines, mpi);
  auto all_tails = gather_strings(tail, mpi);
  if (mpi.rank() != 0) return 0;
  std::printf("%s\n", job.dump().c_str());
  print_in_index_order(all_lines, slots_per_rank);
  for (const auto& rank_tail : all_tails) std::fputs(rank_tail.c_str(), stdout);
  return 0;
}

}  // namespace oshpc::launcher
