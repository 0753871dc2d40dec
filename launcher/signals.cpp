#include "launcher/signals.hpp"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

namespace oshpc::launcher {

static sigset_t handled_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int signo : {SIGCHLD, SIGTERM, SIGINT, SIGHUP}) sigaddset(&set, signo);
  return set;
}

SignalChannel::SignalChannel() {
  sigset_t set = handled_signals();
  if (::pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) sys::throw_errno("block signals");
  int fd = ::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (fd < 0) sys::throw_errno("create a signalfd");
  fd_.reset(fd);
}

SignalsSeen SignalChannel::read_pending() {
  SignalsSeen seen;
  signalfd_siginfo info{};
  while (::read(fd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    if (info.ssi_signo == SIGCHLD) {
      seen.child_exited = true;
    } else if (seen.stop_signal == 0) {
      seen.stop_signal = static_cast<int>(info.ssi_signo);
    }
  }
  return seen;
}

SignalsSeen SignalChannel::drain() {
  SignalsSeen seen = read_pending();
  seen.child_exited = seen.child_exited || kept_.child_exited;
  if (kept_.stop_signal != 0) seen.stop_signal = kept_.stop_signal;
  kept_ = {};
  return seen;
}

bool SignalChannel::stop_pending() {
  SignalsSeen seen = read_pending();
  kept_.child_exited = kept_.child_exited || seen.child_exited;
  if (kept_.stop_signal == 0) kept_.stop_signal = seen.stop_signal;
  return kept_.stop_signal != 0;
}

}  // namespace oshpc::launcher
