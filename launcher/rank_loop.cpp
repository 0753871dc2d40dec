#include "launcher/rank_loop.hpp"

#include <poll.h>

#include <algorithm>
#include <vector>

#include "common/clock.hpp"

namespace oshpc::launcher {

SignalsSeen step_node(const LocalNode& node, SignalChannel& signals, int timeout_ms) {
  node_agent::SandboxRunner* runner = node.runner;
  std::vector<pollfd> fds = {{signals.fd(), POLLIN, 0}};
  if (node.proxy) fds.push_back({node.proxy->epoll_fd(), POLLIN, 0});
  if (node.wake_fd >= 0) fds.push_back({node.wake_fd, POLLIN, 0});
  const std::size_t first_runner_fd = fds.size();
  if (runner) {
    runner->append_poll_fds(fds);
    std::int64_t next_deadline_us = runner->enforce_timeouts();
    if (next_deadline_us >= 0) {
      timeout_ms =
          static_cast<int>(std::min<std::int64_t>(timeout_ms, next_deadline_us / 1000 + 1));
    }
  }
  ::poll(fds.data(), fds.size(), timeout_ms);

  SignalsSeen seen = signals.drain();
  // A stop comes first: a scheduler signals every process of the job at once, so sandboxes
  // that died of that same signal must be reaped by the cancellation (and reported as
  // cancelled), and no new sandbox may start in the slots they freed.
  if (seen.stop_signal) return seen;
  // The proxy also keeps its own timeouts, so it is served on every step, ready or not.
  if (node.proxy) node.proxy->handle_ready(0);
  if (runner) {
    runner->handle_readable(fds, first_runner_fd);
    if (seen.child_exited) runner->reap();
    runner->enforce_timeouts();
    runner->start_ready();
  }
  return seen;
}

node_agent::SandboxEvent node_failed_event(int rank, const std::string& node,
                                           const std::string& why) {
  node_agent::SandboxEvent event;
  event.type = node_agent::EventType::kNodeFailed;
  event.wall_us = clock::wall_us();
  event.rank = rank;
  event.message = node + ": " + why;
  return event;
}

}  // namespace oshpc::launcher
