#include "launcher/gateway/driver_server.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include <grpcpp/resource_quota.h>
#include <grpcpp/server_builder.h>
#include <grpcpp/server_posix.h>

#include "common/log.hpp"

namespace oshpc::gateway {
namespace {

auto logger() {
  return log::get("gateway");
}

// Stop and Delete block a thread each until the node has acted, and Watch holds one per
// stream: allow plenty, bounded.
constexpr int kMaxServerThreads = 512;

// The directory holding the socket must be ours and closed to everyone else: the mode of a
// socket file alone does not stop a peer that can reach it through a laxer directory. True
// when this call created it.
bool prepare_private_directory(const std::string& dir) {
  bool created = ::mkdir(dir.c_str(), 0700) == 0;
  if (!created && errno != EEXIST) sys::throw_errno("create the socket directory " + dir);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) sys::throw_errno("inspect the socket directory " + dir);
  if (!S_ISDIR(st.st_mode) || st.st_uid != ::geteuid()) {
    throw sys::SysError(EPERM, "serve in " + dir + ": it is not a directory owned by uid " +
                                   std::to_string(::geteuid()));
  }
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", st.st_mode & 0777);
    throw sys::SysError(
        EPERM, "serve in " + dir + ": its mode is " + mode + ", open to others; make it 0700");
  }
  return created;
}

// A socket left by a run that died is ours to remove; a live one (someone answers) is not.
void remove_stale_socket(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  if (!S_ISSOCK(st.st_mode) || st.st_uid != ::geteuid()) {
    throw sys::SysError(EEXIST, "serve on " + path + ": something else is there");
  }
  sys::UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  if (probe.is_open() &&
      ::connect(probe.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
    throw sys::SysError(EADDRINUSE, "serve on " + path + ": another service is listening there");
  }
  ::unlink(path.c_str());
}

void check_socket_path_length(const std::string& path) {
  if (path.size() >= sizeof sockaddr_un{}.sun_path) {
    throw sys::SysError(ENAMETOOLONG, "serve on " + path + ": the path is too long for a socket");
  }
}

sys::UniqueFd listen_on(const std::string& path) {
  check_socket_path_length(path);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
  sys::UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.is_open()) sys::throw_errno("create the service socket");
  // Created 0600 from the start: no moment in which another user could connect.
  mode_t old_mask = ::umask(0177);
  int rc = ::bind(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address);
  int bind_errno = errno;
  ::umask(old_mask);
  if (rc != 0) throw sys::SysError(bind_errno, "bind the service socket " + path);
  if (::listen(fd.get(), 128) != 0) {
    sys::SysError error(errno, "listen on " + path);
    ::unlink(path.c_str());
    throw error;
  }
  return fd;
}

// The peer's uid, or (uid_t)-1 when it cannot be known (then it is refused).
uid_t peer_uid(int fd) {
  ucred peer{};
  socklen_t size = sizeof peer;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &size) != 0) return static_cast<uid_t>(-1);
  return peer.uid;
}

}  // namespace

DriverServer::DriverServer(const std::string& socket_path, DriverService& service)
    : socket_path_(socket_path), stop_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!stop_.is_open()) sys::throw_errno("create the service's stop eventfd");
  auto slash = socket_path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : socket_path.substr(0, slash);
  if (dir.empty()) dir = "/";
  check_socket_path_length(socket_path);
  if (prepare_private_directory(dir)) created_directory_ = dir;
  try {
    remove_stale_socket(socket_path);
    listener_ = listen_on(socket_path);
    grpc::ResourceQuota quota("oshpc-driver");
    quota.SetMaxThreads(kMaxServerThreads);
    grpc::ServerBuilder builder;
    builder.SetResourceQuota(quota);
    builder.RegisterService(&service);
    server_ = builder.BuildAndStart();
    if (!server_) throw std::runtime_error("cannot start the gRPC server");
    acceptor_ = std::thread([this] { accept_loop(); });
  } catch (...) {
    if (server_) server_->Shutdown();
    if (listener_.is_open()) ::unlink(socket_path.c_str());
    if (!created_directory_.empty()) ::rmdir(created_directory_.c_str());
    throw;
  }
  logger()->info("serving the OpenShell compute-driver API on {}", socket_path);
}

DriverServer::~DriverServer() {
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(stop_.get(), &one, sizeof one);
  if (acceptor_.joinable()) acceptor_.join();
  // Open calls (a Watch stream, a waiting Stop) get a moment to end, then are cancelled.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_->Wait();
  ::unlink(socket_path_.c_str());
  if (!created_directory_.empty()) ::rmdir(created_directory_.c_str());
}

void DriverServer::accept_loop() {
  pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents) return;
    if (!(fds[0].revents & POLLIN)) continue;
    int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      // Out of descriptors: the connection stays queued; retry later rather than spin.
      if (errno == EMFILE || errno == ENFILE) ::poll(nullptr, 0, 100);
      continue;  // else EAGAIN, or the peer left already
    }
    if (uid_t peer = peer_uid(fd); peer != ::geteuid()) {
      logger()->warn("refused a connection to {} from uid {} (only uid {} may connect)",
                     socket_path_, static_cast<long>(peer), static_cast<long>(::geteuid()));
      ::close(fd);
      continue;
    }
    // gRPC takes the descriptor over (and closes it).
    grpc::AddInsecureChannelFromFd(server_.get(), fd);
  }
}

}  // namespace oshpc::gateway
