// Shared by the topo tests: loading the real topologies, and asking hwloc directly (not
// through the code under test) where a PU or a GPU sits.
#pragma once

#include <hwloc.h>

#include <string>

#include "topo/topology.hpp"

namespace oshpc::topo::test {

inline const std::string kDgx2 = "nvidiaDGX2.xml";
inline const std::string kTwoSocketCuda = "32em64t-2n8c2t-pci-normalio.xml";
inline const std::string kNuma24 = "192em64t-24n8c2t.xml";
inline const std::string kOfflines = "16em64t-4s2c2t-offlines.xml";

inline std::string topology_path(const std::string& name) {
  return std::string(OSHPC_TOPOLOGY_DIR) + "/" + name;
}

inline Topology load(const std::string& name) {
  return Topology::load_xml(topology_path(name));
}

inline hwloc_obj_t pu_object(const Topology& topology, int cpu) {
  return hwloc_get_pu_obj_by_os_index(topology.hwloc_handle(), static_cast<unsigned>(cpu));
}

// Walks up the tree by hand, the way lstopo draws it.
inline int package_above(hwloc_obj_t obj) {
  for (; obj; obj = obj->parent) {
    if (obj->type == HWLOC_OBJ_PACKAGE) return static_cast<int>(obj->os_index);
  }
  return -1;
}

inline int package_of_pu(const Topology& topology, int cpu) {
  return package_above(pu_object(topology, cpu));
}

inline hwloc_obj_t core_of_pu(const Topology& topology, int cpu) {
  hwloc_obj_t obj = pu_object(topology, cpu);
  while (obj && obj->type != HWLOC_OBJ_CORE) obj = obj->parent;
  return obj;
}

inline int package_of_pci(const Topology& topology, const std::string& busid) {
  hwloc_obj_t pci = hwloc_get_pcidev_by_busidstring(topology.hwloc_handle(), busid.c_str());
  return pci ? package_above(pci) : -2;
}

// A PU's memory node: the first NUMA node in its nodeset.
inline int numa_of_pu(const Topology& topology, int cpu) {
  hwloc_obj_t pu = pu_object(topology, cpu);
  return pu ? hwloc_bitmap_first(pu->nodeset) : -2;
}

inline bool is_allowed_online(const Topology& topology, int cpu) {
  hwloc_topology_t handle = topology.hwloc_handle();
  return hwloc_bitmap_isset(hwloc_topology_get_topology_cpuset(handle),
                            static_cast<unsigned>(cpu)) &&
         hwloc_bitmap_isset(hwloc_topology_get_allowed_cpuset(handle), static_cast<unsigned>(cpu));
}

}  // namespace oshpc::topo::test
