// Staging the image on each node: the node leader stages, the node's other ranks use what it
// published. (rootfs-cache/ does the staging itself; this is the MPI side of it.)
#pragma once

#include "launcher/mpi_session.hpp"
#include "launcher/node_setup.hpp"
#include "launcher/options.hpp"

namespace oshpc::launcher {

// Collective over the node communicator (and over MPI_COMM_WORLD where the image is
// distributed). Fills setup.rootfs, or setup.failure with why the node cannot stage; the
// leader also fills setup.staged and setup.staged_event. Never throws.
void stage_on_node(const Options& options, const MpiSession& mpi, NodeSetup& setup);

}  // namespace oshpc::launcher
