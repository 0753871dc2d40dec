// `oshpc-fanout --check`: probes what this host offers a sandbox and says what to do about
// what it lacks. Tests use the same probes to decide what to skip.
#pragma once

#include <string>
#include <vector>

namespace oshpc::launcher {

struct Probe {
  std::string name;
  bool ok = false;
  bool required = false;  // without it no sandbox can run
  std::string detail;     // what was found, or what to do
};

// Runs every probe. Never throws.
std::vector<Probe> probe_host();

// Prints the probes; returns 0 when every required probe passed, else 1.
int print_host_check(const std::vector<Probe>& probes);

}  // namespace oshpc::launcher
