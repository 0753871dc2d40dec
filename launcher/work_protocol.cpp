#include "launcher/work_protocol.hpp"

#include <vector>

#include "common/log.hpp"

namespace oshpc::launcher {

void discard_message(const MPI_Status& status, MPI_Comm comm) {
  MPI_Status copy = status;
  int bytes = 0;
  MPI_Get_count(&copy, MPI_BYTE, &bytes);
  std::vector<char> buffer(static_cast<std::size_t>(bytes > 0 ? bytes : 1));
  MPI_Recv(buffer.data(), bytes, MPI_BYTE, status.MPI_SOURCE, status.MPI_TAG, comm,
           MPI_STATUS_IGNORE);
  log::get("launcher")
      ->warn("dropped an unexpected message (tag {}, {} bytes) from rank {}", status.MPI_TAG, bytes,
             status.MPI_SOURCE);
}

}  // namespace oshpc::launcher
