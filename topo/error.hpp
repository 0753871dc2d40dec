// The one error type of the topology library: a request that this machine (or the topology
// being planned for) cannot satisfy, or a topology that cannot be read.
#pragma once

#include <stdexcept>
#include <string>

namespace oshpc::topo {

// what() is one line a user can act on: it names the request and the numbers that refuse it.
class PlacementError : public std::runtime_error {
 public:
  explicit PlacementError(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace oshpc::topo
