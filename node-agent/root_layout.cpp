#include "node-agent/root_layout.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
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

// Copies of image directories are for small ones only (/etc of a typical image is about 1 MB).
constexpr std::uintmax_t kMaxCopyBytes = 16 << 20;
constexpr std::size_t kMaxCopyEntries = 4096;

bool is_small_directory(const std::string& path) {
  std::error_code error;
  std::uintmax_t bytes = 0;
  std::size_t entries = 0;
  namespace fs = std::filesystem;
  for (fs::recursive_directory_iterator it(path, error), end; !error && it != end;
       it.increment(error)) {
    if (++entries > kMaxCopyEntries) return false;
    if (it->is_regular_file(error) && !it->is_symlink(error)) bytes += it->file_size(error);
    if (bytes > kMaxCopyBytes) return false;
  }
  return !error;
}

// Copies image directory `dir` to copy_root + dir (symlinks as symlinks, special files left
// out). False, with nothing left behind, when anything cannot be copied (an unreadable file
// on a mounted image): the caller then synthesizes the directory instead.
bool copy_image_directory(const std::string& rootfs, const std::string& dir,
                          const std::string& copy_root) {
  namespace fs = std::filesystem;
  std::string source = host_path(rootfs, dir);
  std::string target = copy_root + dir;
  if (!is_small_directory(source)) return false;
  std::error_code error;
  fs::remove_all(target, error);
  fs::create_directories(fs::path(target).parent_path(), error);
  fs::copy(source, target, fs::copy_options::recursive | fs::copy_options::copy_symlinks, error);
  if (error) {
    sys::remove_tree(target);
    return false;
  }
  return true;
}

bool is_inside(const std::string& path, const std::vector<std::string>& dirs) {
  return std::any_of(dirs.begin(), dirs.end(),
                     [&](const std::string& dir) { return path.rfind(dir + "/", 0) == 0; });
}

// Whether every path oshpc mounts over is a directory of the image (not a symlink): then,
// with every bind destination present too, the image root can be the sandbox's root as it is.
bool has_reserved_directories(const std::string& rootfs) {
  const auto& reserved = reserved_sandbox_paths();
  return std::all_of(reserved.begin(), reserved.end(), [&](const std::string& path) {
    return image_entry_kind(rootfs, path) == EntryKind::kDirectory;
  });
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

void check_bind_kinds(const std::string& rootfs, const std::vector<BindMount>& binds) {
  for (const auto& bind : binds) {
    if (is_inside(bind.destination, reserved_sandbox_paths())) continue;
    EntryKind target = image_entry_kind(rootfs, bind.destination);
    struct stat source {};
    if (target == EntryKind::kOther || ::stat(bind.source.c_str(), &source) != 0) continue;
    bool source_is_dir = S_ISDIR(source.st_mode);
    if (source_is_dir == (target == EntryKind::kDirectory)) continue;
    throw std::invalid_argument("--bind " + bind.source + ":" + bind.destination + ": " +
                                bind.source + (source_is_dir ? " is a directory" : " is a file") +
                                " and " + bind.destination +
                                (source_is_dir ? " a file" : " a directory") + " in the image");
  }
}

bool add_mount_points(const std::string& rootfs) {
  bool all = true;
  for (const auto& path : reserved_sandbox_paths()) {
    if (::mkdir(host_path(rootfs, path).c_str(), 0755) != 0 && errno != EEXIST) all = false;
  }
  return all;
}

RootLayout plan_root_layout(const std::string& rootfs,
                            const std::vector<std::string>& bind_destinations,
                            const std::string& copy_root) {
  RootLayout layout;
  std::set<std::string> to_synthesize;
  bool all_present = true;
  for (const auto& destination : bind_destinations) {
    // Below a reserved path a destination lands on oshpc's own mounts (tmpfs, the
    // workspace), where bubblewrap makes it: the image has no say there.
    if (is_inside(destination, reserved_sandbox_paths())) continue;
    std::string dir = deepest_existing_directory(rootfs, destination);  // throws on bad ones
    if (dir.empty()) continue;                                          // present in the image
    all_present = false;
    if (dir != "/") to_synthesize.insert(dir);
  }
  if (all_present && has_reserved_directories(rootfs)) {
    // /.oshpc gets a tmpfs: what oshpc binds there (the exec helper, GPU driver files) needs
    // mount points that a read-only image cannot take.
    layout.mount_args = {"--ro-bind", rootfs, "/", "--tmpfs", "/.oshpc"};
    layout.remount_args = {"--remount-ro", "/.oshpc"};
    layout.whole_root = true;
    return layout;
  }
  bind_entries_back(rootfs, "/", layout.mount_args);

  // Shallow directories first: a deeper one may sit inside one synthesized earlier.
  std::vector<std::string> ordered(to_synthesize.begin(), to_synthesize.end());
  std::stable_sort(ordered.begin(), ordered.end(), [](const std::string& a, const std::string& b) {
    return std::count(a.begin(), a.end(), '/') < std::count(b.begin(), b.end(), '/');
  });
  std::vector<std::string> remounted;
  for (const auto& dir : ordered) {
    // A copy already holds its sub-directories, and their mount points are made in it.
    if (is_inside(dir, layout.copied)) continue;
    if (!copy_root.empty() && copy_image_directory(rootfs, dir, copy_root)) {
      // Bound writable so that bubblewrap can make the mount points in it (they are the same
      // for every sandbox of the node), then remounted read-only with the root.
      layout.mount_args.insert(layout.mount_args.end(), {"--bind", copy_root + dir, dir});
      layout.copied.push_back(dir);
    } else {
      layout.mount_args.insert(layout.mount_args.end(), {"--tmpfs", dir});
      bind_entries_back(rootfs, dir, layout.mount_args);
      layout.synthesized.push_back(dir);
    }
    remounted.push_back(dir);
  }

  // The tmpfs root and synthesized directories become read-only once every mount point exists.
  layout.remount_args = {"--remount-ro", "/"};
  for (const auto& dir : remounted) {
    layout.remount_args.insert(layout.remount_args.end(), {"--remount-ro", dir});
  }
  return layout;
}

}  // namespace oshpc::node_agent
