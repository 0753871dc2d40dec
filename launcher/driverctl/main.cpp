// oshpc-driverctl: a command-line client of the OpenShell ComputeDriver service, for people
// debugging a deployment and for tests (docs/driverctl.md).
#include <cstdio>
#include <iostream>

#include "launcher/driverctl/client.hpp"
#include "launcher/driverctl/invocation.hpp"
#include "launcher/driverctl/sandbox_request.hpp"

namespace driverctl = oshpc::driverctl;
using driverctl::Exit;

namespace {

int fail(Exit code, const char* what, bool with_help_hint) {
  std::fprintf(stderr, "oshpc-driverctl: error: %s\n", what);
  if (with_help_hint) std::fputs("(see oshpc-driverctl --help)\n", stderr);
  return static_cast<int>(code);
}

}  // namespace

int main(int argc, char** argv) {
  driverctl::Invocation invocation;
  try {
    invocation = driverctl::parse_invocation(argc, argv);
  } catch (const driverctl::UsageError& e) {
    return fail(Exit::kUsage, e.what(), true);
  }

  switch (invocation.action) {
    case driverctl::Action::kHelp:
      std::fputs(driverctl::help_text().c_str(), stdout);
      return 0;
    case driverctl::Action::kVersion:
      std::printf("oshpc-driverctl %s\n", OSHPC_VERSION);
      return 0;
    case driverctl::Action::kRun:
      break;
  }

  try {
    return static_cast<int>(driverctl::run(invocation, std::cout, std::cerr));
  } catch (const driverctl::UsageError& e) {
    return fail(Exit::kUsage, e.what(), true);
  } catch (const driverctl::InputError& e) {
    return fail(Exit::kBadInput, e.what(), false);
  } catch (const std::exception& e) {
    return fail(Exit::kRpcFailed, e.what(), false);
  }
}
