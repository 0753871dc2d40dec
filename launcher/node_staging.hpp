// Staging the image on each node: rank 0 identifies the image (SHA-256), the node leaders
// check their caches, rank 0 broadcasts the image to the leaders that lack it, and each node's
// other ranks use what its leader published. (rootfs-cache/ does the staging itself; this is
// the MPI side of it; docs/staging.md describes the whole.)
#pragma once

#include "launcher/mpi_session.hpp"
#include "launcher/node_setup.hpp"
#include "launcher/options.hpp"

namespace oshpc::launcher {

// Collective over MPI_COMM_WORLD: every rank must call it. Fills setup.rootfs, or
// setup.failure with why the node cannot stage; the leader also fills setup.staged and
// setup.staged_event. Never throws.
void stage_on_node(const Options& options, const MpiSession& mpi, NodeSetup& setup);

}  // namespace oshpc::launcher
