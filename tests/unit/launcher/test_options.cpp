#include <catch2/catch.hpp>

#include <vector>

#include "launcher/options.hpp"

using namespace oshpc::launcher;

namespace {

Options parse(std::vector<const char*> args) {
  args.insert(args.begin(), "oshpc-fanout");
  return parse_options(static_cast<int>(args.size()), args.data());
}

}  // namespace

TEST_CASE("a full command line parses into options") {
  auto o = parse({"--image",
                  "/img.sqsh",
                  "-n",
                  "200",
                  "--cpus-per-sandbox",
                  "2",
                  "--timeout",
                  "1.5",
                  "--env",
                  "A=1",
                  "--env",
                  "B=x=y",
                  "--bind",
                  "/tmp:/data:rw",
                  "--events",
                  "-",
                  "--output-dir",
                  "out",
                  "--cache-dir",
                  "/c",
                  "--stage-method",
                  "extract",
                  "-v",
                  "--",
                  "python3",
                  "-c",
                  "print(1)",
                  "--count",
                  "5"});
  CHECK(o.action == Action::kRun);
  CHECK(o.image == "/img.sqsh");
  CHECK(o.count == 200);
  CHECK(o.cpus_per_sandbox == 2);
  CHECK(o.timeout_seconds == Approx(1.5));
  REQUIRE(o.environment.size() == 2);
  CHECK(o.environment[1] == std::pair<std::string, std::string>{"B", "x=y"});
  REQUIRE(o.binds.size() == 1);
  CHECK(o.binds[0].writable);
  CHECK(o.binds[0].destination == "/data");
  CHECK(o.events_path == "-");
  CHECK(o.stage_method == oshpc::rootfs_cache::StageMethod::kExtract);
  CHECK(o.verbosity == 1);
  // Everything after -- belongs to the command, even what looks like our options.
  CHECK(o.command == std::vector<std::string>{"python3", "-c", "print(1)", "--count", "5"});
}

TEST_CASE("bad command lines are refused with a message naming the problem") {
  using Catch::Contains;
  CHECK_THROWS_WITH(parse({"--image", "/i", "-n", "0", "--", "true"}), Contains("--count"));
  CHECK_THROWS_WITH(parse({"--image", "/i", "-n", "-3", "--", "true"}), Contains("at least 1"));
  CHECK_THROWS_WITH(parse({"--image", "/i", "-n", "2"}), Contains("no COMMAND"));
  CHECK_THROWS_WITH(parse({"-n", "2", "--", "true"}), Contains("--image is required"));
  CHECK_THROWS_WITH(parse({"--image", "/i", "-n", "2", "--bogus", "--", "true"}),
                    Contains("bogus"));
  CHECK_THROWS_WITH(parse({"--image", "/i", "-n", "x", "--", "true"}), Contains("x"));
  CHECK_THROWS_WITH(parse({"--image", "/i", "-n", "2", "stray", "--", "true"}), Contains("stray"));
  CHECK_THROWS_WITH(parse({"--image", "/i", "-n", "2", "--stage-method", "copy", "--", "true"}),
                    Contains("auto, mount or extract"));
  CHECK_THROWS_WITH(parse({"--image", "/i", "-n", "2", "-q", "-v", "--", "true"}),
                    Contains("contradict"));
  CHECK_THROWS_WITH(parse({"--image", "/i", "-n", "2", "--job-name", "a/b", "--", "true"}),
                    Contains("--job-name"));
  CHECK_THROWS_WITH(parse({"--image", "/i", "-n", "2", "--timeout", "-1", "--", "true"}),
                    Contains("--timeout"));
  CHECK_THROWS_WITH(parse({"--image", "/i", "-n", "2", "--timeout", "1x", "--", "true"}),
                    Contains("--timeout") && Contains("1x"));
  CHECK_THROWS_WITH(parse({"--image", "/i", "-n", "2", "--timeout", "abc", "--", "true"}),
                    Contains("--timeout"));
}

TEST_CASE("help, version and check need no other option") {
  CHECK(parse({"--help"}).action == Action::kHelp);
  CHECK(parse({"--version"}).action == Action::kVersion);
  CHECK(parse({"--check"}).action == Action::kCheck);
  CHECK(parse({"--image", "/i", "-n", "1", "--plan", "--", "true"}).action == Action::kPlan);
}

