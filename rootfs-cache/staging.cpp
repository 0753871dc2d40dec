#include "rootfs-cache/staging.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dirent.h>
#include <linux/openat2.h>
#include <sys/syscall.h>

#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/sys.hpp"
#include "node-agent/root_layout.hpp"

namespace oshpc::rootfs_cache {
namespace {

auto logger() {
  return log::get("rootfs-cache");
}

// Squashfs files start with "hsqs" (the little-endian magic 0x73717368).
constexpr char kSquashfsMagic[4] = {'h', 's', 'q', 's'};
constexpr std::int64_t kMountWaitUs = 15'000'000;
constexpr std::size_t kCopyChunk = 4 << 20;
constexpr std::uint64_t kSpaceMargin = 16 << 20;

std::string hex64(std::uint64_t value) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; --i, value >>= 4) out[static_cast<std::size_t>(i)] = kHex[value & 0xf];
  return out;
}

// FNV-1a over the identity fields: the same file gives the same key on every node.
std::string identity_key(const std::string& path, std::uint64_t size, std::int64_t mtime_ns) {
  std::uint64_t hash = 1469598103934665603ULL;
  auto mix = [&](const std::string& text) {
    for (unsigned char c : text) hash = (hash ^ c) * 1099511628211ULL;
    hash = (hash ^ 0xff) * 1099511628211ULL;
  };
  mix(path);
  mix(std::to_string(size));
  mix(std::to_string(mtime_ns));
  return hex64(hash);
}

bool has_squashfs_magic(const std::string& path, std::string* error) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = std::strerror(errno);
    return false;
  }
  sys::UniqueFd owned(fd);
  char magic[4] = {};
  ssize_t n = ::read(fd, magic, sizeof magic);
  if (n < 0) {
    *error = std::strerror(errno);
    return false;
  }
  if (n != 4 || std::memcmp(magic, kSquashfsMagic, 4) != 0) {
    *error = "not a squashfs file";
    return false;
  }
  return true;
}

bool is_root() {
  return ::geteuid() == 0;
}

