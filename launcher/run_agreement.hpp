// What every rank must know before a run (a batch job or a service) starts anything: whether
// rank 0 found its inputs usable, and the names rank 0 gave the run.
#pragma once

#include <string>

#include "common/exit_codes.hpp"
#include "launcher/options.hpp"

namespace oshpc::launcher {

struct RunAgreement {
  ExitCode status = ExitCode::kOk;
  std::string job_tag;
  // Unique to this run even when job tags repeat (the same --job-name in every task of an
  // array): names the node-local state, which one run must never share with another.
  std::string run_id;
  std::string output_dir;
};

// Rank 0: checks what every mode reads before it starts (the image, its metadata, the
// policy), throwing with the reason, and names the run after job_tag. Creates nothing.
void check_inputs_and_name_run(const Options& options, std::string job_tag, RunAgreement& run);

// Collective: every rank learns rank 0's status (0 or an ExitCode) and, when it is 0, the
// run's names.
void share_run_agreement(int status, RunAgreement& run);

}  // namespace oshpc::launcher
