#include "launcher/driverctl/sandbox_request.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>

#include <google/protobuf/util/json_util.h>

namespace oshpc::driverctl {
namespace {

namespace v1 = openshell::compute::v1;

std::string read_file(const char* option, const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    throw InputError(std::string(option) + ": cannot open " + path + ": " + std::strerror(errno));
  }
  std::ostringstream text;
  text << file.rdbuf();
  if (file.bad()) {
    throw InputError(std::string(option) + ": cannot read " + path + ": " + std::strerror(errno));
  }
  return text.str();
}

// protobuf's parse error, cut to what cannot hold the token: its own first line (the lines
// after it quote the input around the error), and nothing of an error about the token itself.
std::string safe_parse_error(std::string_view message) {
  if (message.find("sandbox_token") != std::string_view::npos ||
      message.find("sandboxToken") != std::string_view::npos) {
    return "spec.sandbox_token must be a string (its value is not shown: it is a secret)";
  }
  return std::string(message.substr(0, message.find('\n')));
}

v1::DriverSandbox read_spec_json(const std::string& path) {
  v1::DriverSandbox sandbox;
  // Unknown fields are refused: in a hand-written file they are typos, not a newer schema.
  auto status =
      google::protobuf::util::JsonStringToMessage(read_file("--spec-json", path), &sandbox);
  if (!status.ok()) {
    throw InputError("--spec-json: " + path + " is not a DriverSandbox in protobuf JSON: " +
                     safe_parse_error(std::string(status.message())));
  }
  return sandbox;
}

template <typename Map>
void merge(Map& map, const std::vector<KeyValue>& pairs) {
  for (const auto& [key, value] : pairs) map[key] = value;
}

void apply_identity(const SandboxOptions& options, v1::DriverSandbox& sandbox) {
  if (options.id) sandbox.set_id(*options.id);
  if (options.name) {
    sandbox.set_name(*options.name);
  } else if (sandbox.name().empty()) {
    sandbox.set_name(sandbox.id());
  }
}

void apply_resources(const SandboxOptions& options, v1::DriverResourceRequirements& resources) {
  // Sent as written: checking quantities is the driver's job, and a client that sends bad ones
  // is how that check gets tested.
  if (options.cpu_request) resources.set_cpu_request(*options.cpu_request);
  if (options.cpu_limit) resources.set_cpu_limit(*options.cpu_limit);
  if (options.memory_request) resources.set_memory_request(*options.memory_request);
  if (options.memory_limit) resources.set_memory_limit(*options.memory_limit);
}

bool has_resources(const SandboxOptions& options) {
  return options.cpu_request || options.cpu_limit || options.memory_request || options.memory_limit;
}

void apply_template(const SandboxOptions& options, v1::DriverSandboxTemplate& sandbox_template) {
  if (options.image) sandbox_template.set_image(*options.image);
  merge(*sandbox_template.mutable_environment(), options.template_environment);
  merge(*sandbox_template.mutable_labels(), options.labels);
  if (has_resources(options)) apply_resources(options, *sandbox_template.mutable_resources());
}

void apply_spec(const SandboxOptions& options, v1::DriverSandboxSpec& spec) {
  if (options.log_level) spec.set_log_level(*options.log_level);
  merge(*spec.mutable_environment(), options.environment);
  if (options.gpus) spec.mutable_resource_requirements()->mutable_gpu()->set_count(*options.gpus);
  if (options.tty) spec.set_tty(true);
  if (options.command) {
    spec.clear_command();
    for (const auto& arg : *options.command) spec.add_command(arg);
  }
  if (!options.token_path.empty()) spec.set_sandbox_token(read_token_file(options.token_path));
  apply_template(options, *spec.mutable_template_());
}

}  // namespace

std::string read_token_file(const std::string& path) {
  std::string token = read_file("--token-file", path);
  // Files written by echo or an editor end in a newline that is not part of the token.
  if (!token.empty() && token.back() == '\n') token.pop_back();
  if (!token.empty() && token.back() == '\r') token.pop_back();
  if (token.empty()) throw InputError("--token-file: " + path + " is empty");
  return token;
}

v1::DriverSandbox build_sandbox(const SandboxOptions& options) {
  v1::DriverSandbox sandbox;
  if (!options.spec_json_path.empty()) sandbox = read_spec_json(options.spec_json_path);
  apply_identity(options, sandbox);
  apply_spec(options, *sandbox.mutable_spec());
  return sandbox;
}

}  // namespace oshpc::driverctl
