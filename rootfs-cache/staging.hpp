// Turning the user's image (a squashfs file on the shared file system, or a directory) into a
// root directory on this node: a squashfuse mount where /dev/fuse is usable, else an
// extraction with unsquashfs into the node-local cache. One rank per node (the node leader)
// stages; the others use the path it publishes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "node-agent/process.hpp"

namespace oshpc::rootfs_cache {

// The image is unusable (missing, unreadable, not squashfs): the user must fix the input.
class ImageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The node could not stage a usable image (tool failed, disk full, mount failed).
class StagingError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class StageMethod { kAuto, kMount, kExtract };

// Parses "auto", "mount" or "extract"; std::nullopt for anything else.
std::optional<StageMethod> parse_stage_method(const std::string& text);

struct ImageInfo {
  std::string path;  // absolute
  bool is_directory = false;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::string key;  // cache key: stable for the same file on every node
};

// Checks that the image exists, is readable and is a squashfs file or a directory.
// Throws ImageError with a message naming the path and what is wrong.
ImageInfo inspect_image(const std::string& path);

// Whether this process can mount with FUSE; `why` gets the reason when not. Never throws.
bool fuse_is_usable(std::string* why = nullptr);

// The node-local cache directory to use when none is given: a per-user 0700 folder in the
// first usable of $SLURM_TMPDIR, $TMPDIR and /tmp. Never throws.
std::string default_cache_dir();

struct StageOptions {
  StageMethod method = StageMethod::kAuto;
  std::string cache_dir;  // node-local, per user
  std::string job_dir;    // node-local, this job's state (mount point lives here)
};

// A staged image. Move-only; a mount is undone (lazily, so busy readers do not block the job's
// end) and the squashfuse process stopped when it is destroyed.
class StagedImage {
 public:
  StagedImage() = default;
  StagedImage(StagedImage&&) noexcept = default;
  StagedImage& operator=(StagedImage&&) noexcept;
  StagedImage(const StagedImage&) = delete;
  StagedImage& operator=(const StagedImage&) = delete;
  ~StagedImage();

  const std::string& rootfs() const { return rootfs_; }
  const std::string& method() const { return method_; }  // "mount", "extract" or "directory"
  double seconds() const { return seconds_; }
  // Unmounts now; never throws (failures are logged).
  void release();

 private:
  friend StagedImage stage_image(const ImageInfo&, const StageOptions&);
  std::string rootfs_;
  std::string method_;
  double seconds_ = 0;
  std::string mount_point_;
  node_agent::ChildProcess fuse_process_;
};

// Stages the image for this node. Throws StagingError with a message naming the step, the
// path and the cause (and what to do about it).
StagedImage stage_image(const ImageInfo& image, const StageOptions& options);

}  // namespace oshpc::rootfs_cache
