#include "launcher/mpi_session.hpp"

#include <cstdlib>
#include <cstring>

#include "common/sys.hpp"

namespace oshpc::launcher {
namespace {

constexpr int kMaxNodeName = 64;

// The node identity: OSHPC_NODE_NAME lets ranks on one machine act as distinct nodes
// (testing "once per node" without a cluster); otherwise the host name.
std::string node_identity() {
  const char* simulated = std::getenv("OSHPC_NODE_NAME");
  std::string name = simulated && *simulated ? simulated : sys::host_name();
  return name.substr(0, kMaxNodeName - 1);
}

}  // namespace

MpiSession::MpiSession(int* argc, char*** argv) {
  MPI_Init(argc, argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  node_name_ = node_identity();

  // Gather every rank's node name: events and the summary name nodes, not ranks.
  std::vector<char> mine(kMaxNodeName, '\0');
  std::memcpy(mine.data(), node_name_.data(), node_name_.size());
  std::vector<char> all(static_cast<std::size_t>(kMaxNodeName) * size_);
  MPI_Allgather(mine.data(), kMaxNodeName, MPI_CHAR, all.data(), kMaxNodeName, MPI_CHAR,
                MPI_COMM_WORLD);
  for (int r = 0; r < size_; ++r) node_of_rank_.emplace_back(all.data() + r * kMaxNodeName);

  // Shared memory first (real nodes), then the name (simulated nodes on one machine). Two
  // ranks split by the lowest rank holding their name, so equal names always meet.
  MPI_Comm shared = MPI_COMM_NULL;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &shared);
  int first_with_name = rank_;
  for (int r = 0; r < size_; ++r) {
    if (node_of_rank_[static_cast<std::size_t>(r)] == node_name_) {
      first_with_name = r;
      break;
    }
  }
  MPI_Comm_split(shared, first_with_name, rank_, &node_comm_);
  MPI_Comm_free(&shared);
  MPI_Comm_rank(node_comm_, &node_rank_);
  MPI_Comm_size(node_comm_, &node_size_);
}

MpiSession::~MpiSession() {
  if (node_comm_ != MPI_COMM_NULL) MPI_Comm_free(&node_comm_);
  MPI_Finalize();
}

std::string broadcast_string(const std::string& value, int root, MPI_Comm comm) {
  int length = static_cast<int>(value.size());
  MPI_Bcast(&length, 1, MPI_INT, root, comm);
  std::string result = value;
  result.resize(static_cast<std::size_t>(length));
  MPI_Bcast(result.data(), length, MPI_CHAR, root, comm);
  return result;
}

}  // namespace oshpc::launcher
