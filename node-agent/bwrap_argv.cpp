#include "node-agent/bwrap_argv.hpp"

#include <algorithm>
#include <array>

namespace oshpc::node_agent {
namespace {

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

void set_variable(EnvironmentList& env, const std::string& key, std::string value) {
  auto it = std::find_if(env.begin(), env.end(), [&](const auto& kv) { return kv.first == key; });
  if (it != env.end()) {
    it->second = std::move(value);
  } else {
    env.emplace_back(key, std::move(value));
  }
}

// Namespaces, identity and hardening: the part of the profile that never varies.
void append_isolation(std::vector<std::string>& argv, const SandboxProfile& profile,
                      const SandboxInstance& instance, unsigned uid, unsigned gid) {
  bool keep_ids = profile.identity == IdentityMode::kSelf;
  argv.insert(
      argv.end(),
      {
          // --unshare-all only tries the user namespace; ask for it outright so a host without
          // user namespaces fails loudly instead of running the sandbox as the caller.
          "--unshare-all",
          "--unshare-user",
          "--uid",
          keep_ids ? std::to_string(uid) : "0",
          "--gid",
          keep_ids ? std::to_string(gid) : "0",
          "--die-with-parent",
          "--new-session",
          "--cap-drop",
          "ALL",
          "--hostname",
          instance.id,
      });
  if (profile.capabilities.empty()) {
    // No nested user namespaces: closes the usual route to more kernel attack surface.
    argv.push_back("--disable-userns");
  }
  for (const auto& capability : profile.capabilities) {
    argv.insert(argv.end(), {"--cap-add", capability});
  }
}

void append_own_mounts(std::vector<std::string>& argv, const SandboxProfile& profile,
                       const SandboxInstance& instance) {
  argv.insert(argv.end(), {
                              "--proc",
                              "/proc",
                              "--dev",
                              "/dev",
                              // Sticky and open to all, as programs expect of /tmp.
                              "--perms",
                              "1777",
                              "--tmpfs",
                              "/tmp",
                              "--tmpfs",
                              "/run",
                              "--bind",
                              instance.workspace,
                              kWorkspaceDir,
                              "--ro-bind",
                              profile.exec_helper,
                              kExecHelperPath,
                          });
  for (const auto& dir : profile.tmpfs_dirs) argv.insert(argv.end(), {"--tmpfs", dir});
  if (instance.slot) {
    argv.insert(argv.end(), instance.slot->device_args.begin(), instance.slot->device_args.end());
  }
  argv.insert(argv.end(), instance.mount_args.begin(), instance.mount_args.end());
  for (const auto& bind : profile.binds) {
    argv.insert(argv.end(),
                {bind.writable ? "--bind" : "--ro-bind", bind.source, bind.destination});
  }
}

}  // namespace

std::string expand_placeholders(std::string_view text, const SandboxInstance& instance) {
  if (text.find('{') == std::string_view::npos) return std::string(text);
  const std::array<std::pair<std::string_view, std::string>, 5> values = {{
      {"{index}", std::to_string(instance.index)},
      {"{id}", instance.id},
      {"{node}", instance.node},
      {"{rank}", std::to_string(instance.rank)},
      {"{count}", std::to_string(instance.count)},
  }};
  std::string out;
  out.reserve(text.size() + 16);
  std::size_t pos = 0;
  while (pos < text.size()) {
    bool replaced = false;
    if (text[pos] == '{') {
      for (const auto& [name, value] : values) {
        if (text.substr(pos, name.size()) == name) {
          out += value;
          pos += name.size();
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) out += text[pos++];
  }
  return out;
}

EnvironmentList sandbox_environment(const SandboxProfile& profile,
                                    const SandboxInstance& instance) {
  EnvironmentList env = {
      {"PATH", kDefaultPath},
      {"HOME", kWorkspaceDir},
      {"LANG", "C.UTF-8"},
      {"OSHPC_SANDBOX_ID", instance.id},
      {"OSHPC_INDEX", std::to_string(instance.index)},
      {"OSHPC_COUNT", std::to_string(instance.count)},
      {"OSHPC_NODE", instance.node},
      {"OSHPC_RANK", std::to_string(instance.rank)},
  };
  if (instance.slot) {
    for (const auto& [key, value] : instance.slot->environment) set_variable(env, key, value);
  }
  for (const auto& [key, value] : profile.environment) {
    set_variable(env, key, expand_placeholders(value, instance));
  }
  return env;
}

void order_binds(std::vector<BindMount>& binds) {
  std::stable_sort(binds.begin(), binds.end(), [](const BindMount& a, const BindMount& b) {
    return std::count(a.destination.begin(), a.destination.end(), '/') <
           std::count(b.destination.begin(), b.destination.end(), '/');
  });
}

std::vector<std::string> build_bwrap_argv(const SandboxProfile& profile, const RootLayout& layout,
                                          const SandboxInstance& instance, const InheritedFds& fds,
                                          unsigned uid, unsigned gid) {
  std::vector<std::string> argv;
  argv.reserve(layout.mount_args.size() + 96 + profile.command.size());
  argv.push_back(profile.bwrap);
  append_isolation(argv, profile, instance, uid, gid);
  argv.insert(argv.end(), layout.mount_args.begin(), layout.mount_args.end());
  append_own_mounts(argv, profile, instance);
  argv.insert(argv.end(), layout.remount_args.begin(), layout.remount_args.end());
  const std::string& chdir = profile.working_dir.empty() ? kWorkspaceDir : profile.working_dir;
  // The sandbox's environment comes as --setenv arguments read from a descriptor: in argv
  // they would be readable by every user in /proc/PID/cmdline.
  if (fds.environment_args >= 0) {
    argv.insert(argv.end(), {"--args", std::to_string(fds.environment_args)});
  }
  argv.insert(argv.end(), {"--chdir", chdir});
  if (fds.seccomp >= 0) argv.insert(argv.end(), {"--seccomp", std::to_string(fds.seccomp)});
  if (fds.info >= 0) argv.insert(argv.end(), {"--info-fd", std::to_string(fds.info)});
  if (fds.block >= 0) argv.insert(argv.end(), {"--block-fd", std::to_string(fds.block)});

  argv.insert(argv.end(), {"--", kExecHelperPath, std::to_string(fds.exec_report), "--"});
  for (const auto& arg : profile.command) argv.push_back(expand_placeholders(arg, instance));
  return argv;
}

}  // namespace oshpc::node_agent
