// The sandbox's root file system, built so that any image works unmodified.
//
// The sandbox root is bubblewrap's own tmpfs. Each top-level entry of the image is bound onto it
// read-only (symlinks are recreated), so mount points the image lacks (/sandbox, /.oshpc, a
// user bind target) can be created on the tmpfs. A bind target deeper inside an image directory
// that lacks it gets that directory "synthesized": a tmpfs over it with its entries bound back.
// The layout is computed once per node (it depends only on the staged image and the options)
// and reused for every sandbox.
#pragma once

#include <string>
#include <vector>

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

struct RootLayout {
  std::vector<std::string> mount_args;    // bubblewrap arguments, before our own mounts
  std::vector<std::string> remount_args;  // --remount-ro for the tmpfs root and synthesized dirs
  std::vector<std::string> synthesized;   // image directories replaced by tmpfs + binds
};

// Plans the root for an image staged at `rootfs`, given the destinations of user binds.
// Throws std::invalid_argument naming a destination that crosses a symlink or a file in the
// image, or that is not an absolute normalised path.
RootLayout plan_root_layout(const std::string& rootfs,
                            const std::vector<std::string>& bind_destinations);

}  // namespace oshpc::node_agent
