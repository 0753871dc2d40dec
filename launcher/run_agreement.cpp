#include "launcher/run_agreement.hpp"

#include <unistd.h>

#include <cstdio>
#include <random>

#include "launcher/mpi_session.hpp"
#include "proxy/policy.hpp"
#include "rootfs-cache/image_import.hpp"
#include "rootfs-cache/staging.hpp"

namespace oshpc::launcher {

void check_inputs_and_name_run(const Options& options, std::string job_tag, RunAgreement& run) {
  rootfs_cache::inspect_image(options.image);
  rootfs_cache::load_image_metadata(options.image);
  if (!options.policy_path.empty()) proxy::load_policy_file(options.policy_path);
  run.job_tag = std::move(job_tag);
  std::random_device random;
  char unique[32];
  std::snprintf(unique, sizeof unique, ".%d.%08x", static_cast<int>(::getpid()),
                static_cast<unsigned>(random()));
  run.run_id = run.job_tag + unique;
  run.output_dir = options.output_dir.empty() ? "oshpc-" + run.job_tag : options.output_dir;
}

void share_run_agreement(int status, RunAgreement& run) {
  MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
  run.status = static_cast<ExitCode>(status);
  if (status != 0) return;
  run.job_tag = broadcast_string(run.job_tag, 0, MPI_COMM_WORLD);
  run.run_id = broadcast_string(run.run_id, 0, MPI_COMM_WORLD);
  run.output_dir = broadcast_string(run.output_dir, 0, MPI_COMM_WORLD);
}

}  // namespace oshpc::launcher
