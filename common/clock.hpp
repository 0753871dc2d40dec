// Time stamps for events and measurements.
#pragma once

#include <cstdint>
#include <string>

namespace oshpc::clock {

// Microseconds since the Unix epoch (wall clock, for event time stamps). Never fails.
std::int64_t wall_us();

// Microseconds on the monotonic clock (for durations and latencies). Never fails.
std::int64_t mono_us();

// RFC 3339 in UTC with microseconds, e.g. "2026-12-03T15:55:22.123456Z". Never fails.
std::string rfc3339(std::int64_t wall_us);

// Appends rfc3339(wall_us) to out without allocating a temporary (event plane hot path).
void append_rfc3339(std::string& out, std::int64_t wall_us);

}  // namespace oshpc::clock