TEST_CASE("repeated --env and --bind values keep their commas") {
  auto o = parse({"--image", "/i", "-n", "1", "--env", "A=x,y", "--env", "B={\"k\": [1, 2]}",
                  "--bind", "/tmp:/a,b", "--", "true"});
  REQUIRE(o.environment.size() == 2);
  CHECK(o.environment[0].second == "x,y");
  CHECK(o.environment[1].second == "{\"k\": [1, 2]}");
  REQUIRE(o.binds.size() == 1);
  CHECK(o.binds[0].destination == "/a,b");
}

TEST_CASE("--env needs a valid variable name") {
  CHECK(parse_env_assignment("A_1=") == std::pair<std::string, std::string>{"A_1", ""});
  CHECK_THROWS_WITH(parse_env_assignment("=x"), Catch::Contains("KEY=VALUE"));
  CHECK_THROWS_WITH(parse_env_assignment("1A=x"), Catch::Contains("not a valid"));
  CHECK_THROWS_WITH(parse_env_assignment("novalue"), Catch::Contains("KEY=VALUE"));
}

TEST_CASE("--bind checks its form, its paths and the places oshpc manages") {
  auto ro = parse_bind("/tmp:/data");
  CHECK_FALSE(ro.writable);
  CHECK(parse_bind("/tmp:/data/:rw").destination == "/data");
  using Catch::Contains;
  CHECK_THROWS_WITH(parse_bind("/tmp"), Contains("SRC:DST"));
  CHECK_THROWS_WITH(parse_bind("/tmp:/d:rx"), Contains("ro or rw"));
  CHECK_THROWS_WITH(parse_bind("tmp:/d"), Contains("absolute"));
  CHECK_THROWS_WITH(parse_bind("/nonexistent-src:/d"), Contains("does not exist"));
  CHECK_THROWS_WITH(parse_bind("/tmp:/proc/x"), Contains("managed by oshpc"));
  CHECK_THROWS_WITH(parse_bind("/tmp:/"), Contains("managed by oshpc"));
  CHECK_THROWS_WITH(parse_bind("/tmp:/.oshpc"), Contains("managed by oshpc"));
  CHECK_THROWS_WITH(parse_bind("/tmp:/x/../../etc"), Contains("'..'"));
  CHECK_THROWS_WITH(parse_bind("/tmp:/x/./y"), Contains("'..'"));
  CHECK(parse_bind("/tmp:/tmp/extra").destination == "/tmp/extra");
}

TEST_CASE("--serve takes the gateway options and refuses batch ones") {
  auto o = parse({"--serve", "/run/user/1/oshpc/driver.sock", "--image", "/i", "--supervisor",
                  "/bin/true", "--gateway-endpoint", "https://login1:8443"});
  CHECK(o.action == Action::kServe);
  CHECK(o.serve_socket == "/run/user/1/oshpc/driver.sock");
  CHECK(o.supervisor == "/bin/true");
  CHECK(o.supervisor_caps);
  // The supervisor mounts its own network namespace: the filter allows mount(2) for it.
  CHECK(o.seccomp == oshpc::seccomp::SeccompProfile::kSupervisor);

  auto plain = parse({"--serve", "/s", "--image", "/i", "--supervisor-caps=false"});
  CHECK_FALSE(plain.supervisor_caps);
  CHECK(plain.seccomp == oshpc::seccomp::SeccompProfile::kDefault);
  CHECK(parse({"--serve", "/s", "--image", "/i", "--seccomp", "strict"}).seccomp ==
        oshpc::seccomp::SeccompProfile::kStrict);

  using Catch::Matchers::Contains;
  CHECK_THROWS_WITH(parse({"--serve", "/s", "--image", "/i", "-n", "3"}), Contains("--count"));
  CHECK_THROWS_WITH(parse({"--serve", "/s", "--image", "/i", "--", "true"}),
                    Contains("from the gateway"));
  CHECK_THROWS_WITH(parse({"--serve", "/s", "--image", "/i", "--gateway-endpoint", "login1:80"}),
                    Contains("--gateway-endpoint"));
  CHECK_THROWS_WITH(parse({"--serve", "/s", "--image", "/i", "--supervisor", "relative"}),
                    Contains("--supervisor"));
  CHECK_THROWS_WITH(parse({"--serve", "/s", "--image", "/i", "--tls-dir", "/nonexistent"}),
                    Contains("ca.crt"));
  CHECK_THROWS_WITH(parse({"--image", "/i", "-n", "1", "--supervisor", "/bin/true", "--", "x"}),
                    Contains("needs --serve"));
}
