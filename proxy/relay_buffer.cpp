#include "proxy/relay_buffer.hpp"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace oshpc::proxy {

void RelayBuffer::make_room(std::size_t bytes) {
  if (start_ > 0) {
    std::memmove(data_.data(), data_.data() + start_, size());
    end_ -= start_;
    start_ = 0;
  }
  if (data_.size() < end_ + bytes) data_.resize(std::max(end_ + bytes, capacity_));
}

void RelayBuffer::append(std::string_view bytes) {
  make_room(bytes.size());
  std::memcpy(data_.data() + end_, bytes.data(), bytes.size());
  end_ += bytes.size();
}

void RelayBuffer::clear() {
  data_ = {};
  start_ = end_ = 0;
}

IoResult RelayBuffer::fill_from(int fd) {
  std::size_t room = space();
  if (room == 0) return {IoResult::kWouldBlock, 0, 0};
  make_room(room);
  for (;;) {
    ssize_t n = ::read(fd, data_.data() + end_, room);
    if (n > 0) {
      end_ += static_cast<std::size_t>(n);
      return {IoResult::kMoved, static_cast<std::size_t>(n), 0};
    }
    if (n == 0) return {IoResult::kEof, 0, 0};
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return {IoResult::kWouldBlock, 0, 0};
    return {IoResult::kError, 0, errno};
  }
}

IoResult RelayBuffer::drain_to(int fd) {
  if (empty()) return {IoResult::kWouldBlock, 0, 0};
  for (;;) {
    ssize_t n = ::send(fd, data_.data() + start_, size(), MSG_NOSIGNAL);
    if (n >= 0) {
      start_ += static_cast<std::size_t>(n);
      if (start_ == end_) start_ = end_ = 0;
      return {IoResult::kMoved, static_cast<std::size_t>(n), 0};
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return {IoResult::kWouldBlock, 0, 0};
    return {IoResult::kError, 0, errno};
  }
}

}  // namespace oshpc::proxy
