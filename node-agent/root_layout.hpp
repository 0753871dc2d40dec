// The sandbox's root file system, built so that any image works unmodified.
//
// When the image root already has every mount point a sandbox needs (the directories oshpc
// mounts over, and each bind destination), it is bound whole and read-only as the sandbox's
// root: one bind instead of one per top-level entry, about a third of bubblewrap's start-up.
// An extracted image gets the missing directories when a job uses it (add_mount_points).
//
// Otherwise the sandbox root is bubblewrap's own tmpfs. Each top-level entry of the image is
// bound onto it read-only (symlinks are recreated), so mount points the image lacks (/sandbox,
// /.oshpc, a user bind target) can be created on the tmpfs. A bind target deeper inside an image
// directory that lacks it gets that directory "synthesized": a tmpfs over it with its entries bound
// back. Each such bind costs the sandbox two mounts, so a small image directory (/etc) is instead
// copied once per node into a directory of the job's and bound whole. The layout is computed
// once per node (it depends only on the staged image and the options) and reused for every
// sandbox.
#pragma once

#include <string>
#include <vector>

#include "node-agent/sandbox_spec.hpp"

namespace oshpc::node_agent {

enum class EntryKind { kDirectory, kFile, kSymlink, kOther };

struct ImageEntry {
  std::string name;  // one path component
  EntryKind kind = EntryKind::kOther;
  std::string link_target;  // for symlinks
};

// Lists the entries of directory `path` inside the image rooted at `rootfs` ("/" for the root).
// Throws SysError naming the directory if it cannot be read.
std::vector<ImageEntry> list_image_directory(const std::string& rootfs, const std::string& path);

// What kind of entry `path` is inside the image, without following a final symlink; kOther when
// missing. Never throws.
EntryKind image_entry_kind(const std::string& rootfs, const std::string& path);

// Absolute sandbox paths that oshpc mounts itself; image entries there are never bound.
const std::vector<std::string>& reserved_sandbox_paths();

// Creates, in an image root of our own (an extraction), each of reserved_sandbox_paths() the
// image lacks, as an empty directory, so that plan_root_layout can bind the root whole. An
// entry of the image's own at such a path (a symlink /tmp) is left as it is (and still counts
// as success: plan_root_layout looks at what is there). Returns false when a directory could
// not be made (a root we may not write): the sandboxes of that image then get the
// entry-by-entry root, which needs none. Never throws.
bool add_mount_points(const std::string& rootfs);

// Throws std::invalid_argument naming the bind when one would put a directory onto a file of
// the image, or a file onto a directory: bubblewrap refuses both, for every sandbox. Binds
// whose destination the image lacks, or that land on oshpc's own mounts, are not checked.
void check_bind_kinds(const std::string& rootfs, const std::vector<BindMount>& binds);

struct RootLayout {
  std::vector<std::string> mount_args;    // bubblewrap arguments, before our own mounts
  std::vector<std::string> remount_args;  // --remount-ro for tmpfs mounts made writable here
  std::vector<std::string> synthesized;   // image directories replaced by tmpfs + binds
  std::vector<std::string> copied;        // image directories replaced by a node-local copy
  bool whole_root = false;                // the image root is bound whole as "/"
};

// Plans the root for an image staged at `rootfs`, given the destinations of user binds. With
// `copy_root` (a node-local directory of the job's), small directories that need mount points
// are copied there; without it, or when a copy fails, they are synthesized. Throws
// std::invalid_argument naming a destination that crosses a symlink or a file in the image,
// or that is not an absolute normalised path.
RootLayout plan_root_layout(const std::string& rootfs,
                            const std::vector<std::string>& bind_destinations,
                            const std::string& copy_root = "");

}  // namespace oshpc::node_agent
