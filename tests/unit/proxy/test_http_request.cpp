#include <catch2/catch.hpp>

#include "proxy/http_request.hpp"

using namespace oshpc::proxy;

namespace {

ProxyRequest interpret(const std::string& text) {
  HeadParse parse = parse_request_head(text);
  REQUIRE(parse.status == HeadStatus::kComplete);
  return interpret_request(parse.head);
}

}  // namespace

TEST_CASE("a CONNECT head parses, complete or not") {
  std::string text = "CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com:443\r\n\r\nxyz";
  CHECK(parse_request_head(text.substr(0, 20)).status == HeadStatus::kIncomplete);
  HeadParse parse = parse_request_head(text);
  REQUIRE(parse.status == HeadStatus::kComplete);
  CHECK(parse.head.method == "CONNECT");
  CHECK(parse.head.size == text.size() - 3);
  REQUIRE(parse.head.headers.size() == 1);
  CHECK(parse.head.headers[0].second == "api.github.com:443");

  ProxyRequest request = interpret_request(parse.head);
  REQUIRE(request.ok);
  CHECK(request.kind == RequestKind::kConnect);
  CHECK(request.host == "api.github.com");
  CHECK(request.port == 443);
}

TEST_CASE("malformed heads are refused") {
  for (const char* text :
       {"GET\r\n\r\n", "GET  http://x/ HTTP/1.1\r\n\r\n", "GET http://x/ HTTP/2\r\n\r\n",
        "G(T http://x/ HTTP/1.1\r\n\r\n", "GET http://x/ HTTP/1.1\r\nBad Header: 1\r\n\r\n",
        "GET http://x/ HTTP/1.1\r\nNoColon\r\n\r\n",
        "GET http://x/ HTTP/1.1\r\nA: 1\r\n folded\r\n\r\n"}) {
    CHECK(parse_request_head(text).status == HeadStatus::kInvalid);
  }
  std::string huge = "GET http://x/ HTTP/1.1\r\nA: " + std::string(kMaxRequestHead, 'a');
  CHECK(parse_request_head(huge).status == HeadStatus::kTooLarge);
  std::string many = "GET http://x/ HTTP/1.1\r\n";
  for (int i = 0; i < 101; ++i) many += "A: 1\r\n";
  CHECK(parse_request_head(many + "\r\n").status == HeadStatus::kInvalid);
}

TEST_CASE("CONNECT targets need host and port") {
  CHECK_FALSE(interpret("CONNECT example.com HTTP/1.1\r\n\r\n").ok);
  CHECK_FALSE(interpret("CONNECT example.com:0 HTTP/1.1\r\n\r\n").ok);
  CHECK_FALSE(interpret("CONNECT example.com:99999 HTTP/1.1\r\n\r\n").ok);
  CHECK_FALSE(interpret("CONNECT ex%61mple.com:443 HTTP/1.1\r\n\r\n").ok);
  ProxyRequest v6 = interpret("CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n");
  REQUIRE(v6.ok);
  CHECK(v6.host == "2001:db8::1");
  CHECK(interpret("CONNECT Example.COM.:8443 HTTP/1.1\r\n\r\n").host == "example.com");
}

TEST_CASE("absolute-URI requests are rewritten to origin form with one request per connection") {
  ProxyRequest request = interpret(
      "GET http://Example.com:8080/a/b?c=d HTTP/1.1\r\nHost: other\r\nUser-Agent: t\r\n"
      "Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\n\r\n");
  REQUIRE(request.ok);
  CHECK(request.kind == RequestKind::kForward);
  CHECK(request.host == "example.com");
  CHECK(request.port == 8080);
  CHECK(request.forward_head ==
        "GET /a/b?c=d HTTP/1.1\r\nHost: Example.com:8080\r\nUser-Agent: t\r\n"
        "Connection: close\r\n\r\n");

  CHECK(interpret("GET http://x HTTP/1.0\r\n\r\n").forward_head ==
        "GET / HTTP/1.0\r\nHost: x\r\nConnection: close\r\n\r\n");
  CHECK(interpret("GET http://x?q HTTP/1.1\r\n\r\n").forward_head.starts_with("GET /?q HTTP/1.1"));
  CHECK(interpret("GET http://x/ HTTP/1.1\r\n\r\n").port == 80);
}

TEST_CASE("other request forms are refused with a reason") {
  ProxyRequest https = interpret("GET https://x/ HTTP/1.1\r\n\r\n");
  CHECK_FALSE(https.ok);
  CHECK(https.status == 400);
  CHECK(https.error.find("CONNECT") != std::string::npos);
  CHECK_FALSE(interpret("GET /index.html HTTP/1.1\r\n\r\n").ok);
  CHECK_FALSE(interpret("GET ftp://x/ HTTP/1.1\r\n\r\n").ok);
  CHECK_FALSE(interpret("GET http://user@x/ HTTP/1.1\r\n\r\n").ok);
  CHECK_FALSE(interpret("GET http://:80/ HTTP/1.1\r\n\r\n").ok);
}

TEST_CASE("upstream proxy answers are read by status code") {
  std::size_t size = 0;
  CHECK(parse_response_status("HTTP/1.1 200 Connection established\r\n\r\nrest", size) == 200);
  CHECK(size == 39);
  CHECK(parse_response_status("HTTP/1.1 403 Forbidden\r\n", size) == -1);
  CHECK(parse_response_status("SSH-2.0\r\n\r\n", size) == 0);
}

TEST_CASE("a forwarded request whose rewritten head would pass the header limit is refused") {
  std::string head = "GET http://example.com/ HTTP/1.1\r\n";
  for (std::size_t i = 0; i + 1 < oshpc::proxy::kMaxHeaderCount; ++i) head += "X-A: b\r\n";
  head += "\r\n";
  auto parse = oshpc::proxy::parse_request_head(head);
  REQUIRE(parse.status == oshpc::proxy::HeadStatus::kComplete);
  auto request = oshpc::proxy::interpret_request(parse.head);
  CHECK_FALSE(request.ok);
  CHECK(request.status == 431);
}
