// One direction of a proxied connection, and the kernel pipes that carry it.
//
// An established tunnel moves its bytes with splice(2): socket → pipe → socket, so they never
// enter the proxy's memory and are not copied on the way. What the proxy itself queues (the
// forwarded request head, its "200 Connection established", bytes read with the head) sits in
// a RelayBuffer and goes out first. Sockets that cannot splice, and channels that never start
// splicing, copy through that buffer as before.
#pragma once

#include <signal.h>

#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "common/sys.hpp"
#include "proxy/relay_buffer.hpp"

namespace oshpc::proxy {

// Holds one of a PipePool's bulk slots while it lives (see PipePool); move-only.
class BulkSlot {
 public:
  BulkSlot() = default;
  explicit BulkSlot(std::size_t* in_use) : in_use_(in_use) { ++*in_use_; }
  BulkSlot(BulkSlot&& other) noexcept : in_use_(std::exchange(other.in_use_, nullptr)) {}
  BulkSlot& operator=(BulkSlot&& other) noexcept {
    if (this != &other) {
      release();
      in_use_ = std::exchange(other.in_use_, nullptr);
    }
    return *this;
  }
  ~BulkSlot() { release(); }

  bool held() const { return in_use_ != nullptr; }

 private:
  void release() {
    if (in_use_ != nullptr) --*in_use_;
    in_use_ = nullptr;
  }
  std::size_t* in_use_ = nullptr;
};

struct KernelPipe {
  sys::UniqueFd read_end;
  sys::UniqueFd write_end;
  std::size_t capacity = 0;  // what the kernel granted (F_GETPIPE_SZ)
  std::size_t queued = 0;    // bytes in the pipe now
  BulkSlot bulk;             // held: grown to the pool's bulk capacity
};

// Empty pipes kept for reuse. A channel holds a pipe only while bytes are in flight, so an idle
// connection costs no descriptors, and a bulk transfer costs no pipe()/close() per chunk.
//
// Pipes have the small capacity, except at most max_bulk of them, grown to the bulk capacity
// for channels moving a stream (see RelayChannel): a bigger pipe moves more per splice, so a
// fast transfer costs fewer system calls, while the memory every other connection may hold
// stays small. The kernel charges a pipe's capacity to its user (pipe-user-pages-soft, shared
// with the user's sandboxes) even while it is empty, which is why bulk pipes are few and at
// most kIdleBulk of them wait empty; once the kernel refuses to grow one (EPERM: the user is
// past that limit), the pool stops asking.
class PipePool {
 public:
  // Pipes of capacity bytes (the kernel rounds up to a power-of-two number of pages); at most
  // max_idle empty small ones are kept open. bulk_capacity <= capacity or max_bulk == 0: no
  // bulk pipes.
  PipePool(std::size_t capacity, std::size_t max_idle, std::size_t bulk_capacity = 0,
           std::size_t max_bulk = 0)
      : capacity_(capacity),
        max_idle_(max_idle),
        bulk_capacity_(bulk_capacity),
        max_bulk_(bulk_capacity > capacity ? max_bulk : 0) {}
  // Its pipes' bulk slots point into it.
  PipePool(const PipePool&) = delete;
  PipePool& operator=(const PipePool&) = delete;

  static constexpr std::size_t kIdleBulk = 2;

  // An empty pipe, reused or new (non-blocking, close-on-exec); a bulk one when asked and one
  // is free, else a small one; nullopt with errno set when none can be made (EMFILE, ENFILE).
  std::optional<KernelPipe> take(bool bulk = false);
  // Keeps an empty pipe for the next take(), or closes it when enough are idle; a pipe still
  // holding bytes is closed with them.
  void give_back(KernelPipe pipe);

  std::size_t capacity() const { return capacity_; }
  std::size_t idle_count() const { return idle_.size() + idle_bulk_.size(); }
  std::size_t bulk_count() const { return bulk_in_use_; }  // bulk pipes open, idle or not

 private:
  std::optional<KernelPipe> take_small();

  std::size_t capacity_;
  std::size_t max_idle_;
  std::size_t bulk_capacity_;
  std::size_t max_bulk_;
  bool bulk_refused_ = false;    // the kernel would not grow a pipe: stop asking
  std::size_t bulk_in_use_ = 0;  // declared before the pipes, whose slots count down into it
  std::vector<KernelPipe> idle_;
  std::vector<KernelPipe> idle_bulk_;
};

class RelayChannel {
 public:
  explicit RelayChannel(std::size_t buffer_bytes) : buffer_(buffer_bytes) {}
  ~RelayChannel();
  RelayChannel(const RelayChannel&) = delete;
  RelayChannel& operator=(const RelayChannel&) = delete;

  // Queues bytes to send before anything read later (heads and answers are small, so this may
  // go past the buffer's capacity).
  void append(std::string_view bytes);
  // From now on, reads go into a pipe taken from pool (which must outlive this channel).
  void start_splicing(PipePool& pool);
  // Drops everything queued and stops splicing: the proxy's own answer replaces the stream.
  void clear();

  bool empty() const { return buffer_.empty() && queued_in_pipe() == 0; }
  // Whether a read could take more bytes now (false: wait until the other side drains).
  bool can_fill() const;
  bool is_splicing() const { return pool_ != nullptr; }
  std::size_t queued_in_pipe() const { return pipe_ ? pipe_->queued : 0; }
  std::size_t pipe_capacity() const { return pipe_ ? pipe_->capacity : 0; }  // 0: none held

  // One read (or splice) from fd. kEof at end of stream. Never throws except bad_alloc.
  IoResult fill_from(int fd);
  // One write (or splice) of queued bytes to fd, the buffer's first. Never throws except
  // bad_alloc. A splice into a socket whose peer is gone raises SIGPIPE: see SigpipeBlock.
  IoResult drain_to(int fd);

 private:
  IoResult splice_in(int fd);
  IoResult splice_out(int fd);
  void return_pipe_if_empty();
  void stop_splicing();

  RelayBuffer buffer_;
  PipePool* pool_ = nullptr;  // null: copy through buffer_
  std::optional<KernelPipe> pipe_;
  // Bytes read since the source last ran dry. Past two small pipes' worth, the source
  // streams faster than the destination takes it (the proxy, not the network, is the limit),
  // so the next pipe taken is a bulk one when the pool has one free. A source that runs dry
  // (nothing to read while the pipe is empty) ends the stream.
  std::size_t burst_bytes_ = 0;
  bool streaming_ = false;
  // The last splice into a non-empty pipe would block: the pipe may be full even below its
  // byte capacity (the kernel fills it in slots, one per socket buffer fragment), so the
  // source is not read again until the destination takes something.
  bool pipe_full_ = false;
};

// splice(2) into a socket whose peer has gone raises SIGPIPE (there is no MSG_NOSIGNAL for
// splice), and the proxy lives in someone else's process: it may neither die of it nor set
// SIGPIPE to SIG_IGN (the sandboxes this process spawns would inherit that). While a
// SigpipeBlock exists, SIGPIPE is blocked in this thread; its destructor takes a SIGPIPE
// raised meanwhile off the pending set and restores the mask. Does nothing when the thread
// already blocks SIGPIPE. Never throws.
class SigpipeBlock {
 public:
  SigpipeBlock();
  ~SigpipeBlock();
  SigpipeBlock(const SigpipeBlock&) = delete;
  SigpipeBlock& operator=(const SigpipeBlock&) = delete;

 private:
  sigset_t old_mask_;
  bool blocked_here_ = false;
};

}  // namespace oshpc::proxy
