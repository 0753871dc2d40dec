#include <sched.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <set>

#include "topo/cpu_list.hpp"
#include "topo/nvidia_proc.hpp"
#include "topo_test_support.hpp"

using namespace oshpc::topo;
using namespace oshpc::topo::test;

TEST_CASE("DGX-2: 16 NVML GPUs, 8 attached to each package, with UUIDs and device nodes") {
  const Topology topology = load(kDgx2);
  CHECK(topology.package_count() == 2);
  CHECK(topology.pu_count() == 4);
  REQUIRE(topology.gpus().size() == 16);

  std::set<std::string> paths;
  int on_package[2] = {0, 0};
  for (std::size_t i = 0; i < topology.gpus().size(); ++i) {
    const Gpu& gpu = topology.gpus()[i];
    CHECK(gpu.index == static_cast<int>(i));
    CHECK(gpu.uuid.starts_with("GPU-"));
    CHECK(gpu.name == "Tesla V100-SXM3-32GB-H");
    CHECK(gpu.package == package_of_pci(topology, gpu.pci));
    REQUIRE((gpu.package == 0 || gpu.package == 1));
    ++on_package[gpu.package];
    paths.insert(gpu.device_path);
  }
  CHECK(on_package[0] == 8);
  CHECK(on_package[1] == 8);
  CHECK(paths.size() == 16);
  CHECK(paths.count("/dev/nvidia0") == 1);
  CHECK(paths.count("/dev/nvidia15") == 1);
}

TEST_CASE("Two-socket machine: only the NVIDIA device a GPU backend reports is a GPU") {
  const Topology topology = load(kTwoSocketCuda);
  CHECK(topology.package_count() == 2);
  CHECK(topology.pu_count() == 32);
  CHECK(topology.numa_count() == 2);
  // The AMD OpenCL device and the NVIDIA card without an OS device are not placeable.
  REQUIRE(topology.gpus().size() == 1);
  const Gpu& gpu = topology.gpus()[0];
  CHECK(gpu.pci == "0000:84:00.0");
  CHECK(gpu.index == 0);
  CHECK(gpu.uuid.empty());
  CHECK(gpu.name == "Tesla K40m");
  CHECK(gpu.package == package_of_pci(topology, gpu.pci));
  CHECK(gpu.device_path == "/dev/nvidia0");
}

TEST_CASE("24-NUMA machine: 24 packages, 192 cores, 384 PUs, no GPU") {
  const Topology topology = load(kNuma24);
  CHECK(topology.package_count() == 24);
  CHECK(topology.core_count() == 192);
  CHECK(topology.pu_count() == 384);
  CHECK(topology.numa_count() == 24);
  CHECK(topology.gpus().empty());
  for (int cpu : topology.allowed_cpus())
    CHECK(topology.numa_of_cpu(cpu) == numa_of_pu(topology, cpu));
  CHECK(topology.numa_memory(0) > 0);
}

TEST_CASE("Offline CPUs are not allowed PUs") {
  const Topology topology = load(kOfflines);
  const auto allowed = topology.allowed_cpus();
  CHECK(format_cpu_list(allowed) == "0-1,3-4,6,12,15");  // the XML's cpuset 0x905b
  hwloc_topology_t handle = topology.hwloc_handle();
  for (int cpu = 0; cpu < 16; ++cpu) {
    const bool is_online =
        hwloc_bitmap_isset(hwloc_topology_get_topology_cpuset(handle), static_cast<unsigned>(cpu));
    const bool is_listed = std::find(allowed.begin(), allowed.end(), cpu) != allowed.end();
    CHECK(is_listed == is_online);
  }
  CHECK(topology.package_count() == 4);
  CHECK(topology.core_count() == 6);
}

TEST_CASE("restrict_to keeps only the given cpus and refuses unknown ones") {
  Topology topology = load(kNuma24);
  topology.restrict_to(parse_cpu_list("0-3,200-203"));
  CHECK(format_cpu_list(topology.allowed_cpus()) == "0-3,200-203");
  CHECK(topology.pu_count() == 8);
  for (const auto& package : topology.packages()) {
    for (const auto& core : package.cores) {
      for (int cpu : core) CHECK(package_of_pu(topology, cpu) == package.os_index);
    }
  }

  try {
    topology.restrict_to({1, 9999});
    FAIL("restrict_to accepted cpu 9999");
  } catch (const PlacementError& error) {
    CHECK_THAT(error.what(), Catch::Contains("not allowed online PUs: 9999") &&
                                 Catch::Contains("allowed: 0-3,200-203"));
  }
  CHECK(topology.pu_count() == 8);  // unchanged by the refused call
  CHECK_THROWS_AS(topology.restrict_to({}), PlacementError);
}

TEST_CASE("restrict_to refuses offline cpus") {
  Topology topology = load(kOfflines);
  CHECK_THROWS_WITH(topology.restrict_to({2}), Catch::Contains("not allowed online PUs: 2"));
}

TEST_CASE("A missing or malformed XML file is an error naming the path") {
  CHECK_THROWS_WITH(Topology::load_xml("/nonexistent/topo.xml"),
                    Catch::Contains("/nonexistent/topo.xml") && Catch::Contains("lstopo"));
  const std::string bad =
      (std::filesystem::temp_directory_path() / "oshpc-test-bad-topology.xml").string();
  { std::ofstream(bad) << "<topology><object"; }
  CHECK_THROWS_WITH(Topology::load_xml(bad), Catch::Contains(bad));
  std::remove(bad.c_str());
}

TEST_CASE("Topology is move-only and a moved-from one is inert") {
  Topology first = load(kDgx2);
  Topology second = std::move(first);
  CHECK(second.gpus().size() == 16);
  first = load(kOfflines);
  CHECK(first.pu_count() == 7);
  second = std::move(first);
  CHECK(second.pu_count() == 7);
}

TEST_CASE("This machine loads, within the process's CPU affinity") {
  const Topology topology = Topology::load_this_machine();
  REQUIRE(topology.pu_count() > 0);
  cpu_set_t affinity;
  CPU_ZERO(&affinity);
  REQUIRE(sched_getaffinity(0, sizeof affinity, &affinity) == 0);
  for (int cpu : topology.allowed_cpus()) CHECK(CPU_ISSET(cpu, &affinity));
  for (const auto& gpu : topology.gpus()) CHECK(gpu.package == package_of_pci(topology, gpu.pci));
}

TEST_CASE("The NVIDIA driver's information file gives minor, UUID and model") {
  const auto info = parse_nvidia_information(
      "Model: \t\t NVIDIA H200\nIRQ:   \t\t 95\nGPU UUID: \t "
      "GPU-1d2c3b4a-0000-1111-2222-333344445555\n"
      "Bus Location: \t 0000:1b:00.0\nDevice Minor: \t 3\nGPU Excluded:\t No\n");
  CHECK(info.model == "NVIDIA H200");
  CHECK(info.uuid == "GPU-1d2c3b4a-0000-1111-2222-333344445555");
  CHECK(info.minor == 3);
  CHECK(parse_nvidia_information("Device Minor: x\n").minor == -1);
  CHECK_FALSE(read_nvidia_information("/nonexistent", "0000:00:00.0").has_value());
}
