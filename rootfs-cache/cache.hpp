// The node-local image cache: its layout, the locks that make one stager per node, the marker
// that tells a complete entry from a partial one, free-space checks, listing and eviction.
//
//   <cache>/images/<digest>.<kind>/   a published entry (renamed into place when complete)
//        .oshpc-entry                 marker, written last: digest, kind, image size, bytes
//        last-use                     touched each time a job uses the entry
//        image.sqsh | rootfs/         the content: a local copy, or the extracted tree
//   <cache>/images/<digest>.<kind>.stage  flock: held exclusively by the one stager
//   <cache>/images/<digest>.<kind>.use    flock: shared while a job uses the entry
//   <cache>/images/<digest>.<kind>.tmp.<host>.<pid>/  an entry being staged
//   <cache>/digests/<identity key>    remembered digest of an image file (path+size+mtime)
//   <cache>/jobs/<job tag>/           per-job state; `owner` names the launcher (pid, host)
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/sys.hpp"

namespace oshpc::rootfs_cache {

// What an entry holds: a local copy of the squashfs file (for squashfuse) or the extracted tree.
enum class EntryKind { kSquashfs, kRootfs };

// "sqsh" or "rootfs", the suffix of the entry's name.
const char* entry_kind_name(EntryKind kind);

// Paths inside one cache directory. Pure; never throws.
struct CacheLayout {
  std::string root;

  std::string images_dir() const { return root + "/images"; }
  std::string digests_dir() const { return root + "/digests"; }
  std::string jobs_dir() const { return root + "/jobs"; }
  std::string entry(const std::string& digest, EntryKind kind) const;
  std::string stage_lock(const std::string& digest, EntryKind kind) const;
  std::string use_lock(const std::string& digest, EntryKind kind) const;
};

// Creates the cache directory (0700) or checks an existing one: it must be a directory owned by
// this user. Throws StagingError naming the path and what is wrong.
void open_cache_dir(const std::string& path);

// A flock on a lock file. The kernel drops it when the holder dies, so a lock left by a killed
// stager is recovered by the next one. Move-only; unlocks when destroyed.
class FileLock {
 public:
  enum class Mode { kShared, kExclusive };

  FileLock() = default;
  // Waits at most `timeout`, logging every 10 s that it waits for `what`. Throws StagingError
  // on timeout (naming the lock and the holder it recorded) and SysError if it cannot open it.
  static FileLock acquire(const std::string& path, Mode mode, std::chrono::seconds timeout,
                          const std::string& what);
  // std::nullopt when another process holds a conflicting lock. Throws SysError.
  static std::optional<FileLock> try_acquire(const std::string& path, Mode mode);

  bool is_held() const { return fd_.is_open(); }
  void unlock() { fd_.reset(); }

 private:
  explicit FileLock(sys::UniqueFd fd) : fd_(std::move(fd)) {}
  sys::UniqueFd fd_;
};

// What the marker of a complete entry records.
struct EntryMarker {
  std::string digest;
  EntryKind kind = EntryKind::kSquashfs;
  std::uint64_t image_size = 0;  // size of the squashfs file
  std::uint64_t bytes = 0;       // disk space the entry's content takes
};

// Writes the marker into an entry directory (fsync'd). Throws SysError.
void write_marker(const std::string& entry_dir, const EntryMarker& marker);

// Reads an entry's marker; std::nullopt if it is missing or malformed. Never throws.
std::optional<EntryMarker> read_marker(const std::string& entry_dir);

// Whether the entry is complete and holds `expected`: the marker matches, and for a copy the
// file has the recorded size. `why` gets what is wrong. Never throws.
bool entry_is_complete(const std::string& entry_dir, const EntryMarker& expected,
                       std::string* why = nullptr);

// Sets the entry's last-use time to now. Never throws (a failure is logged).
void touch_last_use(const std::string& entry_dir);

// Free bytes for an unprivileged user in the file system holding `path`. Throws SysError.
std::uint64_t free_bytes(const std::string& path);

// Throws StagingError "not enough space in PATH to WHAT: need X, Y free" when the file system
// holding `path` has less than `needed` bytes free.
void require_free_space(const std::string& path, std::uint64_t needed, const std::string& what);

// Disk space the extracted image will take, from its listing (`unsquashfs -lls`): file sizes
// rounded up to 4 KiB blocks plus one block per entry, plus 5%. Throws StagingError.
std::uint64_t estimate_unpacked_bytes(const std::string& image_path);

// Sums `unsquashfs -lls` output as estimate_unpacked_bytes does. Pure; for tests.
std::uint64_t unpacked_bytes_from_listing(const std::string& listing);

// Disk space a tree takes (st_blocks), not crossing mounts. Never throws.
std::uint64_t tree_bytes(const std::string& path);

// "12G", "500M", "1.5T", "4096" -> bytes; std::nullopt if malformed.
std::optional<std::uint64_t> parse_size(const std::string& text);

// 1536 -> "1.5 KiB". Pure.
std::string format_bytes(std::uint64_t bytes);

struct CacheEntryInfo {
  std::string name;  // directory name under images/
  std::string digest;
  EntryKind kind = EntryKind::kSquashfs;
  std::uint64_t bytes = 0;
  std::int64_t last_use = 0;  // seconds since the epoch
  bool complete = false;      // false: a partial entry (a stager is at work or was killed)
  bool in_use = false;        // a job holds it (or a stager is at work)
};

// The entries of a cache, least recently used first. Throws SysError if it cannot be read.
std::vector<CacheEntryInfo> list_cache(const std::string& cache_dir);

struct GcResult {
  std::vector<CacheEntryInfo> removed;
  std::vector<CacheEntryInfo> busy;  // over the cap but in use, kept
  std::uint64_t bytes_after = 0;
};

// Removes partial entries nobody works on, then complete ones least recently used first until
// the cache holds at most `max_bytes`; an entry in use is never removed. Throws SysError.
GcResult collect_garbage(const std::string& cache_dir, std::uint64_t max_bytes);

// Records the launcher owning a job directory (pid, its start time, host). Throws SysError.
void write_job_owner(const std::string& job_dir);

// Removes job directories under <cache>/jobs whose owner is a dead process on this host (or
// that have no owner file and are older than a minute), first killing the user's bubblewrap
// processes whose arguments name the directory and unmounting FUSE mounts left inside.
// Returns the directories removed. Never throws (failures are logged).
std::vector<std::string> sweep_stale_jobs(const std::string& cache_dir);

}  // namespace oshpc::rootfs_cache
