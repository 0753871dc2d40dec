// Messages between ranks. Work flows from rank 0 in grants of index ranges; events flow to
// rank 0 in batches. Every message is small except event batches.
#pragma once

#include <mpi.h>

#include <cstdint>

namespace oshpc::launcher {

enum MessageTag : int {
  kTagWorkRequest = 101,  // rank -> 0: std::int64_t sandboxes wanted
  kTagWorkGrant = 102,    // 0 -> rank: WorkGrant; count 0 means no more work will come
  kTagEvents = 103,       // rank -> 0: an encoded event batch (launcher/event_codec.hpp)
  kTagRankDone = 104,     // rank -> 0: std::int64_t 1 if it stopped early (cancelled), else 0
  kTagCancel = 105,       // 0 -> rank: std::int64_t signal number; stop everything now
  // The gateway service (--serve):
  kTagServiceCommand = 106,  // 0 -> rank: a node command as JSON (launcher/service_node.hpp)
  kTagRankReady = 107,       // rank -> 0: std::int64_t 1 once its node is set up, 0 if it failed
};

// Receives and drops a message nobody expects (a peer of another version, a bug), whatever its
// size, so it can neither block the queue nor abort the job with a truncation error.
void discard_message(const MPI_Status& status, MPI_Comm comm);

struct WorkGrant {
  std::int64_t first = 0;
  std::int64_t count = 0;
};

}  // namespace oshpc::launcher
