#include <catch2/catch.hpp>

#include <algorithm>

#include "node-agent/bwrap_argv.hpp"

using namespace oshpc::node_agent;

namespace {

SandboxInstance instance() {
  SandboxInstance i;
  i.id = "job-7";
  i.index = 7;
  i.count = 10;
  i.node = "n01";
  i.rank = 3;
  i.workspace = "/scratch/ws/job-7";
  return i;
}

SandboxProfile profile() {
  SandboxProfile p;
  p.rootfs = "/cache/rootfs";
  p.exec_helper = "/opt/oshpc/bin/oshpc-exec";
  p.command = {"python3", "-c", "print({index})"};
  return p;
}

// True if `needle` appears in argv as consecutive elements.
bool has_sequence(const std::vector<std::string>& argv, std::vector<std::string> needle) {
  return std::search(argv.begin(), argv.end(), needle.begin(), needle.end()) != argv.end();
}

std::ptrdiff_t position(const std::vector<std::string>& argv, const std::string& value) {
  return std::find(argv.begin(), argv.end(), value) - argv.begin();
}

}  // namespace

TEST_CASE("placeholders are expanded and other braces are kept") {
  auto i = instance();
  CHECK(expand_placeholders("{index}/{count} {id} on {node} rank {rank}", i) ==
        "7/10 job-7 on n01 rank 3");
  CHECK(expand_placeholders("{'a': 1} {} {indexx} {{index}}", i) == "{'a': 1} {} {indexx} {7}");
  CHECK(expand_placeholders("no braces", i) == "no braces");
}

TEST_CASE("the sandbox environment names the sandbox and user values override the base") {
  auto p = profile();
  p.environment = {{"HOME", "/custom"}, {"TAG", "run-{index}"}};
  auto env = sandbox_environment(p, instance());
  auto value = [&](const std::string& key) {
    auto it = std::find_if(env.begin(), env.end(), [&](auto& kv) { return kv.first == key; });
    return it == env.end() ? std::string("<unset>") : it->second;
  };
  CHECK(value("OSHPC_SANDBOX_ID") == "job-7");
  CHECK(value("OSHPC_INDEX") == "7");
  CHECK(value("OSHPC_COUNT") == "10");
  CHECK(value("OSHPC_NODE") == "n01");
  CHECK(value("OSHPC_RANK") == "3");
  CHECK(value("HOME") == "/custom");
  CHECK(value("TAG") == "run-7");
  CHECK(value("PATH").find("/usr/bin") != std::string::npos);
}

TEST_CASE("the bubblewrap argv isolates the sandbox by default") {
  RootLayout layout;
  layout.mount_args = {"--ro-bind", "/cache/rootfs/usr", "/usr", "--symlink", "usr/bin", "/bin"};
  layout.remount_args = {"--remount-ro", "/"};
  auto argv = build_bwrap_argv(profile(), layout, instance(), {9}, 1000, 1000);

  CHECK(argv.front() == "bwrap");
  for (const char* flag : {"--unshare-all", "--unshare-user", "--disable-userns",
                           "--die-with-parent", "--new-session"}) {
    CHECK(position(argv, flag) < static_cast<std::ptrdiff_t>(argv.size()));
  }
  CHECK(has_sequence(argv, {"--uid", "0", "--gid", "0"}));
  CHECK(has_sequence(argv, {"--cap-drop", "ALL"}));
  CHECK(has_sequence(argv, {"--proc", "/proc", "--dev", "/dev"}));
  CHECK(has_sequence(argv, {"--tmpfs", "/tmp", "--tmpfs", "/run"}));
  CHECK(has_sequence(argv, {"--bind", "/scratch/ws/job-7", "/sandbox"}));
  CHECK(has_sequence(argv, {"--ro-bind", "/opt/oshpc/bin/oshpc-exec", "/.oshpc/exec"}));
  CHECK(has_sequence(argv, {"--chdir", "/sandbox"}));
  CHECK(has_sequence(argv, {"--", "/.oshpc/exec", "9", "--", "python3", "-c", "print(7)"}));
  // The root becomes read-only only after every mount point exists.
  CHECK(position(argv, "--remount-ro") > position(argv, "/.oshpc/exec"));
  CHECK(position(argv, "--remount-ro") > position(argv, "/usr"));
}

TEST_CASE("identity self keeps the caller's uid and gid") {
  auto p = profile();
  p.identity = IdentityMode::kSelf;
  auto argv = build_bwrap_argv(p, RootLayout{}, instance(), {9}, 1234, 5678);
  CHECK(has_sequence(argv, {"--uid", "1234", "--gid", "5678"}));
}

