#include "rootfs-cache/staging.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/sys.hpp"

namespace oshpc::rootfs_cache {
namespace {

auto logger() { return log::get("rootfs-cache"); }

// Squashfs files start with "hsqs" (the little-endian magic 0x73717368).
constexpr char kSquashfsMagic[4] = {'h', 's', 'q', 's'};
constexpr std::int64_t kMountWaitUs = 15'000'000;

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

bool file_exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

bool is_root() { return ::geteuid() == 0; }

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

// Holds an exclusive flock on a file; the kernel drops it if we die, so a lock left by a
// killed stager can never block a later job.
class FileLock {
 public:
  explicit FileLock(const std::string& path)
      : fd_(sys::open_file(path, O_RDWR | O_CREAT, 0600)) {
    while (::flock(fd_.get(), LOCK_EX) != 0) {
      if (errno != EINTR) sys::throw_errno("lock " + path);
    }
  }

 private:
  sys::UniqueFd fd_;
};

void extract_into(const ImageInfo& image, const std::string& target) {
  // /dev is excluded: the sandbox gets a fresh /dev, and device nodes need root to create.
  std::vector<std::string> argv = {"unsquashfs", "-no-progress", "-no-xattrs", "-excludes",
                                   "-d", target, image.path, "dev"};
  std::string err;
  int status = node_agent::run_command(argv, &err);
  if (!WIFEXITED(status) || WEXITSTATUS(status) == 1) {
    while (!err.empty() && err.back() == '\n') err.pop_back();
    auto pos = err.rfind('\n');
    std::string last = pos == std::string::npos ? err : err.substr(pos + 1);
    throw StagingError("unsquashfs could not extract " + image.path + " into " + target + ": " +
                       (last.empty() ? "it failed" : last));
  }
  if (WEXITSTATUS(status) == 2) {
    logger()->warn("unsquashfs skipped some entries of {} (device nodes or ownership need root)",
                   image.path);
  }
}

std::string extract_image(const ImageInfo& image, const StageOptions& options) {
  std::string images_dir = options.cache_dir + "/images";
  sys::make_directories(images_dir, 0700);
  std::string entry = images_dir + "/" + image.key;
  std::string complete_marker = entry + "/.oshpc-complete";

  FileLock lock(entry + ".lock");
  if (file_exists(complete_marker)) return entry + "/rootfs";

  // A partial entry from an interrupted stager: redo it from scratch.
  if (file_exists(entry) && !sys::remove_tree(entry)) {
    throw StagingError("cannot remove the partial cache entry " + entry);
  }
  std::string temporary = entry + ".tmp." + std::to_string(::getpid());
  sys::remove_tree(temporary);
  sys::make_directories(temporary, 0700);
  try {
    extract_into(image, temporary + "/rootfs");
    sys::open_file(temporary + "/.oshpc-complete", O_WRONLY | O_CREAT, 0600);
    if (::rename(temporary.c_str(), entry.c_str()) != 0) sys::throw_errno("publish " + entry);
  } catch (...) {
    sys::remove_tree(temporary);
    throw;
  }
  return entry + "/rootfs";
}

}  // namespace

std::optional<StageMethod> parse_stage_method(const std::string& text) {
  if (text == "auto") return StageMethod::kAuto;
  if (text == "mount") return StageMethod::kMount;
  if (text == "extract") return StageMethod::kExtract;
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

  if (S_ISDIR(st.st_mode)) {
    info.is_directory = true;
    if (::access(info.path.c_str(), R_OK | X_OK) != 0) {
      throw ImageError("cannot use image directory " + path + ": " + std::strerror(errno));
    }
  } else {
    std::string why;
    if (!S_ISREG(st.st_mode) || !has_squashfs_magic(info.path, &why)) {
      if (why.empty()) why = "not a regular file";
      throw ImageError("cannot use image " + path + ": " + why +
                       " (expected a squashfs file or a root directory)");
    }
  }
  info.key = identity_key(info.path, info.size, info.mtime_ns);
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
    mount_point_ = std::move(other.mount_point_);
    fuse_process_ = std::move(other.fuse_process_);
    other.mount_point_.clear();
  }
  return *this;
}

StagedImage::~StagedImage() { release(); }

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
}

StagedImage stage_image(const ImageInfo& image, const StageOptions& options) {
  std::int64_t began = clock::mono_us();
  StagedImage staged;
  if (image.is_directory) {
    staged.rootfs_ = image.path;
    staged.method_ = "directory";
    return staged;
  }

  std::string why_not_fuse;
  bool use_mount = options.method == StageMethod::kMount ||
                   (options.method == StageMethod::kAuto && fuse_is_usable(&why_not_fuse));
  if (options.method == StageMethod::kMount && !fuse_is_usable(&why_not_fuse)) {
    throw StagingError("cannot mount " + image.path + ": " + why_not_fuse +
                       " (use --stage-method extract, or see 'oshpc-fanout --check')");
  }

  try {
    if (use_mount) {
      std::string mount_point = options.job_dir + "/rootfs";
      sys::make_directories(mount_point, 0700);
      std::string log_path = options.job_dir + "/squashfuse.log";
      staged.fuse_process_ = start_squashfuse(image.path, mount_point, log_path);
      staged.mount_point_ = mount_point;
      wait_for_mount(staged.fuse_process_, mount_point, log_path);
      staged.rootfs_ = mount_point;
      staged.method_ = "mount";
    } else {
      if (options.method == StageMethod::kAuto) {
        logger()->info("extracting the image: {}", why_not_fuse);
      }
      staged.rootfs_ = extract_image(image, options);
      staged.method_ = "extract";
    }
  } catch (const sys::SysError& e) {
    throw StagingError(e.what());
  }
  staged.seconds_ = static_cast<double>(clock::mono_us() - began) / 1e6;
  return staged;
}

}  // namespace oshpc::rootfs_cache
