// How oshpc-driverctl prints: one line of protobuf JSON per message on stdout, flushed, with
// secrets redacted; one error line per failed RPC on stderr.
#pragma once

#include <grpcpp/support/status.h>

#include <google/protobuf/message.h>

#include <ostream>
#include <string>
#include <string_view>

namespace oshpc::driverctl {

// What replaces a sandbox token in anything printed.
inline constexpr std::string_view kRedacted = "(redacted)";

// Replaces every non-empty sandbox_token field in message, however deeply nested. Never fails.
void redact_secrets(google::protobuf::Message& message);

// message as one line of JSON, field names as in the .proto, fields at their defaults printed
// (so `"deleted":false` shows), secrets redacted. Throws std::runtime_error if protobuf cannot
// print it.
std::string to_json_line(const google::protobuf::Message& message);

// The canonical name of a status code ("NOT_FOUND"). Never fails.
std::string_view status_code_name(grpc::StatusCode code);

class Output {
 public:
  Output(std::ostream& out, std::ostream& err) : out_(out), err_(err) {}

  // Prints message as one JSON line and flushes, so that a reader sees each as it comes.
  void message(const google::protobuf::Message& message);

  // Prints "oshpc-driverctl: error: CODE: message" on the error stream.
  void rpc_error(const grpc::Status& status);

  // Prints "oshpc-driverctl: TEXT" on the error stream.
  void note(std::string_view text);

 private:
  std::ostream& out_;
  std::ostream& err_;
};

}  // namespace oshpc::driverctl
