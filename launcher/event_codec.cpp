#include "launcher/event_codec.hpp"

#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace oshpc::launcher {
namespace {

using node_agent::SandboxEvent;

template <typename T>
void put(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

void put_string(std::string& out, const std::string& text) {
  put<std::uint32_t>(out, static_cast<std::uint32_t>(text.size()));
  out += text;
}

class Reader {
 public:
  Reader(const char* data, std::size_t size, std::size_t& offset)
      : data_(data), size_(size), offset_(offset) {}

  template <typename T>
  T get() {
    need(sizeof(T));
    T value;
    std::memcpy(&value, data_ + offset_, sizeof(T));
    offset_ += sizeof(T);
    return value;
  }

  void get_string(std::string& text) {
    auto length = get<std::uint32_t>();
    need(length);
    text.assign(data_ + offset_, length);
    offset_ += length;
  }

 private:
  void need(std::size_t bytes) const {
    if (offset_ + bytes > size_) throw std::runtime_error("truncated event batch");
  }
  const char* data_;
  std::size_t size_;
  std::size_t& offset_;
};

}  // namespace

// Both ends are the same program on the same kind of machine, so native byte order is fine.
void encode_event(std::string& batch, const SandboxEvent& e) {
  put<std::uint8_t>(batch, static_cast<std::uint8_t>(e.type));
  put<std::uint8_t>(batch, static_cast<std::uint8_t>(e.reason));
  put(batch, e.wall_us);
  put(batch, e.index);
  put(batch, e.rank);
  put(batch, e.pid);
  put(batch, e.exit_code);
  put(batch, e.signal);
  put(batch, e.duration_us);
  put(batch, e.start_latency_us);
  put(batch, e.cpu_user_us);
  put(batch, e.cpu_system_us);
  put(batch, e.max_rss_kib);
  put(batch, e.seconds);
  put(batch, e.bytes_from_shared);
  put_string(batch, e.message);
  put_string(batch, e.method);
  put_string(batch, e.cpus);
  put_string(batch, e.gpus);
  put<std::uint8_t>(batch, e.allowed ? 1 : 0);
  put_string(batch, e.host);
  put(batch, e.port);
  put_string(batch, e.request_method);
  put_string(batch, e.rule);
  put(batch, e.status);
  put(batch, e.bytes_up);
  put(batch, e.bytes_down);
}

void decode_event(const char* data, std::size_t size, std::size_t& offset, SandboxEvent& e) {
  Reader in(data, size, offset);
  e.type = static_cast<node_agent::EventType>(in.get<std::uint8_t>());
  e.reason = static_cast<node_agent::FailureReason>(in.get<std::uint8_t>());
  e.wall_us = in.get<std::int64_t>();
  e.index = in.get<std::int64_t>();
  e.rank = in.get<std::int32_t>();
  e.pid = in.get<std::int32_t>();
  e.exit_code = in.get<std::int32_t>();
  e.signal = in.get<std::int32_t>();
  e.duration_us = in.get<std::int64_t>();
  e.start_latency_us = in.get<std::int64_t>();
  e.cpu_user_us = in.get<std::int64_t>();
  e.cpu_system_us = in.get<std::int64_t>();
  e.max_rss_kib = in.get<std::int64_t>();
  e.seconds = in.get<double>();
  e.bytes_from_shared = in.get<std::int64_t>();
  in.get_string(e.message);
  in.get_string(e.method);
  in.get_string(e.cpus);
  in.get_string(e.gpus);
  e.allowed = in.get<std::uint8_t>() != 0;
  in.get_string(e.host);
  e.port = in.get<std::int32_t>();
  in.get_string(e.request_method);
  in.get_string(e.rule);
  e.status = in.get<std::int32_t>();
  e.bytes_up = in.get<std::int64_t>();
  e.bytes_down = in.get<std::int64_t>();
  if (static_cast<int>(e.type) > static_cast<int>(node_agent::EventType::kRemoved)) {
    throw std::runtime_error("unknown event type in batch");
  }
}

}  // namespace oshpc::launcher
