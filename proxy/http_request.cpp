#include "proxy/http_request.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>

namespace oshpc::proxy {
namespace {

constexpr std::string_view kLineEnd = "\r\n";

bool is_token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) ||
         std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view text) {
  return !text.empty() && std::all_of(text.begin(), text.end(), is_token_char);
}

std::string lower(std::string_view text) {
  std::string result(text);
  std::transform(result.begin(), result.end(), result.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return result;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

bool parse_request_line(std::string_view line, RequestHead& head) {
  std::size_t first = line.find(' ');
  std::size_t second = line.find(' ', first + 1);
  if (first == std::string_view::npos || second == std::string_view::npos) return false;
  head.method = line.substr(0, first);
  head.target = line.substr(first + 1, second - first - 1);
  head.version = line.substr(second + 1);
  bool printable_target = std::all_of(head.target.begin(), head.target.end(),
                                      [](char c) { return c > 0x20 && c < 0x7f; });
  return is_token(head.method) && !head.target.empty() && printable_target &&
         (head.version == "HTTP/1.1" || head.version == "HTTP/1.0");
}

// Header values may hold any visible byte, space and tab; never CR, LF or NUL.
bool parse_header_line(std::string_view line, RequestHead& head) {
  std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) return false;
  std::string_view name = line.substr(0, colon);
  std::string_view value = trim(line.substr(colon + 1));
  // No space before the colon and no folded lines: both are request-smuggling tools.
  if (!is_token(name)) return false;
  if (std::any_of(value.begin(), value.end(),
                  [](char c) { return c == '\0' || c == '\r' || c == '\n'; })) {
    return false;
  }
  head.headers.emplace_back(std::string(name), std::string(value));
  return true;
}

bool valid_host_name(std::string_view host) {
  return !host.empty() && host.size() <= 253 && std::all_of(host.begin(), host.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
  });
}

bool is_hop_by_hop(const std::string& name) {
  static constexpr std::string_view kHopByHop[] = {"connection", "proxy-connection", "keep-alive",
                                                   "proxy-authorization", "host"};
  std::string key = lower(name);
  return std::find(std::begin(kHopByHop), std::end(kHopByHop), key) != std::end(kHopByHop);
}

bool wants_upgrade(const RequestHead& head) {
  for (const auto& [name, value] : head.headers) {
    if (lower(name) == "connection" && lower(value).find("upgrade") != std::string::npos) {
      return true;
    }
  }
  return false;
}

// The head sent upstream: origin-form target, our Host, and one request per connection
// (Connection: close) so a second request on the same connection cannot skip the policy.
std::string rewrite_for_origin(const RequestHead& head, std::string_view authority,
                               std::string_view origin_target) {
  std::string out;
  out.reserve(head.size + 64);
  out.append(head.method).append(" ").append(origin_target).append(" ");
  out.append(head.version).append(kLineEnd);
  out.append("Host: ").append(authority).append(kLineEnd);
  for (const auto& [name, value] : head.headers) {
    if (is_hop_by_hop(name)) continue;
    out.append(name).append(": ").append(value).append(kLineEnd);
  }
  out.append(wants_upgrade(head) ? "Connection: upgrade" : "Connection: close").append(kLineEnd);
  out.append(kLineEnd);
  return out;
}

ProxyRequest reject(int status, std::string error) {
  ProxyRequest request;
  request.status = status;
  request.error = std::move(error);
  return request;
}

ProxyRequest interpret_connect(const RequestHead& head) {
  Authority authority = parse_authority(head.target, 0);
  if (!authority.ok) return reject(400, "CONNECT needs host:port, got '" + head.target + "'");
  ProxyRequest request;
  request.ok = true;
  request.kind = RequestKind::kConnect;
  request.host = authority.host;
  request.port = authority.port;
  return request;
}

