// The ComputeDriver gRPC service: each RPC is a thin translation onto the SandboxRegistry, with
// RpcError turned into the gRPC status the gateway expects.
#pragma once

#include "compute_driver.grpc.pb.h"
#include "launcher/gateway/sandbox_registry.hpp"

namespace oshpc::gateway {

class DriverService final : public api::ComputeDriver::Service {
 public:
  explicit DriverService(SandboxRegistry& registry) : registry_(registry) {}

  grpc::Status GetCapabilities(grpc::ServerContext*, const api::GetCapabilitiesRequest*,
                               api::GetCapabilitiesResponse* response) override;
  grpc::Status GetGatewayListenerRequirements(
      grpc::ServerContext*, const api::GetGatewayListenerRequirementsRequest*,
      api::GetGatewayListenerRequirementsResponse* response) override;
  grpc::Status ValidateSandboxCreate(grpc::ServerContext*,
                                     const api::ValidateSandboxCreateRequest* request,
                                     api::ValidateSandboxCreateResponse*) override;
  grpc::Status CreateSandbox(grpc::ServerContext*, const api::CreateSandboxRequest* request,
                             api::CreateSandboxResponse*) override;
  grpc::Status GetSandbox(grpc::ServerContext*, const api::GetSandboxRequest* request,
                          api::GetSandboxResponse* response) override;
  grpc::Status ListSandboxes(grpc::ServerContext*, const api::ListSandboxesRequest*,
                             api::ListSandboxesResponse* response) override;
  grpc::Status StopSandbox(grpc::ServerContext* context, const api::StopSandboxRequest* request,
                           api::StopSandboxResponse*) override;
  grpc::Status StartSandbox(grpc::ServerContext* context, const api::StartSandboxRequest* request,
                            api::StartSandboxResponse*) override;
  grpc::Status DeleteSandbox(grpc::ServerContext* context, const api::DeleteSandboxRequest* request,
                             api::DeleteSandboxResponse* response) override;
  grpc::Status WatchSandboxes(grpc::ServerContext* context, const api::WatchSandboxesRequest*,
                              grpc::ServerWriter<api::WatchSandboxesEvent>* writer) override;
  grpc::Status EnsureWorkspace(grpc::ServerContext*, const api::EnsureWorkspaceRequest*,
                               api::EnsureWorkspaceResponse*) override;
  grpc::Status DeleteWorkspace(grpc::ServerContext*, const api::DeleteWorkspaceRequest*,
                               api::DeleteWorkspaceResponse*) override;

 private:
  SandboxRegistry& registry_;
};

}  // namespace oshpc::gateway
