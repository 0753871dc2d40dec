#include "launcher/gateway/workload.hpp"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>

#include <nlohmann/json.hpp>

#include "launcher/gateway/quantity.hpp"
#include "node-agent/bwrap_argv.hpp"

namespace oshpc::gateway {
namespace {

// Variables the gateway's user may not set: the driver owns them, and a token in the
// environment would leak into every child process and /proc/*/environ.
bool is_driver_owned(const std::string& key) {
  return key == "OPENSHELL_SANDBOX_TOKEN" || key == "OPENSHELL_GATEWAY_TLS_SERVER_NAME" ||
         key == "OPENSHELL_NETWORK_RUNTIME_CAPABILITIES";
}

// C0 controls, DEL, and the C1 controls U+0080..U+009F (UTF-8 0xC2 0x80..0x9F).
bool has_control_character(const std::string& text) {
  for (std::size_t i = 0; i < text.size(); ++i) {
    auto u = static_cast<unsigned char>(text[i]);
    if (u < 0x20 || u == 0x7f) return true;
    if (u == 0xc2 && i + 1 < text.size()) {
      auto next = static_cast<unsigned char>(text[i + 1]);
      if (next >= 0x80 && next <= 0x9f) return true;
    }
  }
  return false;
}

void invalid(const std::string& message) {
  throw RpcError(grpc::StatusCode::INVALID_ARGUMENT, message);
}

void unsatisfiable(const std::string& message) {
  throw RpcError(grpc::StatusCode::FAILED_PRECONDITION, message);
}

bool is_same_file(const std::string& a, const std::string& b) {
  std::error_code error;
  return std::filesystem::equivalent(a, b, error) && !error;
}

void check_text(const std::string& field, const std::string& value) {
  if (has_control_character(value)) invalid(field + " contains a control character");
}

void check_variables(const std::string& field,
                     const google::protobuf::Map<std::string, std::string>& variables) {
  for (const auto& [key, value] : variables) {
    if (key.empty() || key.find('=') != std::string::npos || has_control_character(key)) {
      invalid(
          field + " has an invalid variable name" +
          (has_control_character(key) ? std::string(" (a control character)") : " '" + key + "'"));
    }
    check_text(field + "[" + key + "]", value);
  }
}

// One argument of bubblewrap may hold at most 128 KiB (MAX_ARG_STRLEN), and the command and
// the user environment each travel whole inside one variable as JSON, where escaping can
// double them.
constexpr std::size_t kMaxArgumentBytes = 60'000;

void check_length(const std::string& field, std::size_t bytes) {
  if (bytes > kMaxArgumentBytes) {
    invalid(field + " is " + std::to_string(bytes) + " bytes; at most " +
            std::to_string(kMaxArgumentBytes) + " fit in a sandbox");
  }
}

void check_sizes(const api::DriverSandboxSpec& spec) {
  std::size_t command = 0;
  for (const auto& arg : spec.command()) command += arg.size() + 1;
  check_length("spec.command", command);
  std::size_t environment = 0;
  std::size_t variables_given = 0;
  for (const auto* variables : {&spec.environment(), &spec.template_().environment()}) {
    for (const auto& [key, value] : *variables) environment += key.size() + value.size() + 2;
    variables_given += static_cast<std::size_t>(variables->size());
  }
  check_length("the environment (spec and template)", environment);
  // Room is left for the variables the driver sets itself.
  constexpr std::size_t kMaxRequestVariables = node_agent::kMaxSandboxVariables - 100;
  if (variables_given > kMaxRequestVariables) {
    invalid("the environment (spec and template) has " + std::to_string(variables_given) +
            " variables; at most " + std::to_string(kMaxRequestVariables) + " fit in a sandbox");
  }
}

void check_shape(const api::DriverSandbox& sandbox) {
  if (sandbox.id().empty()) invalid("sandbox.id is empty");
  check_text("sandbox.id", sandbox.id());
  check_text("sandbox.name", sandbox.name());
  check_text("sandbox.namespace", sandbox.namespace_());
  if (!sandbox.has_spec()) invalid("sandbox.spec is missing");
  const api::DriverSandboxSpec& spec = sandbox.spec();
  check_text("spec.log_level", spec.log_level());
  for (int i = 0; i < spec.command_size(); ++i) {
    check_text("spec.command[" + std::to_string(i) + "]", spec.command(i));
  }
  if (spec.command_size() > 0 && spec.command(0).empty()) invalid("spec.command[0] is empty");
  check_variables("spec.environment", spec.environment());
  check_text("spec.template.image", spec.template_().image());
  check_variables("spec.template.environment", spec.template_().environment());
  check_variables("spec.template.labels", spec.template_().labels());
  check_sizes(spec);
}

// A quantity, or -1 when the field is empty. Throws RpcError(INVALID_ARGUMENT).
std::int64_t quantity(const std::string& field, const std::string& text, bool is_cpu) {
  if (text.empty()) return -1;
  try {
    return is_cpu ? parse_cpu_millis(text) : parse_memory_bytes(text);
  } catch (const QuantityError& e) {
    invalid(field + ": " + e.what());
  }
  return -1;
}

// The larger of request and limit (a request above its limit is malformed), -1 for neither.
std::int64_t resource_need(const std::string& what, const std::string& request_text,
                           const std::string& limit_text, bool is_cpu) {
  std::int64_t request = quantity(what + "_request", request_text, is_cpu);
  std::int64_t limit = quantity(what + "_limit", limit_text, is_cpu);
  if (request >= 0 && limit >= 0 && request > limit) {
    invalid(what + "_request " + request_text + " is above " + what + "_limit " + limit_text);
  }
  return std::max(request, limit);
}

void check_resources(const api::DriverSandbox& sandbox, const ServiceSettings& settings) {
  const api::DriverResourceRequirements& resources = sandbox.spec().template_().resources();
  std::int64_t cpu_millis =
      resource_need("cpu", resources.cpu_request(), resources.cpu_limit(), true);
  std::int64_t memory_bytes =
      resource_need("memory", resources.memory_request(), resources.memory_limit(), false);
  if (cpu_millis > std::int64_t{settings.cpus_per_slot} * 1000) {
    unsatisfiable("the sandbox asks for " + std::to_string(cpu_millis) +
                  "m CPU; this allocation gives a sandbox " +
                  std::to_string(settings.cpus_per_slot) + " CPU(s) (--cpus-per-sandbox)");
  }
  if (settings.memory_per_slot > 0 && memory_bytes > settings.memory_per_slot) {
    unsatisfiable("the sandbox asks for " + std::to_string(memory_bytes) +
                  " bytes of memory; this allocation gives a sandbox " +
                  std::to_string(settings.memory_per_slot) + " (--mem-per-sandbox)");
  }
  std::int64_t gpus = requested_gpus(sandbox);
  if (gpus > settings.gpus_per_slot) {
    unsatisfiable("the sandbox asks for " + std::to_string(gpus) +
                  " GPU(s); this allocation gives a sandbox " +
                  std::to_string(settings.gpus_per_slot) + " (--gpus-per-sandbox)");
  }
}

std::string main_process_spec(const api::DriverSandboxSpec& spec) {
  nlohmann::json json = {
      {"version", 1},
      {"command", std::vector<std::string>(spec.command().begin(), spec.command().end())},
      {"tty", spec.tty()}};
  return json.dump();
}

// template.environment < spec.environment; variables the driver owns are dropped. Sorted by
// name, so the environment does not depend on map order.
std::map<std::string, std::string> user_environment(const api::DriverSandboxSpec& spec) {
  std::map<std::string, std::string> merged;
  for (const auto& [key, value] : spec.template_().environment()) merged[key] = value;
  for (const auto& [key, value] : spec.environment()) merged[key] = value;
  for (auto it = merged.begin(); it != merged.end();) {
    it = is_driver_owned(it->first) ? merged.erase(it) : std::next(it);
  }
  return merged;
}

}  // namespace

std::int64_t requested_gpus(const api::DriverSandbox& sandbox) {
  const api::ResourceRequirements& requirements = sandbox.spec().resource_requirements();
  if (!requirements.has_gpu()) return 0;
  return requirements.gpu().has_count() ? std::int64_t{requirements.gpu().count()} : 1;
}

void validate_sandbox(const api::DriverSandbox& sandbox, const ServiceSettings& settings) {
  check_shape(sandbox);
  const std::string& image = sandbox.spec().template_().image();
  if (!image.empty() && image != settings.default_image &&
      !is_same_file(image, settings.default_image)) {
    unsatisfiable("this allocation serves one image, " + settings.default_image + " (asked for " +
                  image + ")");
  }
  check_resources(sandbox, settings);
}

std::pair<std::string, std::uint16_t> endpoint_host_port(const std::string& gateway_endpoint) {
  std::string rest;
  for (const char* scheme : {"http://", "https://"}) {
    if (gateway_endpoint.rfind(scheme, 0) == 0) rest = gateway_endpoint.substr(std::strlen(scheme));
  }
  if (rest.empty()) throw std::invalid_argument("expects http://HOST:PORT or https://HOST:PORT");
  while (!rest.empty() && rest.back() == '/') rest.pop_back();
  auto colon = rest.rfind(':');
  if (colon == std::string::npos || colon == 0 || rest.find('/') != std::string::npos) {
    throw std::invalid_argument(
        "expects http://HOST:PORT or https://HOST:PORT (the port is "
        "required, no path)");
  }
  std::string host = rest.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  std::string port_text = rest.substr(colon + 1);
  bool numeric = !port_text.empty() && port_text.size() <= 5 &&
                 std::all_of(port_text.begin(), port_text.end(), ::isdigit);
  int port = numeric ? std::stoi(port_text) : 0;
  if (port < 1 || port > 65535) throw std::invalid_argument("has no valid port");
  return {host, static_cast<std::uint16_t>(port)};
}

std::string relayed_endpoint(const std::string& gateway_endpoint) {
  if (gateway_endpoint.empty()) return "";
  std::string scheme = gateway_endpoint.rfind("https://", 0) == 0 ? "https" : "http";
  return scheme + "://127.0.0.1:" + std::to_string(kGatewayRelayPort);
}

WorkloadPlan plan_workload(const api::DriverSandbox& sandbox, const ServiceSettings& settings,
                           const std::string& sandbox_name) {
  const api::DriverSandboxSpec& spec = sandbox.spec();
  WorkloadPlan plan;
  plan.token = spec.sandbox_token();
  plan.gpu_count = static_cast<int>(requested_gpus(sandbox));  // at most a slot's, once valid

  std::map<std::string, std::string> user = user_environment(spec);
  for (const auto& [key, value] : user) plan.environment.emplace_back(key, value);

  // The driver's own variables come last, so that the user's cannot override them.
  auto set = [&plan](const std::string& key, const std::string& value) {
    plan.environment.emplace_back(key, value);
  };
  set("OPENSHELL_SANDBOX", sandbox.name().empty() ? sandbox.id() : sandbox.name());
  set("OPENSHELL_SANDBOX_ID", sandbox.id());
  set("OPENSHELL_LOG_LEVEL",
      spec.log_level().empty() ? settings.default_log_level : spec.log_level());
  set("OPENSHELL_MAIN_PROCESS_SPEC", main_process_spec(spec));
  set("OPENSHELL_USER_ENVIRONMENT", nlohmann::json(user).dump());
  set("OPENSHELL_SSH_SOCKET_PATH", kSshSocketPath);
  set("OPENSHELL_CONTAINER_IMAGE", settings.default_image);
  set("OSHPC_SANDBOX_NAME", sandbox_name);
  if (!settings.gateway_endpoint.empty()) {
    set("OPENSHELL_ENDPOINT", relayed_endpoint(settings.gateway_endpoint));
    // The relay changes the address the workload dials, not the certificate it must check.
    if (settings.gateway_endpoint.rfind("https://", 0) == 0) {
      set("OPENSHELL_GATEWAY_TLS_SERVER_NAME", endpoint_host_port(settings.gateway_endpoint).first);
    }
  }
  if (!plan.token.empty()) set("OPENSHELL_SANDBOX_TOKEN_FILE", kTokenPath);
  if (settings.has_tls) {
    set("OPENSHELL_TLS_CA", std::string(kTlsDir) + "/ca.crt");
    set("OPENSHELL_TLS_CERT", std::string(kTlsDir) + "/tls.crt");
    set("OPENSHELL_TLS_KEY", std::string(kTlsDir) + "/tls.key");
  }

  if (settings.has_supervisor) {
    plan.command = {kSupervisorPath, "--workdir", "/sandbox"};
    if (!settings.proxy_url.empty()) {
      plan.command.insert(plan.command.end(), {"--upstream-proxy", settings.proxy_url});
    }
  } else if (spec.command_size() > 0) {
    plan.command.assign(spec.command().begin(), spec.command().end());
  } else {
    plan.command = {"/bin/bash", "-l"};
  }
  return plan;
}

}  // namespace oshpc::gateway
