#include "launcher/run_agreement.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "common/log.hpp"
#include "common/sys.hpp"
#include "launcher/mpi_session.hpp"
#include "proxy/policy.hpp"
#include "rootfs-cache/image_import.hpp"
#include "rootfs-cache/staging.hpp"

namespace oshpc::launcher {

namespace {

std::string name_run(const Options& options, RunKind kind, std::random_device& random) {
  if (!options.job_name.empty()) return options.job_name;
  char suffix[16];
  std::snprintf(suffix, sizeof suffix, "%06x", random() & 0xffffff);
  if (kind == RunKind::kService) return std::string("svc-") + suffix;
  // With Slurm the job id makes the tag recognisable; the suffix keeps two steps apart.
  if (const char* job = std::getenv("SLURM_JOB_ID"); job && *job) {
    std::string tag = std::string("slurm") + job;
    if (const char* task = std::getenv("SLURM_ARRAY_TASK_ID"); task && *task) {
      tag += std::string("_") + task;
    }
    return tag + "-" + suffix;
  }
  return std::string("job-") + suffix;
}

}  // namespace

void check_inputs_and_name_run(const Options& options, RunKind kind, RunAgreement& run) {
  rootfs_cache::inspect_image(options.image);
  rootfs_cache::load_image_metadata(options.image);
  if (!options.policy_path.empty()) {
    for (const auto& warning : proxy::load_policy_file(options.policy_path).warnings) {
      log::get("launcher")->warn("{}", warning);
    }
  }
  std::random_device random;
  run.job_tag = name_run(options, kind, random);
  char unique[32];
  std::snprintf(unique, sizeof unique, ".%d.%08x", static_cast<int>(::getpid()),
                static_cast<unsigned>(random()));
  run.run_id = run.job_tag + unique;
  run.output_dir = options.output_dir.empty() ? "oshpc-" + run.job_tag : options.output_dir;
}

void create_run_outputs(const Options& options, const RunAgreement& run,
                        const std::function<void(const std::string& events_path)>& open_events) {
  std::string events_path =
      options.events_path.empty() ? run.output_dir + "/events.jsonl" : options.events_path;
  struct stat st {};
  if (::stat(events_path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    // Refusing would break a requeued Slurm job given --job-name "x-$SLURM_JOB_ID" (as in
    // the examples): it runs again under the same job id.
    log::get("launcher")
        ->warn(
            "{} holds the events of an earlier run, which this one replaces (as it does the "
            "sandboxes' outputs in {}): give each run its own --job-name or --output-dir to keep "
            "them",
            events_path, run.output_dir);
  }
  std::vector<std::string> created;
  try {
    sys::make_directories(run.output_dir, 0755, &created);
    open_events(events_path);
  } catch (...) {
    for (auto dir = created.rbegin(); dir != created.rend(); ++dir) ::rmdir(dir->c_str());
    throw;
  }
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
