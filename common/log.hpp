// Logging for every component: one spdlog logger per component, every line prefixed with the
// program, the rank and the component. Levels: warnings and errors by default, -v info,
// -vv debug; OSHPC_LOG_LEVEL (trace|debug|info|warn|error|off) overrides. Info lines are shown
// on rank 0 only; warnings are also collected and repeated at exit so job output cannot bury them.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

namespace oshpc::log {

struct Settings {
  std::string program = "oshpc";
  int rank = -1;      // -1: not an MPI program (yet)
  int verbosity = 0;  // -q: -1, default 0, -v 1, -vv 2
};

// Configures the default sink and level. Safe to call again (for example once the rank is known).
void configure(const Settings& settings);

// Returns the logger for a component ("launcher", "node-agent", ...), creating it on first use.
std::shared_ptr<spdlog::logger> get(const std::string& component);

// Warnings seen so far on this process, for the end-of-job repeat.
std::vector<std::string> collected_warnings();

}  // namespace oshpc::log
