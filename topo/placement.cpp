#include "topo/placement.hpp"

#include <algorithm>
#include <charconv>
#include <map>
#include <sstream>

#include "common/json_text.hpp"
#include "topo/cpu_list.hpp"

namespace oshpc::topo {
namespace {

void append_number(std::string& out, std::int64_t value) {
  char digits[24];
  const auto result = std::to_chars(digits, digits + sizeof digits, value);
  out.append(digits, result.ptr);
}

std::string plural(std::int64_t count, const std::string& noun) {
  const bool is_sibilant = noun.ends_with('x') || noun.ends_with('s');
  return std::to_string(count) + " " + noun + (count == 1 ? "" : is_sibilant ? "es" : "s");
}

void check_request(const SlotRequest& request) {
  if (request.cpus_per_sandbox < 1) {
    throw PlacementError("cannot place " + std::to_string(request.cpus_per_sandbox) +
                         " CPUs per sandbox: a sandbox needs at least 1");
  }
  if (request.gpus_per_sandbox < 0) {
    throw PlacementError("cannot place " + std::to_string(request.gpus_per_sandbox) +
                         " GPUs per sandbox: the count must be 0 or more");
  }
  if (request.mem_per_sandbox < 0) {
    throw PlacementError("cannot give " + std::to_string(request.mem_per_sandbox) +
                         " bytes of memory per sandbox: the amount must be 0 or more");
  }
}

// The packages placement may use: all with allowed PUs, or the one the request names.
std::vector<const PackageInfo*> chosen_packages(const Topology& topology,
                                                const SlotRequest& request) {
  std::vector<const PackageInfo*> chosen;
  std::string known;
  for (const auto& package : topology.packages()) {
    if (!known.empty()) known += ",";
    known += std::to_string(package.os_index);
    if (!request.only_package || *request.only_package == package.os_index) {
      chosen.push_back(&package);
    }
  }
  if (chosen.empty()) {
    throw PlacementError(
        "cannot place on package " + std::to_string(request.only_package.value_or(-1)) + ": " +
        topology.source() + " has allowed PUs on packages " + (known.empty() ? "none" : known));
  }
  return chosen;
}

std::vector<Gpu> gpus_of_package(const Topology& topology, int package) {
  std::vector<Gpu> gpus;
  for (const auto& gpu : topology.gpus()) {
    if (gpu.package == package) gpus.push_back(gpu);
  }
  return gpus;
}

// "package 0: 2, package 1: 2", from a count per package.
template <typename CountOf>
std::string per_package(const std::vector<const PackageInfo*>& packages, CountOf count_of) {
  std::string text;
  for (const auto* package : packages) {
    if (!text.empty()) text += ", ";
    text +=
        "package " + std::to_string(package->os_index) + ": " + std::to_string(count_of(*package));
  }
  return text;
}

void check_gpus(const Topology& topology, const SlotRequest& request,
                const std::vector<const PackageInfo*>& packages) {
  const int wanted = request.gpus_per_sandbox;
  if (wanted == 0) return;
  if (topology.gpus().empty()) {
    throw PlacementError("cannot place " + plural(wanted, "GPU") +
                         " per sandbox: no NVIDIA GPU found in " + topology.source() +
                         " (searched " + topology.gpu_search() + "; is the NVIDIA driver loaded?)");
  }
  int most = 0;
  for (const auto* package : packages) {
    most = std::max(most, static_cast<int>(gpus_of_package(topology, package->os_index).size()));
  }
  if (wanted > most) {
    throw PlacementError("cannot place " + plural(wanted, "GPU") +
                         " per sandbox: the most GPUs attached to one " + "package is " +
                         std::to_string(most) + " (" +
                         per_package(packages,
                                     [&](const PackageInfo& p) {
                                       return gpus_of_package(topology, p.os_index).size();
                                     }) +
                         ")");
  }
}

void check_cpus(const SlotRequest& request, const std::vector<const PackageInfo*>& packages) {
  int most = 0;
  for (const auto* package : packages) most = std::max(most, package->pu_count);
  if (request.cpus_per_sandbox > most) {
    throw PlacementError(
        "cannot place " + plural(request.cpus_per_sandbox, "CPU") +
        " per sandbox: a sandbox stays inside one package and the most allowed PUs in one " +
        "package is " + std::to_string(most) + " (" +
        per_package(packages, [](const PackageInfo& p) { return p.pu_count; }) + ")");
  }
}

void check_memory(const Topology& topology, const SlotRequest& request,
                  const std::vector<const PackageInfo*>& packages) {
  if (request.mem_per_sandbox == 0) return;
  std::int64_t most = 0;
  bool is_known = false;
  for (const auto* package : packages) {
    for (const auto& core : package->cores) {
      const std::int64_t memory = topology.numa_memory(topology.numa_of_cpu(core.front()));
      is_known = is_known || memory > 0;
      most = std::max(most, memory);
    }
  }
  if (is_known && request.mem_per_sandbox > most) {
    throw PlacementError("cannot give " + std::to_string(request.mem_per_sandbox) +
                         " bytes per sandbox: the largest NUMA node with allowed PUs holds " +
                         std::to_string(most) + " bytes");
  }
}

// Groups of PUs, each the CPUs of one slot, in the package's logical order: whole cores when
// the package has enough of them, else single PUs (a machine with fewer cores than asked).
std::vector<std::vector<int>> cpu_groups(const PackageInfo& package, int per_slot, bool& by_cores) {
  by_cores = static_cast<int>(package.cores.size()) >= per_slot;
  std::vector<std::vector<int>> units;
  if (by_cores) {
    units = package.cores;
  } else {
    for (const auto& core : package.cores) {
      for (int pu : core) units.push_back({pu});
    }
  }

  std::vector<std::vector<int>> groups;
  for (std::size_t first = 0; first + per_slot <= units.size(); first += per_slot) {
    std::vector<int> cpus;
    for (std::size_t i = first; i < first + per_slot; ++i) {
      cpus.insert(cpus.end(), units[i].begin(), units[i].end());
    }
    std::sort(cpus.begin(), cpus.end());
    groups.push_back(std::move(cpus));
  }
  return groups;
}

// The slots of one package, in its own order, with what bounded their number.
std::vector<Slot> plan_package(const Topology& topology, const SlotRequest& request,
                               const PackageInfo& package, PackageCapacity& capacity) {
  bool by_cores = true;
  const auto groups = cpu_groups(package, request.cpus_per_sandbox, by_cores);
  const std::vector<Gpu> gpus = gpus_of_package(topology, package.os_index);
  const std::size_t gpu_bound =
      request.gpus_per_sandbox == 0 ? groups.size() : gpus.size() / request.gpus_per_sandbox;
  capacity = PackageCapacity{.package = package.os_index,
                             .cores = static_cast<int>(package.cores.size()),
                             .pus = package.pu_count,
                             .gpus = static_cast<int>(gpus.size()),
                             .bound_by = by_cores ? "cores" : "PUs"};

  std::vector<Slot> slots;
  std::map<int, std::int64_t> memory_left;  // per NUMA node, for a memory-bounded request
  for (const auto& cpus : groups) {
    if (slots.size() == gpu_bound) {
      capacity.bound_by = "GPUs";
      break;
    }
    const int numa = topology.numa_of_cpu(cpus.front());
    if (request.mem_per_sandbox > 0 && topology.numa_memory(numa) > 0) {
      auto [left, is_new] = memory_left.try_emplace(numa, topology.numa_memory(numa));
      if (left->second < request.mem_per_sandbox) {
        capacity.bound_by = "memory";
        continue;  // the next cores may sit on another NUMA node of this package
      }
      left->second -= request.mem_per_sandbox;
    }

    Slot slot{.package = package.os_index, .numa = numa, .cpus = cpus, .gpus = {}};
    const std::size_t first_gpu = slots.size() * request.gpus_per_sandbox;
    slot.gpus.assign(
        gpus.begin() + static_cast<std::ptrdiff_t>(first_gpu),
        gpus.begin() + static_cast<std::ptrdiff_t>(first_gpu + request.gpus_per_sandbox));
    slots.push_back(std::move(slot));
  }
  capacity.slots = static_cast<int>(slots.size());
  return slots;
}

// Orders the per-package slot lists by policy and numbers them.
std::vector<Slot> order_slots(std::vector<std::vector<Slot>> per_package, PlacementPolicy policy) {
  std::vector<Slot> slots;
  if (policy == PlacementPolicy::kPack) {
    for (auto& package : per_package) {
      for (auto& slot : package) slots.push_back(std::move(slot));
    }
  } else {
    std::size_t longest = 0;
    for (const auto& package : per_package) longest = std::max(longest, package.size());
    for (std::size_t round = 0; round < longest; ++round) {
      for (auto& package : per_package) {
        if (round < package.size()) slots.push_back(std::move(package[round]));
      }
    }
  }
  for (std::size_t i = 0; i < slots.size(); ++i) slots[i].id = static_cast<int>(i);
  return slots;
}

std::string capacity_text(const std::vector<PackageCapacity>& packages) {
  std::string text;
  for (const auto& package : packages) {
    if (!text.empty()) text += ", ";
    text += "package " + std::to_string(package.package) + ": " + std::to_string(package.slots) +
            " (" + std::to_string(package.cores) + " cores, " + std::to_string(package.pus) +
            " PUs, " + std::to_string(package.gpus) + " GPUs; bound by " + package.bound_by + ")";
  }
  return text;
}

}  // namespace

Slot with_first_gpus(const Slot& slot, int count) {
  if (count < 0 || static_cast<std::size_t>(count) > slot.gpus.size()) {
    throw PlacementError("a sandbox asks for " + std::to_string(count) + " GPU(s); its slot " +
                         std::to_string(slot.id) + " has " + std::to_string(slot.gpus.size()));
  }
  Slot fewer = slot;
  fewer.gpus.resize(static_cast<std::size_t>(count));
  return fewer;
}

NodePlan plan_node(const Topology& topology, const SlotRequest& request) {
  check_request(request);
  const auto packages = chosen_packages(topology, request);
  check_gpus(topology, request, packages);
  check_cpus(request, packages);
  check_memory(topology, request, packages);

  NodePlan plan;
  std::vector<std::vector<Slot>> per_package;
  for (const auto* package : packages) {
    plan.packages.emplace_back();
    per_package.push_back(plan_package(topology, request, *package, plan.packages.back()));
  }
  plan.slots = order_slots(std::move(per_package), request.policy);

  if (plan.slots.empty()) {
    throw PlacementError("cannot place any sandbox of " + plural(request.cpus_per_sandbox, "CPU") +
                         ", " + plural(request.gpus_per_sandbox, "GPU") + " and " +
                         std::to_string(request.mem_per_sandbox) + " bytes on " +
                         topology.source() + ": 0 slots (" + capacity_text(plan.packages) + ")");
  }
  return plan;
}

std::string NodePlan::summary(std::int64_t sandboxes) const {
  const auto total = static_cast<std::int64_t>(slots.size());
  const std::int64_t used = std::min(sandboxes, total);
  std::map<int, std::int64_t> used_in;
  for (std::int64_t i = 0; i < used; ++i) ++used_in[slots[static_cast<std::size_t>(i)].package];

  std::string text = plural(total, "slot") + " for " + plural(sandboxes, "sandbox");
  if (sandboxes > total && total > 0) {
    text += " in " + plural((sandboxes + total - 1) / total, "wave");
  }
  text += ":";
  for (const auto& package : packages) {
    const std::int64_t in_use = used_in[package.package];
    text += " package " + std::to_string(package.package) + ": " + std::to_string(in_use) +
            " used, " + std::to_string(package.slots - in_use) + " left (bound by " +
            package.bound_by + ");";
  }
  text.pop_back();
  return text;
}

std::string plan_line_json(std::int64_t index, const std::string& node, int rank,
                           const Slot& slot) {
  std::string out;
  append_plan_line_json(out, index, node, rank, slot);
  return out;
}

void append_plan_line_json(std::string& out, std::int64_t index, std::string_view node, int rank,
                           const Slot& slot) {
  out += "{\"index\":";
  append_number(out, index);
  out += ",\"node\":";
  json_text::append_string(out, node);
  out += ",\"rank\":";
  append_number(out, rank);
  out += ",\"package\":";
  append_number(out, slot.package);
  out += ",\"numa\":";
  append_number(out, slot.numa);
  out += ",\"cpus\":\"";
  out += format_cpu_list(slot.cpus);
  out += "\",\"gpus\":[";
  for (std::size_t i = 0; i < slot.gpus.size(); ++i) {
    const Gpu& gpu = slot.gpus[i];
    if (i > 0) out += ',';
    out += "{\"index\":";
    append_number(out, gpu.index);
    out += ",\"uuid\":";
    json_text::append_string(out, gpu.uuid);
    out += ",\"pci\":";
    json_text::append_string(out, gpu.pci);
    out += '}';
  }
  out += "]}";
}

}  // namespace oshpc::topo
