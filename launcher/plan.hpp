// `--plan`: what the job would do, as JSON Lines on stdout, with nothing created.
#pragma once

#include "launcher/mpi_session.hpp"
#include "launcher/options.hpp"

namespace oshpc::launcher {

// Collective. Rank 0 prints; returns the exit code (kBadInput for an unusable image).
int print_plan(const Options& options, const MpiSession& mpi);

}  // namespace oshpc::launcher
