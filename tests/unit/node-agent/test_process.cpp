#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <thread>

#include "common/sys.hpp"
#include "node-agent/process.hpp"

using namespace oshpc::node_agent;

TEST_CASE("a spawned process runs and its exit status is reported") {
  auto child = spawn_process({"sh", "-c", "exit 7"}, {});
  int status = child.wait();
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 7);
}

TEST_CASE("a missing program is reported with its errno, not as a generic failure") {
  CHECK_THROWS_WITH(
      spawn_process({"/nonexistent/program"}, {}),
      Catch::Contains("cannot start /nonexistent/program") && Catch::Contains("No such file"));
}

TEST_CASE("only the descriptors asked for are inherited") {
  auto kept = oshpc::sys::make_pipe();
  auto other = oshpc::sys::make_pipe();
  ::fcntl(other.write_end.get(), F_SETFD, 0);  // not close-on-exec, yet must not leak
  std::string script = "test -e /proc/self/fd/" + std::to_string(kept.write_end.get()) +
                       " && ! test -e /proc/self/fd/" + std::to_string(other.write_end.get());
  SpawnOptions options;
  options.inherit_fds = {kept.write_end.get()};
  auto child = spawn_process({"sh", "-c", script}, options);
  int status = child.wait();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("a child still running when its owner goes away is killed and reaped") {
  pid_t pid;
  {
    auto child = spawn_process({"sleep", "30"}, {});
    pid = child.pid();
  }
  CHECK(::kill(pid, 0) != 0);
}

TEST_CASE("a child with a parent-death signal gets it when the thread that spawned it ends") {
  ChildProcess child;
  std::thread spawner([&child] {
    SpawnOptions options;
    options.parent_death_signal = SIGTERM;
    child = spawn_process({"sleep", "30"}, options);
  });
  spawner.join();
  int status = 0;
  REQUIRE(::waitpid(child.pid(), &status, 0) == child.pid());
  child.mark_reaped();
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGTERM);
}

TEST_CASE("run_command captures standard error") {
  std::string err;
  int status = run_command({"sh", "-c", "echo out; echo problem >&2; exit 3"}, &err);
  CHECK(WEXITSTATUS(status) == 3);
  CHECK(err == "problem\n");
}
