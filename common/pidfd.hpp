// pidfd_open(2) and pidfd_send_signal(2): handles on processes that cannot be confused with
// a later process reusing the pid.
#pragma once

// glibc 2.36 declares the pidfd functions without C linkage for C++ (fixed in 2.37).
extern "C" {
#include <sys/pidfd.h>
}
