// The gateway service mode (--serve) from start to end, on every rank: rank 0 serves the
// OpenShell compute-driver API on a UNIX socket and places the gateway's sandboxes on the
// ranks' slots; every rank stages the image, runs its share of the sandboxes and reports what
// happens to them. It runs until a stop signal (the allocation ends), then stops everything.
#pragma once

#include "common/exit_codes.hpp"
#include "launcher/mpi_session.hpp"
#include "launcher/options.hpp"
#include "launcher/signals.hpp"

namespace oshpc::launcher {

// Returns this rank's exit code: 0 after a stop signal, kBadInput when the image, the policy
// or the socket cannot be used, kUsage for an impossible placement. Never throws.
ExitCode run_service(const Options& options, MpiSession& mpi, SignalChannel& signals);

}  // namespace oshpc::launcher
