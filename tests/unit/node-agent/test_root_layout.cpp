#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "common/sys.hpp"
#include "node-agent/root_layout.hpp"

using namespace oshpc::node_agent;

namespace {

// A tiny image root on disk: merged-/usr symlinks, a few directories and a file.
struct FakeImage {
  std::string root;
  FakeImage() {
    char pattern[] = "/tmp/oshpc-test-root-XXXXXX";
    root = ::mkdtemp(pattern);
    for (const char* dir : {"/usr/bin", "/etc", "/opt/tool", "/sandbox", "/proc", "/dev"}) {
      oshpc::sys::make_directories(root + dir, 0755);
    }
    REQUIRE(::symlink("usr/bin", (root + "/bin").c_str()) == 0);
    std::ofstream(root + "/etc/hostname") << "image\n";
    std::ofstream(root + "/README") << "top-level file\n";
  }
  ~FakeImage() { oshpc::sys::remove_tree(root); }
};

bool has_sequence(const std::vector<std::string>& args, std::vector<std::string> needle) {
  return std::search(args.begin(), args.end(), needle.begin(), needle.end()) != args.end();
}

}  // namespace

TEST_CASE("every top-level image entry is bound back except the paths oshpc mounts") {
  FakeImage image;
  auto layout = plan_root_layout(image.root, {});
  CHECK(has_sequence(layout.mount_args, {"--ro-bind", image.root + "/usr", "/usr"}));
  CHECK(has_sequence(layout.mount_args, {"--ro-bind", image.root + "/etc", "/etc"}));
  CHECK(has_sequence(layout.mount_args, {"--ro-bind", image.root + "/README", "/README"}));
  CHECK(has_sequence(layout.mount_args, {"--symlink", "usr/bin", "/bin"}));
  for (const char* reserved : {"/sandbox", "/proc", "/dev"}) {
    CHECK(std::find(layout.mount_args.begin(), layout.mount_args.end(), reserved) ==
          layout.mount_args.end());
  }
  CHECK(layout.synthesized.empty());
  CHECK(layout.remount_args == std::vector<std::string>{"--remount-ro", "/"});
}

TEST_CASE("a bind target missing inside an image directory synthesizes that directory") {
  FakeImage image;
  auto layout = plan_root_layout(image.root, {"/opt/data/in", "/etc/hostname", "/scratch"});
  // /opt lacks data: /opt becomes a tmpfs with its entries bound back.
  CHECK(layout.synthesized == std::vector<std::string>{"/opt"});
  CHECK(has_sequence(layout.mount_args, {"--tmpfs", "/opt"}));
  CHECK(has_sequence(layout.mount_args, {"--ro-bind", image.root + "/opt/tool", "/opt/tool"}));
  CHECK(has_sequence(layout.remount_args, {"--remount-ro", "/opt"}));
}

TEST_CASE("bind targets that cross a symlink or a file in the image are refused") {
  FakeImage image;
  CHECK_THROWS_WITH(plan_root_layout(image.root, {"/bin/extra"}),
                    Catch::Contains("crosses the symlink /bin"));
  CHECK_THROWS_WITH(plan_root_layout(image.root, {"/README/x"}),
                    Catch::Contains("below the file /README"));
  CHECK_THROWS_WITH(plan_root_layout(image.root, {"/opt/../etc"}), Catch::Contains(".."));
}

TEST_CASE("with a copy directory, a small image directory is copied once and bound whole") {
  FakeImage image;
  std::string copies = image.root + "-copies";
  auto layout = plan_root_layout(image.root, {"/etc/openshell/auth", "/etc/openshell-tls"}, copies);
  CHECK(layout.copied == std::vector<std::string>{"/etc"});
  CHECK(layout.synthesized.empty());
  CHECK(has_sequence(layout.mount_args, {"--bind", copies + "/etc", "/etc"}));
  CHECK(has_sequence(layout.remount_args, {"--remount-ro", "/etc"}));
  std::ifstream copied(copies + "/etc/hostname");
  std::string text;
  std::getline(copied, text);
  CHECK(text == "image");
  oshpc::sys::remove_tree(copies);
}
