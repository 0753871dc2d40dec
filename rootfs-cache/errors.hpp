// The two ways staging fails: the user's image is unusable, or this node cannot stage it.
#pragma once

#include <stdexcept>

namespace oshpc::rootfs_cache {

// The image is unusable (missing, unreadable, not squashfs): the user must fix the input.
class ImageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The node could not stage a usable image (tool failed, disk full, mount failed).
class StagingError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace oshpc::rootfs_cache