ProxyRequest interpret_forward(const RequestHead& head) {
  std::string scheme = lower(head.target.substr(0, std::min<std::size_t>(head.target.size(), 8)));
  if (scheme.starts_with("https://")) {
    return reject(400, "send https through a CONNECT tunnel, not as an absolute URI");
  }
  if (!scheme.starts_with("http://")) {
    return reject(400, "a proxy request needs an absolute http:// URI or CONNECT");
  }
  // The head sent upstream adds Host and Connection lines; it must stay within the limits
  // that any head we parse obeys.
  if (head.headers.size() + 2 > kMaxHeaderCount) {
    return reject(431, "more than " + std::to_string(kMaxHeaderCount - 2) +
                           " header lines in a forwarded request");
  }
  std::string_view rest = std::string_view(head.target).substr(7);
  std::size_t path_start = rest.find_first_of("/?");
  std::string_view authority_text = rest.substr(0, path_start);
  if (authority_text.find('@') != std::string_view::npos) {
    return reject(400, "user information in the URI is not supported");
  }
  Authority authority = parse_authority(authority_text, 80);
  if (!authority.ok) return reject(400, "bad host in '" + head.target + "'");

  std::string origin = path_start == std::string_view::npos ? std::string("/")
                                                            : std::string(rest.substr(path_start));
  if (origin.front() == '?') origin.insert(0, "/");
  ProxyRequest request;
  request.ok = true;
  request.kind = RequestKind::kForward;
  request.host = authority.host;
  request.port = authority.port;
  request.forward_head = rewrite_for_origin(head, authority_text, origin);
  return request;
}

}  // namespace

HeadParse parse_request_head(std::string_view buffer, std::size_t max_head) {
  HeadParse result;
  std::size_t end = buffer.find("\r\n\r\n");
  if (end == std::string_view::npos) {
    if (buffer.size() >= max_head) {
      result.status = HeadStatus::kTooLarge;
      result.error = "request head larger than " + std::to_string(max_head) + " bytes";
    }
    return result;
  }
  if (end + 4 > max_head) {
    result.status = HeadStatus::kTooLarge;
    result.error = "request head larger than " + std::to_string(max_head) + " bytes";
    return result;
  }
  result.head.size = end + 4;
  std::string_view head = buffer.substr(0, end + 2);  // every line ends with CRLF

  result.status = HeadStatus::kInvalid;
  std::size_t line_end = head.find(kLineEnd);
  if (!parse_request_line(head.substr(0, line_end), result.head)) {
    result.error = "malformed request line";
    return result;
  }
  for (std::size_t pos = line_end + 2; pos < head.size(); pos = line_end + 2) {
    line_end = head.find(kLineEnd, pos);
    if (result.head.headers.size() >= kMaxHeaderCount) {
      result.error = "more than " + std::to_string(kMaxHeaderCount) + " header lines";
      return result;
    }
    if (!parse_header_line(head.substr(pos, line_end - pos), result.head)) {
      result.error = "malformed header line";
      return result;
    }
  }
  result.status = HeadStatus::kComplete;
  return result;
}

Authority parse_authority(std::string_view text, std::uint16_t default_port) {
  Authority authority;
  std::string_view host;
  std::string_view port_text;
  if (text.starts_with("[")) {
    std::size_t close = text.find(']');
    if (close == std::string_view::npos) return authority;
    host = text.substr(1, close - 1);
    std::string_view after = text.substr(close + 1);
    if (!after.empty() && !after.starts_with(":")) return authority;
    if (!after.empty()) port_text = after.substr(1);
    if (host.empty() ||
        host.find_first_not_of("0123456789abcdefABCDEF:.") != std::string_view::npos) {
      return authority;
    }
  } else {
    std::size_t colon = text.rfind(':');
    host = text.substr(0, colon);
    if (colon != std::string_view::npos) port_text = text.substr(colon + 1);
    if (!valid_host_name(host)) return authority;
  }

  if (port_text.empty()) {
    if (default_port == 0) return authority;
    authority.port = default_port;
  } else {
    unsigned value = 0;
    auto [end, error] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (error != std::errc() || end != port_text.data() + port_text.size() || value < 1 ||
        value > 65535) {
      return authority;
    }
    authority.port = static_cast<std::uint16_t>(value);
  }
  authority.host = lower(host);
  if (!authority.host.empty() && authority.host.back() == '.') authority.host.pop_back();
  authority.ok = !authority.host.empty();
  return authority;
}

ProxyRequest interpret_request(const RequestHead& head) {
  if (head.method == "CONNECT") return interpret_connect(head);
  return interpret_forward(head);
}

int parse_response_status(std::string_view buffer, std::size_t& head_size) {
  std::size_t end = buffer.find("\r\n\r\n");
  if (end == std::string_view::npos) return -1;
  head_size = end + 4;
  if (!buffer.starts_with("HTTP/1.") || buffer.size() < 12 || buffer[8] != ' ') return 0;
  int status = 0;
  auto [ptr, error] = std::from_chars(buffer.data() + 9, buffer.data() + 12, status);
  if (error != std::errc() || ptr != buffer.data() + 12) return 0;
  return status;
}

}  // namespace oshpc::proxy
