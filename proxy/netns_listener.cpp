#include "proxy/netns_listener.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace oshpc::proxy {
namespace {

constexpr int kHelperFd = 3;  // where the helper finds its end of the socket pair
constexpr int kHelperTimeoutMs = 5000;

// Owns a spawned helper: waits for it (and kills it first if it is still running).
class HelperProcess {
 public:
  explicit HelperProcess(pid_t pid) : pid_(pid) {}
  HelperProcess(const HelperProcess&) = delete;
  HelperProcess& operator=(const HelperProcess&) = delete;
  ~HelperProcess() {
    if (pid_ <= 0) return;
    int saved = errno;
    ::kill(pid_, SIGKILL);
    wait();
    errno = saved;
  }
  int wait() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_;
};

std::string operation(pid_t pid, int port, const std::string& step) {
  return "listen on 127.0.0.1:" + std::to_string(port) + " in the network namespace of pid " +
         std::to_string(pid) + " (" + step + ")";
}

pid_t spawn_helper(const std::string& helper_path, pid_t pid, int port, int child_end) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, child_end, kHelperFd);
  std::string pid_text = std::to_string(pid);
  std::string port_text = std::to_string(port);
  const char* argv[] = {helper_path.c_str(), pid_text.c_str(), port_text.c_str(), nullptr};
  const char* envp[] = {nullptr};
  pid_t helper = -1;
  int rc = ::posix_spawn(&helper, helper_path.c_str(), &actions, nullptr,
                         const_cast<char* const*>(argv), const_cast<char* const*>(envp));
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw sys::SysError(rc, operation(pid, port, "start " + helper_path));
  return helper;
}

// Receives the helper's answer: a listening fd, or "ERRNO STEP" text.
sys::UniqueFd receive_listener(int fd, pid_t pid, int port) {
  pollfd ready{fd, POLLIN, 0};
  int rc;
  while ((rc = ::poll(&ready, 1, kHelperTimeoutMs)) < 0 && errno == EINTR) {
  }
  if (rc == 0) throw sys::SysError(ETIMEDOUT, operation(pid, port, "wait for the helper"));

  char text[512] = {};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  iovec io{text, sizeof text - 1};
  msghdr message{};
  message.msg_iov = &io;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  ssize_t n = ::recvmsg(fd, &message, MSG_CMSG_CLOEXEC);
  if (n < 0) throw sys::SysError(errno, operation(pid, port, "read the helper's answer"));

  for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int listener = -1;
      std::memcpy(&listener, CMSG_DATA(c), sizeof listener);
      return sys::UniqueFd(listener);
    }
  }
  if (n == 0) throw sys::SysError(EPROTO, operation(pid, port, "the helper exited silently"));
  char* step = nullptr;
  long error = std::strtol(text, &step, 10);
  if (error <= 0 || *step != ' ') error = EPROTO;
  throw sys::SysError(static_cast<int>(error), operation(pid, port, step ? step + 1 : text));
}

}  // namespace

sys::UniqueFd open_listener_in_sandbox(pid_t sandbox_pid, int port,
                                       const std::string& helper_path) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    throw sys::SysError(errno, operation(sandbox_pid, port, "create a socket pair"));
  }
  sys::UniqueFd ours(pair[0]);
  sys::UniqueFd theirs(pair[1]);
  // dup2 onto itself would leave close-on-exec set: keep the child's end off fd 3.
  if (theirs.get() == kHelperFd) theirs.reset(::fcntl(kHelperFd, F_DUPFD_CLOEXEC, 10));

  HelperProcess helper(spawn_helper(helper_path, sandbox_pid, port, theirs.get()));
  theirs.reset();  // so that a helper that dies makes our read return
  sys::UniqueFd listener = receive_listener(ours.get(), sandbox_pid, port);
  helper.wait();
  return listener;
}

std::string default_netns_helper_path() {
  std::error_code error;
  auto self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return "oshpc-netns-listen";
  return (self.parent_path() / "oshpc-netns-listen").string();
}

std::vector<std::string> proxy_environment(int port) {
  std::string url = "http://127.0.0.1:" + std::to_string(port);
  std::string local = "localhost,127.0.0.1,::1";
  return {"HTTP_PROXY=" + url,  "HTTPS_PROXY=" + url, "http_proxy=" + url,
          "https_proxy=" + url, "NO_PROXY=" + local,  "no_proxy=" + local};
}

}  // namespace oshpc::proxy
