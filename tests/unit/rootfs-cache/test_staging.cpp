#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "common/sys.hpp"
#include "rootfs-cache/image_import.hpp"
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

// A squashfs superblock (version 4) claiming `bytes_used`, padded to `file_size` bytes.
void write_fake_squashfs(const std::string& path, std::uint64_t bytes_used, std::size_t file_size) {
  std::string data(file_size, '\0');
  data.replace(0, 4, "hsqs");
  data[28] = 4;
  for (int i = 0; i < 8; ++i) data[40 + i] = static_cast<char>((bytes_used >> (8 * i)) & 0xff);
  std::ofstream(path, std::ios::binary) << data;
}

TEST_CASE("a truncated squashfs file is refused with both sizes") {
  TempDir dir;
  write_fake_squashfs(dir.path + "/cut.sqsh", 100000, 4096);
  CHECK_THROWS_WITH(inspect_image(dir.path + "/cut.sqsh"), Catch::Contains("truncated") &&
                                                               Catch::Contains("100000") &&
                                                               Catch::Contains("4096"));
  std::ofstream(dir.path + "/short.sqsh") << "hsqs-and-more";
  CHECK_THROWS_WITH(inspect_image(dir.path + "/short.sqsh"), Catch::Contains("too short"));
}

TEST_CASE("a squashfs file gets a stable identity key") {
  TempDir dir;
  write_fake_squashfs(dir.path + "/fake.sqsh", 4096, 4096);
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

TEST_CASE("SHA-256 matches the FIPS 180-2 example") {
  Sha256 hash;
  hash.update("abc", 3);
  CHECK(hash.finish_hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("the digest is remembered by path, size, mtime and inode") {
  TempDir dir;
  std::string image = dir.path + "/fake.sqsh";
  write_fake_squashfs(image, 4096, 4096);
  oshpc::rootfs_cache::open_cache_dir(dir.path + "/cache");
  auto info = inspect_image(image);
  std::string first = image_digest(info, dir.path + "/cache");
  CHECK(first == file_sha256(image));

  // Same size and mtime, other content: the remembered digest is used, no re-hash.
  struct stat before {};
  ::stat(image.c_str(), &before);
  {
    std::fstream f(image, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f << "changed";
  }
  struct timespec times[2] = {before.st_atim, before.st_mtim};
  ::utimensat(AT_FDCWD, image.c_str(), times, 0);
  CHECK(image_digest(inspect_image(image), dir.path + "/cache") == first);

  // A new mtime: hashed again.
  times[1].tv_sec += 10;
  ::utimensat(AT_FDCWD, image.c_str(), times, 0);
  CHECK(image_digest(inspect_image(image), dir.path + "/cache") != first);
}

TEST_CASE("a cache entry is complete only with a matching marker and content") {
  TempDir dir;
  std::string entry = dir.path + "/e.sqsh";
  oshpc::sys::make_directories(entry, 0700);
  EntryMarker expected{"abc", EntryKind::kSquashfs, 5, 5};
  std::string why;
  CHECK_FALSE(entry_is_complete(entry, expected, &why));
  CHECK(why.find("marker") != std::string::npos);

  std::ofstream(entry + "/image.sqsh") << "12345";
  write_marker(entry, expected);
  CHECK(entry_is_complete(entry, expected));
  auto marker = read_marker(entry);
  REQUIRE(marker);
  CHECK(marker->digest == "abc");
  CHECK(marker->bytes == 5);

  std::ofstream(entry + "/image.sqsh") << "123";  // truncated copy
  CHECK_FALSE(entry_is_complete(entry, expected, &why));
  CHECK(why.find("size") != std::string::npos);
  CHECK_FALSE(entry_is_complete(entry, {"abd", EntryKind::kSquashfs, 5, 0}));
}

TEST_CASE("flock: one exclusive holder, many shared ones, a bounded wait") {
  TempDir dir;
  std::string path = dir.path + "/x.lock";
  using Mode = FileLock::Mode;
  auto held = FileLock::try_acquire(path, Mode::kExclusive);
  REQUIRE(held);
  CHECK_FALSE(FileLock::try_acquire(path, Mode::kExclusive));
  CHECK_FALSE(FileLock::try_acquire(path, Mode::kShared));
  CHECK_THROWS_WITH(FileLock::acquire(path, Mode::kExclusive, std::chrono::seconds(0), "a test"),
                    Catch::Contains("gave up") && Catch::Contains("a test") &&
                        Catch::Contains("pid " + std::to_string(::getpid())));
  held->unlock();
  auto a = FileLock::try_acquire(path, Mode::kShared);
  auto b = FileLock::try_acquire(path, Mode::kShared);
  CHECK(a);
  CHECK(b);
  CHECK_FALSE(FileLock::try_acquire(path, Mode::kExclusive));
}

TEST_CASE("sizes parse and print") {
  CHECK(parse_size("4096") == 4096u);
  CHECK(parse_size("2K") == 2048u);
  CHECK(parse_size("1.5G") == 1536ull << 20);
  CHECK(parse_size("10GiB") == 10ull << 30);
  CHECK_FALSE(parse_size("ten").has_value());
  CHECK_FALSE(parse_size("3X").has_value());
  CHECK(format_bytes(512) == "512 B");
  CHECK(format_bytes(1536) == "1.5 KiB");
}

TEST_CASE("the unpacked size is estimated from the listing") {
  std::string listing =
      "drwxr-xr-x root/root                38 2023-06-12 00:00 squashfs-root\n"
      "-rw-r--r-- root/root              5000 2023-06-12 00:00 squashfs-root/a\n"
      "lrwxrwxrwx root/root                 7 2023-06-12 00:00 squashfs-root/b -> usr/bin\n"
      "crw-rw-rw- root/root             1,  3 2023-06-12 00:00 squashfs-root/null\n";
  // Four inodes, one file of two blocks, plus 5%.
  std::uint64_t base = 4 * 4096 + 8192;
  CHECK(unpacked_bytes_from_listing(listing) == base + base / 20);
}

TEST_CASE("free space is checked with the numbers in the message") {
  TempDir dir;
  CHECK_NOTHROW(require_free_space(dir.path, 1, "copy x"));
  CHECK_THROWS_WITH(require_free_space(dir.path, 1ull << 50, "copy x"),
                    Catch::Contains("not enough space in " + dir.path) &&
                        Catch::Contains("copy x") && Catch::Contains("need 1024.0 TiB"));
}

namespace {

void fake_entry(const std::string& cache, const std::string& digest, std::size_t bytes,
                std::int64_t last_use) {
  std::string entry = CacheLayout{cache}.entry(digest, EntryKind::kSquashfs);
  oshpc::sys::make_directories(entry, 0700);
  std::ofstream(entry + "/image.sqsh") << std::string(bytes, 'x');
  write_marker(entry, {digest, EntryKind::kSquashfs, bytes, bytes});
  touch_last_use(entry);
  struct timespec times[2] = {{last_use, 0}, {last_use, 0}};
  ::utimensat(AT_FDCWD, (entry + "/last-use").c_str(), times, 0);
}

}  // namespace

TEST_CASE("gc evicts least recently used entries, never one in use") {
  TempDir dir;
  std::string cache = dir.path + "/cache";
  open_cache_dir(cache);
  fake_entry(cache, "aaa", 1000, 100);  // oldest, but in use
  fake_entry(cache, "bbb", 1000, 200);
  fake_entry(cache, "ccc", 1000, 300);
  oshpc::sys::make_directories(cache + "/images/ddd.rootfs.tmp.host.1", 0700);  // killed stager

  auto entries = list_cache(cache);
  REQUIRE(entries.size() == 4);
  CHECK(entries[0].digest == "aaa");

  auto in_use = FileLock::try_acquire(CacheLayout{cache}.use_lock("aaa", EntryKind::kSquashfs),
                                      FileLock::Mode::kShared);
  auto result = collect_garbage(cache, 2000);
  std::vector<std::string> removed;
  for (const auto& e : result.removed) removed.push_back(e.digest);
  CHECK(removed == std::vector<std::string>{"ddd", "bbb"});
  CHECK(result.busy.size() == 1);
  CHECK(result.bytes_after == 2000);
  CHECK(::access((cache + "/images/aaa.sqsh").c_str(), F_OK) == 0);
  CHECK(::access((cache + "/images/ccc.sqsh").c_str(), F_OK) == 0);

  in_use->unlock();
  CHECK(collect_garbage(cache, 0).removed.size() == 2);
  CHECK(list_cache(cache).empty());
}

// A cache whose jobs directory holds "dead": the job directory of a launcher that is gone.
// Returns the jobs directory.
std::string cache_with_dead_job(const std::string& cache) {
  open_cache_dir(cache);
  std::string jobs = CacheLayout{cache}.jobs_dir();
  oshpc::sys::make_directories(jobs + "/dead/rank-0", 0700);
  // pid_max is at most 2^22: this pid cannot exist.
  std::ofstream(jobs + "/dead/owner") << "99999999 1 " << oshpc::sys::host_name() << "\n";
  return jobs;
}

TEST_CASE("the sweep removes job directories of dead launchers only") {
  TempDir dir;
  std::string cache = dir.path + "/cache";
  std::string jobs = cache_with_dead_job(cache);
  oshpc::sys::make_directories(jobs + "/alive", 0700);
  write_job_owner(jobs + "/alive");
  oshpc::sys::make_directories(jobs + "/young", 0700);  // no owner file yet
  oshpc::sys::make_directories(jobs + "/starting", 0700);
  std::ofstream(jobs + "/starting/owner");  // empty: as a reader could see one being written

  auto swept = sweep_stale_jobs(cache);
  CHECK(swept == std::vector<std::string>{jobs + "/dead"});
  CHECK(::access((jobs + "/alive").c_str(), F_OK) == 0);
  CHECK(::access((jobs + "/young").c_str(), F_OK) == 0);
  CHECK(::access((jobs + "/starting").c_str(), F_OK) == 0);
  CHECK(::access((jobs + "/alive/owner.partial").c_str(), F_OK) != 0);
}

TEST_CASE("the sweep kills the half-built sandboxes of a dead launcher, and only those") {
  TempDir dir;
  std::string cache = dir.path + "/cache";
  std::string jobs = cache_with_dead_job(cache);
  // A script's process takes the script's name: "bwrap", with bubblewrap-like arguments.
  std::string fake = dir.path + "/bwrap";
  std::ofstream(fake) << "#!/bin/sh\nwhile :; do sleep 1; done\n";
  REQUIRE(::chmod(fake.c_str(), 0755) == 0);
  auto start = [&](const std::string& workspace) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::execl(fake.c_str(), "bwrap", "--bind", workspace.c_str(), "/sandbox", nullptr);
      ::_exit(127);
    }
    for (int i = 0; i < 500; ++i) {  // until the shell runs the script
      std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
      std::string name;
      if (std::getline(comm, name) && name == "bwrap") break;
      ::usleep(10'000);
    }
    return pid;
  };
  pid_t stray = start(jobs + "/dead/rank-0/s-1");
  pid_t bystander = start(dir.path + "/elsewhere");

  sweep_stale_jobs(cache);
  int status = 0;
  pid_t reaped = 0;
  for (int i = 0; i < 500 && reaped == 0; ++i) {  // up to 5 s
    reaped = ::waitpid(stray, &status, WNOHANG);
    if (reaped == 0) ::usleep(10'000);
  }
  bool bystander_running = ::waitpid(bystander, nullptr, WNOHANG) == 0;
  for (pid_t pid : {stray, bystander}) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  REQUIRE(reaped == stray);
  CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
  CHECK(bystander_running);
}

TEST_CASE("the cache directory must belong to the user") {
  TempDir dir;
  CHECK_NOTHROW(open_cache_dir(dir.path + "/mine"));
  if (::geteuid() == 0) {
    oshpc::sys::make_directories(dir.path + "/theirs", 0700);
    REQUIRE(::chown((dir.path + "/theirs").c_str(), 65534, 65534) == 0);
    CHECK_THROWS_WITH(open_cache_dir(dir.path + "/theirs"), Catch::Contains("belongs to uid"));
  }
}

TEST_CASE("programs are looked up inside the root") {
  TempDir dir;
  oshpc::sys::make_directories(dir.path + "/usr/bin", 0755);
  std::ofstream(dir.path + "/usr/bin/sh") << "";
  REQUIRE(::symlink("usr/bin", (dir.path + "/bin").c_str()) == 0);
  CHECK(rootfs_has_program(dir.path, "sh"));
  CHECK(rootfs_has_program(dir.path, "/bin/sh"));
  CHECK_FALSE(rootfs_has_program(dir.path, "bash"));
}

TEST_CASE("image metadata round-trips through IMAGE.json") {
  TempDir dir;
  std::string image = dir.path + "/x.sqsh";
  CHECK(load_image_metadata(image).env.empty());  // no file: no defaults

  ImageMetadata metadata;
  metadata.env = {"PATH=/usr/bin", "LANG=C.UTF-8"};
  metadata.working_dir = "/app";
  metadata.args = {"python3", "-m", "app"};
  metadata.source = "oci:/x:v1";
  std::ofstream(metadata_path(image)) << metadata_json(metadata);
  auto loaded = load_image_metadata(image);
  CHECK(loaded.env == metadata.env);
  CHECK(loaded.working_dir == "/app");
  CHECK(loaded.args == metadata.args);

  std::ofstream(metadata_path(image)) << R"({"oshpc_image_metadata": 1, "env": ["NOEQUALS"]})";
  CHECK_THROWS_WITH(load_image_metadata(image), Catch::Contains("not KEY=VALUE"));
  // A NUL would cut the variable short and smuggle what follows in as a sandbox option.
  std::ofstream(metadata_path(image))
      << R"({"oshpc_image_metadata": 1, "env": ["A=x\u0000--bind\u0000/\u0000/host"]})";
  CHECK_THROWS_WITH(load_image_metadata(image), Catch::Contains("NUL byte"));
  std::ofstream(metadata_path(image)) << "{not json";
  CHECK_THROWS_AS(load_image_metadata(image), ImageError);
}

TEST_CASE("import sources are checked before any tool runs") {
  TempDir dir;
  CHECK_THROWS_WITH(import_source("docker://debian"), Catch::Contains("expected docker-archive"));
  CHECK_THROWS_WITH(import_source("oci:" + dir.path + "/none:v1"), Catch::Contains("No such file"));
  CHECK(import_source("oci:" + dir.path + ":v1") == "oci:" + dir.path + ":v1");
  CHECK(import_source("dir:" + dir.path) == "rootfs:" + dir.path);  // no manifest.json
  std::ofstream(dir.path + "/manifest.json") << "{}";
  CHECK(import_source("dir:" + dir.path) == "dir:" + dir.path);
}
