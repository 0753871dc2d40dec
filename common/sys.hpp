// Thin, checked wrappers over the system calls the project uses, and the RAII types that own
// kernel resources. Every wrapper either succeeds or throws SysError naming the operation and
// the object, with the errno captured at the failure.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace oshpc::sys {

// A failed system call: what() reads "cannot OPERATION: strerror(errno)".
class SysError : public std::system_error {
 public:
  SysError(int error, const std::string& operation)
      : std::system_error(error, std::generic_category(), "cannot " + operation) {}
};

// Throws SysError for the current errno. Call it right after the failing call.
[[noreturn]] void throw_errno(const std::string& operation);

// Owns a file descriptor. Move-only; closes on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd() { reset(); }

  int get() const { return fd_; }
  bool is_open() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  // Closes the current descriptor (errno preserved) and takes ownership of fd.
  void reset(int fd = -1);

 private:
  int fd_ = -1;
};

struct Pipe {
  UniqueFd read_end;
  UniqueFd write_end;
};

// Creates a pipe with O_CLOEXEC on both ends; throws SysError.
Pipe make_pipe();

// Opens path; throws SysError naming the path.
UniqueFd open_file(const std::string& path, int flags, int mode = 0644);

// Writes all of data, looping on EINTR and short writes; throws SysError.
void write_all(int fd, std::string_view data, const std::string& what);

// Sets or clears O_NONBLOCK / FD_CLOEXEC; throws SysError.
void set_nonblocking(int fd, bool on);
void set_cloexec(int fd, bool on);

// Creates a directory and its parents with the given mode (existing ones are kept);
// throws SysError naming the first path that could not be made. With `created`, appends each
// directory this call made, parents first (also when it throws).
void make_directories(const std::string& path, int mode = 0755,
                      std::vector<std::string>* created = nullptr);

// Removes a tree, not following symlinks and not crossing into other mounts. Returns false
// (and leaves the rest) when something could not be removed; never throws.
bool remove_tree(const std::string& path);

// True if path is the root of a mount (its device differs from its parent's, or the
// kernel lists it in /proc/self/mountinfo).
bool is_mount_point(const std::string& path);

// The node's short host name; never fails (falls back to "localhost").
std::string host_name();

}  // namespace oshpc::sys
