#include "node-agent/root_layout.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <stdexcept>

#include "common/sys.hpp"

namespace oshpc::node_agent {
namespace {

std::string join(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

std::string host_path(const std::string& rootfs, const std::string& path) {
  return path == "/" ? rootfs : rootfs + path;
}

bool is_reserved(const std::string& path) {
  const auto& reserved = reserved_sandbox_paths();
  return std::find(reserved.begin(), reserved.end(), path) != reserved.end();
}

// Splits "/a/b/c" into {"a", "b", "c"}; rejects relative paths, "." and "..".
std::vector<std::string> components(const std::string& path) {
  if (path.empty() || path[0] != '/') {
    throw std::invalid_argument("bind destination " + path + " is not an absolute path");
  }
  std::vector<std::string> parts;
  std::size_t start = 1;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(start, end - start);
    if (part == "." || part == "..") {
      throw std::invalid_argument("bind destination " + path + " contains '" + part + "'");
    }
    if (!part.empty()) parts.push_back(part);
    start = end + 1;
  }
  return parts;
}

// The deepest image directory on the way to `destination` that exists. Returns "" when the
// destination itself exists (a plain bind will do). Throws when the route crosses a symlink or
// a non-directory, since bubblewrap would then mount somewhere the user did not name.
std::string deepest_existing_directory(const std::string& rootfs, const std::string& destination) {
  std::string current = "/";
  for (const auto& part : components(destination)) {
    std::string next = join(current, part);
    EntryKind kind = image_entry_kind(rootfs, next);
    if (kind == EntryKind::kOther) return current;
    if (kind == EntryKind::kSymlink) {
      throw std::invalid_argument("bind destination " + destination + " crosses the symlink " +
                                  next + " in the image; name the link's target instead");
    }
    if (kind == EntryKind::kFile && next != destination) {
      throw std::invalid_argument("bind destination " + destination + " is below the file " + next +
                                  " in the image");
    }
    current = next;
  }
  return "";
}

// Adds the arguments that recreate the entries of image directory `dir` on a tmpfs at `dir`.
void bind_entries_back(const std::string& rootfs, const std::string& dir,
                       std::vector<std::string>& args) {
  for (const auto& entry : list_image_directory(rootfs, dir)) {
    std::string path = join(dir, entry.name);
    if (is_reserved(path)) continue;
    switch (entry.kind) {
      case EntryKind::kSymlink:
        args.insert(args.end(), {"--symlink", entry.link_target, path});
        break;
      case EntryKind::kDirectory:
      case EntryKind::kFile:
        args.insert(args.end(), {"--ro-bind", host_path(rootfs, path), path});
        break;
      case EntryKind::kOther:
        break;  // device nodes, sockets, fifos: not part of a usable image root
    }
  }
}

}  // namespace

const std::vector<std::string>& reserved_sandbox_paths() {
  static const std::vector<std::string> kReserved = {"/proc", "/dev",     "/tmp",
                                                     "/run",  "/sandbox", "/.oshpc"};
  return kReserved;
}

std::vector<ImageEntry> list_image_directory(const std::string& rootfs, const std::string& path) {
  std::string dir_path = host_path(rootfs, path);
  DIR* dir = ::opendir(dir_path.c_str());
  if (!dir) sys::throw_errno("read image directory " + dir_path);
  std::vector<ImageEntry> entries;
  while (dirent* d = ::readdir(dir)) {
    std::string name = d->d_name;
    if (name == "." || name == "..") continue;
    ImageEntry entry{name, image_entry_kind(rootfs, join(path, name)), ""};
    if (entry.kind == EntryKind::kSymlink) {
      std::string link = host_path(rootfs, join(path, name));
      char target[4096];
      ssize_t n = ::readlink(link.c_str(), target, sizeof target);
      if (n > 0) entry.link_target.assign(target, static_cast<std::size_t>(n));
    }
    entries.push_back(std::move(entry));
  }
  ::closedir(dir);
  // Sorted, so that the argv (and --plan output) is the same on every node.
  std::sort(entries.begin(), entries.end(),
            [](const ImageEntry& a, const ImageEntry& b) { return a.name < b.name; });
  return entries;
}

EntryKind image_entry_kind(const std::string& rootfs, const std::string& path) {
  struct stat st {};
  if (::lstat(host_path(rootfs, path).c_str(), &st) != 0) return EntryKind::kOther;
  if (S_ISDIR(st.st_mode)) return EntryKind::kDirectory;
  if (S_ISREG(st.st_mode)) return EntryKind::kFile;
  if (S_ISLNK(st.st_mode)) return EntryKind::kSymlink;
  return EntryKind::kOther;
}

RootLayout plan_root_layout(const std::string& rootfs,
                            const std::vector<std::string>& bind_destinations) {
  RootLayout layout;
  bind_entries_back(rootfs, "/", layout.mount_args);

  std::set<std::string> to_synthesize;
  for (const auto& destination : bind_destinations) {
    std::string dir = deepest_existing_directory(rootfs, destination);
    if (!dir.empty() && dir != "/") to_synthesize.insert(dir);
  }

  // Shallow directories first: a deeper one may sit inside one synthesized earlier.
  std::vector<std::string> ordered(to_synthesize.begin(), to_synthesize.end());
  std::stable_sort(ordered.begin(), ordered.end(), [](const std::string& a, const std::string& b) {
    return std::count(a.begin(), a.end(), '/') < std::count(b.begin(), b.end(), '/');
  });
  for (const auto& dir : ordered) {
    layout.mount_args.insert(layout.mount_args.end(), {"--tmpfs", dir});
    bind_entries_back(rootfs, dir, layout.mount_args);
    layout.synthesized.push_back(dir);
  }

  // The tmpfs root and synthesized directories become read-only once every mount point exists.
  layout.remount_args = {"--remount-ro", "/"};
  for (const auto& dir : ordered) {
    layout.remount_args.insert(layout.remount_args.end(), {"--remount-ro", dir});
  }
  return layout;
}

}  // namespace oshpc::node_agent
