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

TEST_CASE("an image root with every mount point is bound whole") {
  FakeImage image;
  CHECK_FALSE(plan_root_layout(image.root, {}).whole_root);  // no /tmp, /run, /.oshpc yet
  REQUIRE(add_mount_points(image.root));
  REQUIRE(add_mount_points(image.root));  // again: nothing to do
  for (const char* dir : {"/tmp", "/run", "/.oshpc"}) {
    CHECK(image_entry_kind(image.root, dir) == EntryKind::kDirectory);
  }

  // Destinations that exist, or that land on oshpc's own mounts, keep the whole root.
  auto layout = plan_root_layout(image.root, {"/etc/hostname", "/opt/tool", "/run/openshell/x",
                                              "/sandbox/data", "/.oshpc/nvidia/lib/libcuda.so.1"});
  CHECK(layout.whole_root);
  CHECK(layout.mount_args ==
        std::vector<std::string>{"--ro-bind", image.root, "/", "--tmpfs", "/.oshpc"});
  CHECK(layout.remount_args == std::vector<std::string>{"--remount-ro", "/.oshpc"});
  CHECK(layout.synthesized.empty());
  CHECK(layout.copied.empty());

  // One that the image lacks needs a mount point made for it: entry by entry.
  auto missing = plan_root_layout(image.root, {"/opt/data"});
  CHECK_FALSE(missing.whole_root);
  CHECK(missing.synthesized == std::vector<std::string>{"/opt"});
  CHECK(has_sequence(missing.remount_args, {"--remount-ro", "/"}));

  // Bad destinations are refused either way.
  CHECK_THROWS_WITH(plan_root_layout(image.root, {"/bin/extra"}),
                    Catch::Contains("crosses the symlink /bin"));
}

TEST_CASE("an image entry where oshpc mounts is kept, and the root is then bound entry by entry") {
  FakeImage image;
  REQUIRE(::symlink("var/tmp", (image.root + "/tmp").c_str()) == 0);
  add_mount_points(image.root);
  CHECK(image_entry_kind(image.root, "/tmp") == EntryKind::kSymlink);
  CHECK(image_entry_kind(image.root, "/.oshpc") == EntryKind::kDirectory);
  auto layout = plan_root_layout(image.root, {});
  CHECK_FALSE(layout.whole_root);
  CHECK(has_sequence(layout.mount_args, {"--ro-bind", image.root + "/usr", "/usr"}));
}

TEST_CASE("a directory bound onto a file of the image, or the reverse, is refused by name") {
  FakeImage image;
  std::string dir = image.root + "/opt";  // any host directory and file will do
  std::string file = image.root + "/README";
  CHECK_THROWS_WITH(check_bind_kinds(image.root, {{dir, "/etc/hostname", false}}),
                    Catch::Contains("is a directory and /etc/hostname a file in the image"));
  CHECK_THROWS_WITH(check_bind_kinds(image.root, {{file, "/opt", false}}),
                    Catch::Contains("is a file and /opt a directory in the image"));
  // Same kinds, destinations the image lacks, and oshpc's own mounts are fine.
  CHECK_NOTHROW(check_bind_kinds(image.root, {{dir, "/opt", false},
                                              {file, "/etc/hostname", true},
                                              {dir, "/new/place", false},
                                              {file, "/sandbox/x", false}}));
}

TEST_CASE("a destination below a path oshpc mounts over is left to that mount") {
  FakeImage image;
  REQUIRE(::symlink("var/tmp", (image.root + "/tmp").c_str()) == 0);
  // The image's /tmp is a symlink and /sandbox has no "data": neither matters, since /tmp is
  // oshpc's tmpfs and /sandbox the workspace, so nothing is refused and nothing synthesized.
  auto layout = plan_root_layout(image.root, {"/tmp/x", "/sandbox/data"});
  CHECK(layout.synthesized.empty());
  CHECK(layout.copied.empty());
}
