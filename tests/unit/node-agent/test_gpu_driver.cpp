#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>

#include "common/sys.hpp"
#include "node-agent/gpu_driver.hpp"

using namespace oshpc::node_agent;

namespace {

// A fake driver installation: what a node with the NVIDIA driver has in its library and
// binary directories, plus things that must not be picked up.
struct FakeDriver {
  std::string root;
  FakeDriver() {
    char pattern[] = "/tmp/oshpc-test-driver-XXXXXX";
    root = ::mkdtemp(pattern);
    oshpc::sys::make_directories(root + "/lib", 0755);
    oshpc::sys::make_directories(root + "/lib2", 0755);
    oshpc::sys::make_directories(root + "/bin", 0755);
    for (const char* name : {"libcuda.so.535.104.05", "libnvidia-ml.so.535.104.05",
                             "libcudart.so.12", "libc.so.6", "libnvidia-README.txt"}) {
      std::ofstream(root + "/lib/" + name) << "x";
    }
    std::ofstream(root + "/lib2/libcuda.so.1") << "x";
    REQUIRE(::symlink("libcuda.so.535.104.05", (root + "/lib/libcuda.so.1").c_str()) == 0);
    std::ofstream(root + "/bin/nvidia-smi") << "#!/bin/sh\n";
    ::chmod((root + "/bin/nvidia-smi").c_str(), 0755);
  }
  ~FakeDriver() { oshpc::sys::remove_tree(root); }
};

bool binds(const DriverFiles& files, const std::string& source, const std::string& target) {
  for (std::size_t i = 0; i + 2 < files.bind_args.size(); i += 3) {
    if (files.bind_args[i] == "--ro-bind" && files.bind_args[i + 1] == source &&
        files.bind_args[i + 2] == target) {
      return true;
    }
  }
  return false;
}

}  // namespace

TEST_CASE("driver libraries and tools are bound read-only under /.oshpc/nvidia") {
  FakeDriver driver;
  auto files = find_nvidia_driver_files({driver.root + "/lib", driver.root + "/lib2"},
                                        {driver.root + "/bin"});
  CHECK(binds(files, driver.root + "/lib/libcuda.so.1", "/.oshpc/nvidia/lib/libcuda.so.1"));
  CHECK(binds(files, driver.root + "/lib/libnvidia-ml.so.535.104.05",
              "/.oshpc/nvidia/lib/libnvidia-ml.so.535.104.05"));
  CHECK(binds(files, driver.root + "/bin/nvidia-smi", "/.oshpc/nvidia/bin/nvidia-smi"));
  // The toolkit's libraries and unrelated files are the image's business.
  for (const auto& arg : files.bind_args) {
    CHECK(arg.find("libcudart") == std::string::npos);
    CHECK(arg.find("libc.so") == std::string::npos);
    CHECK(arg.find("README") == std::string::npos);
  }
  // The first directory holding a name wins, like the dynamic loader.
  CHECK_FALSE(binds(files, driver.root + "/lib2/libcuda.so.1", "/.oshpc/nvidia/lib/libcuda.so.1"));
  CHECK(files.libraries == 3);
  CHECK(files.tools == 1);
  auto has_env = [&](const std::string& key, const std::string& needle) {
    return std::any_of(files.environment.begin(), files.environment.end(), [&](auto& kv) {
      return kv.first == key && kv.second.find(needle) != std::string::npos;
    });
  };
  CHECK(has_env("LD_LIBRARY_PATH", "/.oshpc/nvidia/lib"));
  CHECK(has_env("PATH", "/.oshpc/nvidia/bin"));
}

TEST_CASE("a node without the driver gives no binds and no environment") {
  char pattern[] = "/tmp/oshpc-test-nodriver-XXXXXX";
  std::string empty = ::mkdtemp(pattern);
  auto files = find_nvidia_driver_files({empty}, {empty});
  CHECK(files.bind_args.empty());
  CHECK(files.environment.empty());
  ::rmdir(empty.c_str());
}
