#include "launcher/gateway/driver_service.hpp"

#include "common/log.hpp"

namespace oshpc::gateway {
namespace {

auto logger() {
  return log::get("gateway");
}

// Runs one RPC body; its RpcError becomes the status, anything else INTERNAL (logged: a bug
// or a host failure, not the caller's mistake).
template <typename Body>
grpc::Status serve(const char* rpc, Body&& body) {
  try {
    body();
    return grpc::Status::OK;
  } catch (const RpcError& e) {
    logger()->debug("{}: {}", rpc, e.what());
    return grpc::Status(e.code(), e.what());
  } catch (const std::exception& e) {
    logger()->error("{}: {}", rpc, e.what());
    return grpc::Status(grpc::StatusCode::INTERNAL, e.what());
  }
}

void require_sandbox(bool has_sandbox) {
  if (!has_sandbox)
    throw RpcError(grpc::StatusCode::INVALID_ARGUMENT, "the request has no sandbox");
}

// The gateway names a sandbox by id; a name alone is not enough to find one.
const std::string& require_id(const std::string& id) {
  if (id.empty()) throw RpcError(grpc::StatusCode::INVALID_ARGUMENT, "sandbox_id is empty");
  return id;
}

std::function<bool()> abandoned_by(grpc::ServerContext* context) {
  return [context] { return context->IsCancelled(); };
}

}  // namespace

grpc::Status DriverService::GetCapabilities(grpc::ServerContext*,
                                            const api::GetCapabilitiesRequest*,
                                            api::GetCapabilitiesResponse* response) {
  return serve("GetCapabilities", [&] { *response = registry_.capabilities(); });
}

grpc::Status DriverService::GetGatewayListenerRequirements(
    grpc::ServerContext*, const api::GetGatewayListenerRequirementsRequest*,
    api::GetGatewayListenerRequirementsResponse*) {
  // None: sandboxes reach the gateway through a relay from the node, whatever it listens on.
  return grpc::Status::OK;
}

grpc::Status DriverService::ValidateSandboxCreate(grpc::ServerContext*,
                                                  const api::ValidateSandboxCreateRequest* request,
                                                  api::ValidateSandboxCreateResponse*) {
  return serve("ValidateSandboxCreate", [&] {
    require_sandbox(request->has_sandbox());
    registry_.validate(request->sandbox());
  });
}

grpc::Status DriverService::CreateSandbox(grpc::ServerContext*,
                                          const api::CreateSandboxRequest* request,
                                          api::CreateSandboxResponse*) {
  return serve("CreateSandbox", [&] {
    require_sandbox(request->has_sandbox());
    registry_.create(request->sandbox());
    logger()->info("created sandbox {}", request->sandbox().id());
  });
}

grpc::Status DriverService::GetSandbox(grpc::ServerContext*, const api::GetSandboxRequest* request,
                                       api::GetSandboxResponse* response) {
  return serve("GetSandbox", [&] {
    *response->mutable_sandbox() = registry_.get(require_id(request->sandbox_id()));
  });
}

grpc::Status DriverService::ListSandboxes(grpc::ServerContext*, const api::ListSandboxesRequest*,
                                          api::ListSandboxesResponse* response) {
  return serve("ListSandboxes", [&] {
    for (auto& sandbox : registry_.list()) *response->add_sandboxes() = std::move(sandbox);
  });
}

grpc::Status DriverService::StopSandbox(grpc::ServerContext* context,
                                        const api::StopSandboxRequest* request,
                                        api::StopSandboxResponse*) {
  return serve("StopSandbox", [&] {
    registry_.stop(require_id(request->sandbox_id()), abandoned_by(context));
    logger()->info("stopped sandbox {}", request->sandbox_id());
  });
}

grpc::Status DriverService::StartSandbox(grpc::ServerContext* context,
                                         const api::StartSandboxRequest* request,
                                         api::StartSandboxResponse*) {
  return serve("StartSandbox", [&] {
    registry_.start(require_id(request->sandbox_id()), abandoned_by(context));
    logger()->info("starting sandbox {}", request->sandbox_id());
  });
}

grpc::Status DriverService::DeleteSandbox(grpc::ServerContext* context,
                                          const api::DeleteSandboxRequest* request,
                                          api::DeleteSandboxResponse* response) {
  return serve("DeleteSandbox", [&] {
    response->set_deleted(
        registry_.remove(require_id(request->sandbox_id()), abandoned_by(context)));
    logger()->info("deleted sandbox {} ({})", request->sandbox_id(),
                   response->deleted() ? "removed" : "already gone");
  });
}

grpc::Status DriverService::WatchSandboxes(grpc::ServerContext* context,
                                           const api::WatchSandboxesRequest*,
                                           grpc::ServerWriter<api::WatchSandboxesEvent>* writer) {
  std::shared_ptr<WatchQueue> queue = registry_.watch();
  for (;;) {
    if (context->IsCancelled()) return grpc::Status::CANCELLED;
    if (auto event = queue->pop(std::chrono::milliseconds(500))) {
      if (!writer->Write(*event)) return grpc::Status::CANCELLED;  // the gateway went away
      continue;
    }
    if (auto closed = queue->closed_status()) return *closed;
  }
}

grpc::Status DriverService::EnsureWorkspace(grpc::ServerContext*,
                                            const api::EnsureWorkspaceRequest*,
                                            api::EnsureWorkspaceResponse*) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      "oshpc keeps each sandbox's workspace on its node; no shared workspaces");
}

grpc::Status DriverService::DeleteWorkspace(grpc::ServerContext*,
                                            const api::DeleteWorkspaceRequest*,
                                            api::DeleteWorkspaceResponse*) {
  return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                      "oshpc keeps each sandbox's workspace on its node; no shared workspaces");
}

}  // namespace oshpc::gateway
