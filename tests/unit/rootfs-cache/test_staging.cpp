#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "common/sys.hpp"
#include "rootfs-cache/staging.hpp"

using namespace oshpc::rootfs_cache;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char pattern[] = "/tmp/oshpc-test-stage-XXXXXX";
    path = ::mkdtemp(pattern);
  }
  ~TempDir() { oshpc::sys::remove_tree(path); }
};

}  // namespace

TEST_CASE("unusable images are refused with the path and the reason") {
  TempDir dir;
  using Catch::Contains;
  CHECK_THROWS_AS(inspect_image(dir.path + "/missing.sqsh"), ImageError);
  CHECK_THROWS_WITH(inspect_image(dir.path + "/missing.sqsh"),
                    Contains("missing.sqsh") && Contains("No such file"));

  std::ofstream(dir.path + "/text.sqsh") << "this is not squashfs";
  CHECK_THROWS_WITH(inspect_image(dir.path + "/text.sqsh"), Contains("not a squashfs file"));

  std::ofstream(dir.path + "/empty.sqsh");
  CHECK_THROWS_WITH(inspect_image(dir.path + "/empty.sqsh"), Contains("not a squashfs file"));
}

TEST_CASE("a squashfs file gets a stable identity key") {
  TempDir dir;
  std::ofstream(dir.path + "/fake.sqsh") << "hsqs-and-more";
  auto a = inspect_image(dir.path + "/fake.sqsh");
  auto b = inspect_image(dir.path + "/fake.sqsh");
  CHECK_FALSE(a.is_directory);
  CHECK(a.key.size() == 16);
  CHECK(a.key == b.key);
}

TEST_CASE("a directory is an image as it is") {
  TempDir dir;
  auto info = inspect_image(dir.path);
  CHECK(info.is_directory);
  auto staged = stage_image(info, {StageMethod::kAuto, dir.path, dir.path});
  CHECK(staged.method() == "directory");
  CHECK(staged.rootfs() == info.path);
}

TEST_CASE("stage methods parse by name") {
  CHECK(parse_stage_method("auto") == StageMethod::kAuto);
  CHECK(parse_stage_method("mount") == StageMethod::kMount);
  CHECK(parse_stage_method("extract") == StageMethod::kExtract);
  CHECK_FALSE(parse_stage_method("copy").has_value());
}

TEST_CASE("the default cache directory is per user") {
  auto dir = default_cache_dir();
  CHECK(dir.find("/oshpc-" + std::to_string(::getuid())) != std::string::npos);
}
