// The checks of ValidateSandboxCreate and the workload a request becomes.
#include <catch2/catch.hpp>

#include <algorithm>

#include "launcher/gateway/workload.hpp"

using namespace oshpc::gateway;

namespace {

ServiceSettings settings() {
  ServiceSettings s;
  s.default_image = "/shared/agent.sqsh";
  s.cpus_per_slot = 2;
  s.gpus_per_slot = 1;
  s.memory_per_slot = 4LL << 30;
  return s;
}

api::DriverSandbox sandbox(const std::string& id = "sb-1") {
  api::DriverSandbox s;
  s.set_id(id);
  s.set_name("friendly " + id);
  s.mutable_spec()->add_command("python3");
  s.mutable_spec()->add_command("agent.py");
  return s;
}

grpc::StatusCode code_of(const api::DriverSandbox& s, const ServiceSettings& with = settings()) {
  try {
    validate_sandbox(s, with);
  } catch (const RpcError& e) {
    return e.code();
  }
  return grpc::StatusCode::OK;
}

std::string value_of(const WorkloadPlan& plan, const std::string& key) {
  std::string found = "<unset>";
  for (const auto& [k, v] : plan.environment) {
    if (k == key) found = v;  // the last one wins, as in the sandbox
  }
  return found;
}

}  // namespace

TEST_CASE("a well-formed request that fits is valid") {
  auto s = sandbox();
  auto* resources = s.mutable_spec()->mutable_template_()->mutable_resources();
  resources->set_cpu_limit("1500m");
  resources->set_memory_limit("4Gi");
  s.mutable_spec()->mutable_resource_requirements()->mutable_gpu()->set_count(1);
  s.mutable_spec()->mutable_template_()->set_image("/shared/agent.sqsh");
  CHECK(code_of(s) == grpc::StatusCode::OK);
}

