#include "common/clock.hpp"

#include <ctime>

namespace oshpc::clock {

static std::int64_t read_clock(clockid_t id) {
  timespec ts{};
  ::clock_gettime(id, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000 + ts.tv_nsec / 1000;
}

std::int64_t wall_us() {
  return read_clock(CLOCK_REALTIME);
}
std::int64_t mono_us() {
  return read_clock(CLOCK_MONOTONIC);
}

static void append_digits(std::string& out, long value, int width) {
  char buf[16];
  for (int i = width - 1; i >= 0; --i) {
    buf[i] = static_cast<char>('0' + value % 10);
    value /= 10;
  }
  out.append(buf, static_cast<std::size_t>(width));
}

void append_rfc3339(std::string& out, std::int64_t wall_us) {
  // Many events share a second: keep "YYYY-MM-DDTHH:MM:SS." of the last second seen.
  thread_local std::int64_t cached_second = -1;
  thread_local std::string cached_prefix;
  std::int64_t second = wall_us / 1'000'000;
  if (second != cached_second) {
    std::time_t t = static_cast<std::time_t>(second);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    cached_prefix.clear();
    append_digits(cached_prefix, tm.tm_year + 1900, 4);
    cached_prefix += '-';
    append_digits(cached_prefix, tm.tm_mon + 1, 2);
    cached_prefix += '-';
    append_digits(cached_prefix, tm.tm_mday, 2);
    cached_prefix += 'T';
    append_digits(cached_prefix, tm.tm_hour, 2);
    cached_prefix += ':';
    append_digits(cached_prefix, tm.tm_min, 2);
    cached_prefix += ':';
    append_digits(cached_prefix, tm.tm_sec, 2);
    cached_prefix += '.';
    cached_second = second;
  }
  out += cached_prefix;
  append_digits(out, static_cast<long>(wall_us % 1'000'000), 6);
  out += 'Z';
}

std::string rfc3339(std::int64_t wall_us) {
  std::string out;
  append_rfc3339(out, wall_us);
  return out;
}

}  // namespace oshpc::clock
