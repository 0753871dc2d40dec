#include "common/log.hpp"

#include <cstdlib>
#include <mutex>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>

namespace oshpc::log {
namespace {

// Remembers warning lines so that the summary can repeat them.
class WarningCollector final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::vector<std::string> lines() {
    std::lock_guard lock(mutex_);
    return lines_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (msg.level != spdlog::level::warn) return;
    // Bounded: a flood of identical warnings must not grow memory with the job size.
    if (lines_.size() < kMaxKept) lines_.emplace_back(msg.payload.data(), msg.payload.size());
  }
  void flush_() override {}

 private:
  static constexpr std::size_t kMaxKept = 50;
  std::vector<std::string> lines_;
};

struct State {
  std::mutex mutex;
  Settings settings;
  std::shared_ptr<spdlog::sinks::stderr_sink_mt> stderr_sink =
      std::make_shared<spdlog::sinks::stderr_sink_mt>();
  std::shared_ptr<WarningCollector> warnings = std::make_shared<WarningCollector>();
};

State& state() {
  static State instance;
  return instance;
}

spdlog::level::level_enum level_for(const Settings& settings) {
  if (const char* env = std::getenv("OSHPC_LOG_LEVEL"); env && *env) {
    return spdlog::level::from_str(env);
  }
  if (settings.verbosity < 0) return spdlog::level::err;
  if (settings.verbosity == 0) return spdlog::level::warn;
  // Info is for rank 0 only: other ranks would repeat the same steps thousands of times.
  if (settings.rank > 0 && settings.verbosity == 1) return spdlog::level::warn;
  return settings.verbosity == 1 ? spdlog::level::info : spdlog::level::debug;
}

// Every logger shares the one stderr sink, whose formatter the last set_pattern replaces; so
// the pattern names the component with %n (the logger's name) and is the same for all.
std::string pattern_for(const Settings& settings) {
  std::string who = settings.program;
  if (settings.rank >= 0) who += "[rank " + std::to_string(settings.rank) + "]";
  return who + ": %l: %n: %v";
}

void apply(spdlog::logger& logger, const Settings& settings) {
  logger.set_level(level_for(settings));
  logger.set_pattern(pattern_for(settings));
}

}  // namespace

void configure(const Settings& settings) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  s.settings = settings;
  spdlog::apply_all(
      [&](const std::shared_ptr<spdlog::logger>& logger) { apply(*logger, settings); });
}

std::shared_ptr<spdlog::logger> get(const std::string& component) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  if (auto existing = spdlog::get(component)) return existing;
  auto logger = std::make_shared<spdlog::logger>(
      component, spdlog::sinks_init_list{s.stderr_sink, s.warnings});
  apply(*logger, s.settings);
  spdlog::register_logger(logger);
  return logger;
}

std::vector<std::string> collected_warnings() {
  return state().warnings->lines();
}

}  // namespace oshpc::log
