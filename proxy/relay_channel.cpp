#include "proxy/relay_channel.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

namespace oshpc::proxy {
namespace {

// SPLICE_F_MOVE is only a hint (the kernel moves pages when it can anyway); SPLICE_F_NONBLOCK
// keeps the pipe side from blocking, the sockets are non-blocking themselves.
constexpr unsigned kSpliceFlags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE;

// Set when a splice on this thread failed with EPIPE, the one error that comes with SIGPIPE:
// only then does SigpipeBlock look for a pending one.
thread_local bool t_sigpipe_raised = false;

IoResult moved(ssize_t bytes) {
  return {IoResult::kMoved, static_cast<std::size_t>(bytes), 0};
}

}  // namespace

// ---- PipePool ----

std::optional<KernelPipe> PipePool::take(bool bulk) {
  if (bulk && !idle_bulk_.empty()) {
    KernelPipe pipe = std::move(idle_bulk_.back());
    idle_bulk_.pop_back();
    return pipe;
  }
  std::optional<KernelPipe> pipe = take_small();
  if (!pipe || !bulk || bulk_refused_ || bulk_in_use_ >= max_bulk_) return pipe;
  // Grow it: F_SETPIPE_SZ on an empty pipe cannot lose bytes. Past the user's limits the
  // kernel says EPERM and the pipe keeps its size.
  int granted = ::fcntl(pipe->write_end.get(), F_SETPIPE_SZ, static_cast<int>(bulk_capacity_));
  if (granted < 0) {
    if (errno == EPERM) bulk_refused_ = true;  // ENOMEM may pass: ask again next time
    return pipe;
  }
  if (static_cast<std::size_t>(granted) <= capacity_) return pipe;
  pipe->capacity = static_cast<std::size_t>(granted);
  pipe->bulk = BulkSlot(&bulk_in_use_);
  return pipe;
}

std::optional<KernelPipe> PipePool::take_small() {
  if (!idle_.empty()) {
    KernelPipe pipe = std::move(idle_.back());
    idle_.pop_back();
    return pipe;
  }
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return std::nullopt;
  KernelPipe pipe{sys::UniqueFd(fds[0]), sys::UniqueFd(fds[1]), 0, 0, {}};
  // The pipe's capacity is the channel's memory bound. Raising it can fail for an ordinary
  // user past /proc/sys/fs/pipe-max-size or pipe-user-pages-soft (EPERM): keep what we got.
  int granted = ::fcntl(pipe.write_end.get(), F_SETPIPE_SZ, static_cast<int>(capacity_));
  if (granted < 0) granted = ::fcntl(pipe.write_end.get(), F_GETPIPE_SZ);
  if (granted <= 0) return std::nullopt;
  pipe.capacity = static_cast<std::size_t>(granted);
  return pipe;
}

void PipePool::give_back(KernelPipe pipe) {
  if (pipe.queued != 0) return;  // closed with its bytes
  if (pipe.bulk.held()) {
    if (idle_bulk_.size() < kIdleBulk) idle_bulk_.push_back(std::move(pipe));
  } else if (idle_.size() < max_idle_) {
    idle_.push_back(std::move(pipe));
  }
}

// ---- RelayChannel ----

RelayChannel::~RelayChannel() {
  return_pipe_if_empty();
}

void RelayChannel::append(std::string_view bytes) {
  buffer_.append(bytes);
}

void RelayChannel::start_splicing(PipePool& pool) {
  pool_ = &pool;
}

void RelayChannel::clear() {
  return_pipe_if_empty();
  pipe_.reset();  // still holding bytes: closed with them
  pool_ = nullptr;
  pipe_full_ = false;
  burst_bytes_ = 0;
  streaming_ = false;
  buffer_.clear();
}

bool RelayChannel::can_fill() const {
  if (!is_splicing()) return buffer_.space() > 0;
  if (!pipe_) return true;  // the next fill takes a pipe
  return pipe_->queued < pipe_->capacity && !pipe_full_;
}

IoResult RelayChannel::fill_from(int fd) {
  if (!is_splicing()) return buffer_.fill_from(fd);
  if (!pipe_) pipe_ = pool_->take(streaming_);
  if (!pipe_) {
    // Out of descriptors for a pipe: this channel copies from now on rather than failing.
    stop_splicing();
    return buffer_.fill_from(fd);
  }
  return splice_in(fd);
}

IoResult RelayChannel::drain_to(int fd) {
  // What the proxy queued itself comes before anything spliced after it.
  if (!buffer_.empty() || queued_in_pipe() == 0) return buffer_.drain_to(fd);
  return splice_out(fd);
}

IoResult RelayChannel::splice_in(int fd) {
  std::size_t room = pipe_->capacity - pipe_->queued;
  if (room == 0) return {IoResult::kWouldBlock, 0, 0};
  for (;;) {
    ssize_t n = ::splice(fd, nullptr, pipe_->write_end.get(), nullptr, room, kSpliceFlags);
    if (n > 0) {
      pipe_->queued += static_cast<std::size_t>(n);
      burst_bytes_ += static_cast<std::size_t>(n);
      if (burst_bytes_ >= 2 * pool_->capacity()) streaming_ = true;
      return moved(n);
    }
    if (n == 0) {
      return_pipe_if_empty();
      return {IoResult::kEof, 0, 0};
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      // Either the socket is empty or the pipe is full; an empty pipe is never full.
      pipe_full_ = pipe_->queued > 0;
      if (!pipe_full_) {
        burst_bytes_ = 0;  // the source ran dry: the proxy keeps up with it
        streaming_ = false;
      }
      return_pipe_if_empty();
      return {IoResult::kWouldBlock, 0, 0};
    }
    if (errno == EINVAL) {
      // This socket type cannot splice (splice(2): EINVAL): copy instead.
      stop_splicing();
      return buffer_.fill_from(fd);
    }
    return {IoResult::kError, 0, errno};
  }
}

IoResult RelayChannel::splice_out(int fd) {
  for (;;) {
    ssize_t n = ::splice(pipe_->read_end.get(), nullptr, fd, nullptr, pipe_->queued, kSpliceFlags);
    if (n > 0) {
      pipe_->queued -= static_cast<std::size_t>(n);
      pipe_full_ = false;
      return_pipe_if_empty();
      return moved(n);
    }
    if (n == 0) return {IoResult::kWouldBlock, 0, 0};
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return {IoResult::kWouldBlock, 0, 0};
    if (errno == EINVAL) {
      stop_splicing();
      return buffer_.drain_to(fd);
    }
    if (errno == EPIPE) t_sigpipe_raised = true;
    return {IoResult::kError, 0, errno};
  }
}

void RelayChannel::return_pipe_if_empty() {
  if (pipe_ && pipe_->queued == 0 && pool_ != nullptr) {
    pool_->give_back(std::move(*pipe_));
    pipe_.reset();
    pipe_full_ = false;
  }
}

// Falls back to copying: whatever the pipe holds moves into the buffer, in order.
void RelayChannel::stop_splicing() {
  if (pipe_) {
    char chunk[16 * 1024];
    while (pipe_->queued > 0) {
      ssize_t n = ::read(pipe_->read_end.get(), chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // cannot happen for a pipe we filled ourselves
      buffer_.append({chunk, static_cast<std::size_t>(n)});
      pipe_->queued -= static_cast<std::size_t>(n);
    }
  }
  return_pipe_if_empty();
  pipe_.reset();  // still holding bytes only if the read failed: closed with them
  pool_ = nullptr;
  pipe_full_ = false;
}

// ---- SigpipeBlock ----

SigpipeBlock::SigpipeBlock() {
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  if (::pthread_sigmask(SIG_BLOCK, &pipe_only, &old_mask_) != 0) return;
  blocked_here_ = !sigismember(&old_mask_, SIGPIPE);
}

SigpipeBlock::~SigpipeBlock() {
  if (!blocked_here_) return;
  int saved = errno;
  sigset_t pending;
  if (t_sigpipe_raised && ::sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE)) {
    sigset_t pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    timespec now{0, 0};
    while (::sigtimedwait(&pipe_only, nullptr, &now) < 0 && errno == EINTR) {
    }
  }
  t_sigpipe_raised = false;
  ::pthread_sigmask(SIG_SETMASK, &old_mask_, nullptr);
  errno = saved;
}

}  // namespace oshpc::proxy
