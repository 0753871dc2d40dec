// The event plane at 20,000 nodes, on one machine: every rank but 0 pretends to be many nodes
// and sends their sandboxes' events through the real EventBatcher; rank 0 receives, decodes,
// records and writes them as JSON Lines with the real EventLog, as the coordinator does.
//
//   mpirun -np 2 bench_event_plane [--nodes 20000] [--per-node 64] [--egress 2]
//                                  [--events FILE] [--transport-only] [--json]
//                                  [--sandboxes-per-batch S]
//
// Each simulated node sends one image_staged; each sandbox sends started, --egress egress
// events and exited. Rank 0 reports events/s over the wall time of the stream and over its
// own busy time (receive + decode + record + write, not the idle polling), the bytes written,
// and the peak RSS of rank 0 and of the largest generating rank. --transport-only is the
// baseline: rank 0 receives the same batches and does nothing with them (the MPI ceiling).
// --sandboxes-per-batch S sends a batch after every S sandboxes, as a node does when its
// batches leave by age (20 ms) rather than size: many small messages instead of few large.
#include <mpi.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "common/clock.hpp"
#include "launcher/event_batcher.hpp"
#include "launcher/event_codec.hpp"
#include "launcher/event_log.hpp"
#include "launcher/work_protocol.hpp"

namespace {

using oshpc::clock::mono_us;
using oshpc::node_agent::EventType;
using oshpc::node_agent::SandboxEvent;
namespace launcher = oshpc::launcher;

constexpr int kTagGeneratorDone = launcher::kTagRankDone;

struct Config {
  std::int64_t nodes = 20'000;
  std::int64_t per_node = 64;
  int egress = 2;  // egress events per sandbox
  std::string events = "/dev/null";
  bool json = false;
  bool transport_only = false;
  std::int64_t sandboxes_per_batch = 0;  // 0: batches leave by size (EventBatcher decides)
};

Config parse(int argc, char** argv) {
  Config config;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&] {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_event_plane: %s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return std::string(argv[++i]);
    };
    if (arg == "--nodes") {
      config.nodes = std::stoll(value());
    } else if (arg == "--per-node") {
      config.per_node = std::stoll(value());
    } else if (arg == "--egress") {
      config.egress = std::stoi(value());
    } else if (arg == "--events") {
      config.events = value();
    } else if (arg == "--sandboxes-per-batch") {
      config.sandboxes_per_batch = std::stoll(value());
    } else if (arg == "--transport-only") {
      config.transport_only = true;
    } else if (arg == "--json") {
      config.json = true;
    } else {
      std::fprintf(stderr, "bench_event_plane: unknown option %s\n", arg.c_str());
      std::exit(2);
    }
  }
  return config;
}

std::int64_t peak_rss_kib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

// This thread's CPU time: the cost of processing, without polling or time on a busy CPU's queue.
std::int64_t thread_cpu_ns() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<std::int64_t>(now.tv_sec) * 1'000'000'000 + now.tv_nsec;
}

double cpu_seconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto s = [](const timeval& t) {
    return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6;
  };
  return s(usage.ru_utime) + s(usage.ru_stime);
}

// Bytes this process passed to write(2), /dev/null included (/proc/self/io wchar).
std::int64_t bytes_written() {
  std::ifstream io("/proc/self/io");
  std::string key;
  std::int64_t value = 0;
  while (io >> key >> value) {
    if (key == "wchar:") return value;
  }
  return -1;
}

// Events as a real node sends them: same field values a sandbox run fills in.
struct NodeEvents {
  SandboxEvent staged, started, egress, exited;

  NodeEvents() {
    staged.type = EventType::kImageStaged;
    staged.method = "mount";
    staged.seconds = 0.012;
    started.type = EventType::kStarted;
    started.start_latency_us = 14'250;
    started.cpus = "12-15";
    egress.type = EventType::kEgress;
    egress.allowed = true;
    egress.host = "pypi.org";
    egress.port = 443;
    egress.request_method = "CONNECT";
    egress.rule = "pypi.org:443";
    egress.message = "allowed by policy";
    egress.bytes_up = 1'843;
    egress.bytes_down = 912'331;
    exited.type = EventType::kExited;
    exited.exit_code = 0;
    exited.duration_us = 61'004'321;
    exited.cpu_user_us = 40'120'000;
    exited.cpu_system_us = 3'300'000;
    exited.max_rss_kib = 812'344;
  }
};

