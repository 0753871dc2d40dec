// What every rank must know before a run (a batch job or a service) starts anything: whether
// rank 0 found its inputs usable, and the names rank 0 gave the run.
#pragma once

#include <functional>
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

enum class RunKind { kBatchJob, kService };

// Rank 0: checks what every mode reads before it starts (the image, its metadata, the
// policy), throwing with the reason, and names the run: --job-name, else a recognisable name
// with a random part (slurm<JOB>[_<TASK>]-XXXXXX for a batch job under Slurm, job-XXXXXX or
// svc-XXXXXX otherwise). Creates nothing.
void check_inputs_and_name_run(const Options& options, RunKind kind, RunAgreement& run);

// Rank 0, once the inputs are checked: creates the run's output directory, then calls
// open_events with the event file's path (--events, else events.jsonl in the output
// directory). When either step throws, the directories this call created are removed again
// before the error goes on: a run refused for bad input leaves nothing behind.
void create_run_outputs(const Options& options, const RunAgreement& run,
                        const std::function<void(const std::string& events_path)>& open_events);

// Collective: every rank learns rank 0's status (0 or an ExitCode) and, when it is 0, the
// run's names.
void share_run_agreement(int status, RunAgreement& run);

}  // namespace oshpc::launcher
