#include <catch2/catch.hpp>

#include <cstdint>
#include <string>

#include "launcher/gateway/quantity.hpp"

using oshpc::gateway::parse_cpu_millis;
using oshpc::gateway::parse_memory_bytes;
using oshpc::gateway::QuantityError;

TEST_CASE("CPU quantities become millicores") {
  CHECK(parse_cpu_millis("500m") == 500);
  CHECK(parse_cpu_millis("2") == 2000);
  CHECK(parse_cpu_millis("0.1") == 100);
  CHECK(parse_cpu_millis("0.25") == 250);
  CHECK(parse_cpu_millis("1.5") == 1500);
  CHECK(parse_cpu_millis("+1") == 1000);
  CHECK(parse_cpu_millis(".5") == 500);
  CHECK(parse_cpu_millis("5.") == 5000);
  CHECK(parse_cpu_millis("00012") == 12000);
  CHECK(parse_cpu_millis("1e3") == 1'000'000);
  CHECK(parse_cpu_millis("1E3") == 1'000'000);
  CHECK(parse_cpu_millis("2.5e-1") == 250);
  CHECK(parse_cpu_millis("1k") == 1'000'000);
  CHECK(parse_cpu_millis("1Ki") == 1'024'000);
  CHECK(parse_cpu_millis("9223372036854775807m") == INT64_MAX);
}

TEST_CASE("CPU fractions finer than a millicore round up, as Kubernetes does") {
  CHECK(parse_cpu_millis("0.5m") == 1);
  CHECK(parse_cpu_millis("0.0001") == 1);
  CHECK(parse_cpu_millis("1u") == 1);
  CHECK(parse_cpu_millis("1n") == 1);
  CHECK(parse_cpu_millis("1.0001") == 1001);
  CHECK(parse_cpu_millis("1e-3") == 1);
  CHECK(parse_cpu_millis("1e-9999999999999999999999") == 1);
  // Trailing zeros after the point are not a fraction of a millicore.
  CHECK(parse_cpu_millis("1.000000") == 1000);
}

TEST_CASE("zero is zero in every spelling") {
  for (const char* text : {"0", "0m", "0.000", "+0", "0Gi", "0e9999999999999999999", ".0"}) {
    CAPTURE(text);
    CHECK(parse_cpu_millis(text) == 0);
    CHECK(parse_memory_bytes(text) == 0);
  }
}

