#include "rootfs-cache/cache.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/pidfd.hpp"
#include "node-agent/process.hpp"
#include "rootfs-cache/errors.hpp"

namespace oshpc::rootfs_cache {
namespace {

auto logger() {
  return log::get("rootfs-cache");
}

constexpr const char* kMarkerName = ".oshpc-entry";
constexpr const char* kMarkerVersion = "oshpc-cache-entry 1";
constexpr std::uint64_t kBlock = 4096;
constexpr std::int64_t kOwnerlessGraceSeconds = 60;

std::string read_small_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<std::string> directory_names(const std::string& path) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(path.c_str());
  if (!dir) {
    if (errno == ENOENT) return names;
    sys::throw_errno("read directory " + path);
  }
  while (dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() &&
         text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// "<digest>.<kind>" -> its parts; false for anything else (lock files, temporaries).
bool parse_entry_name(const std::string& name, std::string* digest, EntryKind* kind) {
  for (EntryKind k : {EntryKind::kSquashfs, EntryKind::kRootfs}) {
    std::string suffix = std::string(".") + entry_kind_name(k);
    if (ends_with(name, suffix) && name.size() > suffix.size()) {
      *digest = name.substr(0, name.size() - suffix.size());
      *kind = k;
      return digest->find('.') == std::string::npos;
    }
  }
  return false;
}

std::int64_t mtime_seconds(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::int64_t>(st.st_mtim.tv_sec) : 0;
}

// The holder a lock file names (a stager writes "pid host" into it); for messages only.
std::string lock_holder(int fd) {
  char buf[128] = {};
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return "";
  std::string text(buf, static_cast<std::size_t>(n));
  while (!text.empty() && (text.back() == '\n' || text.back() == '\0')) text.pop_back();
  return text.empty() ? "" : " (held by " + text + ")";
}

void record_holder(int fd) {
  std::string text = "pid " + std::to_string(::getpid()) + " on " + sys::host_name() + "\n";
  if (::ftruncate(fd, 0) == 0) {
    [[maybe_unused]] ssize_t n = ::pwrite(fd, text.data(), text.size(), 0);
  }
}

// Field 22 of /proc/PID/stat: the start time, which tells a live owner from a reused pid.
// "" for a zombie (a killed launcher nobody reaped yet is dead all the same).
std::string process_start_time(pid_t pid) {
  std::string stat = read_small_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = stat.rfind(')');
  if (close == std::string::npos) return "";
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  for (int i = 3; i <= 22 && fields >> field; ++i) {
    if (i == 3 && (field == "Z" || field == "X")) return "";
    if (i == 22) return field;
  }
  return "";
}

bool owner_is_alive(const std::string& owner_text) {
  std::istringstream in(owner_text);
  long pid = 0;
  std::string start, host;
  in >> pid >> start >> host;
  if (pid <= 0) return false;
  if (host != sys::host_name()) return true;  // another host's job (shared cache): not ours
  if (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) return false;
  return process_start_time(static_cast<pid_t>(pid)) == start;
}

void unmount_detached(const std::string& mount_point) {
  if (::geteuid() == 0) {
    if (::umount2(mount_point.c_str(), MNT_DETACH) != 0) {
      logger()->warn("cannot unmount the stale mount {}: {}", mount_point, std::strerror(errno));
    }
    return;
  }
  std::string err;
  int status = node_agent::run_command({"fusermount3", "-u", "-z", "-q", mount_point}, &err);
  if (status != 0) logger()->warn("cannot unmount the stale mount {}: {}", mount_point, err);
}

// Kills this user's bubblewrap processes whose arguments name something inside `dir`: the
// half-built sandboxes of a launcher killed with SIGKILL, which may wait forever for their
// dead parent (their parent-death signal was not armed yet). Every sandbox of a job binds
// its workspace from the job directory, so the name alone ties a process to the dead job.
void kill_stray_sandboxes(const std::string& dir) {
  std::string inside = dir + "/";
  DIR* proc = ::opendir("/proc");
  if (!proc) return;
  while (dirent* entry = ::readdir(proc)) {
    char* end = nullptr;
    long pid = std::strtol(entry->d_name, &end, 10);
    if (pid <= 0 || *end != '\0' || pid == ::getpid()) continue;
    std::string base = std::string("/proc/") + entry->d_name;
    struct stat st {};
    if (::stat(base.c_str(), &st) != 0 || st.st_uid != ::getuid()) continue;
    sys::UniqueFd pidfd(::pidfd_open(static_cast<pid_t>(pid), 0));
    if (!pidfd.is_open()) continue;
    std::string comm = read_small_file(base + "/comm");
    if (comm != "bwrap\n") continue;
    std::string cmdline = read_small_file(base + "/cmdline");
    if (cmdline.find(inside) == std::string::npos) continue;
    // Signalled through the pidfd: if the process read above was a newer one with the same
    // pid, the one held has exited and nothing is killed.
    if (::pidfd_send_signal(pidfd.get(), SIGKILL, nullptr, 0) == 0) {
      logger()->warn("killed process {}, a sandbox left by the killed launcher of {}", pid, dir);
    }
  }
  ::closedir(proc);
}

// Mount points at or under `dir` (deepest first), from /proc/self/mountinfo.
std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> found;
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mountinfo, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, mount_point;
    fields >> id >> parent >> devno >> root >> mount_point;
    if (mount_point == dir || mount_point.rfind(dir + "/", 0) == 0) found.push_back(mount_point);
  }
  std::sort(found.rbegin(), found.rend());
  return found;
}

// Removes an entry by renaming it aside first, so a half-removed tree is never mistaken for
// a published one.
bool remove_entry(const std::string& images_dir, const std::string& name) {
  std::string aside = images_dir + "/" + name + ".tmp.gc." + std::to_string(::getpid());
  std::string path = images_dir + "/" + name;
  if (::rename(path.c_str(), aside.c_str()) != 0) return false;
  return sys::remove_tree(aside);
}

}  // namespace

