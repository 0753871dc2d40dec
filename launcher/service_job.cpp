#include "launcher/service_job.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/sys.hpp"
#include "launcher/event_batcher.hpp"
#include "launcher/event_codec.hpp"
#include "launcher/event_json.hpp"
#include "launcher/gateway/driver_server.hpp"
#include "launcher/node_runner.hpp"
#include "launcher/node_setup.hpp"
#include "launcher/placement.hpp"
#include "launcher/rank_loop.hpp"
#include "launcher/run_agreement.hpp"
#include "launcher/service_node.hpp"
#include "launcher/work_protocol.hpp"
#include "proxy/netns_listener.hpp"

namespace oshpc::launcher {
namespace {

auto logger() {
  return log::get("service");
}

// How long rank 0 waits for the other ranks to report their sandboxes stopped.
constexpr std::int64_t kStopWaitUs = 30'000'000;

// Rank 0's own state in the service: the registry the gRPC threads work on, the server, and
// the event file.
struct ServiceFront {
  std::unique_ptr<gateway::SandboxRegistry> registry;
  std::unique_ptr<gateway::DriverService> service;
  std::unique_ptr<gateway::DriverServer> server;
  std::FILE* events = nullptr;
  EventContext context;

  ~ServiceFront() {
    if (events && events != stdout) std::fclose(events);
  }
  void write(const node_agent::SandboxEvent& event) {
    if (!events) return;
    std::string line;
    append_event_json(line, event, context);
    std::fwrite(line.data(), 1, line.size(), events);
    std::fflush(events);
  }
};

gateway::ServiceSettings service_settings(const Options& options) {
  gateway::ServiceSettings settings;
  // Absolute, so that the gateway's copy means the same file wherever it runs.
  std::error_code error;
  auto image = std::filesystem::weakly_canonical(options.image, error);
  settings.default_image = error ? options.image : image.string();
  settings.cpus_per_slot = options.cpus_per_sandbox;
  settings.gpus_per_slot = options.gpus_per_sandbox;
  settings.memory_per_slot = options.mem_per_sandbox;
  settings.has_supervisor = !options.supervisor.empty();
  settings.gateway_endpoint = options.gateway_endpoint;
  settings.has_tls = !options.tls_dir.empty();
  settings.proxy_url = "http://127.0.0.1:" + std::to_string(proxy::kSandboxProxyPort);
  return settings;
}

// Rank 0 checks the inputs and starts serving (so that the gateway can connect while the
// image is staged); every rank learns whether that worked and the job's names.
RunAgreement start_front(const Options& options, const MpiSession& mpi,
                         const std::vector<int>& slots_of_rank, ServiceFront& front) {
  RunAgreement agreement;
  int status = 0;
  if (mpi.rank() == 0) {
    try {
      check_inputs_and_name_run(options, RunKind::kService, agreement);
      std::vector<gateway::RankSlots> ranks;
      for (int r = 0; r < mpi.size(); ++r) {
        ranks.push_back({mpi.node_of_rank()[static_cast<std::size_t>(r)],
                         slots_of_rank[static_cast<std::size_t>(r)]});
      }
      front.registry = std::make_unique<gateway::SandboxRegistry>(service_settings(options),
                                                                  agreement.job_tag, ranks);
      front.service = std::make_unique<gateway::DriverService>(*front.registry);
      front.server = std::make_unique<gateway::DriverServer>(options.serve_socket, *front.service);
      // Only once serving works: a service that cannot start leaves no output directory.
      create_run_outputs(options, agreement, [&](const std::string& events_path) {
        front.events = events_path == "-" ? stdout : std::fopen(events_path.c_str(), "w");
        if (!front.events) sys::throw_errno("open the event file " + events_path);
      });
      front.context = {agreement.job_tag, mpi.node_of_rank(), 0};
    } catch (const std::exception& e) {
      logger()->error("{}", e.what());
      status = to_int(ExitCode::kBadInput);
    }
  }
  share_run_agreement(status, agreement);
  return agreement;
}

std::vector<int> gather_slot_counts(const RankPlacement& placement, const MpiSession& mpi) {
  int mine = static_cast<int>(placement.slots.size());
  std::vector<int> all(static_cast<std::size_t>(mpi.size()));
  MPI_Allgather(&mine, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
  return all;
}

// The runner's network wiring plus, with a gateway endpoint, each sandbox's relay port.
void add_gateway_relay(const Options& options, NodeSetup& setup, node_agent::RunnerConfig& config) {
  if (options.gateway_endpoint.empty() || !setup.proxy) return;
  auto [host, port] = gateway::endpoint_host_port(options.gateway_endpoint);
  proxy::EgressProxy* egress = setup.proxy.get();
  std::string helper = proxy::default_netns_helper_path();
  auto attach_proxy = std::move(config.attach_network);
  config.attach_network = [=, host = host, port = port](const std::string& id, pid_t pid) {
    if (attach_proxy) attach_proxy(id, pid);
    egress->add_relay_listener(
        proxy::open_listener_in_sandbox(pid, gateway::kGatewayRelayPort, helper), id,
        proxy::RelayTarget{host, port});
  };
}

// A message from a rank: an event batch, or one number (ready, done).
struct RankMessage {
  int source = 0;
  int tag = 0;
  std::string batch;
  std::int64_t value = 0;
};

// Receives one message from any rank; std::nullopt when none is waiting.
std::optional<RankMessage> receive_from_ranks() {
  int pending = 0;
  MPI_Status status;
  MPI_Iprobe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &pending, &status);
  if (!pending) return std::nullopt;
  RankMessage message{status.MPI_SOURCE, status.MPI_TAG, {}, 0};
  if (message.tag == kTagEvents) {
    int size = 0;
    MPI_Get_count(&status, MPI_CHAR, &size);
    message.batch.resize(static_cast<std::size_t>(size));
    MPI_Recv(message.batch.data(), size, MPI_CHAR, message.source, message.tag, MPI_COMM_WORLD,
             MPI_STATUS_IGNORE);
  } else if (message.tag == kTagRankReady || message.tag == kTagRankDone) {
    MPI_Recv(&message.value, 1, MPI_INT64_T, message.source, message.tag, MPI_COMM_WORLD,
             MPI_STATUS_IGNORE);
  } else {
    discard_message(status, MPI_COMM_WORLD);
    message.tag = -1;
  }
  return message;
}

// --- rank 0

class ServiceCoordinator {
 public:
  ServiceCoordinator(const MpiSession& mpi, SignalChannel& signals, ServiceFront& front,
                     ServiceNode& node)
      : mpi_(mpi),
        signals_(signals),
        front_(front),
        node_(node),
        rank_done_(static_cast<std::size_t>(mpi.size()), false) {}