TEST_CASE("memory quantities become bytes") {
  CHECK(parse_memory_bytes("1Ki") == 1024);
  CHECK(parse_memory_bytes("1.5Ki") == 1536);
  CHECK(parse_memory_bytes("512Mi") == 536'870'912);
  CHECK(parse_memory_bytes("1.5Gi") == 1'610'612'736);
  CHECK(parse_memory_bytes("4Gi") == 4'294'967'296);
  CHECK(parse_memory_bytes("1Ti") == 1'099'511'627'776);
  CHECK(parse_memory_bytes("1Pi") == 1'125'899'906'842'624);
  CHECK(parse_memory_bytes("1Ei") == 1'152'921'504'606'846'976);
  CHECK(parse_memory_bytes("7Ei") == 8'070'450'532'247'928'832);
  CHECK(parse_memory_bytes("129M") == 129'000'000);
  CHECK(parse_memory_bytes("1G") == 1'000'000'000);
  CHECK(parse_memory_bytes("1k") == 1000);
  CHECK(parse_memory_bytes("1T") == 1'000'000'000'000);
  CHECK(parse_memory_bytes("1P") == 1'000'000'000'000'000);
  CHECK(parse_memory_bytes("1E") == 1'000'000'000'000'000'000);
  CHECK(parse_memory_bytes("1e3") == 1000);
  CHECK(parse_memory_bytes("1e9") == 1'000'000'000);
  CHECK(parse_memory_bytes("1.5e3") == 1500);
  CHECK(parse_memory_bytes("1.e3") == 1000);
  CHECK(parse_memory_bytes("128974848") == 128'974'848);
  CHECK(parse_memory_bytes("9223372036854775807") == INT64_MAX);
}

TEST_CASE("fractions of a byte round up") {
  CHECK(parse_memory_bytes("0.5") == 1);
  CHECK(parse_memory_bytes("0.1Ki") == 103);  // 102.4
  CHECK(parse_memory_bytes("12e-1") == 2);
  CHECK(parse_memory_bytes("1m") == 1);
  CHECK(parse_memory_bytes("1500m") == 2);
  CHECK(parse_memory_bytes("2000m") == 2);
  // A long exact fraction is not lost to floating point: 2^-60 Ei is exactly one byte.
  CHECK(parse_memory_bytes("0.000000000000000000867361737988403547205962240695953369140625Ei") ==
        1);
}

namespace {

// Returns what() of the error parse throws for text, or "" if it does not throw.
template <typename Parse>
std::string error_of(Parse parse, const std::string& text) {
  try {
    parse(text);
  } catch (const QuantityError& e) {
    return e.what();
  }
  return "";
}

std::string cpu_error(const std::string& text) {
  return error_of(parse_cpu_millis, text);
}

std::string memory_error(const std::string& text) {
  return error_of(parse_memory_bytes, text);
}

}  // namespace

TEST_CASE("malformed quantities are refused with the text quoted") {
  for (const std::string text :
       {"",   " 1",  "1 ",    "1\t",   "1 Gi",  "\n",  "abc",  "+",     "-",    ".",
        "m",  "Gi",  "1.5.2", "1..5",  "1KB",   "1kb", "1gi",  "1K",    "1Gib", "1mi",
        "1e", "1e+", "1ee3",  "1e3.5", "1e3Ki", "1,5", "0x10", "1_000", "١"}) {
    CAPTURE(text);
    std::string error = memory_error(text);
    CHECK_FALSE(error.empty());
    CHECK(error.find("\"" + text + "\"") != std::string::npos);
    CHECK_FALSE(cpu_error(text).empty());
  }
}

TEST_CASE("errors say what is wrong") {
  CHECK_THAT(memory_error(""), Catch::Contains("empty"));
  CHECK_THAT(memory_error(" 1"), Catch::Contains("whitespace"));
  CHECK_THAT(memory_error("-1"), Catch::Contains("negative"));
  CHECK_THAT(cpu_error("-0"), Catch::Contains("negative"));
  CHECK_THAT(cpu_error("-500m"), Catch::Contains("negative"));
  CHECK_THAT(memory_error("1.5.2"), Catch::Contains("more than one decimal point"));
  CHECK_THAT(memory_error("1KB"), Catch::Contains("unknown suffix \"KB\""));
  CHECK_THAT(memory_error("1kb"), Catch::Contains("there is no B"));
  CHECK_THAT(memory_error("1gi"), Catch::Contains("case-sensitive") && Catch::Contains("Gi"));
  CHECK_THAT(memory_error("1e3.5"), Catch::Contains("exponent"));
}

TEST_CASE("values beyond int64 are refused, not wrapped") {
  CHECK_THAT(memory_error("8Ei"), Catch::Contains("too large") && Catch::Contains("bytes"));
  CHECK_THAT(memory_error("9223372036854775808"), Catch::Contains("too large"));
  CHECK_THAT(memory_error("9223372036854775807.1"), Catch::Contains("too large"));
  CHECK_THAT(memory_error("10E"), Catch::Contains("too large"));
  CHECK_THAT(memory_error("1e19"), Catch::Contains("too large"));
  CHECK_THAT(memory_error("1e9999999999999999999999"), Catch::Contains("too large"));
  CHECK_THAT(memory_error("99999999999999999999999999999e-10"), Catch::Contains("too large"));
  // 999999999999999999.99999999999 rounds up.
  CHECK(parse_memory_bytes("99999999999999999999999999999e-11") == 1'000'000'000'000'000'000);
  CHECK_THAT(cpu_error("9223372036854776"),
             Catch::Contains("too large") && Catch::Contains("millicores"));
  CHECK(parse_cpu_millis("9223372036854775") == 9'223'372'036'854'775'000);
}
