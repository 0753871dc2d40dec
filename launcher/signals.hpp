// Signals as data: SIGCHLD, SIGTERM, SIGINT and SIGHUP are blocked in every thread (so block
// them before MPI starts its threads) and read from a signalfd in the event loop.
#pragma once

#include "common/sys.hpp"

namespace oshpc::launcher {

struct SignalsSeen {
  bool child_exited = false;
  int stop_signal = 0;  // SIGTERM, SIGINT or SIGHUP when the job must stop
};

class SignalChannel {
 public:
  // Blocks the signals in the calling thread (inherited by threads created later) and opens
  // the signalfd. Throws SysError.
  SignalChannel();
  int fd() const { return fd_.get(); }
  // Reads every pending signal, with those stop_pending() kept; never blocks, never throws.
  SignalsSeen drain();
  // Whether a stop signal has arrived; it stays pending for the next drain(). Never throws.
  bool stop_pending();

 private:
  SignalsSeen read_pending();

  sys::UniqueFd fd_;
  SignalsSeen kept_;
};

}  // namespace oshpc::launcher
