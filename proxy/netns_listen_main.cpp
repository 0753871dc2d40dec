// oshpc-netns-listen PID PORT: joins the network namespace of process PID (and, when needed,
// the user namespace that owns it), waits for lo to be up (raising it after 2 s), listens on
// 127.0.0.1:PORT there, and sends the listening socket over the UNIX socket on fd 3 (SCM_RIGHTS),
// then exits. On failure it sends "ERRNO STEP" instead. Must run single-threaded: setns into a user
// namespace requires it (setns(2)), which is why the multi-threaded node agent spawns this instead
// of calling setns.
#define _GNU_SOURCE 1
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

constexpr int kReplyFd = 3;
constexpr int kLoopbackWaitMs = 2000;

// A failed step: its errno and a short description for the caller's message.
struct StepError {
  int error;
  const char* step;
};

[[noreturn]] void fail_step(const char* step) {
  throw StepError{errno, step};
}

int open_netns(const std::string& pid) {
  int fd = ::open(("/proc/" + pid + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail_step("open its /proc/PID/ns/net");
  return fd;
}

bool same_namespace(int a, int b) {
  struct stat sa {
  }, sb{};
  return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

// Root may join directly; an ordinary user first joins the user namespace that owns the
// network namespace (with bwrap --disable-userns that is the sandbox's outer one, not the one
// /proc/PID/ns/user shows), where it holds every capability as that namespace's owner.
void join_netns(int netns) {
  if (::setns(netns, CLONE_NEWNET) == 0) return;
  if (errno != EPERM) fail_step("join its network namespace");
  int owner = ::ioctl(netns, NS_GET_USERNS);
  if (owner < 0) fail_step("find the user namespace owning its network namespace");
  int self = ::open("/proc/self/ns/user", O_RDONLY | O_CLOEXEC);
  if (self >= 0 && same_namespace(owner, self)) {
    errno = EPERM;
    fail_step("join its network namespace");
  }
  if (::setns(owner, CLONE_NEWUSER) != 0) fail_step("join its user namespace");
  if (::setns(netns, CLONE_NEWNET) != 0) fail_step("join its network namespace");
}

bool loopback_is_up(int fd, ifreq& request) {
  std::memset(&request, 0, sizeof request);
  std::strncpy(request.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(fd, SIOCGIFFLAGS, &request) != 0) fail_step("read the flags of lo");
  return (request.ifr_flags & IFF_UP) != 0;
}

// bwrap sets up lo itself, after it reports the child's pid: adding lo's address and then
// bringing it up. Bringing lo up first would make bwrap's own address request fail, so wait
// for bwrap to finish; only a namespace whose creator never does it gets lo up from us.
void wait_for_loopback() {
  int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail_step("create a socket to configure lo");
  ifreq request{};
  for (int waited_ms = 0; waited_ms < kLoopbackWaitMs; waited_ms += 5) {
    if (loopback_is_up(fd, request)) {
      ::close(fd);
      return;
    }
    ::usleep(5000);
  }
  request.ifr_flags = static_cast<short>(request.ifr_flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(fd, SIOCSIFFLAGS, &request) != 0) fail_step("bring up lo");
  ::close(fd);
}

int listen_on_loopback(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail_step("create the listening socket");
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    fail_step("bind 127.0.0.1");
  }
  if (::listen(fd, SOMAXCONN) != 0) fail_step("listen");
  return fd;
}

void send_listener(int listener) {
  char ok[] = "ok";
  iovec io{ok, 2};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr message{};
  message.msg_iov = &io;
  message.msg_iovlen = 1;
  message.msg_control = control;
  message.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&message);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &listener, sizeof listener);
  if (::sendmsg(kReplyFd, &message, MSG_NOSIGNAL) < 0) fail_step("send the socket back");
}

void send_error(const StepError& e) {
  std::string text = std::to_string(e.error) + " " + e.step;
  (void)!::send(kReplyFd, text.data(), text.size(), MSG_NOSIGNAL);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    const char usage[] = "usage: oshpc-netns-listen PID PORT (socket on fd 3)\n";
    (void)!::write(2, usage, sizeof usage - 1);
    return 2;
  }
  std::string pid = argv[1];
  int port = std::atoi(argv[2]);
  try {
    if (pid.find_first_not_of("0123456789") != std::string::npos || port < 1 || port > 65535) {
      errno = EINVAL;
      fail_step("check arguments");
    }
    int netns = open_netns(pid);
    join_netns(netns);
    wait_for_loopback();
    send_listener(listen_on_loopback(port));
    return 0;
  } catch (const StepError& e) {
    send_error(e);
    return 1;
  }
}
