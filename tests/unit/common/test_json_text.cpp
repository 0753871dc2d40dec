#include <catch2/catch.hpp>

#include "common/json_text.hpp"

using oshpc::json_text::append_string;

TEST_CASE("JSON strings escape quotes, backslashes and control characters") {
  std::string out;
  append_string(out,
                "a\"b\\c\nd\x01"
                "e");
  CHECK(out == R"("a\"b\\c\nd\u0001e")");
}

TEST_CASE("JSON strings pass UTF-8 through unchanged") {
  std::string out;
  append_string(out, "caf\xc3\xa9");
  CHECK(out == "\"caf\xc3\xa9\"");
}
