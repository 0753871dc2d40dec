#include "launcher/node_staging.hpp"

#include "common/clock.hpp"
#include "common/sys.hpp"

namespace oshpc::launcher {

void stage_on_node(const Options& options, const MpiSession& mpi, NodeSetup& setup) {
  std::string rootfs, failure;
  if (mpi.is_node_leader()) {
    try {
      std::string cache_dir =
          options.cache_dir.empty() ? rootfs_cache::default_cache_dir() : options.cache_dir;
      sys::make_directories(cache_dir, 0700);
      sys::make_directories(setup.job_dir, 0700);
      auto image = rootfs_cache::inspect_image(options.image);
      rootfs_cache::StageOptions stage{options.stage_method, cache_dir, setup.job_dir};
      setup.staged = rootfs_cache::stage_image(image, stage);
      rootfs = setup.staged->rootfs();

      node_agent::SandboxEvent event;
      event.type = node_agent::EventType::kImageStaged;
      event.wall_us = clock::wall_us();
      event.rank = mpi.rank();
      event.method = setup.staged->method();
      event.seconds = setup.staged->seconds();
      setup.staged_event = event;
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  setup.rootfs = broadcast_string(rootfs, 0, mpi.node_comm());
  setup.failure = broadcast_string(failure, 0, mpi.node_comm());
}

}  // namespace oshpc::launcher