  // Everything this rank's own node reports.
  void record(const node_agent::SandboxEvent& event) {
    front_.write(event);
    if (node_agent::is_terminal(event.type)) awaiting_end_.erase(event.index);
    if (event.type == node_agent::EventType::kNodeFailed) {
      failures_[static_cast<std::size_t>(event.rank)] = event.message;
    }
    front_.registry->on_event(event);
  }

  RankOutcome run(const LocalNode& local, const NodeSetup& setup) {
    failures_.resize(static_cast<std::size_t>(mpi_.size()));
    if (setup.staged_event) record(*setup.staged_event);
    if (!setup.failure.empty() && !setup.stopped) {
      record(node_failed_event(0, mpi_.node_name(), setup.failure));
    }
    if (!setup.stopped) front_.registry->on_rank_ready(0, setup.failure);
    rank_done_[0] = true;  // rank 0 never reports to itself
    for (;;) {
      SignalsSeen seen = step_node(local, signals_, 5);
      if (seen.stop_signal) {
        stop_everything(local, seen.stop_signal);
        return {ExitCode::kOk, true};
      }
      dispatch_commands();
      while (auto message = receive_from_ranks()) on_message(*message);
    }
  }

 private:
  void dispatch_commands() {
    for (auto& command : front_.registry->take_commands()) {
      if (command.rank == 0) {
        node_.apply(command);
        continue;
      }
      if (rank_done_[static_cast<std::size_t>(command.rank)]) {
        answer_for_stopped_rank(command);
        continue;
      }
      std::string text = encode_command(command);
      MPI_Send(text.data(), static_cast<int>(text.size()), MPI_CHAR, command.rank,
               kTagServiceCommand, MPI_COMM_WORLD);
    }
  }

  // A rank that stopped by itself reads no more commands; it killed its sandboxes and its
  // node's files went with it, so the answers are known.
  void answer_for_stopped_rank(const gateway::NodeCommand& command) {
    if (command.kind == gateway::NodeCommandKind::kLaunch) {
      record(rank_stopped_event(command.handle, command.rank));
    } else if (command.kind == gateway::NodeCommandKind::kRemove) {
      node_agent::SandboxEvent event;
      event.type = node_agent::EventType::kRemoved;
      event.wall_us = clock::wall_us();
      event.index = command.handle;
      event.rank = command.rank;
      record(event);
    }
    // A stop: the run ended when the rank stopped.
  }

