// A bounded byte queue between two sockets of one proxied connection.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string_view>
#include <vector>

namespace oshpc::proxy {

// Result of one read or write on a socket: bytes moved, or what stopped it.
struct IoResult {
  enum Kind { kMoved, kWouldBlock, kEof, kError } kind = kMoved;
  std::size_t bytes = 0;
  int error = 0;  // errno for kError
};

class RelayBuffer {
 public:
  explicit RelayBuffer(std::size_t capacity) : capacity_(capacity) {}

  std::size_t size() const { return end_ - start_; }
  bool empty() const { return start_ == end_; }
  std::size_t space() const { return size() >= capacity_ ? 0 : capacity_ - size(); }
  std::string_view view() const { return {data_.data() + start_, size()}; }

  // Appends bytes beyond the capacity if need be (heads and error answers are small).
  void append(std::string_view bytes);
  // Drops the queued bytes and the memory behind them.
  void clear();
  // One read() from fd into the free space (EINTR retried). Never throws except bad_alloc.
  IoResult fill_from(int fd);
  // One send() of the queued bytes to fd (MSG_NOSIGNAL: a gone peer is an error, not SIGPIPE).
  IoResult drain_to(int fd);

 private:
  void make_room(std::size_t bytes);

  std::size_t capacity_;
  std::vector<char> data_;  // allocated on first use: idle connections cost no buffer
  std::size_t start_ = 0;
  std::size_t end_ = 0;
};

}  // namespace oshpc::proxy