const char* entry_kind_name(EntryKind kind) {
  return kind == EntryKind::kSquashfs ? "sqsh" : "rootfs";
}

std::string CacheLayout::entry(const std::string& digest, EntryKind kind) const {
  return images_dir() + "/" + digest + "." + entry_kind_name(kind);
}

std::string CacheLayout::stage_lock(const std::string& digest, EntryKind kind) const {
  return entry(digest, kind) + ".stage";
}

std::string CacheLayout::use_lock(const std::string& digest, EntryKind kind) const {
  return entry(digest, kind) + ".use";
}

void open_cache_dir(const std::string& path) {
  try {
    sys::make_directories(path, 0700);
  } catch (const sys::SysError& e) {
    throw StagingError(std::string(e.what()) + " (choose another --cache-dir)");
  }
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw StagingError("cache directory " + path + " is not a directory");
  }
  if (st.st_uid != ::geteuid()) {
    throw StagingError("cache directory " + path + " belongs to uid " + std::to_string(st.st_uid) +
                       ", not to you (uid " + std::to_string(::geteuid()) +
                       "); choose another --cache-dir");
  }
  for (const auto& sub : {path + "/images", path + "/digests", path + "/jobs"}) {
    sys::make_directories(sub, 0700);
  }
}

FileLock FileLock::acquire(const std::string& path, Mode mode, std::chrono::seconds timeout,
                           const std::string& what) {
  std::int64_t began = clock::mono_us();
  std::int64_t next_report = began + 10'000'000;
  while (true) {
    if (auto lock = try_acquire(path, mode)) return std::move(*lock);
    std::int64_t now = clock::mono_us();
    if (now - began > std::chrono::duration_cast<std::chrono::microseconds>(timeout).count()) {
      sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
      throw StagingError("gave up after " + std::to_string(timeout.count()) + " s waiting for " +
                         what + ": " + path + " stays locked" +
                         (fd.is_open() ? lock_holder(fd.get()) : std::string()));
    }
    if (now > next_report) {
      logger()->warn("still waiting for {} ({} s so far, lock {})", what, (now - began) / 1'000'000,
                     path);
      next_report = now + 10'000'000;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

std::optional<FileLock> FileLock::try_acquire(const std::string& path, Mode mode) {
  sys::UniqueFd fd = sys::open_file(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  int operation = (mode == Mode::kShared ? LOCK_SH : LOCK_EX) | LOCK_NB;
  while (::flock(fd.get(), operation) != 0) {
    if (errno == EWOULDBLOCK) return std::nullopt;
    if (errno != EINTR) sys::throw_errno("lock " + path);
  }
  if (mode == Mode::kExclusive) record_holder(fd.get());
  return FileLock(std::move(fd));
}

void write_marker(const std::string& entry_dir, const EntryMarker& marker) {
  std::string text = std::string(kMarkerVersion) + "\ndigest " + marker.digest + "\nkind " +
                     entry_kind_name(marker.kind) + "\nimage_size " +
                     std::to_string(marker.image_size) + "\nbytes " + std::to_string(marker.bytes) +
                     "\n";
  std::string path = entry_dir + "/" + kMarkerName;
  sys::UniqueFd fd = sys::open_file(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  sys::write_all(fd.get(), text, path);
  if (::fsync(fd.get()) != 0) sys::throw_errno("sync " + path);
}

std::optional<EntryMarker> read_marker(const std::string& entry_dir) {
  std::ifstream in(entry_dir + "/" + kMarkerName);
  std::string line;
  if (!std::getline(in, line) || line != kMarkerVersion) return std::nullopt;
  EntryMarker marker;
  int seen = 0;
  std::string key, value;
  while (in >> key >> value) {
    ++seen;
    if (key == "digest") {
      marker.digest = value;
    } else if (key == "kind") {
      marker.kind = value == "rootfs" ? EntryKind::kRootfs : EntryKind::kSquashfs;
    } else if (key == "image_size") {
      marker.image_size = std::strtoull(value.c_str(), nullptr, 10);
    } else if (key == "bytes") {
      marker.bytes = std::strtoull(value.c_str(), nullptr, 10);
    } else {
      --seen;
    }
  }
  if (seen != 4 || marker.digest.empty()) return std::nullopt;
  return marker;
}

bool entry_is_complete(const std::string& entry_dir, const EntryMarker& expected,
                       std::string* why) {
  auto fail = [&](const std::string& reason) {
    if (why) *why = reason;
    return false;
  };
  struct stat st {};
  if (::stat(entry_dir.c_str(), &st) != 0) return fail("absent");
  auto marker = read_marker(entry_dir);
  if (!marker) return fail("no valid marker (partial entry)");
  if (marker->digest != expected.digest || marker->kind != expected.kind ||
      marker->image_size != expected.image_size) {
    return fail("marker does not match the image");
  }
  if (expected.kind == EntryKind::kSquashfs) {
    if (::stat((entry_dir + "/image.sqsh").c_str(), &st) != 0 ||
        static_cast<std::uint64_t>(st.st_size) != expected.image_size) {
      return fail("image.sqsh is missing or has the wrong size");
    }
  } else if (::stat((entry_dir + "/rootfs").c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return fail("rootfs/ is missing");
  }
  return true;
}

void touch_last_use(const std::string& entry_dir) {
  std::string path = entry_dir + "/last-use";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || ::futimens(fd, nullptr) != 0) {
    logger()->warn("cannot record the use of {}: {}", entry_dir, std::strerror(errno));
  }
  if (fd >= 0) ::close(fd);
}

std::uint64_t free_bytes(const std::string& path) {
  struct statvfs fs {};
  if (::statvfs(path.c_str(), &fs) != 0) sys::throw_errno("query free space of " + path);
  return static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
}

void require_free_space(const std::string& path, std::uint64_t needed, const std::string& what) {
  std::uint64_t available = free_bytes(path);
  if (available >= needed) return;
  throw StagingError("not enough space in " + path + " to " + what + ": need " +
                     format_bytes(needed) + ", " + format_bytes(available) +
                     " free (free some, run 'oshpc cache gc', or choose another --cache-dir)");
}

std::uint64_t unpacked_bytes_from_listing(const std::string& listing) {
  // Lines read like `ls -l`: "-rw-r--r-- root/root 1234 2023-06-12 00:00 squashfs-root/etc/x".
  std::uint64_t total = 0;
  std::istringstream lines(listing);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string mode, owner, size;
    if (!(fields >> mode >> owner >> size) || mode.size() != 10) continue;
    total += kBlock;  // the inode, directory entry or symlink
    if (mode[0] == '-') {
      std::uint64_t bytes = std::strtoull(size.c_str(), nullptr, 10);
      total += (bytes + kBlock - 1) / kBlock * kBlock;
    }
  }
  return total + total / 20;
}

std::uint64_t estimate_unpacked_bytes(const std::string& image_path) {
  // run_command captures stderr only, so the listing goes through a temporary file.
  char pattern[] = "/tmp/oshpc-lls-XXXXXX";
  int fd = ::mkstemp(pattern);
  if (fd < 0) sys::throw_errno("create a temporary file in /tmp");
  sys::UniqueFd listing_fd(fd);
  ::unlink(pattern);
  node_agent::SpawnOptions options;
  options.stdout_fd = listing_fd.get();
  sys::UniqueFd null_fd(::open("/dev/null", O_WRONLY | O_CLOEXEC));
  options.stderr_fd = null_fd.get();
  auto child = node_agent::spawn_process({"unsquashfs", "-lls", image_path}, options);
  int status = child.wait();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw StagingError("unsquashfs -lls could not list " + image_path);
  }
  std::string listing;
  char buf[65536];
  off_t offset = 0;
  ssize_t n;
  while ((n = ::pread(listing_fd.get(), buf, sizeof buf, offset)) > 0) {
    listing.append(buf, static_cast<std::size_t>(n));
    offset += n;
  }
  return unpacked_bytes_from_listing(listing);
}

std::uint64_t tree_bytes(const std::string& path) {
  namespace fs = std::filesystem;
  struct stat top {};
  if (::lstat(path.c_str(), &top) != 0) return 0;
  std::uint64_t total = static_cast<std::uint64_t>(top.st_blocks) * 512;
  if (!S_ISDIR(top.st_mode)) return total;
  std::error_code ec;
  auto options = fs::directory_options::skip_permission_denied;
  for (auto it = fs::recursive_directory_iterator(path, options, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st {};
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    if (st.st_dev != top.st_dev) {
      it.disable_recursion_pending();
      continue;
    }
    total += static_cast<std::uint64_t>(st.st_blocks) * 512;
  }
  return total;
}

std::optional<std::uint64_t> parse_size(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  double value = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || value < 0 || !std::isfinite(value)) return std::nullopt;
  std::string unit(end);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b')) unit.pop_back();
  if (unit.size() == 2 && (unit[1] == 'i' || unit[1] == 'I')) unit.pop_back();
  double scale = 1;
  if (unit.empty()) {
    scale = 1;
  } else if (unit.size() == 1) {
    const std::string units = "KMGT";
    auto pos = units.find(static_cast<char>(std::toupper(static_cast<unsigned char>(unit[0]))));
    if (pos == std::string::npos) return std::nullopt;
    scale = std::pow(1024.0, static_cast<double>(pos + 1));
  } else {
    return std::nullopt;
  }
  return static_cast<std::uint64_t>(value * scale);
}

std::string format_bytes(std::uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  auto value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  char text[32];
  if (unit == 0) {
    std::snprintf(text, sizeof text, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(text, sizeof text, "%.1f %s", value, kUnits[unit]);
  }
  return text;
}

std::vector<CacheEntryInfo> list_cache(const std::string& cache_dir) {
  CacheLayout layout{cache_dir};
  std::vector<CacheEntryInfo> entries;
  for (const auto& name : directory_names(layout.images_dir())) {
    CacheEntryInfo info;
    std::string path = layout.images_dir() + "/" + name;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) continue;
    info.name = name;
    if (parse_entry_name(name, &info.digest, &info.kind)) {
      auto marker = read_marker(path);
      info.complete = marker && marker->digest == info.digest;
      info.bytes = marker ? marker->bytes : tree_bytes(path);
      info.last_use = mtime_seconds(path + "/last-use");
      auto use = FileLock::try_acquire(layout.use_lock(info.digest, info.kind),
                                       FileLock::Mode::kExclusive);
      info.in_use = !use.has_value();
    } else if (name.find(".tmp.") != std::string::npos) {
      info.digest = name.substr(0, name.find('.'));
      info.kind =
          name.find(".rootfs.") != std::string::npos ? EntryKind::kRootfs : EntryKind::kSquashfs;
      info.bytes = tree_bytes(path);
      info.last_use = static_cast<std::int64_t>(st.st_mtim.tv_sec);
      auto stage = FileLock::try_acquire(layout.stage_lock(info.digest, info.kind),
                                         FileLock::Mode::kExclusive);
      info.in_use = !stage.has_value() && name.find(".tmp.gc.") == std::string::npos;
    } else {
      continue;
    }
    entries.push_back(info);
  }
  std::stable_sort(entries.begin(), entries.end(),
                   [](const auto& a, const auto& b) { return a.last_use < b.last_use; });
  return entries;
}

GcResult collect_garbage(const std::string& cache_dir, std::uint64_t max_bytes) {
  CacheLayout layout{cache_dir};
  GcResult result;
  std::uint64_t total = 0;
  auto entries = list_cache(cache_dir);
  for (const auto& entry : entries) total += entry.bytes;

  auto evict = [&](const CacheEntryInfo& entry) {
    // Both locks: no job uses it and no stager works on it while it goes.
    auto use = FileLock::try_acquire(layout.use_lock(entry.digest, entry.kind),
                                     FileLock::Mode::kExclusive);
    auto stage = FileLock::try_acquire(layout.stage_lock(entry.digest, entry.kind),
                                       FileLock::Mode::kExclusive);
    if (!use || !stage) {
      result.busy.push_back(entry);
      return;
    }
    bool removed = entry.complete ? remove_entry(layout.images_dir(), entry.name)
                                  : sys::remove_tree(layout.images_dir() + "/" + entry.name);
    if (!removed) {
      logger()->warn("cannot remove {}/{} completely", layout.images_dir(), entry.name);
      return;
    }
    total -= std::min(total, entry.bytes);
    result.removed.push_back(entry);
  };

  for (const auto& entry : entries) {
    if (!entry.complete && !entry.in_use) evict(entry);
  }
  for (const auto& entry : entries) {
    if (total <= max_bytes) break;
    if (!entry.complete) continue;
    if (entry.in_use) {
      result.busy.push_back(entry);
      continue;
    }
    evict(entry);
  }
  result.bytes_after = total;
  return result;
}

void write_job_owner(const std::string& job_dir) {
  pid_t pid = ::getpid();
  std::string text =
      std::to_string(pid) + " " + process_start_time(pid) + " " + sys::host_name() + "\n";
  // Written aside and renamed into place: another job's sweep must never read it half
  // written, which would look like a dead owner and cost this job its directory.
  std::string path = job_dir + "/owner";
  std::string partial = path + ".partial";
  {
    sys::UniqueFd fd = sys::open_file(partial, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    sys::write_all(fd.get(), text, partial);
  }
  if (::rename(partial.c_str(), path.c_str()) != 0) sys::throw_errno("publish " + path);
}

std::vector<std::string> sweep_stale_jobs(const std::string& cache_dir) {
  std::vector<std::string> swept;
  std::string jobs = CacheLayout{cache_dir}.jobs_dir();
  std::vector<std::string> names;
  try {
    names = directory_names(jobs);
  } catch (const std::exception& e) {
    logger()->warn("cannot sweep {}: {}", jobs, e.what());
    return swept;
  }
  std::int64_t now = clock::wall_us() / 1'000'000;
  for (const auto& name : names) {
    std::string dir = jobs + "/" + name;
    std::string owner = read_small_file(dir + "/owner");
    if (!owner.empty()) {
      if (owner_is_alive(owner)) continue;
    } else if (now - mtime_seconds(dir) < kOwnerlessGraceSeconds) {
      continue;  // probably a job between creating its directory and writing its owner
    }
    kill_stray_sandboxes(dir);
    for (const auto& mount_point : mounts_under(dir)) unmount_detached(mount_point);
    if (sys::remove_tree(dir)) {
      swept.push_back(dir);
    } else {
      logger()->warn("cannot remove the stale job directory {} completely", dir);
    }
  }
  if (!swept.empty()) {
    logger()->warn("removed {} job director{} left by killed launchers in {}", swept.size(),
                   swept.size() == 1 ? "y" : "ies", jobs);
  }
  return swept;
}

}  // namespace oshpc::rootfs_cache
