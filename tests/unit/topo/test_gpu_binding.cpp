#include <unistd.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>

#include "topo/gpu_binding.hpp"
#include "topo_test_support.hpp"

using namespace oshpc::topo;
using namespace oshpc::topo::test;
namespace fs = std::filesystem;

namespace {

// A fake /dev: empty files named like the driver's nodes, removed on destruction.
class FakeDev {
 public:
  explicit FakeDev(const std::vector<std::string>& names)
      : root_(fs::temp_directory_path() / ("oshpc-topo-dev-" + std::to_string(getpid()))) {
    fs::create_directories(root_);
    for (const auto& name : names) std::ofstream(root_ / name).flush();
  }
  FakeDev(const FakeDev&) = delete;
  FakeDev& operator=(const FakeDev&) = delete;
  ~FakeDev() {
    std::error_code ignored;
    fs::remove_all(root_, ignored);
  }
  std::string root() const { return root_.string(); }
  void remove(const std::string& name) { fs::remove(root_ / name); }

 private:
  fs::path root_;
};

std::vector<std::string> dgx2_dev_names() {
  std::vector<std::string> names{"nvidiactl", "nvidia-uvm"};
  for (int i = 0; i < 16; ++i) names.push_back("nvidia" + std::to_string(i));
  return names;
}

// The (source, destination) pairs of --dev-bind-try arguments.
std::set<std::pair<std::string, std::string>> binds_of(const std::vector<std::string>& args) {
  std::set<std::pair<std::string, std::string>> binds;
  REQUIRE(args.size() % 3 == 0);
  for (std::size_t i = 0; i < args.size(); i += 3) {
    CHECK(args[i] == "--dev-bind-try");
    binds.insert({args[i + 1], args[i + 2]});
  }
  return binds;
}

}  // namespace

TEST_CASE("A DGX-2 sandbox binds its own GPU nodes and the control nodes that exist") {
  const Topology topology = load(kDgx2);
  const auto plan = plan_node(topology, {.gpus_per_sandbox = 4});
  FakeDev dev(dgx2_dev_names());

  for (const Slot& slot : plan.slots) {
    const auto binds = binds_of(gpu_device_bind_args(slot, dev.root()));
    std::set<std::pair<std::string, std::string>> expected{
        {dev.root() + "/nvidiactl", "/dev/nvidiactl"},
        {dev.root() + "/nvidia-uvm", "/dev/nvidia-uvm"}};
    for (const auto& gpu : slot.gpus) {
      const std::string name = fs::path(gpu.device_path).filename().string();
      expected.insert({dev.root() + "/" + name, "/dev/" + name});
    }
    CHECK(binds == expected);  // nvidia-uvm-tools and nvidia-modeset do not exist here

    // No other GPU's node, whichever way it is spelled.
    for (const auto& other : topology.gpus()) {
      const bool is_own = std::any_of(slot.gpus.begin(), slot.gpus.end(),
                                      [&](const Gpu& gpu) { return gpu.pci == other.pci; });
      if (is_own) continue;
      for (const auto& [source, destination] : binds) CHECK(destination != other.device_path);
    }
  }
}

TEST_CASE("A sandbox without GPUs binds no device") {
  const Topology topology = load(kDgx2);
  const auto plan = plan_node(topology, {});
  FakeDev dev(dgx2_dev_names());
  CHECK(gpu_device_bind_args(plan.slots[0], dev.root()).empty());
  CHECK(gpu_environment(plan.slots[0]).empty());
}

TEST_CASE("A missing GPU node is an error naming the path") {
  const Topology topology = load(kDgx2);
  const auto plan = plan_node(topology, {.gpus_per_sandbox = 1});
  FakeDev dev(dgx2_dev_names());
  const Gpu& gpu = plan.slots[0].gpus[0];
  const std::string name = fs::path(gpu.device_path).filename().string();
  dev.remove(name);
  CHECK_THROWS_WITH(gpu_device_bind_args(plan.slots[0], dev.root()),
                    Catch::Contains(dev.root() + "/" + name) && Catch::Contains(gpu.pci));
}

TEST_CASE("The CUDA environment names the slot's GPUs by UUID, else by index") {
  const Topology dgx2 = load(kDgx2);
  const Slot slot = plan_node(dgx2, {.gpus_per_sandbox = 2}).slots[0];
  const auto env = gpu_environment(slot);
  const std::string uuids = slot.gpus[0].uuid + "," + slot.gpus[1].uuid;
  CHECK(env ==
        std::vector<std::pair<std::string, std::string>>{{"CUDA_VISIBLE_DEVICES", uuids},
                                                         {"NVIDIA_VISIBLE_DEVICES", uuids},
                                                         {"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}});

  const Topology cuda_only = load(kTwoSocketCuda);
  const Slot cuda_slot = plan_node(cuda_only, {.gpus_per_sandbox = 1}).slots[0];
  CHECK(gpu_environment(cuda_slot)[0] ==
        std::pair<std::string, std::string>{"CUDA_VISIBLE_DEVICES", "0"});
}

TEST_CASE("A sandbox asking for fewer GPUs than its slot gets the slot's first ones") {
  const Topology dgx2 = load(kDgx2);
  const Slot slot = plan_node(dgx2, {.gpus_per_sandbox = 4}).slots[0];
  const Slot one = with_first_gpus(slot, 1);
  REQUIRE(one.gpus.size() == 1);
  CHECK(one.gpus[0].uuid == slot.gpus[0].uuid);
  CHECK(one.gpus[0].package == slot.package);
  CHECK(one.cpus == slot.cpus);
  CHECK(gpu_environment(one)[0] ==
        std::pair<std::string, std::string>{"CUDA_VISIBLE_DEVICES", slot.gpus[0].uuid});
  CHECK(gpu_environment(with_first_gpus(slot, 0)).empty());
  CHECK_THROWS_WITH(with_first_gpus(slot, 5), Catch::Contains("5") && Catch::Contains("has 4"));
}