// Small batches, sent as EventBatcher sends them (Isend, at most 8 in flight), but after a
// fixed number of sandboxes instead of at 64 KiB: what age-triggered batches look like.
class SmallBatches {
 public:
  explicit SmallBatches(std::int64_t sandboxes) : sandboxes_(sandboxes) {}
  ~SmallBatches() { drain(0); }
  void record(const SandboxEvent& event) { launcher::encode_event(open_, event); }
  void end_sandbox() {
    if (++in_batch_ < sandboxes_) return;
    in_batch_ = 0;
    in_flight_.push_back({MPI_REQUEST_NULL, std::move(open_)});
    open_.clear();
    auto& sent = in_flight_.back();
    MPI_Isend(sent.data.data(), static_cast<int>(sent.data.size()), MPI_CHAR, 0,
              launcher::kTagEvents, MPI_COMM_WORLD, &sent.request);
    drain(8);
  }
  void finish() {
    if (!open_.empty()) {
      in_batch_ = sandboxes_ - 1;
      end_sandbox();
    }
    drain(0);
  }

 private:
  void drain(std::size_t keep) {
    while (in_flight_.size() > keep) {
      MPI_Wait(&in_flight_.front().request, MPI_STATUS_IGNORE);
      in_flight_.erase(in_flight_.begin());
    }
  }
  struct InFlight {
    MPI_Request request;
    std::string data;
  };
  std::int64_t sandboxes_;
  std::int64_t in_batch_ = 0;
  std::string open_;
  std::vector<InFlight> in_flight_;
};

