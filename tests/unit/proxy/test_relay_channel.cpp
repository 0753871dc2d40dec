// RelayChannel on UNIX socket pairs: the order of queued and spliced bytes, end of stream,
// back-pressure within the bound, pipes going back to the pool.
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "common/sys.hpp"
#include "proxy/relay_channel.hpp"

using namespace oshpc::proxy;
using oshpc::sys::UniqueFd;

namespace {

struct SocketPair {
  UniqueFd near;  // the end the test writes to or reads from
  UniqueFd far;   // the end the channel reads from or writes to
};

SocketPair socket_pair() {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

std::string read_available(int fd) {
  std::string out;
  char chunk[65536];
  ssize_t n;
  while ((n = ::read(fd, chunk, sizeof chunk)) > 0) out.append(chunk, static_cast<size_t>(n));
  return out;
}

char pattern(std::size_t offset) {
  return static_cast<char>(offset % 251);
}

// Writes the pattern into fd from offset on, as far as the socket takes it.
void feed(int fd, std::size_t& offset, std::size_t total) {
  char chunk[16384];
  while (offset < total) {
    std::size_t size = std::min(sizeof chunk, total - offset);
    for (std::size_t i = 0; i < size; ++i) chunk[i] = pattern(offset + i);
    ssize_t n = ::write(fd, chunk, size);
    if (n <= 0) return;
    offset += static_cast<std::size_t>(n);
  }
}

}  // namespace

TEST_CASE("queued bytes go out before the spliced stream, and the pipe goes back when empty") {
  PipePool pool(64 * 1024, 4);
  SocketPair source = socket_pair();
  SocketPair destination = socket_pair();
  RelayChannel channel(64 * 1024);
  channel.append("HTTP/1.1 200 Connection established\r\n\r\n");
  channel.start_splicing(pool);
  REQUIRE(::write(source.near.get(), "payload", 7) == 7);

  IoResult in = channel.fill_from(source.far.get());
  CHECK(in.kind == IoResult::kMoved);
  CHECK(in.bytes == 7);
  CHECK(channel.queued_in_pipe() == 7);
  while (!channel.empty())
    REQUIRE(channel.drain_to(destination.far.get()).kind == IoResult::kMoved);
  CHECK(read_available(destination.near.get()) ==
        "HTTP/1.1 200 Connection established\r\n\r\npayload");
  CHECK(pool.idle_count() == 1);

  source.near.reset();
  CHECK(channel.fill_from(source.far.get()).kind == IoResult::kEof);
  CHECK(channel.empty());
}

TEST_CASE("a destination that does not read stops the channel within its bound") {
  bool splice = GENERATE(true, false);
  bool bulk = splice && GENERATE(true, false);
  CAPTURE(splice, bulk);
  constexpr std::size_t kBound = 64 * 1024;
  constexpr std::size_t kBulkBound = 1024 * 1024;
  constexpr std::size_t kTotal = 4 * 1024 * 1024;
  PipePool pool(kBound, 4, bulk ? kBulkBound : 0, 1);
  SocketPair source = socket_pair();
  SocketPair destination = socket_pair();
  RelayChannel channel(kBound);
  if (splice) channel.start_splicing(pool);

  // Feed and relay until every side is stuck: the destination's socket buffer is full.
  std::size_t written = 0;
  for (bool moving = true; moving;) {
    std::size_t before = written;
    feed(source.near.get(), written, kTotal);
    IoResult in{IoResult::kWouldBlock};
    if (channel.can_fill()) in = channel.fill_from(source.far.get());
    IoResult out = channel.drain_to(destination.far.get());
    REQUIRE(in.kind != IoResult::kError);
    REQUIRE(out.kind != IoResult::kError);
    moving = written != before || in.kind == IoResult::kMoved || out.kind == IoResult::kMoved;
  }
  CHECK(written < kTotal);
  CHECK_FALSE(channel.can_fill());
  CHECK(channel.is_splicing() == splice);
  CHECK(channel.queued_in_pipe() <= (bulk ? kBulkBound : kBound));
  // The source never ran dry: with a bulk pipe to be had, the channel holds it.
  if (splice) CHECK(channel.pipe_capacity() == (bulk ? kBulkBound : kBound));

  // Then everything arrives, in order.
  std::string received;
  bool source_open = true;
  for (int spins = 0; received.size() < kTotal; ++spins) {
    REQUIRE(spins < 1'000'000);
    received += read_available(destination.near.get());
    if (source_open) feed(source.near.get(), written, kTotal);
    if (source_open && written == kTotal) {
      source.near.reset();
      source_open = false;
    }
    if (channel.can_fill()) REQUIRE(channel.fill_from(source.far.get()).kind != IoResult::kError);
    REQUIRE(channel.drain_to(destination.far.get()).kind != IoResult::kError);
  }
  REQUIRE(received.size() == kTotal);
  for (std::size_t i = 0; i < kTotal; ++i) {
    if (received[i] != pattern(i)) FAIL("byte " << i << " differs");
  }
  CHECK(channel.fill_from(source.far.get()).kind == IoResult::kEof);
}

TEST_CASE("cleared channels drop what they held and copy from then on") {
  PipePool pool(64 * 1024, 4);
  SocketPair source = socket_pair();
  SocketPair destination = socket_pair();
  RelayChannel channel(64 * 1024);
  channel.start_splicing(pool);
  REQUIRE(::write(source.near.get(), "dropped", 7) == 7);
  REQUIRE(channel.fill_from(source.far.get()).kind == IoResult::kMoved);
  channel.clear();
  CHECK(channel.empty());
  CHECK_FALSE(channel.is_splicing());
  channel.append("answer");
  REQUIRE(channel.drain_to(destination.far.get()).kind == IoResult::kMoved);
  CHECK(read_available(destination.near.get()) == "answer");
}

namespace {

// One relayed direction between two socket pairs, with what the destination received.
struct Stream {
  SocketPair source = socket_pair();
  SocketPair destination = socket_pair();
  RelayChannel channel{64 * 1024};
  std::string received;
  std::size_t written = 0;  // pattern bytes fed into the source so far