TEST_CASE("malformed requests are INVALID_ARGUMENT") {
  auto bad = sandbox();
  SECTION("no spec") {
    bad.clear_spec();
  }
  SECTION("empty id") {
    bad.set_id("");
  }
  SECTION("a control character in the name") {
    bad.set_name("a\nb");
  }
  SECTION("a C1 control character (U+0085) in the name") {
    bad.set_name(
        "a\xc2\x85"
        "b");
  }
  SECTION("a control character in the command") {
    bad.mutable_spec()->add_command("x\x1b[2J");
  }
  SECTION("a bad variable name") {
    (*bad.mutable_spec()->mutable_environment())["A=B"] = "1";
  }
  SECTION("a control character in a value") {
    (*bad.mutable_spec()->mutable_environment())["A"] = "1\r";
  }
  SECTION("a malformed quantity") {
    bad.mutable_spec()->mutable_template_()->mutable_resources()->set_memory_limit("1gi");
  }
  SECTION("a command too long for one argument of bubblewrap") {
    bad.mutable_spec()->add_command(std::string(70'000, 'x'));
  }
  SECTION("an environment too long for one argument of bubblewrap") {
    (*bad.mutable_spec()->mutable_environment())["BIG"] = std::string(70'000, 'x');
  }
  SECTION("an empty program name") {
    bad.mutable_spec()->clear_command();
    bad.mutable_spec()->add_command("");
    bad.mutable_spec()->add_command("x");
  }
  SECTION("more variables than bubblewrap takes arguments for") {
    auto& environment = *bad.mutable_spec()->mutable_environment();
    for (int i = 0; i < 2'000; ++i) environment["V" + std::to_string(i)] = "1";
  }
  SECTION("a request above its limit") {
    auto* resources = bad.mutable_spec()->mutable_template_()->mutable_resources();
    resources->set_cpu_request("2");
    resources->set_cpu_limit("1");
  }
  CHECK(code_of(bad) == grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_CASE("requests the allocation cannot satisfy are FAILED_PRECONDITION") {
  auto big = sandbox();
  SECTION("another image") {
    big.mutable_spec()->mutable_template_()->set_image("other.sqsh");
  }
  SECTION("more CPUs than a slot") {
    big.mutable_spec()->mutable_template_()->mutable_resources()->set_cpu_limit("2001m");
  }
  SECTION("more memory than a slot") {
    big.mutable_spec()->mutable_template_()->mutable_resources()->set_memory_request("5Gi");
  }
  SECTION("more GPUs than a slot") {
    big.mutable_spec()->mutable_resource_requirements()->mutable_gpu()->set_count(2);
  }
  SECTION("a GPU count that would be negative as an int") {
    big.mutable_spec()->mutable_resource_requirements()->mutable_gpu()->set_count(4294967295u);
  }
  CHECK(code_of(big) == grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_CASE("a GPU requirement without a count asks for one GPU") {
  auto s = sandbox();
  CHECK(requested_gpus(s) == 0);
  s.mutable_spec()->mutable_resource_requirements()->mutable_gpu();
  CHECK(requested_gpus(s) == 1);
  auto none = settings();
  none.gpus_per_slot = 0;
  CHECK(code_of(s, none) == grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_CASE("the workload environment follows the supervisor contract") {
  auto s = sandbox();
  auto* spec = s.mutable_spec();
  (*spec->mutable_template_()->mutable_environment())["SHARED"] = "template";
  (*spec->mutable_template_()->mutable_environment())["ONLY_TEMPLATE"] = "t";
  (*spec->mutable_environment())["SHARED"] = "spec";
  (*spec->mutable_environment())["OPENSHELL_SANDBOX_TOKEN"] = "leaked";
  (*spec->mutable_environment())["OPENSHELL_SANDBOX_ID"] = "forged";
  spec->set_sandbox_token("secret-token");
  spec->set_tty(true);
  auto with = settings();
  with.gateway_endpoint = "https://gw.example:8443";
  with.has_tls = true;
  WorkloadPlan plan = plan_workload(s, with, "job-7");

  CHECK(plan.token == "secret-token");
  CHECK(value_of(plan, "SHARED") == "spec");
  CHECK(value_of(plan, "ONLY_TEMPLATE") == "t");
  CHECK(value_of(plan, "OPENSHELL_SANDBOX_TOKEN") == "<unset>");
  CHECK(value_of(plan, "OPENSHELL_SANDBOX_ID") == "sb-1");
  CHECK(value_of(plan, "OPENSHELL_SANDBOX") == "friendly sb-1");
  CHECK(value_of(plan, "OPENSHELL_ENDPOINT") == "https://127.0.0.1:50051");
  CHECK(value_of(plan, "OPENSHELL_GATEWAY_TLS_SERVER_NAME") == "gw.example");
  CHECK(value_of(plan, "OPENSHELL_SANDBOX_TOKEN_FILE") == "/etc/openshell/auth/sandbox.jwt");
  CHECK(value_of(plan, "OPENSHELL_TLS_CA") == "/etc/openshell/tls/client/ca.crt");
  CHECK(value_of(plan, "OPENSHELL_MAIN_PROCESS_SPEC") ==
        R"({"command":["python3","agent.py"],"tty":true,"version":1})");
  CHECK(value_of(plan, "OPENSHELL_LOG_LEVEL") == "info");
  for (const auto& [key, value] : plan.environment)
    CHECK(value.find("secret-token") == std::string::npos);
  // Without a supervisor the gateway's command itself runs.
  CHECK(plan.command == std::vector<std::string>{"python3", "agent.py"});
}

TEST_CASE("with a supervisor, the supervisor is the main process") {
  auto with = settings();
  with.has_supervisor = true;
  with.proxy_url = "http://127.0.0.1:3128";
  WorkloadPlan plan = plan_workload(sandbox(), with, "job-0");
  CHECK(plan.command == std::vector<std::string>{kSupervisorPath, "--workdir", "/sandbox",
                                                 "--upstream-proxy", "http://127.0.0.1:3128"});
}

TEST_CASE("gateway endpoints need a scheme and a port") {
  CHECK(endpoint_host_port("http://login1:8080") ==
        std::pair<std::string, std::uint16_t>{"login1", 8080});
  CHECK(endpoint_host_port("https://[::1]:443/") ==
        std::pair<std::string, std::uint16_t>{"::1", 443});
  for (const char* bad : {"login1:8080", "http://login1", "http://login1:0", "http://h:99999",
                          "ftp://h:1", "http://h:80/path"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(endpoint_host_port(bad), std::invalid_argument);
  }
}
