#include "launcher/plan.hpp"

#include <cstdio>

#include <nlohmann/json.hpp>

#include "common/exit_codes.hpp"
#include "common/log.hpp"
#include "launcher/node_setup.hpp"
#include "rootfs-cache/staging.hpp"

namespace oshpc::launcher {
namespace {

std::string cpu_list(const std::vector<int>& cpus) {
  std::string out;
  for (int cpu : cpus) out += (out.empty() ? "" : ",") + std::to_string(cpu);
  return out;
}

// This rank's slots as one JSON object (sent to rank 0 as text).
std::string rank_line(const Options& options, const MpiSession& mpi) {
  auto slots = plan_slots(allowed_cpus(), mpi.node_rank(), mpi.node_size(),
                          options.cpus_per_sandbox, options.slots_per_rank);
  nlohmann::json line = {{"plan", "rank"}, {"rank", mpi.rank()}, {"node", mpi.node_name()},
                         {"slots", slots.size()}};
  for (const auto& slot : slots) line["slot_cpus"].push_back(cpu_list(slot));
  return line.dump();
}

}  // namespace

int print_plan(const Options& options, const MpiSession& mpi) {
  int status = 0;
  nlohmann::json job;
  if (mpi.rank() == 0) {
    try {
      auto image = rootfs_cache::inspect_image(options.image);
      std::string why;
      bool fuse = rootfs_cache::fuse_is_usable(&why);
      job = {{"plan", "job"},
             {"count", options.count},
             {"ranks", mpi.size()},
             {"image", image.path},
             {"image_kind", image.is_directory ? "directory" : "squashfs"},
             {"stage_method_here", image.is_directory ? "directory" : fuse ? "mount" : "extract"},
             {"cpus_per_sandbox", options.cpus_per_sandbox},
             {"timeout_seconds", options.timeout_seconds},
             {"command", options.command}};
    } catch (const std::exception& e) {
      log::get("launcher")->error("{}", e.what());
      status = to_int(ExitCode::kBadInput);
    }
  }
  MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (status != 0) return status;

  std::string mine = rank_line(options, mpi);
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
  if (mpi.rank() != 0) return 0;

  std::printf("%s\n", job.dump().c_str());
  for (std::size_t r = 0; r < lengths.size(); ++r) {
    std::printf("%s\n", all.substr(static_cast<std::size_t>(offsets[r]),
                                   static_cast<std::size_t>(lengths[r])).c_str());
  }
  return 0;
}

}  // namespace oshpc::launcher
