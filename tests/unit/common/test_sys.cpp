#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "common/sys.hpp"

using namespace oshpc::sys;

TEST_CASE("remove_tree removes files, read-only directories and dangling symlinks") {
  char pattern[] = "/tmp/oshpc-test-tree-XXXXXX";
  std::string root = ::mkdtemp(pattern);
  make_directories(root + "/a/b", 0755);
  std::ofstream(root + "/a/b/file") << "x";
  REQUIRE(::symlink("no/such/target", (root + "/a/dangling").c_str()) == 0);
  REQUIRE(::chmod((root + "/a/b").c_str(), 0555) == 0);
  CHECK(remove_tree(root));
  CHECK(::access(root.c_str(), F_OK) != 0);
}

TEST_CASE("remove_tree of something missing, or below a file, is already done") {
  CHECK(remove_tree("/tmp/oshpc-test-does-not-exist"));
  char pattern[] = "/tmp/oshpc-test-file-XXXXXX";
  int fd = ::mkstemp(pattern);
  ::close(fd);
  CHECK(remove_tree(std::string(pattern) + "/below"));
  CHECK(remove_tree(pattern));
}

TEST_CASE("make_directories creates parents and accepts existing ones") {
  char pattern[] = "/tmp/oshpc-test-dirs-XXXXXX";
  std::string root = ::mkdtemp(pattern);
  make_directories(root + "/x/y/z", 0700);
  make_directories(root + "/x/y/z", 0700);
  CHECK(::access((root + "/x/y/z").c_str(), F_OK) == 0);
  CHECK_THROWS_AS(make_directories("/proc/oshpc-test/x", 0700), SysError);
  remove_tree(root);
}
