// Parsing what a client sends a forward proxy: the request head, then what it asks for (a
// CONNECT tunnel or an absolute-URI HTTP request to forward). Pure functions on bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace oshpc::proxy {

constexpr std::size_t kMaxRequestHead = 16 * 1024;
constexpr std::size_t kMaxHeaderCount = 100;

struct RequestHead {
  std::string method;
  std::string target;
  std::string version;  // "HTTP/1.0" or "HTTP/1.1"
  std::vector<std::pair<std::string, std::string>> headers;
  std::size_t size = 0;  // bytes of the head, up to and including the blank line
};

enum class HeadStatus { kIncomplete, kComplete, kInvalid, kTooLarge };

struct HeadParse {
  HeadStatus status = HeadStatus::kIncomplete;
  RequestHead head;   // valid when kComplete
  std::string error;  // when kInvalid or kTooLarge
};

// Parses the head at the start of buffer (CRLF line ends, no folded lines). Never throws.
HeadParse parse_request_head(std::string_view buffer, std::size_t max_head = kMaxRequestHead);

enum class RequestKind { kConnect, kForward };

// What the client asked the proxy for. When ok is false, status and error say how to answer.
struct ProxyRequest {
  bool ok = false;
  int status = 400;
  std::string error;
  RequestKind kind = RequestKind::kConnect;
  std::string host;  // lower case, brackets removed from IPv6 literals
  std::uint16_t port = 0;
  std::string forward_head;  // kForward: the head to send upstream (origin-form, Connection set)
};

// Interprets a parsed head: "CONNECT host:port" or "METHOD http://host[:port]/path". Never throws.
ProxyRequest interpret_request(const RequestHead& head);

struct Authority {
  bool ok = false;
  std::string host;
  std::uint16_t port = 0;
};

// Splits "host:port", "[v6]:port" or, when default_port is nonzero, "host". Never throws.
Authority parse_authority(std::string_view text, std::uint16_t default_port);

// The status code of a response head ("HTTP/1.1 200 OK\r\n..."), 0 when malformed, -1 when
// the head is not complete yet; head_size gets the head's length. Never throws.
int parse_response_status(std::string_view buffer, std::size_t& head_size);

}  // namespace oshpc::proxy
