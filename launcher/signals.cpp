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

SignalsSeen SignalChannel::drain() {
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

}  // namespace oshpc::launcher
