#include "common/sys.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace oshpc::sys {

void throw_errno(const std::string& operation) {
  throw SysError(errno, operation);
}

void UniqueFd::reset(int fd) {
  if (fd_ >= 0) {
    int saved = errno;
    // Linux always releases the descriptor, even when close reports EINTR: never retry.
    ::close(fd_);
    errno = saved;
  }
  fd_ = fd;
}

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw_errno("create a pipe");
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

UniqueFd open_file(const std::string& path, int flags, int mode) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) throw_errno("open " + path);
  return UniqueFd(fd);
}

void write_all(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("write " + what);
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

static void update_flag(int fd, int get_cmd, int set_cmd, int flag, bool on) {
  int flags = ::fcntl(fd, get_cmd);
  if (flags < 0) throw_errno("read descriptor flags");
  flags = on ? (flags | flag) : (flags & ~flag);
  if (::fcntl(fd, set_cmd, flags) < 0) throw_errno("set descriptor flags");
}

void set_nonblocking(int fd, bool on) {
  update_flag(fd, F_GETFL, F_SETFL, O_NONBLOCK, on);
}
void set_cloexec(int fd, bool on) {
  update_flag(fd, F_GETFD, F_SETFD, FD_CLOEXEC, on);
}

void make_directories(const std::string& path, int mode, std::vector<std::string>* created) {
  // Usually only the last component is new (a sandbox's directory in an existing tree): try
  // that first, and walk the prefixes only when a parent is missing.
  if (::mkdir(path.c_str(), static_cast<mode_t>(mode)) == 0) {
    if (created) created->push_back(path);
    return;
  }
  if (errno == EEXIST) return;
  if (errno != ENOENT) throw_errno("create directory " + path);
  std::string prefix;
  std::size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    prefix = path.substr(0, pos);
    if (prefix.empty()) continue;
    if (::mkdir(prefix.c_str(), static_cast<mode_t>(mode)) == 0) {
      if (created) created->push_back(prefix);
    } else if (errno != EEXIST) {
      throw_errno("create directory " + prefix);
    }
  }
}

bool remove_tree(const std::string& path) {
  namespace fs = std::filesystem;
  // Most workspaces are left empty: one rmdir, no walk.
  if (::rmdir(path.c_str()) == 0 || errno == ENOENT) return true;
  std::error_code ec;
  struct stat top {};
  if (::lstat(path.c_str(), &top) != 0) return errno == ENOENT || errno == ENOTDIR;
  if (!S_ISDIR(top.st_mode)) return ::unlink(path.c_str()) == 0;

  bool all_removed = true;
  for (auto it = fs::directory_iterator(path, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    std::string child = it->path().string();
    struct stat st {};
    if (::lstat(child.c_str(), &st) != 0) continue;
    // Never descend into another file system: a leftover mount must be unmounted, not emptied.
    if (S_ISDIR(st.st_mode) && st.st_dev != top.st_dev) {
      all_removed = false;
      continue;
    }
    // Extracted images can hold read-only directories; make them writable to empty them.
    if (S_ISDIR(st.st_mode)) ::chmod(child.c_str(), 0700);
    all_removed = remove_tree(child) && all_removed;
  }
  if (ec) all_removed = false;
  return ::rmdir(path.c_str()) == 0 && all_removed;
}

bool is_mount_point(const std::string& path) {
  std::ifstream mountinfo("/proc/self/mountinfo");
  std::string line;
  std::string canonical = std::filesystem::weakly_canonical(path).string();
  while (std::getline(mountinfo, line)) {
    // Field 5 is the mount point (octal escapes for spaces are rare in our paths).
    std::size_t pos = 0;
    for (int field = 0; field < 4 && pos != std::string::npos; ++field) {
      pos = line.find(' ', pos + 1);
    }
    if (pos == std::string::npos) continue;
    std::size_t end = line.find(' ', pos + 1);
    if (line.compare(pos + 1, end - pos - 1, canonical) == 0) return true;
  }
  return false;
}

std::string host_name() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  std::string result(name);
  return result.substr(0, result.find('.'));
}

}  // namespace oshpc::sys