  // The end of a run on a rank that stopped without reporting it.
  node_agent::SandboxEvent rank_stopped_event(std::int64_t handle, int rank) const {
    return node_agent::failed_event(handle, rank, node_agent::FailureReason::kNodeFailed,
                                    "rank " + std::to_string(rank) + " on " +
                                        mpi_.node_of_rank()[static_cast<std::size_t>(rank)] +
                                        " has stopped");
  }

  void on_message(const RankMessage& message) {
    auto rank = static_cast<std::size_t>(message.source);
    switch (message.tag) {
      case kTagEvents:
        decode_batch(message.batch.data(), message.batch.size(),
                     [this](const node_agent::SandboxEvent& event) { record(event); });
        break;
      case kTagRankReady:
        if (message.value < 0 || stopping_) break;  // the rank is stopping with the job
        front_.registry->on_rank_ready(message.source, message.value ? "" : failure_of(rank));
        break;
      case kTagRankDone:
        rank_done_[rank] = true;
        if (!stopping_) {
          logger()->warn("rank {} on {} stopped by itself; its sandboxes were stopped",
                         message.source, mpi_.node_of_rank()[rank]);
          front_.registry->on_rank_ready(message.source, "the rank has stopped");
          // Its own reports came before this message (MPI keeps one sender's order): runs
          // still open there will never be reported.
          for (std::int64_t handle : front_.registry->open_runs_on(message.source)) {
            record(rank_stopped_event(handle, message.source));
          }
        }
        break;
      default:
        break;
    }
  }

  std::string failure_of(std::size_t rank) const {
    return failures_[rank].empty() ? "node setup failed" : failures_[rank];
  }

  void stop_everything(const LocalNode& local, int signo) {
    stopping_ = true;
    std::string why = std::string("the allocation is ending (") + ::strsignal(signo) + ")";
    logger()->info("stopping every sandbox: {}", why);
    for (const auto& run : front_.registry->shut_down(why)) awaiting_end_[run.handle] = run.rank;
    std::int64_t signal_number = signo;
    for (int r = 1; r < mpi_.size(); ++r) {
      if (!rank_done_[static_cast<std::size_t>(r)]) {
        MPI_Send(&signal_number, 1, MPI_INT64_T, r, kTagCancel, MPI_COMM_WORLD);
      }
    }
    if (local.runner) local.runner->cancel_all();
    std::int64_t deadline = clock::mono_us() + kStopWaitUs;
    while (std::count(rank_done_.begin(), rank_done_.end(), false) > 0 &&
           clock::mono_us() < deadline) {
      if (auto message = receive_from_ranks()) {
        on_message(*message);
      } else {
        ::usleep(1000);
      }
    }
    // Runs no node ended: created while the image was staged, or on a rank that had stopped.
    // Each run still gets its one terminal event.
    for (const auto& [handle, rank] : awaiting_end_) {
      front_.write(node_agent::failed_event(handle, rank, node_agent::FailureReason::kCancelled,
                                            "stopped with the service: " + why));
    }
    awaiting_end_.clear();
  }

  const MpiSession& mpi_;
  SignalChannel& signals_;
  ServiceFront& front_;
  ServiceNode& node_;
  std::vector<bool> rank_done_;
  std::vector<std::string> failures_;
  bool stopping_ = false;
  std::map<std::int64_t, int> awaiting_end_;  // handle -> rank, once stopping
};

// --- every other rank

class ServiceWorker {
 public:
  ServiceWorker(const MpiSession& mpi, SignalChannel& signals, ServiceNode& node)
      : mpi_(mpi), signals_(signals), node_(node), events_(0, kTagEvents, MPI_COMM_WORLD) {}

  void record(const node_agent::SandboxEvent& event) { events_.record(event); }

  RankOutcome run(const LocalNode& local, const NodeSetup& setup) {
    if (setup.staged_event) record(*setup.staged_event);
    if (!setup.failure.empty() && !setup.stopped)
      record(node_failed_event(mpi_.rank(), mpi_.node_name(), setup.failure));
    events_.flush(true);
    // 1: ready, 0: failed, -1: stopping (the job's stop signal cut the set-up short).
    std::int64_t ready = setup.failure.empty() ? 1 : setup.stopped ? -1 : 0;
    MPI_Send(&ready, 1, MPI_INT64_T, 0, kTagRankReady, MPI_COMM_WORLD);
    for (;;) {
      SignalsSeen seen = step_node(local, signals_, 5);
      int stop = seen.stop_signal ? seen.stop_signal : receive_commands();
      if (stop) {
        if (local.runner) local.runner->cancel_all();
        events_.flush(true);
        std::int64_t flag = 1;
        MPI_Send(&flag, 1, MPI_INT64_T, 0, kTagRankDone, MPI_COMM_WORLD);
        return {ExitCode::kOk, true};
      }
      // Each report leaves at once: the gateway waits on it.
      events_.flush(true);
    }
  }