  explicit Stream(PipePool& pool) { channel.start_splicing(pool); }

  // Sends what the channel holds and reads it at the destination.
  void deliver() {
    while (!channel.empty()) {
      REQUIRE(channel.drain_to(destination.far.get()).kind == IoResult::kMoved);
      received += read_available(destination.near.get());
    }
  }

  // Feeds the source and relays until the channel holds a pipe of `capacity` (true) or
  // `rounds` fills went by (false).
  bool relay_until_pipe(std::size_t capacity, int rounds = 16) {
    for (int round = 0; round < rounds; ++round) {
      feed(source.near.get(), written, written + 256 * 1024);
      REQUIRE(channel.fill_from(source.far.get()).kind != IoResult::kError);
      if (channel.pipe_capacity() == capacity) return true;
      deliver();
    }
    return false;
  }

  void check_received_in_order() const {
    for (std::size_t i = 0; i < received.size(); ++i) {
      if (received[i] != pattern(i)) FAIL("byte " << i << " differs");
    }
  }
};

}  // namespace

TEST_CASE("a streaming direction moves through a bulk pipe while one is free") {
  constexpr std::size_t kSmall = 64 * 1024;
  constexpr std::size_t kBulk = 1024 * 1024;
  PipePool pool(kSmall, 4, kBulk, 1);
  Stream first(pool);

  // A source that never runs dry: after two small pipes' worth, the next pipe is a bulk one.
  REQUIRE(::write(first.source.near.get(), "\0\1\2", 3) == 3);
  first.written = 3;
  REQUIRE(first.channel.fill_from(first.source.far.get()).kind == IoResult::kMoved);
  CHECK(first.channel.pipe_capacity() == kSmall);
  first.deliver();
  REQUIRE(first.relay_until_pipe(kBulk));
  CHECK(pool.bulk_count() == 1);

  // Only one bulk pipe may exist: a second stream, asking for one, keeps small pipes.
  Stream second(pool);
  CHECK_FALSE(second.relay_until_pipe(kBulk));
  CHECK(pool.bulk_count() == 1);
  second.check_received_in_order();

  // Every byte of the first stream arrives, in order; its emptied bulk pipe waits in the pool.
  first.deliver();
  while (first.channel.fill_from(first.source.far.get()).kind == IoResult::kMoved) {
    first.deliver();
  }
  CHECK(first.received.size() == first.written);
  first.check_received_in_order();
  CHECK(pool.bulk_count() == 1);
  CHECK(pool.idle_count() >= 1);

  // The source ran dry: the next message goes through a small pipe again.
  REQUIRE(::write(first.source.near.get(), "short", 5) == 5);
  REQUIRE(first.channel.fill_from(first.source.far.get()).kind == IoResult::kMoved);
  CHECK(first.channel.pipe_capacity() == kSmall);
  first.deliver();

  // A bulk pipe closed with bytes in it gives its slot back.
  REQUIRE(first.relay_until_pipe(kBulk));
  REQUIRE(first.channel.queued_in_pipe() > 0);
  first.channel.clear();
  CHECK(pool.bulk_count() == 0);
}

TEST_CASE("at most two emptied bulk pipes wait in the pool") {
  constexpr std::size_t kSmall = 64 * 1024;
  constexpr std::size_t kBulk = 1024 * 1024;
  PipePool pool(kSmall, 4, kBulk, 4);
  std::vector<KernelPipe> taken;
  for (int i = 0; i < 4; ++i) {
    auto pipe = pool.take(true);
    REQUIRE(pipe);
    CHECK(pipe->capacity == kBulk);
    taken.push_back(std::move(*pipe));
  }
  CHECK(pool.bulk_count() == 4);
  auto fifth = pool.take(true);  // over max_bulk: a small one
  REQUIRE(fifth);
  CHECK(fifth->capacity == kSmall);
  for (auto& pipe : taken) pool.give_back(std::move(pipe));
  CHECK(pool.bulk_count() == PipePool::kIdleBulk);
}
