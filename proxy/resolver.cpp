#include "proxy/resolver.hpp"

#include <netdb.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "common/sys.hpp"

namespace oshpc::proxy {

struct Resolver::State {
  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::pair<std::uint64_t, std::string>> queue;
  std::vector<Resolution> done;
  bool stopping = false;
  sys::UniqueFd event;
};

Resolution resolve_blocking(const std::string& host, std::uint64_t id) {
  Resolution result{id, {}, {}};
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* list = nullptr;
  int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &list);
  if (rc != 0) {
    result.error = ::gai_strerror(rc);
    return result;
  }
  for (addrinfo* entry = list; entry != nullptr; entry = entry->ai_next) {
    auto address = IpAddress::from_sockaddr(entry->ai_addr);
    if (address && std::find(result.addresses.begin(), result.addresses.end(), *address) ==
                       result.addresses.end()) {
      result.addresses.push_back(*address);
    }
  }
  ::freeaddrinfo(list);
  if (result.addresses.empty()) result.error = "no IPv4 or IPv6 address";
  return result;
}

namespace {

void work(const std::shared_ptr<Resolver::State>& state) {
  std::unique_lock lock(state->mutex);
  for (;;) {
    state->wake.wait(lock, [&] { return state->stopping || !state->queue.empty(); });
    if (state->stopping) return;
    auto [id, host] = std::move(state->queue.front());
    state->queue.pop_front();
    lock.unlock();
    Resolution result = resolve_blocking(host, id);
    lock.lock();
    state->done.push_back(std::move(result));
    std::uint64_t one = 1;
    (void)!::write(state->event.get(), &one, sizeof one);
  }
}

}  // namespace

Resolver::Resolver(int threads) : state_(std::make_shared<State>()) {
  state_->event.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!state_->event.is_open()) sys::throw_errno("create the resolver eventfd");
  for (int i = 0; i < threads; ++i) std::thread(work, state_).detach();
}

Resolver::~Resolver() {
  std::lock_guard lock(state_->mutex);
  state_->stopping = true;
  state_->wake.notify_all();
}

int Resolver::event_fd() const {
  return state_->event.get();
}

void Resolver::submit(std::uint64_t id, const std::string& host) {
  std::lock_guard lock(state_->mutex);
  state_->queue.emplace_back(id, host);
  state_->wake.notify_one();
}

std::vector<Resolution> Resolver::take_results() {
  std::uint64_t count = 0;
  (void)!::read(state_->event.get(), &count, sizeof count);
  std::lock_guard lock(state_->mutex);
  return std::exchange(state_->done, {});
}

}  // namespace oshpc::proxy
