// The DriverSandbox that validate and create send, built from --spec-json and the options.
#pragma once

#include <stdexcept>
#include <string>

#include "compute_driver.pb.h"
#include "launcher/driverctl/invocation.hpp"

namespace oshpc::driverctl {

// An input file (--spec-json, --token-file) that cannot be read or parsed; what() names it.
class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Starts from the --spec-json sandbox (or an empty one) and applies every option given over it;
// the name defaults to the id. Throws InputError for an unreadable or malformed file.
openshell::compute::v1::DriverSandbox build_sandbox(const SandboxOptions& options);

// The token in path, without a trailing newline. Throws InputError if the file cannot be read
// or is empty. The token is never put in an error message.
std::string read_token_file(const std::string& path);

}  // namespace oshpc::driverctl
