// One oshpc-fanout job from start to end, on every rank: agree on the job, stage per node, run
// sandboxes (rank 0 coordinates and aggregates events; every rank runs sandboxes), clean up.
#pragma once

#include "common/exit_codes.hpp"
#include "launcher/mpi_session.hpp"
#include "launcher/options.hpp"
#include "launcher/signals.hpp"

namespace oshpc::launcher {

// Runs the job; returns this rank's exit code (rank 0's is the job's). Never throws: setup
// failures become an exit code and a message on stderr.
ExitCode run_job(const Options& options, MpiSession& mpi, SignalChannel& signals);

}  // namespace oshpc::launcher
