// libFuzzer target: the request-head parser and request interpretation must never crash,
// read out of bounds or accept a head whose parts break the invariants the proxy relies on.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "proxy/http_request.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  oshpc::proxy::HeadParse parse = oshpc::proxy::parse_request_head(input);
  if (parse.status != oshpc::proxy::HeadStatus::kComplete) return 0;
  if (parse.head.size > input.size() || parse.head.size > oshpc::proxy::kMaxRequestHead)
    std::abort();

  oshpc::proxy::ProxyRequest request = oshpc::proxy::interpret_request(parse.head);
  if (!request.ok) return 0;
  if (request.host.empty() || request.port == 0) std::abort();
  // The head sent upstream must be a single well-formed head: nothing a client smuggles in
  // may end it early or start a second request.
  if (request.kind == oshpc::proxy::RequestKind::kForward) {
    std::string_view head = request.forward_head;
    if (head.find("\r\n\r\n") != head.size() - 4) std::abort();
    auto again = oshpc::proxy::parse_request_head(head);
    if (again.status != oshpc::proxy::HeadStatus::kComplete &&
        again.status != oshpc::proxy::HeadStatus::kTooLarge) {
      std::abort();
    }
  }
  return 0;
}
