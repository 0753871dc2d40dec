#include "launcher/driverctl/client.hpp"

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <optional>

#include "compute_driver.grpc.pb.h"
#include "launcher/driverctl/output.hpp"
#include "launcher/driverctl/sandbox_request.hpp"

namespace oshpc::driverctl {
namespace {

namespace v1 = openshell::compute::v1;
using Stub = v1::ComputeDriver::StubInterface;

// The gateway redials every 250 ms for 30 s; --wait-for-socket should notice a new driver as
// quickly.
constexpr int kRedialMs = 250;

std::chrono::system_clock::time_point deadline_after(double seconds) {
  // Whole milliseconds, capped at a day: a deadline far in the future only has to not expire.
  double ms = std::min(std::ceil(seconds * 1000), 86'400'000.0);
  return std::chrono::system_clock::now() + std::chrono::milliseconds(static_cast<long>(ms));
}

// Calls one unary RPC and prints its response or its error.
template <typename Response, typename Call>
Exit unary(Output& output, Call call) {
  grpc::ClientContext context;
  Response response;
  grpc::Status status = call(&context, &response);
  if (!status.ok()) {
    output.rpc_error(status);
    return Exit::kRpcFailed;
  }
  output.message(response);
  return Exit::kOk;
}

// The request of get, stop, start and delete: the sandbox id and, optionally, its name.
template <typename Request>
Request sandbox_ref(const Invocation& invocation) {
  Request request;
  request.set_sandbox_id(invocation.target);
  request.set_sandbox_name(invocation.target_name);
  return request;
}

template <typename Request>
Request workspace_ref(const Invocation& invocation) {
  Request request;
  request.set_workspace(invocation.target);
  return request;
}

bool is_sandbox_command(Command command) {
  return command == Command::kValidate || command == Command::kCreate;
}

// The sandbox of validate or create, built before the channel is opened so that a bad input
// file fails without touching the driver.
v1::DriverSandbox checked_sandbox(const Invocation& invocation) {
  v1::DriverSandbox sandbox = build_sandbox(invocation.sandbox);
  if (invocation.command == Command::kCreate && sandbox.id().empty()) {
    throw UsageError("create needs --id ID (" + invocation.sandbox.spec_json_path +
                     " gives no id)");
  }
  return sandbox;
}

template <typename Request>
Request sandbox_request(const v1::DriverSandbox& sandbox) {
  Request request;
  *request.mutable_sandbox() = sandbox;
  return request;
}

bool is_watch_done(const Invocation& invocation, std::int64_t received) {
  return invocation.watch_count && received >= *invocation.watch_count;
}

// Streams WatchSandboxes until --count messages, --timeout seconds or the end of the stream.
Exit watch(const Invocation& invocation, Stub& stub, Output& output) {
  grpc::ClientContext context;
  if (invocation.watch_timeout_s) context.set_deadline(deadline_after(*invocation.watch_timeout_s));
  auto reader = stub.WatchSandboxes(&context, v1::WatchSandboxesRequest());
  v1::WatchSandboxesEvent event;
  std::int64_t received = 0;
  while (!is_watch_done(invocation, received) && reader->Read(&event)) {
    output.message(event);
    ++received;
  }
  if (is_watch_done(invocation, received)) {
    context.TryCancel();
    while (reader->Read(&event)) {
    }
    reader->Finish();
    return Exit::kOk;
  }

  grpc::Status status = reader->Finish();
  if (invocation.watch_timeout_s && status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return Exit::kOk;
  }
  if (!status.ok()) {
    output.rpc_error(status);
    return Exit::kRpcFailed;
  }
  // The contract says a driver ends a watch with an error, never cleanly: worth saying.
  output.note("watch: the driver ended the stream with OK after " + std::to_string(received) +
              " messages");
  return Exit::kOk;
}

// sandbox: what validate and create send (unused by the other commands).
Exit dispatch(const Invocation& invocation, const v1::DriverSandbox& sandbox, Stub& stub,
              Output& output) {
  switch (invocation.command) {
    case Command::kCaps:
      return unary<v1::GetCapabilitiesResponse>(output, [&](auto* context, auto* response) {
        return stub.GetCapabilities(context, v1::GetCapabilitiesRequest(), response);
      });
    case Command::kListenerRequirements:
      return unary<v1::GetGatewayListenerRequirementsResponse>(
          output, [&](auto* context, auto* response) {
            return stub.GetGatewayListenerRequirements(
                context, v1::GetGatewayListenerRequirementsRequest(), response);
          });
    case Command::kValidate: {
      auto request = sandbox_request<v1::ValidateSandboxCreateRequest>(sandbox);
      return unary<v1::ValidateSandboxCreateResponse>(output, [&](auto* context, auto* response) {
        return stub.ValidateSandboxCreate(context, request, response);
      });
    }
    case Command::kCreate: {
      auto request = sandbox_request<v1::CreateSandboxRequest>(sandbox);
      return unary<v1::CreateSandboxResponse>(output, [&](auto* context, auto* response) {
        return stub.CreateSandbox(context, request, response);
      });
    }
    case Command::kGet:
      return unary<v1::GetSandboxResponse>(output, [&](auto* context, auto* response) {
        return stub.GetSandbox(context, sandbox_ref<v1::GetSandboxRequest>(invocation), response);
      });
    case Command::kList:
      return unary<v1::ListSandboxesResponse>(output, [&](auto* context, auto* response) {
        return stub.ListSandboxes(context, v1::ListSandboxesRequest(), response);
      });
    case Command::kStop:
      return unary<v1::StopSandboxResponse>(output, [&](auto* context, auto* response) {
        return stub.StopSandbox(context, sandbox_ref<v1::StopSandboxRequest>(invocation), response);
      });
    case Command::kStart:
      return unary<v1::StartSandboxResponse>(output, [&](auto* context, auto* response) {
        return stub.StartSandbox(context, sandbox_ref<v1::StartSandboxRequest>(invocation),
                                 response);
      });
    case Command::kDelete:
      return unary<v1::DeleteSandboxResponse>(output, [&](auto* context, auto* response) {
        return stub.DeleteSandbox(context, sandbox_ref<v1::DeleteSandboxRequest>(invocation),
                                  response);
      });
    case Command::kWatch:
      return watch(invocation, stub, output);
    case Command::kEnsureWorkspace:
      return unary<v1::EnsureWorkspaceResponse>(output, [&](auto* context, auto* response) {
        return stub.EnsureWorkspace(context, workspace_ref<v1::EnsureWorkspaceRequest>(invocation),
                                    response);
      });
    case Command::kDeleteWorkspace:
      return unary<v1::DeleteWorkspaceResponse>(output, [&](auto* context, auto* response) {
        return stub.DeleteWorkspace(context, workspace_ref<v1::DeleteWorkspaceRequest>(invocation),
                                    response);
      });
  }
  return Exit::kUsage;
}

// --dry-run: the request validate or create would send, printed (token redacted) instead.
Exit print_request(const Invocation& invocation, const v1::DriverSandbox& sandbox, Output& output) {
  if (invocation.command == Command::kCreate) {
    output.message(sandbox_request<v1::CreateSandboxRequest>(sandbox));
  } else {
    output.message(sandbox_request<v1::ValidateSandboxCreateRequest>(sandbox));
  }
  return Exit::kOk;
}

bool wait_for_socket(grpc::Channel& channel, const Invocation& invocation, Output& output) {
  if (channel.WaitForConnected(deadline_after(*invocation.wait_for_socket_s))) return true;
  char seconds[32];
  std::snprintf(seconds, sizeof seconds, "%g", *invocation.wait_for_socket_s);
  output.rpc_error(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                "no driver accepted a connection on " + invocation.socket_path +
                                    " within " + seconds + " s"));
  return false;
}

}  // namespace

std::shared_ptr<grpc::Channel> open_channel(const std::string& socket_path) {
  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, kRedialMs);
  arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, kRedialMs);
  return grpc::CreateCustomChannel("unix:" + socket_path, grpc::InsecureChannelCredentials(),
                                   arguments);
}

Exit run(const Invocation& invocation, std::ostream& out, std::ostream& err) {
  Output output(out, err);
  v1::DriverSandbox sandbox;
  if (is_sandbox_command(invocation.command)) sandbox = checked_sandbox(invocation);
  if (invocation.dry_run) return print_request(invocation, sandbox, output);

  auto channel = open_channel(invocation.socket_path);
  if (invocation.wait_for_socket_s && !wait_for_socket(*channel, invocation, output)) {
    return Exit::kRpcFailed;
  }
  auto stub = v1::ComputeDriver::NewStub(channel);
  return dispatch(invocation, sandbox, *stub, output);
}

}  // namespace oshpc::driverctl