 private:
  // Applies rank 0's commands; returns the signal number of a cancel, else 0.
  int receive_commands() {
    for (;;) {
      int pending = 0;
      MPI_Status status;
      MPI_Iprobe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &pending, &status);
      if (!pending) return 0;
      if (status.MPI_TAG == kTagCancel) {
        std::int64_t signo = 0;
        MPI_Recv(&signo, 1, MPI_INT64_T, 0, kTagCancel, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        return static_cast<int>(signo);
      }
      if (status.MPI_TAG != kTagServiceCommand) {
        discard_message(status, MPI_COMM_WORLD);
        continue;
      }
      int size = 0;
      MPI_Get_count(&status, MPI_CHAR, &size);
      std::string text(static_cast<std::size_t>(size), '\0');
      MPI_Recv(text.data(), size, MPI_CHAR, 0, kTagServiceCommand, MPI_COMM_WORLD,
               MPI_STATUS_IGNORE);
      try {
        node_.apply(decode_command(text));
      } catch (const std::exception& e) {
        logger()->error("{}", e.what());
      }
    }
  }

  const MpiSession& mpi_;
  SignalChannel& signals_;
  ServiceNode& node_;
  EventBatcher events_;
};

}  // namespace

ExitCode run_service(const Options& options, MpiSession& mpi, SignalChannel& signals) {
  std::optional<RankPlacement> placement = place_rank(options, mpi);
  if (!placement) return ExitCode::kUsage;
  std::vector<int> slots_of_rank = gather_slot_counts(*placement, mpi);

  ServiceFront front;
  RunAgreement job = start_front(options, mpi, slots_of_rank, front);
  if (job.status != ExitCode::kOk) return job.status;

  std::string exec_helper;
  try {
    exec_helper = find_exec_helper();
  } catch (const std::exception& e) {
    logger()->error("{}", e.what());
  }

  std::function<void(const node_agent::SandboxEvent&)> sink;
  auto on_egress = [&sink, &mpi](const proxy::ProxyDecision& decision) {
    if (sink) sink(egress_event(decision, mpi.rank(), 0));
  };
  NodeSetup setup =
      set_up_node(options, mpi, job.run_id, *placement, on_egress, service_mount_points(options));
  settle_node_setup(setup, mpi, signals, !exec_helper.empty());

  node_agent::RunnerConfig config;
  if (setup.failure.empty()) {
    try {
      config = runner_config(options, mpi, {job.job_tag, job.output_dir}, setup, exec_helper);
      add_service_profile(options, config.profile);
      add_gateway_relay(options, setup, config);
    } catch (const std::exception& e) {
      setup.failure = e.what();
    }
  }
  ServiceNode node(setup, *placement, mpi.rank(), mpi.node_name(), config.profile, job.output_dir,
                   [&sink](const node_agent::SandboxEvent& e) { sink(e); });
  std::unique_ptr<node_agent::SandboxRunner> runner;
  if (setup.failure.empty()) {
    try {
      runner = std::make_unique<node_agent::SandboxRunner>(
          std::move(config), [&node](node_agent::SandboxEvent&& e) { node.on_runner_event(e); });
    } catch (const std::exception& e) {
      setup.failure = e.what();
    }
  }
  node.set_runner(runner.get());
  LocalNode local{runner.get(), setup.proxy.get(), front.registry ? front.registry->wake_fd() : -1};

  RankOutcome outcome;
  if (mpi.rank() == 0) {
    ServiceCoordinator coordinator(mpi, signals, front, node);
    sink = [&](const node_agent::SandboxEvent& e) { coordinator.record(e); };
    outcome = coordinator.run(local, setup);
  } else {
    ServiceWorker worker(mpi, signals, node);
    sink = [&](const node_agent::SandboxEvent& e) { worker.record(e); };
    outcome = worker.run(local, setup);
  }
  sink = nullptr;
  runner.reset();
  front.server.reset();  // ends open calls; the socket goes

  wait_for_node_peers(mpi, signals, 1'000'000);
  tear_down_node(setup, mpi);
  return ExitCode::kOk;
}

}  // namespace oshpc::launcher
