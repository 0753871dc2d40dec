// Turning the user's image (a squashfs file on the shared file system, or a directory) into a
// root directory on this node: a squashfuse mount where /dev/fuse is usable, else an
// extraction with unsquashfs into the node-local cache. One rank per node (the node leader)
// stages; the others use the path it publishes.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "node-agent/process.hpp"
#include "rootfs-cache/cache.hpp"
#include "rootfs-cache/errors.hpp"
#include "rootfs-cache/image_digest.hpp"

namespace oshpc::rootfs_cache {

enum class StageMethod { kAuto, kMount, kExtract };

// Parses "auto", "mount" or "extract"; std::nullopt for anything else.
std::optional<StageMethod> parse_stage_method(const std::string& text);

// Where node leaders get the image bytes: from rank 0 over MPI (the image file is read once
// per job), or each from the image file itself.
enum class StageFrom { kBroadcast, kShared };

// Parses "broadcast" or "shared"; std::nullopt for anything else.
std::optional<StageFrom> parse_stage_from(const std::string& text);

struct ImageInfo {
  std::string path;  // absolute
  bool is_directory = false;
  std::uint64_t size = 0;
  std::int64_t mtime_ns = 0;
  std::uint64_t inode = 0;
  std::string key;     // path, size, mtime and inode hashed: names the remembered digest
  std::string digest;  // SHA-256 of the file (image_digest); the cache entry's name
};

// Checks that the image exists, is readable and is a squashfs file whose superblock fits in
// it (not truncated), or a directory. Throws ImageError naming the path and what is wrong.
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
  // How long to wait for another stager of the same entry on this node before giving up.
  std::chrono::seconds lock_timeout{1800};
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
  // Bytes this node read from the image file itself (0 when cached or received over MPI).
  std::uint64_t bytes_from_shared() const { return bytes_from_shared_; }
  bool was_cached() const { return was_cached_; }
  // Unmounts now and lets the cache entry go (gc may evict it); never throws.
  void release();

 private:
  friend class NodeStage;
  std::string rootfs_;
  std::string method_;
  double seconds_ = 0;
  std::uint64_t bytes_from_shared_ = 0;
  bool was_cached_ = false;
  std::string mount_point_;
  node_agent::ChildProcess fuse_process_;
  FileLock use_lock_;  // shared: the entry is in use, gc must keep it
};

// One node's staging, split into the steps that the MPI side interleaves with its collectives
// (begin everywhere, then receive the broadcast image where needed, then finish). begin()
// never waits for another stager, so no rank blocks before a collective.
class NodeStage {
 public:
  enum class State {
    kCached,          // a complete entry is there
    kMustStage,       // this process holds the stage lock and must fill the entry
    kStagedElsewhere  // another process (job) on this node is staging it now
  };

  // `image.digest` must be set (image_digest) unless it is a directory. Throws StagingError
  // when the method cannot work here (mount asked for, FUSE unusable).
  NodeStage(ImageInfo image, StageOptions options);
  // Removes a half-staged entry left by a failure before finish(); the locks go with it.
  ~NodeStage();
  NodeStage(const NodeStage&) = delete;
  NodeStage& operator=(const NodeStage&) = delete;

  // Takes the entry's use lock (shared), checks the entry, tries its stage lock.
  // Throws StagingError.
  State begin();
  State state() const { return state_; }
  EntryKind kind() const { return kind_; }

  // kMustStage only: prepares to receive the image's bytes in order (free space checked).
  // Throws StagingError.
  void open_receiver();
  // Appends received bytes to the local copy. Throws StagingError (disk full, I/O error).
  void receive(const char* data, std::size_t size);

  // Ends staging: publishes what was received (its digest checked), or reads the image file
  // itself when nothing was received, or waits (bounded) for the other stager and uses its
  // entry; then mounts or points at the entry. Throws StagingError naming the step and path.
  StagedImage finish();

 private:
  std::string temporary_dir();
  void publish_received(const std::string& temporary, std::uint64_t* content_bytes);
  void publish_from_image(const std::string& temporary, std::uint64_t* content_bytes);
  void publish_entry();
  void extract(const std::string& source, const std::string& target);

  ImageInfo image_;
  StageOptions options_;
  CacheLayout layout_;
  EntryKind kind_ = EntryKind::kSquashfs;
  std::string entry_;
  State state_ = State::kCached;
  std::int64_t began_us_ = 0;
  std::uint64_t bytes_from_shared_ = 0;
  FileLock use_lock_;
  FileLock stage_lock_;
  std::string temporary_;
  sys::UniqueFd receiver_;
  std::optional<Sha256> received_hash_;
  std::uint64_t received_bytes_ = 0;
  bool is_receiving_ = false;
};

// Stages the image for this node on its own (reading the image file when the cache lacks it):
// begin() and finish() of a NodeStage. Computes the digest if the caller did not. Throws
// ImageError or StagingError with a message naming the step, the path and the cause.
StagedImage stage_image(const ImageInfo& image, const StageOptions& options);

// Whether `program` can be found inside `rootfs` the way a sandbox's exec would: an absolute
// path, or a name on the default PATH; symlinks are resolved inside the root. Never throws.
bool rootfs_has_program(const std::string& rootfs, const std::string& program);

}  // namespace oshpc::rootfs_cache