TEST_CASE("user binds come after the image root and keep their mode") {
  auto p = profile();
  p.binds = {{"/data", "/data", false}, {"/results", "/out", true}};
  auto argv = build_bwrap_argv(p, RootLayout{}, instance(), {9}, 0, 0);
  CHECK(has_sequence(argv, {"--ro-bind", "/data", "/data"}));
  CHECK(has_sequence(argv, {"--bind", "/results", "/out"}));
}

TEST_CASE("user binds are mounted shallow destinations first, in their order otherwise") {
  auto p = profile();
  p.binds = {{"/a", "/data/in", false}, {"/b", "/data", true}, {"/c", "/out", false}};
  order_binds(p.binds);
  auto argv = build_bwrap_argv(p, RootLayout{}, instance(), {9}, 0, 0);
  CHECK(position(argv, "/data") < position(argv, "/data/in"));
  CHECK(position(argv, "/data") < position(argv, "/out"));
  CHECK(position(argv, "/out") < position(argv, "/data/in"));
}

TEST_CASE("/tmp is sticky and open to all, as on any system") {
  auto argv = build_bwrap_argv(profile(), RootLayout{}, instance(), {9}, 0, 0);
  CHECK(has_sequence(argv, {"--perms", "1777", "--tmpfs", "/tmp"}));
}

TEST_CASE("seccomp, info, block and environment descriptors are passed when given") {
  InheritedFds fds{9, 11, 12, 13, 14};
  auto argv = build_bwrap_argv(profile(), RootLayout{}, instance(), fds, 0, 0);
  CHECK(has_sequence(argv, {"--seccomp", "11"}));
  CHECK(has_sequence(argv, {"--info-fd", "12"}));
  CHECK(has_sequence(argv, {"--block-fd", "13"}));
  CHECK(has_sequence(argv, {"--args", "14"}));
  auto plain = build_bwrap_argv(profile(), RootLayout{}, instance(), {9}, 0, 0);
  CHECK(std::find(plain.begin(), plain.end(), "--seccomp") == plain.end());
}

TEST_CASE("a slot's GPU devices and environment reach the sandbox") {
  SlotResources slot;
  slot.device_args = {"--dev-bind-try", "/dev/nvidia3", "/dev/nvidia3"};
  slot.environment = {{"CUDA_VISIBLE_DEVICES", "GPU-abc"}};
  auto i = instance();
  i.slot = &slot;
  auto argv = build_bwrap_argv(profile(), RootLayout{}, i, {9}, 0, 0);
  CHECK(has_sequence(argv, {"--dev-bind-try", "/dev/nvidia3", "/dev/nvidia3"}));
  auto env = sandbox_environment(profile(), i);
  CHECK(std::find(env.begin(), env.end(),
                  std::pair<std::string, std::string>{"CUDA_VISIBLE_DEVICES", "GPU-abc"}) !=
        env.end());
  // The environment travels through a descriptor, never in bubblewrap's (world-readable) argv.
  CHECK(std::find(argv.begin(), argv.end(), "--setenv") == argv.end());
  CHECK(std::find(argv.begin(), argv.end(), "GPU-abc") == argv.end());
  // Device nodes are bound after the fresh /dev exists.
  CHECK(std::find(argv.begin(), argv.end(), "/dev/nvidia3") - argv.begin() >
        std::find(argv.begin(), argv.end(), "--dev") - argv.begin());
}

TEST_CASE("granted capabilities are added after the drop and allow the nested user namespace") {
  SandboxProfile granted = profile();
  granted.capabilities = {"CAP_SYS_ADMIN", "CAP_NET_ADMIN"};
  granted.tmpfs_dirs = {"/run/netns"};
  RootLayout layout;
  layout.remount_args = {"--remount-ro", "/"};
  auto argv = build_bwrap_argv(granted, layout, instance(), {9}, 1000, 1000);

  CHECK(has_sequence(argv, {"--cap-drop", "ALL", "--hostname", "job-7", "--cap-add",
                            "CAP_SYS_ADMIN", "--cap-add", "CAP_NET_ADMIN"}));
  CHECK(position(argv, "--disable-userns") == static_cast<std::ptrdiff_t>(argv.size()));
  CHECK(has_sequence(argv, {"--tmpfs", "/run/netns"}));
  CHECK(position(argv, "/run/netns") > position(argv, "/run"));
  CHECK(position(argv, "--remount-ro") > position(argv, "/run/netns"));
}