// Simulated node n belongs to generating rank 1 + n % (size - 1).
std::int64_t generate(const Config& config, int rank, int size) {
  launcher::EventBatcher batcher(0, launcher::kTagEvents, MPI_COMM_WORLD);
  SmallBatches small(config.sandboxes_per_batch);
  bool use_small = config.sandboxes_per_batch > 0;
  auto record = [&](const SandboxEvent& event) {
    if (use_small) {
      small.record(event);
    } else {
      batcher.record(event);
    }
  };
  NodeEvents ev;
  std::int64_t base_us = oshpc::clock::wall_us();
  std::int64_t sent = 0;

  for (std::int64_t node = rank - 1; node < config.nodes; node += size - 1) {
    auto node_rank = static_cast<std::int32_t>(node);
    ev.staged.rank = ev.started.rank = ev.egress.rank = ev.exited.rank = node_rank;
    ev.staged.wall_us = base_us + node;
    record(ev.staged);
    ++sent;
    for (std::int64_t s = 0; s < config.per_node; ++s) {
      std::int64_t index = node * config.per_node + s;
      ev.started.index = ev.egress.index = ev.exited.index = index;
      ev.started.pid = static_cast<std::int32_t>(100'000 + s);
      ev.started.wall_us = base_us + index;
      record(ev.started);
      for (int e = 0; e < config.egress; ++e) {
        ev.egress.allowed = e % 2 == 0;
        ev.egress.wall_us = base_us + index + e;
        record(ev.egress);
      }
      ev.exited.wall_us = base_us + index + 61'004'321;
      record(ev.exited);
      sent += 2 + config.egress;
      // The worker calls this once per loop turn; once per sandbox is at least as often.
      if (use_small) {
        small.end_sandbox();
      } else {
        batcher.flush(false);
      }
    }
  }
  small.finish();
  batcher.flush(true);
  std::int64_t done = sent;
  MPI_Send(&done, 1, MPI_INT64_T, 0, kTagGeneratorDone, MPI_COMM_WORLD);
  return sent;
}

struct Ingest {
  std::int64_t events = 0;
  std::int64_t batches = 0;
  std::int64_t batch_bytes = 0;
  std::int64_t first_us = 0;
  std::int64_t last_us = 0;
  std::int64_t busy_us = 0;
  std::int64_t busy_cpu_ns = 0;
  std::int64_t terminal = 0;
  double cpu_s = 0;
  std::int64_t written = 0;
};

Ingest ingest(const Config& config, int size) {
  std::vector<std::string> node_names;
  node_names.reserve(static_cast<std::size_t>(config.nodes));
  char name[32];
  for (std::int64_t n = 0; n < config.nodes; ++n) {
    std::snprintf(name, sizeof name, "node%05lld", static_cast<long long>(n));
    node_names.emplace_back(name);
  }
  launcher::EventContext context{"bench", std::move(node_names), 0};
  launcher::EventLog log(config.events, std::move(context), config.nodes * config.per_node);

  Ingest result;
  std::string buffer;
  int generators_left = size - 1;
  double cpu_before = cpu_seconds();
  std::int64_t written_before = bytes_written();
  while (generators_left > 0) {
    MPI_Status status;
    MPI_Probe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &status);
    std::int64_t begin = mono_us();
    if (status.MPI_TAG == kTagGeneratorDone) {
      std::int64_t ignored = 0;
      MPI_Recv(&ignored, 1, MPI_INT64_T, status.MPI_SOURCE, kTagGeneratorDone, MPI_COMM_WORLD,
               MPI_STATUS_IGNORE);
      --generators_left;
      continue;
    }
    if (result.first_us == 0) result.first_us = begin;
    std::int64_t cpu_begin = thread_cpu_ns();
    int bytes = 0;
    MPI_Get_count(&status, MPI_CHAR, &bytes);
    buffer.resize(static_cast<std::size_t>(bytes));
    MPI_Recv(buffer.data(), bytes, MPI_CHAR, status.MPI_SOURCE, launcher::kTagEvents,
             MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (!config.transport_only) {
      launcher::decode_batch(buffer.data(), buffer.size(), [&](const SandboxEvent& event) {
        log.record(event);
        ++result.events;
      });
      log.flush();
    }
    ++result.batches;
    result.batch_bytes += bytes;
    result.last_us = mono_us();
    result.busy_us += result.last_us - begin;
    result.busy_cpu_ns += thread_cpu_ns() - cpu_begin;
  }
  result.cpu_s = cpu_seconds() - cpu_before;
  result.written = bytes_written() - written_before;
  result.terminal = log.terminal_count();
  return result;
}

void report(const Config& config, int size, const Ingest& in, std::int64_t generated,
            std::int64_t rss0, std::int64_t rss_gen_max) {
  double wall_s = static_cast<double>(in.last_us - in.first_us) / 1e6;
  double busy_s = static_cast<double>(in.busy_us) / 1e6;
  double rate_wall = static_cast<double>(in.events) / wall_s;
  double rate_busy = static_cast<double>(in.events) / busy_s;
  // On a shared machine, rank 0's CPU time while processing is the fairest "one core" figure
  // (its total CPU time also counts the busy polling of MPI_Probe while it waits).
  double rate_cpu = static_cast<double>(in.events) / (static_cast<double>(in.busy_cpu_ns) / 1e9);
  std::int64_t sandboxes = config.nodes * config.per_node;
  if (config.json) {
    std::printf(
        "{\"ranks\":%d,\"nodes\":%lld,\"per_node\":%lld,\"sandboxes\":%lld,\"events\":%lld,"
        "\"generated\":%lld,\"terminal\":%lld,\"batches\":%lld,\"mean_batch_bytes\":%.0f,"
        "\"wall_s\":%.3f,\"busy_s\":%.3f,\"cpu_s\":%.3f,\"events_per_s_wall\":%.0f,"
        "\"events_per_s_busy\":%.0f,\"events_per_s_cpu\":%.0f,\"batches_per_s\":%.0f,\"bytes_"
        "written\":%lld,"
        "\"json_bytes_per_event\":%.1f,\"rss_rank0_kib\":%lld,\"rss_generator_kib\":%lld,"
        "\"events_file\":\"%s\",\"transport_only\":%s,\"sandboxes_per_batch\":%lld}\n",
        size, static_cast<long long>(config.nodes), static_cast<long long>(config.per_node),
        static_cast<long long>(sandboxes), static_cast<long long>(in.events),
        static_cast<long long>(generated), static_cast<long long>(in.terminal),
        static_cast<long long>(in.batches),
        static_cast<double>(in.batch_bytes) /
            static_cast<double>(std::max<std::int64_t>(1, in.batches)),
        wall_s, busy_s, in.cpu_s, rate_wall, rate_busy, rate_cpu,
        static_cast<double>(in.batches) / wall_s, static_cast<long long>(in.written),
        static_cast<double>(in.written) / static_cast<double>(std::max<std::int64_t>(1, in.events)),
        static_cast<long long>(rss0), static_cast<long long>(rss_gen_max), config.events.c_str(),
        config.transport_only ? "true" : "false",
        static_cast<long long>(config.sandboxes_per_batch));
    return;
  }
  std::printf(
      "event plane%s: %lld nodes x %lld sandboxes = %lld sandboxes, %d ranks, events to %s\n",
      config.transport_only ? " (transport only)" : "", static_cast<long long>(config.nodes),
      static_cast<long long>(config.per_node), static_cast<long long>(sandboxes), size,
      config.events.c_str());
  std::printf("  events received   %lld (sent %lld; terminal %lld)\n",
              static_cast<long long>(in.events), static_cast<long long>(generated),
              static_cast<long long>(in.terminal));
  std::printf("  batches           %lld, mean %.0f bytes, %.0f batches/s\n",
              static_cast<long long>(in.batches),
              static_cast<double>(in.batch_bytes) /
                  static_cast<double>(std::max<std::int64_t>(1, in.batches)),
              static_cast<double>(in.batches) / wall_s);
  std::printf("  rank 0 wall       %.3f s  -> %.0f events/s\n", wall_s, rate_wall);
  std::printf("  rank 0 busy       %.3f s  -> %.0f events/s (receive+decode+record+write)\n",
              busy_s, rate_busy);
  std::printf(
      "  rank 0 cpu        %.3f s processing -> %.0f events/s (%.3f s in all, polling too)\n",
      static_cast<double>(in.busy_cpu_ns) / 1e9, rate_cpu, in.cpu_s);
  std::printf(
      "  bytes written     %lld (%.1f per event)\n", static_cast<long long>(in.written),
      static_cast<double>(in.written) / static_cast<double>(std::max<std::int64_t>(1, in.events)));
  std::printf("  peak RSS          rank 0 %lld KiB, generating rank (max) %lld KiB\n",
              static_cast<long long>(rss0), static_cast<long long>(rss_gen_max));
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  int size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  Config config = parse(argc, argv);
  if (size < 2) {
    if (rank == 0) std::fprintf(stderr, "bench_event_plane: needs at least 2 ranks\n");
    MPI_Finalize();
    return 2;
  }

  Ingest in;
  std::int64_t generated = 0;
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0) {
    in = ingest(config, size);
  } else {
    generated = generate(config, rank, size);
  }

  std::int64_t rss = peak_rss_kib();
  std::vector<std::int64_t> all_rss(static_cast<std::size_t>(size));
  MPI_Gather(&rss, 1, MPI_INT64_T, all_rss.data(), 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
  std::int64_t total_generated = 0;
  MPI_Reduce(&generated, &total_generated, 1, MPI_INT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
  int rc = 0;
  if (rank == 0) {
    std::int64_t gen_max = *std::max_element(all_rss.begin() + 1, all_rss.end());
    if (config.transport_only) {
      in.events = total_generated;  // not decoded: what the generators sent
      in.terminal = config.nodes * config.per_node;
    }
    report(config, size, in, total_generated, all_rss[0], gen_max);
    if (in.events != total_generated || in.terminal != config.nodes * config.per_node) {
      std::fprintf(stderr, "bench_event_plane: lost events: received %lld of %lld\n",
                   static_cast<long long>(in.events), static_cast<long long>(total_generated));
      rc = 1;
    }
  }
  MPI_Finalize();
  return rc;
}