void unmount(const std::string& mount_point) {
  if (is_root()) {
    // Lazy: a sandbox still being killed may hold the mount busy; detach it now regardless.
    if (::umount2(mount_point.c_str(), MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT) {
      logger()->warn("cannot unmount {}: {}", mount_point, std::strerror(errno));
    }
    return;
  }
  std::string err;
  int status = node_agent::run_command({"fusermount3", "-u", "-z", "-q", mount_point}, &err);
  if (status != 0 && sys::is_mount_point(mount_point)) {
    logger()->warn("cannot unmount {}: {}", mount_point, err);
  }
}

// squashfuse_ll in the foreground, as our child: it ends with the job, and a mount left by a
// killed job is swept by the next one (docs/limitations.md).
node_agent::ChildProcess start_squashfuse(const std::string& image, const std::string& mount_point,
                                          const std::string& log_path) {
  sys::UniqueFd log_fd = sys::open_file(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  node_agent::SpawnOptions options;
  options.stdout_fd = log_fd.get();
  options.stderr_fd = log_fd.get();
  // A launcher killed outright (mpirun kills its ranks with SIGKILL when it is signalled
  // twice) takes the mount with it: squashfuse unmounts when it gets SIGTERM. Staging runs
  // on the main thread, which lives as long as the launcher.
  options.parent_death_signal = SIGTERM;
  return node_agent::spawn_process({"squashfuse_ll", "-f", image, mount_point}, options);
}

void wait_for_mount(node_agent::ChildProcess& fuse, const std::string& mount_point,
                    const std::string& log_path) {
  std::int64_t deadline = clock::mono_us() + kMountWaitUs;
  while (!sys::is_mount_point(mount_point)) {
    int status = 0;
    if (::waitpid(fuse.pid(), &status, WNOHANG) == fuse.pid()) {
      fuse.mark_reaped();
      std::string detail;
      sys::UniqueFd fd(::open(log_path.c_str(), O_RDONLY | O_CLOEXEC));
      char buf[512] = {};
      if (fd.is_open() && ::read(fd.get(), buf, sizeof buf - 1) > 0) detail = buf;
      while (!detail.empty() && detail.back() == '\n') detail.pop_back();
      throw StagingError("squashfuse_ll could not mount the image on " + mount_point +
                         (detail.empty() ? "" : ": " + detail));
    }
    if (clock::mono_us() > deadline) {
      throw StagingError("squashfuse_ll did not mount " + mount_point + " within 15 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// squashfuse mounts an image whose superblock is sound even when its directory table is
// not; the sandboxes would then fail on a path in the cache. Reading the root names the image.
void check_mount_readable(const std::string& mount_point, const std::string& image_path) {
  int error = 0;
  if (DIR* dir = ::opendir(mount_point.c_str())) {
    errno = 0;
    if (::readdir(dir) == nullptr && errno != 0) error = errno;
    ::closedir(dir);
  } else {
    error = errno;
  }
  if (error != 0) {
    throw StagingError("cannot read the image " + image_path + " through squashfuse (" +
                       std::strerror(error) + "): it may be corrupt; 'unsquashfs -l " + image_path +
                       "' shows where");
  }
}

// Test hook: OSHPC_TEST_STAGE_DELAY_MS slows copying and receiving by that much per chunk,
// so the tests can kill a stager mid-copy. Unset in normal use.
void test_delay() {
  static const long delay_ms = [] {
    const char* value = std::getenv("OSHPC_TEST_STAGE_DELAY_MS");
    return value ? std::strtol(value, nullptr, 10) : 0L;
  }();
  if (delay_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
}

// Squashfs superblock fields (little-endian): major version at 28, bytes_used at 40.
bool superblock_fits(const std::string& path, std::uint64_t file_size, std::string* error) {
  sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  unsigned char block[96] = {};
  if (!fd.is_open() || ::pread(fd.get(), block, sizeof block, 0) != sizeof block) {
    *error = "too short to be a squashfs file";
    return false;
  }
  unsigned major = block[28] | (block[29] << 8);
  std::uint64_t bytes_used = 0;
  for (int i = 7; i >= 0; --i) bytes_used = (bytes_used << 8) | block[40 + i];
  if (major != 4) {
    *error = "squashfs version " + std::to_string(major) + " is not supported (need 4)";
    return false;
  }
  if (bytes_used > file_size) {
    *error = "truncated: the superblock says " + std::to_string(bytes_used) +
             " bytes, the file has " + std::to_string(file_size);
    return false;
  }
  return true;
}

std::string last_line(std::string text) {
  while (!text.empty() && text.back() == '\n') text.pop_back();
  auto pos = text.rfind('\n');
  return pos == std::string::npos ? text : text.substr(pos + 1);
}

// Copies the image file into `target`, hashing as it goes; returns the digest.
std::string copy_image(const std::string& source, const std::string& target) {
  sys::UniqueFd in(::open(source.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in.is_open()) {
    throw StagingError("cannot read image " + source + ": " + std::strerror(errno));
  }
  ::posix_fadvise(in.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  sys::UniqueFd out = sys::open_file(target, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  Sha256 hash;
  std::vector<char> buffer(kCopyChunk);
  while (true) {
    ssize_t n = ::read(in.get(), buffer.data(), buffer.size());
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      throw StagingError("cannot read image " + source + ": " + std::strerror(errno));
    }
    hash.update(buffer.data(), static_cast<std::size_t>(n));
    sys::write_all(out.get(), {buffer.data(), static_cast<std::size_t>(n)}, "write " + target);
    test_delay();
  }
  if (::fsync(out.get()) != 0) sys::throw_errno("sync " + target);
  return hash.finish_hex();
}

// Removes temporaries of this entry left by killed stagers. Only the stage lock's holder calls
// it, so no live stager owns them.
void remove_partials(const std::string& entry) {
  std::string dir = entry.substr(0, entry.rfind('/'));
  std::string prefix = entry.substr(entry.rfind('/') + 1) + ".tmp.";
  DIR* handle = ::opendir(dir.c_str());
  if (!handle) return;
  std::vector<std::string> partial;
  while (dirent* item = ::readdir(handle)) {
    if (std::string(item->d_name).rfind(prefix, 0) == 0) partial.push_back(item->d_name);
  }
  ::closedir(handle);
  for (const auto& name : partial) {
    logger()->warn("removing {}/{}, left by an interrupted stager", dir, name);
    sys::remove_tree(dir + "/" + name);
  }
}

// Resolves `path` inside `root` (symlinks stay in it); openat2 with RESOLVE_IN_ROOT.
bool exists_in_root(int root_fd, const std::string& path) {
  struct open_how how {};
  how.flags = O_PATH | O_CLOEXEC;
  how.resolve = RESOLVE_IN_ROOT;
  long fd = ::syscall(SYS_openat2, root_fd, path.c_str(), &how, sizeof how);
  if (fd >= 0) {
    ::close(static_cast<int>(fd));
    return true;
  }
  // Kernels before 5.6: follow the path as it is (an absolute symlink may point outside).
  if (errno == ENOSYS) return ::faccessat(root_fd, path.c_str(), F_OK, 0) == 0;
  return false;
}

}  // namespace

std::optional<StageMethod> parse_stage_method(const std::string& text) {
  if (text == "auto") return StageMethod::kAuto;
  if (text == "mount") return StageMethod::kMount;
  if (text == "extract") return StageMethod::kExtract;
  return std::nullopt;
}

std::optional<StageFrom> parse_stage_from(const std::string& text) {
  if (text == "broadcast") return StageFrom::kBroadcast;
  if (text == "shared") return StageFrom::kShared;
  return std::nullopt;
}

ImageInfo inspect_image(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw ImageError("cannot use image " + path + ": " + std::strerror(errno));
  }
  ImageInfo info;
  char* resolved = ::realpath(path.c_str(), nullptr);
  info.path = resolved ? resolved : path;
  std::free(resolved);
  info.size = static_cast<std::uint64_t>(st.st_size);
  info.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  info.inode = static_cast<std::uint64_t>(st.st_ino);

  if (S_ISDIR(st.st_mode)) {
    info.is_directory = true;
    if (::access(info.path.c_str(), R_OK | X_OK) != 0) {
      throw ImageError("cannot use image directory " + path + ": " + std::strerror(errno));
    }
  } else {
    std::string why;
    if (!S_ISREG(st.st_mode) || !has_squashfs_magic(info.path, &why) ||
        !superblock_fits(info.path, info.size, &why)) {
      if (why.empty()) why = "not a regular file";
      throw ImageError("cannot use image " + path + ": " + why +
                       " (expected a squashfs file or a root directory)");
    }
  }
  info.key = identity_key(info.path + "\n" + std::to_string(info.inode), info.size, info.mtime_ns);
  return info;
}

bool fuse_is_usable(std::string* why) {
  auto fail = [&](std::string reason) {
    if (why) *why = std::move(reason);
    return false;
  };
  int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) return fail(std::string("cannot open /dev/fuse: ") + std::strerror(errno));
  ::close(fd);
  if (::access("/usr/bin/squashfuse_ll", X_OK) != 0) return fail("squashfuse_ll is not installed");
  if (!is_root() && ::access("/usr/bin/fusermount3", X_OK) != 0) {
    return fail("fusermount3 is not installed");
  }
  return true;
}

std::string default_cache_dir() {
  std::string base = "/tmp";
  for (const char* name : {"SLURM_TMPDIR", "TMPDIR"}) {
    const char* value = std::getenv(name);
    if (value && *value && ::access(value, W_OK | X_OK) == 0) {
      base = value;
      break;
    }
  }
  return base + "/oshpc-" + std::to_string(::getuid());
}

StagedImage& StagedImage::operator=(StagedImage&& other) noexcept {
  if (this != &other) {
    release();
    rootfs_ = std::move(other.rootfs_);
    method_ = std::move(other.method_);
    seconds_ = other.seconds_;
    bytes_from_shared_ = other.bytes_from_shared_;
    was_cached_ = other.was_cached_;
    mount_point_ = std::move(other.mount_point_);
    fuse_process_ = std::move(other.fuse_process_);
    use_lock_ = std::move(other.use_lock_);
    other.mount_point_.clear();
  }
  return *this;
}

StagedImage::~StagedImage() {
  release();
}

void StagedImage::release() {
  if (!mount_point_.empty()) {
    unmount(mount_point_);
    mount_point_.clear();
  }
  if (fuse_process_.is_running()) {
    // Unmounting ends squashfuse; give it a moment before the destructor's SIGKILL.
    for (int i = 0; i < 100 && fuse_process_.is_running(); ++i) {
      int status = 0;
      if (::waitpid(fuse_process_.pid(), &status, WNOHANG) == fuse_process_.pid()) {
        fuse_process_.mark_reaped();
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    fuse_process_ = node_agent::ChildProcess();
  }
  use_lock_.unlock();
}

NodeStage::NodeStage(ImageInfo image, StageOptions options)
    : image_(std::move(image)), options_(std::move(options)), layout_{options_.cache_dir} {
  began_us_ = clock::mono_us();
  if (image_.is_directory) return;
  std::string why_not_fuse;
  bool fuse = fuse_is_usable(&why_not_fuse);
  if (options_.method == StageMethod::kMount && !fuse) {
    throw StagingError("cannot mount " + image_.path + ": " + why_not_fuse +
                       " (use --stage-method extract, or see 'oshpc-fanout --check')");
  }
  bool use_mount =
      options_.method == StageMethod::kMount || (options_.method == StageMethod::kAuto && fuse);
  if (options_.method == StageMethod::kAuto && !fuse) {
    logger()->info("extracting the image: {}", why_not_fuse);
  }
  kind_ = use_mount ? EntryKind::kSquashfs : EntryKind::kRootfs;
  entry_ = layout_.entry(image_.digest, kind_);
}

NodeStage::~NodeStage() {
  receiver_.reset();
  if (!temporary_.empty()) sys::remove_tree(temporary_);
}

NodeStage::State NodeStage::begin() {
  if (image_.is_directory) return state_ = State::kCached;
  try {
    open_cache_dir(options_.cache_dir);
    // gc holds the use lock exclusively only while it removes an entry: a short wait.
    use_lock_ = FileLock::acquire(layout_.use_lock(image_.digest, kind_), FileLock::Mode::kShared,
                                  options_.lock_timeout, "'oshpc cache gc' to finish");
    EntryMarker expected{image_.digest, kind_, image_.size, 0};
    if (entry_is_complete(entry_, expected)) return state_ = State::kCached;

    auto stage =
        FileLock::try_acquire(layout_.stage_lock(image_.digest, kind_), FileLock::Mode::kExclusive);
    if (!stage) return state_ = State::kStagedElsewhere;
    stage_lock_ = std::move(*stage);
    // It may have been published between the check and the lock.
    if (entry_is_complete(entry_, expected)) {
      stage_lock_.unlock();
      return state_ = State::kCached;
    }
    return state_ = State::kMustStage;
  } catch (const sys::SysError& e) {
    throw StagingError(e.what());
  }
}

std::string NodeStage::temporary_dir() {
  if (!temporary_.empty()) return temporary_;
  remove_partials(entry_);
  std::string why;
  if (::access(entry_.c_str(), F_OK) == 0) {
    entry_is_complete(entry_, {image_.digest, kind_, image_.size, 0}, &why);
    logger()->warn("redoing the cache entry {}: {}", entry_, why);
    std::string aside = entry_ + ".tmp.bad." + std::to_string(::getpid());
    if (::rename(entry_.c_str(), aside.c_str()) != 0 || !sys::remove_tree(aside)) {
      throw StagingError("cannot remove the broken cache entry " + entry_);
    }
  }
  temporary_ = entry_ + ".tmp." + sys::host_name() + "." + std::to_string(::getpid());
  sys::make_directories(temporary_, 0700);
  return temporary_;
}

void NodeStage::open_receiver() {
  try {
    std::string dir = temporary_dir();
    require_free_space(layout_.images_dir(), image_.size + kSpaceMargin,
                       "receive the image " + image_.path);
    std::string path = dir + "/image.sqsh";
    receiver_ = sys::open_file(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    received_hash_.emplace();
    received_bytes_ = 0;
    is_receiving_ = true;
  } catch (const sys::SysError& e) {
    throw StagingError(e.what());
  }
}

void NodeStage::receive(const char* data, std::size_t size) {
  try {
    sys::write_all(receiver_.get(), {data, size}, "write " + temporary_ + "/image.sqsh");
  } catch (const sys::SysError& e) {
    throw StagingError(e.what());
  }
  received_hash_->update(data, size);
  received_bytes_ += size;
  test_delay();
}

void NodeStage::extract(const std::string& source, const std::string& target) {
  std::uint64_t needed = 0;
  try {
    needed = estimate_unpacked_bytes(source);
  } catch (const StagingError&) {
    // The source may be the node's received copy: name the image the user gave.
    throw StagingError("cannot list the files of the image " + image_.path +
                       " (unsquashfs -lls failed): it may be corrupt; 'unsquashfs -l " +
                       image_.path + "' shows where");
  }
  require_free_space(layout_.images_dir(), needed, "extract the image " + image_.path);

  // /dev is excluded: the sandbox gets a fresh /dev, and device nodes need root to create.
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::string> argv = {
      "unsquashfs", "-no-progress", "-no-xattrs", "-p",   std::to_string(threads),
      "-excludes",  "-d",           target,       source, "dev"};
  std::string err;
  int status = node_agent::run_command(argv, &err);
  if (!WIFEXITED(status) || WEXITSTATUS(status) == 1) {
    std::string last = last_line(err);
    throw StagingError("unsquashfs could not extract " + image_.path + " into " + target + ": " +
                       (last.empty() ? "it failed" : last));
  }
  if (WEXITSTATUS(status) == 2) {
    logger()->warn("unsquashfs skipped some entries of {} (device nodes or ownership need root)",
                   image_.path);
  }
}

void NodeStage::publish_received(const std::string& temporary, std::uint64_t* content_bytes) {
  std::string copy = temporary + "/image.sqsh";
  if (::fsync(receiver_.get()) != 0) sys::throw_errno("sync " + copy);
  receiver_.reset();
  is_receiving_ = false;
  std::string digest = received_hash_->finish_hex();
  if (received_bytes_ != image_.size || digest != image_.digest) {
    throw StagingError("the image received from rank 0 is corrupt (" +
                       std::to_string(received_bytes_) + " bytes, sha256 " + digest.substr(0, 12) +
                       ", expected " + std::to_string(image_.size) + " bytes, sha256 " +
                       image_.digest.substr(0, 12) + ")");
  }
  if (kind_ == EntryKind::kSquashfs) {
    *content_bytes = image_.size;
    return;
  }
  extract(copy, temporary + "/rootfs");
  ::unlink(copy.c_str());
  *content_bytes = tree_bytes(temporary);
}

void NodeStage::publish_from_image(const std::string& temporary, std::uint64_t* content_bytes) {
  // Extraction reads the whole image once, as a copy does.
  bytes_from_shared_ = image_.size;
  if (kind_ == EntryKind::kRootfs) {
    extract(image_.path, temporary + "/rootfs");
    *content_bytes = tree_bytes(temporary);
    return;
  }
  require_free_space(layout_.images_dir(), image_.size + kSpaceMargin,
                     "copy the image " + image_.path);
  std::string digest = copy_image(image_.path, temporary + "/image.sqsh");
  if (digest != image_.digest) {
    throw StagingError("image " + image_.path + " changed while it was being staged (sha256 " +
                       digest.substr(0, 12) + ", expected " + image_.digest.substr(0, 12) +
                       "); stage it again once it is stable");
  }
  *content_bytes = image_.size;
}

void NodeStage::publish_entry() {
  std::string temporary = temporary_dir();
  try {
    std::uint64_t content_bytes = 0;
    if (is_receiving_) {
      publish_received(temporary, &content_bytes);
    } else {
      publish_from_image(temporary, &content_bytes);
    }
    // The marker goes last, then one rename publishes the whole entry.
    write_marker(temporary, {image_.digest, kind_, image_.size, content_bytes});
    if (::rename(temporary.c_str(), entry_.c_str()) != 0) sys::throw_errno("publish " + entry_);
    temporary_.clear();
  } catch (...) {
    receiver_.reset();
    sys::remove_tree(temporary);
    temporary_.clear();
    throw;
  }
}

StagedImage NodeStage::finish() {
  StagedImage staged;
  if (image_.is_directory) {
    staged.rootfs_ = image_.path;
    staged.method_ = "directory";
    staged.was_cached_ = true;
    return staged;
  }
  try {
    if (state_ == State::kStagedElsewhere) {
      stage_lock_ = FileLock::acquire(layout_.stage_lock(image_.digest, kind_),
                                      FileLock::Mode::kExclusive, options_.lock_timeout,
                                      "another process staging " + image_.path + " on this node");
      // Its stager failed or was killed: stage it here.
      bool complete = entry_is_complete(entry_, {image_.digest, kind_, image_.size, 0});
      state_ = complete ? State::kCached : State::kMustStage;
    }
    staged.was_cached_ = state_ == State::kCached;
    if (state_ == State::kMustStage) publish_entry();
    stage_lock_.unlock();
    touch_last_use(entry_);
    staged.use_lock_ = std::move(use_lock_);
    staged.bytes_from_shared_ = bytes_from_shared_;

    if (kind_ == EntryKind::kSquashfs) {
      std::string mount_point = options_.job_dir + "/rootfs";
      sys::make_directories(mount_point, 0700);
      std::string log_path = options_.job_dir + "/squashfuse.log";
      staged.fuse_process_ = start_squashfuse(entry_ + "/image.sqsh", mount_point, log_path);
      staged.mount_point_ = mount_point;
      wait_for_mount(staged.fuse_process_, mount_point, log_path);
      check_mount_readable(mount_point, image_.path);
      staged.rootfs_ = mount_point;
      staged.method_ = "mount";
    } else {
      staged.rootfs_ = entry_ + "/rootfs";
      staged.method_ = "extract";
      // With its mount points in place the root is bound whole into each sandbox. Done on
      // every use (a few mkdir calls that find them there), so that entries extracted by an
      // older oshpc get them too; empty directories change nothing for a job using it now.
      if (!node_agent::add_mount_points(staged.rootfs_)) {
        logger()->debug("could not add mount points to {}; sandboxes bind it entry by entry",
                        staged.rootfs_);
      }
    }
  } catch (const sys::SysError& e) {
    throw StagingError(e.what());
  }
  staged.seconds_ = static_cast<double>(clock::mono_us() - began_us_) / 1e6;
  return staged;
}

StagedImage stage_image(const ImageInfo& image, const StageOptions& options) {
  ImageInfo identified = image;
  if (!image.is_directory && image.digest.empty()) {
    open_cache_dir(options.cache_dir);
    identified.digest = image_digest(image, options.cache_dir);
  }
  NodeStage stage(identified, options);
  stage.begin();
  return stage.finish();
}

bool rootfs_has_program(const std::string& rootfs, const std::string& program) {
  sys::UniqueFd root(::open(rootfs.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root.is_open() || program.empty()) return false;
  if (program.find('/') != std::string::npos) return exists_in_root(root.get(), program);
  for (const char* dir :
       {"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}) {
    if (exists_in_root(root.get(), std::string(dir) + "/" + program)) return true;
  }
  return false;
}

}  // namespace oshpc::rootfs_cache
