// What the OpenShell gateway asks for, checked and turned into what a node runs: the checks of
// ValidateSandboxCreate, and the workload's environment and command (the supervisor contract).
// Pure: no files, no processes; the node materialises the result (launcher/service_node).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <grpcpp/support/status_code_enum.h>

#include "compute_driver.pb.h"

namespace oshpc::gateway {

namespace api = ::openshell::compute::v1;

// A request the service refuses: the gRPC status code and one line for the gateway's user.
class RpcError : public std::runtime_error {
 public:
  RpcError(grpc::StatusCode code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  grpc::StatusCode code() const { return code_; }

 private:
  grpc::StatusCode code_;
};

// Where the workload finds what the driver gives it.
inline constexpr const char* kSupervisorPath = "/opt/openshell/bin/openshell-sandbox";
inline constexpr const char* kTokenDir = "/etc/openshell/auth";
inline constexpr const char* kTokenPath = "/etc/openshell/auth/sandbox.jwt";
inline constexpr const char* kTlsDir = "/etc/openshell/tls/client";
inline constexpr const char* kSshSocketPath = "/run/openshell/ssh.sock";
// The loopback port inside each sandbox that relays to the gateway (gRPC's usual port).
inline constexpr int kGatewayRelayPort = 50051;

// What this allocation offers one sandbox, and how the driver is configured.
struct ServiceSettings {
  std::string default_image;         // --image, as given
  int cpus_per_slot = 1;             // --cpus-per-sandbox
  int gpus_per_slot = 0;             // --gpus-per-sandbox
  std::int64_t memory_per_slot = 0;  // --mem-per-sandbox in bytes; 0: not bounded
  bool has_supervisor = false;       // --supervisor given: it is the main process
  std::string gateway_endpoint;      // --gateway-endpoint, as nodes reach it; "" none
  bool has_tls = false;              // --tls-dir given
  std::string default_log_level = "info";
  std::string proxy_url;  // the egress proxy as the sandbox reaches it
};

// The final environment and command of one sandbox, and its secret.
struct WorkloadPlan {
  std::vector<std::pair<std::string, std::string>> environment;
  std::vector<std::string> command;
  std::string token;  // "" when the gateway sent none; never logged
  int gpu_count = 0;
};

// The checks of ValidateSandboxCreate. Throws RpcError: INVALID_ARGUMENT for a malformed
// request (missing parts, control characters, bad names or quantities), FAILED_PRECONDITION
// for one this allocation cannot satisfy (image, CPUs, memory, GPUs).
void validate_sandbox(const api::DriverSandbox& sandbox, const ServiceSettings& settings);

// GPUs the sandbox asks for: 0 without a GPU requirement, else its count (1 when unset).
std::int64_t requested_gpus(const api::DriverSandbox& sandbox);

// The workload of a validated sandbox; `sandbox_name` is oshpc's own name for it. Throws
// std::invalid_argument only for a gateway_endpoint that endpoint_host_port refuses (the
// options parser refuses those first).
WorkloadPlan plan_workload(const api::DriverSandbox& sandbox, const ServiceSettings& settings,
                           const std::string& sandbox_name);

// The URL the workload dials for the gateway: the relay port inside its own network namespace,
// with the gateway's scheme ("" when there is no gateway endpoint). Never throws.
std::string relayed_endpoint(const std::string& gateway_endpoint);

// HOST and PORT of "http://HOST:PORT" or "https://HOST:PORT" (the port is required). Throws
// std::invalid_argument saying what is wrong.
std::pair<std::string, std::uint16_t> endpoint_host_port(const std::string& gateway_endpoint);

}  // namespace oshpc::gateway
