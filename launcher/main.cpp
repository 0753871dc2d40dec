// oshpc-fanout: run many sandboxes over the nodes of an allocation.
// Parse, then plan, then execute: options are checked on every rank before MPI does anything
// that could leave a peer waiting.
#include <cstdio>

#include "common/exit_codes.hpp"
#include "common/log.hpp"
#include "launcher/host_check.hpp"
#include "launcher/job.hpp"
#include "launcher/options.hpp"
#include "launcher/plan.hpp"
#include "launcher/service_job.hpp"

using oshpc::ExitCode;
using oshpc::to_int;
namespace launcher = oshpc::launcher;

namespace {

bool is_rank_zero_before_mpi() {
  // Open MPI and Slurm tell a process its rank before MPI_Init; use it to print usage errors
  // once, not once per rank.
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID", "PMI_RANK"}) {
    if (const char* value = std::getenv(name)) return std::string(value) == "0";
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  oshpc::log::configure({"oshpc-fanout", -1, 0});
  launcher::Options options;
  try {
    options = launcher::parse_options(argc, argv);
  } catch (const launcher::UsageError& e) {
    if (is_rank_zero_before_mpi()) {
      std::fprintf(stderr, "oshpc-fanout: error: %s\n(see oshpc-fanout --help)\n", e.what());
    }
    return to_int(ExitCode::kUsage);
  }

  switch (options.action) {
    case launcher::Action::kHelp:
      std::fputs(launcher::help_text().c_str(), stdout);
      return 0;
    case launcher::Action::kVersion:
      std::printf("oshpc-fanout %s\n", OSHPC_VERSION);
      return 0;
    case launcher::Action::kCheck:
      return launcher::print_host_check(launcher::probe_host());
    case launcher::Action::kPlan:
    case launcher::Action::kRun:
    case launcher::Action::kServe:
      break;
  }

  try {
    // Before MPI starts threads, so that they inherit the blocked signal mask.
    launcher::SignalChannel signals;
    launcher::MpiSession mpi(&argc, &argv);
    oshpc::log::configure({"oshpc-fanout", mpi.rank(), options.verbosity});
    if (options.action == launcher::Action::kPlan) return launcher::print_plan(options, mpi);
    if (options.action == launcher::Action::kServe) {
      return to_int(launcher::run_service(options, mpi, signals));
    }
    return to_int(launcher::run_job(options, mpi, signals));
  } catch (const std::exception& e) {
    oshpc::log::get("launcher")->error("{}", e.what());
    return to_int(ExitCode::kInfrastructure);
  }
}
