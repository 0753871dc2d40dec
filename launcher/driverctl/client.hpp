// Runs one oshpc-driverctl invocation against a ComputeDriver service on a UNIX socket.
#pragma once

#include <grpcpp/channel.h>

#include <memory>
#include <ostream>
#include <string>

#include "launcher/driverctl/invocation.hpp"

namespace oshpc::driverctl {

// oshpc-driverctl's exit codes; 2 and 3 mean what they mean for every oshpc program
// (common/exit_codes.hpp).
enum class Exit : int {
  kOk = 0,
  kRpcFailed = 1,  // the RPC returned an error status, or the socket could not be reached
  kUsage = 2,
  kBadInput = 3,  // --spec-json or --token-file could not be read or parsed
};

// A plaintext channel to the driver at socket_path, retrying a failed dial every 250 ms as the
// gateway does (gRPC's default backoff grows to minutes). Never fails: errors come with the
// first RPC.
std::shared_ptr<grpc::Channel> open_channel(const std::string& socket_path);

// Sends the invocation's RPC and prints the response(s) on out and any error on err. Returns
// kOk or kRpcFailed; throws InputError for unreadable input files and UsageError for a create
// without an id.
Exit run(const Invocation& invocation, std::ostream& out, std::ostream& err);

}  // namespace oshpc::driverctl
