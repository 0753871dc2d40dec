// The MPI side of a job: initialisation, who is who, and which ranks share a node.
#pragma once

#include <mpi.h>

#include <string>
#include <vector>

namespace oshpc::launcher {

// MPI_Init/MPI_Finalize as a scope. Errors abort through MPI's default handler; we switch
// MPI_COMM_WORLD to MPI_ERRORS_RETURN only where a failure can be reported usefully.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  // Ranks on the same node (or simulated node, OSHPC_NODE_NAME); rank 0 of it is the leader.
  MPI_Comm node_comm() const { return node_comm_; }
  int node_rank() const { return node_rank_; }
  int node_size() const { return node_size_; }
  bool is_node_leader() const { return node_rank_ == 0; }
  const std::string& node_name() const { return node_name_; }
  // Node name of every rank (gathered to all ranks at start).
  const std::vector<std::string>& node_of_rank() const { return node_of_rank_; }

 private:
  int rank_ = 0;
  int size_ = 1;
  MPI_Comm node_comm_ = MPI_COMM_NULL;
  int node_rank_ = 0;
  int node_size_ = 1;
  std::string node_name_;
  std::vector<std::string> node_of_rank_;
};

// Broadcasts a string from `root` over `comm`. Collective; MPI errors abort.
std::string broadcast_string(const std::string& value, int root, MPI_Comm comm);

}  // namespace oshpc::launcher
