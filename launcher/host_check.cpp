#include "launcher/host_check.hpp"

#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include <hwloc.h>
#include <seccomp.h>

#include "node-agent/process.hpp"
#include "rootfs-cache/staging.hpp"

namespace oshpc::launcher {
namespace {

bool on_path(const std::string& tool) {
  for (const char* dir : {"/usr/local/bin/", "/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/"}) {
    if (::access((dir + tool).c_str(), X_OK) == 0) return true;
  }
  return false;
}

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

Probe probe_user_namespaces() {
  Probe probe{"user namespaces", false, true, ""};
  std::string max = read_first_line("/proc/sys/user/max_user_namespaces");
  std::string clone = read_first_line("/proc/sys/kernel/unprivileged_userns_clone");
  if (max == "0") {
    probe.detail = "disabled (user.max_user_namespaces = 0); ask the site admin to raise it";
  } else if (clone == "0") {
    probe.detail = "disabled (kernel.unprivileged_userns_clone = 0)";
  } else {
    probe.ok = true;
    probe.detail = "max_user_namespaces = " + (max.empty() ? std::string("?") : max);
  }
  return probe;
}

Probe probe_bubblewrap() {
  Probe probe{"bubblewrap", false, true, ""};
  if (!on_path("bwrap")) {
    probe.detail = "bwrap not found; install the bubblewrap package";
    return probe;
  }
  // The real test: can we build a sandbox with every namespace, as this user, right now?
  std::string err;
  int status = node_agent::run_command(
      {"bwrap", "--unshare-all", "--unshare-user", "--uid", "0", "--gid", "0", "--disable-userns",
       "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"},
      &err);
  probe.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  while (!err.empty() && err.back() == '\n') err.pop_back();
  probe.detail = probe.ok ? "a sandbox with user, pid, net, ipc, uts namespaces starts"
                          : "cannot start a sandbox: " + err;
  return probe;
}

Probe probe_fuse() {
  Probe probe{"FUSE (squashfuse)", false, false, ""};
  std::string why;
  probe.ok = rootfs_cache::fuse_is_usable(&why);
  probe.detail = probe.ok ? "images are mounted with squashfuse_ll"
                          : why + "; images will be extracted with unsquashfs instead";
  return probe;
}

Probe probe_tool(const std::string& tool, const std::string& package, bool required,
                 const std::string& purpose) {
  Probe probe{tool, on_path(tool), required, ""};
  probe.detail = probe.ok ? purpose : "not found; install " + package + " (" + purpose + ")";
  return probe;
}

Probe probe_seccomp() {
  Probe probe{"seccomp", false, false, ""};
  scmp_filter_ctx ctx = ::seccomp_init(SCMP_ACT_ALLOW);
  probe.ok = ctx != nullptr;
  if (ctx) ::seccomp_release(ctx);
  const scmp_version* version = ::seccomp_version();
  probe.detail = "libseccomp " + std::to_string(version->major) + "." +
                 std::to_string(version->minor) + "." + std::to_string(version->micro);
  return probe;
}

Probe probe_cgroups() {
  Probe probe{"cgroups", true, false, ""};
  struct statfs fs {};
  bool v2 = ::statfs("/sys/fs/cgroup", &fs) == 0 && fs.f_type == 0x63677270;  // CGROUP2_SUPER_MAGIC
  probe.detail = v2 ? "cgroup v2: per-sandbox limits need a delegated subtree (not used yet)"
                    : "cgroup v1 or hybrid: no per-sandbox CPU/memory limits; CPU pinning only";
  return probe;
}

Probe probe_hwloc() {
  Probe probe{"hwloc", false, false, ""};
  hwloc_topology_t topology;
  if (::hwloc_topology_init(&topology) == 0 && ::hwloc_topology_load(topology) == 0) {
    int pus = ::hwloc_get_nbobjs_by_type(topology, HWLOC_OBJ_PU);
    int packages = ::hwloc_get_nbobjs_by_type(topology, HWLOC_OBJ_PACKAGE);
    probe.ok = true;
    probe.detail = std::to_string(packages) + " packages, " + std::to_string(pus) + " PUs";
    ::hwloc_topology_destroy(topology);
  } else {
    probe.detail = "cannot load this machine's topology";
  }
  return probe;
}

}  // namespace

std::vector<Probe> probe_host() {
  return {
      probe_user_namespaces(),
      probe_bubblewrap(),
      probe_fuse(),
      probe_tool("unsquashfs", "squashfs-tools", true, "extracts images without FUSE"),
      probe_tool("squashfuse_ll", "squashfuse", false, "mounts images without root"),
      probe_seccomp(),
      probe_cgroups(),
      probe_hwloc(),
  };
}

int print_host_check(const std::vector<Probe>& probes) {
  int status = 0;
  for (const auto& probe : probes) {
    const char* mark = probe.ok ? "ok  " : (probe.required ? "FAIL" : "warn");
    std::printf("%s  %-18s %s\n", mark, probe.name.c_str(), probe.detail.c_str());
    if (!probe.ok && probe.required) status = 1;
  }
  return status;
}

}  // namespace oshpc::launcher
