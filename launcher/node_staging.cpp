#include "launcher/node_staging.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <vector>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/sys.hpp"

namespace oshpc::launcher {
namespace {

using rootfs_cache::ImageInfo;
using rootfs_cache::NodeStage;

// Chunks of the pipelined broadcast: two in flight, so rank 0 reads the next chunk while the
// previous one travels and the leaders write it.
constexpr std::size_t kChunk = 8 << 20;

using rootfs_cache::StageFrom;

// LIMITATION: read from OSHPC_STAGE_LOCK_TIMEOUT (seconds) until there is an option.
std::chrono::seconds lock_timeout_setting() {
  const char* value = std::getenv("OSHPC_STAGE_LOCK_TIMEOUT");
  long seconds = value ? std::strtol(value, nullptr, 10) : 0;
  return std::chrono::seconds(seconds > 0 ? seconds : 1800);
}

// What rank 0 found out about the image, for every rank.
struct Identity {
  ImageInfo image;
  StageFrom from = StageFrom::kBroadcast;
  std::string failure;
};

std::string encode(const Identity& identity) {
  const ImageInfo& image = identity.image;
  std::ostringstream out;
  out << identity.failure << '\0' << (identity.from == StageFrom::kShared) << '\0' << image.path
      << '\0' << image.is_directory << '\0' << image.size << '\0' << image.mtime_ns << '\0'
      << image.inode << '\0' << image.key << '\0' << image.digest;
  return out.str();
}

Identity decode(const std::string& text) {
  std::vector<std::string> fields;
  std::size_t begin = 0;
  while (true) {
    auto end = text.find('\0', begin);
    fields.push_back(text.substr(begin, end - begin));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  Identity identity;
  fields.resize(9);
  identity.failure = fields[0];
  identity.from = fields[1] == "1" ? StageFrom::kShared : StageFrom::kBroadcast;
  identity.image.path = fields[2];
  identity.image.is_directory = fields[3] == "1";
  identity.image.size = std::strtoull(fields[4].c_str(), nullptr, 10);
  identity.image.mtime_ns = std::strtoll(fields[5].c_str(), nullptr, 10);
  identity.image.inode = std::strtoull(fields[6].c_str(), nullptr, 10);
  identity.image.key = fields[7];
  identity.image.digest = fields[8];
  return identity;
}

// Rank 0 inspects the image and computes (or recalls) its digest, once per job; every rank
// gets the result. Collective over MPI_COMM_WORLD.
Identity identify_image(const Options& options, const MpiSession& mpi,
                        const std::string& cache_dir) {
  Identity identity;
  if (mpi.rank() == 0) {
    try {
      identity.from = options.stage_from;
      identity.image = rootfs_cache::inspect_image(options.image);
      if (!identity.image.is_directory) {
        rootfs_cache::open_cache_dir(cache_dir);
        identity.image.digest = rootfs_cache::image_digest(identity.image, cache_dir);
      }
    } catch (const std::exception& e) {
      identity.failure = e.what();
    }
  }
  return decode(broadcast_string(encode(identity), 0, MPI_COMM_WORLD));
}

// The leader's first step: its cache, what killed launchers left there, this job's directory.
void prepare_node(const std::string& cache_dir, const std::string& job_dir) {
  rootfs_cache::open_cache_dir(cache_dir);
  rootfs_cache::sweep_stale_jobs(cache_dir);
  sys::make_directories(job_dir, 0700);
  rootfs_cache::write_job_owner(job_dir);
}

// Streams the image from rank 0 (root of `comm`) to the other members, `kChunk` at a time with
// two MPI_Ibcast in flight. Every member takes part to the end whatever fails, so nobody hangs;
// failures are reported after the last chunk. `stage` is where this member's node writes the
// bytes (null: rank 0's node does not need them). Returns the bytes rank 0 read.
std::uint64_t pipeline_image(const ImageInfo& image, MPI_Comm comm, NodeStage* stage,
                             std::string* failure) {
  int me = 0;
  MPI_Comm_rank(comm, &me);
  bool is_root = me == 0;
  sys::UniqueFd source;
  std::string read_error;
  if (is_root) {
    source.reset(::open(image.path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!source.is_open())
      read_error = std::strerror(errno);
    else
      ::posix_fadvise(source.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  }

  std::uint64_t chunks = (image.size + kChunk - 1) / kChunk;
  std::array<std::vector<char>, 2> buffers{std::vector<char>(kChunk), std::vector<char>(kChunk)};
  std::array<MPI_Request, 2> requests{MPI_REQUEST_NULL, MPI_REQUEST_NULL};
  std::uint64_t bytes_read = 0;
  auto length_of = [&](std::uint64_t chunk) {
    return static_cast<int>(std::min<std::uint64_t>(kChunk, image.size - chunk * kChunk));
  };
  auto post = [&](std::uint64_t chunk) {
    auto& buffer = buffers[chunk % 2];
    int length = length_of(chunk);
    if (is_root && read_error.empty()) {
      ssize_t n = ::pread(source.get(), buffer.data(), static_cast<std::size_t>(length),
                          static_cast<off_t>(chunk * kChunk));
      if (n != length)
        read_error = n < 0 ? std::strerror(errno) : "the file became shorter";
      else
        bytes_read += static_cast<std::uint64_t>(n);
    }
    MPI_Ibcast(buffer.data(), length, MPI_BYTE, 0, comm, &requests[chunk % 2]);
  };

  std::string write_error;
  if (chunks > 0) post(0);
  for (std::uint64_t chunk = 0; chunk < chunks; ++chunk) {
    if (chunk + 1 < chunks) post(chunk + 1);
    MPI_Wait(&requests[chunk % 2], MPI_STATUS_IGNORE);
    if (stage && write_error.empty() && read_error.empty()) {
      try {
        stage->receive(buffers[chunk % 2].data(), static_cast<std::size_t>(length_of(chunk)));
      } catch (const std::exception& e) {
        write_error = e.what();
      }
    }
  }

  std::string root_error = broadcast_string(read_error, 0, comm);
  if (!root_error.empty()) {
    *failure = "rank 0 could not read " + image.path + " to broadcast it: " + root_error;
  } else if (!write_error.empty()) {
    *failure = write_error;
  }
  return bytes_read;
}

// Broadcast distribution: leaders whose node lacks the entry receive the image from rank 0.
// Collective over MPI_COMM_WORLD (the leaders' communicator is split from it). Returns the
// bytes rank 0 read from the image file.
std::uint64_t distribute_image(const ImageInfo& image, const MpiSession& mpi,
                               std::optional<NodeStage>& stage, std::string* failure) {
  MPI_Comm leaders = MPI_COMM_NULL;
  MPI_Comm_split(MPI_COMM_WORLD, mpi.is_node_leader() ? 0 : MPI_UNDEFINED, mpi.rank(), &leaders);
  if (leaders == MPI_COMM_NULL) return 0;

  int needs = stage && stage->state() == NodeStage::State::kMustStage ? 1 : 0;
  int anyone_needs = 0;
  MPI_Allreduce(&needs, &anyone_needs, 1, MPI_INT, MPI_MAX, leaders);
  std::uint64_t bytes_read = 0;
  if (anyone_needs) {
    // Only rank 0 and the leaders that need it take part in the transfer.
    MPI_Comm receivers = MPI_COMM_NULL;
    MPI_Comm_split(leaders, needs || mpi.rank() == 0 ? 0 : MPI_UNDEFINED, mpi.rank(), &receivers);
    if (receivers != MPI_COMM_NULL) {
      if (needs) {
        try {
          stage->open_receiver();
        } catch (const std::exception& e) {
          *failure = e.what();
          needs = 0;
        }
      }
      std::string transfer_failure;
      bytes_read = pipeline_image(image, receivers, needs ? &*stage : nullptr, &transfer_failure);
      if (needs && !transfer_failure.empty()) *failure = transfer_failure;
      MPI_Comm_free(&receivers);
    }
  }
  MPI_Comm_free(&leaders);
  return bytes_read;
}

node_agent::SandboxEvent staged_event(const MpiSession& mpi,
                                      const rootfs_cache::StagedImage& staged,
                                      std::uint64_t broadcast_bytes_read) {
  node_agent::SandboxEvent event;
  event.type = node_agent::EventType::kImageStaged;
  event.wall_us = clock::wall_us();
  event.rank = mpi.rank();
  event.method = staged.method();
  event.seconds = staged.seconds();
  event.bytes_from_shared =
      static_cast<std::int64_t>(staged.bytes_from_shared() + broadcast_bytes_read);
  return event;
}

}  // namespace

void stage_on_node(const Options& options, const MpiSession& mpi, NodeSetup& setup) {
  std::string cache_dir =
      options.cache_dir.empty() ? rootfs_cache::default_cache_dir() : options.cache_dir;
  std::string failure;
  if (mpi.is_node_leader()) {
    try {
      prepare_node(cache_dir, setup.job_dir);
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }

  Identity identity = identify_image(options, mpi, cache_dir);
  if (!identity.failure.empty()) failure = identity.failure;

  // Every leader checks its cache first; only then do collectives run, so no leader waits on
  // a lock while its peers wait for it in a broadcast.
  std::optional<NodeStage> stage;
  if (mpi.is_node_leader() && failure.empty()) {
    try {
      rootfs_cache::StageOptions stage_options{options.stage_method, cache_dir, setup.job_dir,
                                               lock_timeout_setting()};
      stage.emplace(identity.image, stage_options);
      stage->begin();
    } catch (const std::exception& e) {
      failure = e.what();
      stage.reset();
    }
  }

  std::uint64_t broadcast_bytes_read = 0;
  if (identity.failure.empty() && identity.from == StageFrom::kBroadcast &&
      !identity.image.is_directory) {
    broadcast_bytes_read = distribute_image(identity.image, mpi, stage, &failure);
  }

  if (stage && failure.empty()) {
    try {
      setup.staged = stage->finish();
      setup.staged_event = staged_event(mpi, *setup.staged, broadcast_bytes_read);
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  stage.reset();

  std::string rootfs = setup.staged ? setup.staged->rootfs() : "";
  setup.rootfs = broadcast_string(rootfs, 0, mpi.node_comm());
  setup.failure = broadcast_string(failure, 0, mpi.node_comm());
}

}  // namespace oshpc::launcher
