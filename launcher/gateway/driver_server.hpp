// The gRPC server of the service mode on its UNIX socket. Trust is the socket's permissions,
// as the gateway expects of a compute driver: a parent directory of our own with mode 0700, a
// socket with mode 0600, and every peer's SO_PEERCRED uid checked against ours (root too is
// refused). Connections are accepted here and handed to gRPC one by one, so that a refused
// peer never reaches a gRPC handler.
#pragma once

#include <memory>
#include <string>
#include <thread>

#include <grpcpp/server.h>

#include "common/sys.hpp"
#include "launcher/gateway/driver_service.hpp"

namespace oshpc::gateway {

class DriverServer {
 public:
  // Binds `socket_path` and starts serving `service`. Throws SysError naming the path when
  // the directory is not ours or not private, or another live socket is there.
  DriverServer(const std::string& socket_path, DriverService& service);
  // Stops accepting, ends open calls, and removes the socket (and its directory, when the
  // server created it).
  ~DriverServer();
  DriverServer(const DriverServer&) = delete;
  DriverServer& operator=(const DriverServer&) = delete;

 private:
  void accept_loop();

  std::string socket_path_;
  std::string created_directory_;  // the socket's directory, when we made it; else empty
  sys::UniqueFd listener_;
  sys::UniqueFd stop_;  // eventfd: wakes the accept loop to end
  std::unique_ptr<grpc::Server> server_;
  std::thread acceptor_;
};

}  // namespace oshpc::gateway
