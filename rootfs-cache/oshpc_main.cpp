// oshpc: the node-side tool for images and the cache.
//   oshpc cache list [--cache-dir DIR]
//   oshpc cache gc [--max-size SIZE] [--cache-dir DIR]
//   oshpc image import SRC OUT.sqsh
#include <cstdio>
#include <ctime>
#include <iostream>
#include <string>
#include <vector>

#include "common/exit_codes.hpp"
#include "common/log.hpp"
#include "rootfs-cache/cache.hpp"
#include "rootfs-cache/errors.hpp"
#include "rootfs-cache/image_import.hpp"
#include "rootfs-cache/staging.hpp"

namespace {

using namespace oshpc;
namespace rc = oshpc::rootfs_cache;

constexpr const char* kUsage =
    "usage: oshpc cache list [--cache-dir DIR]\n"
    "       oshpc cache gc [--max-size SIZE] [--cache-dir DIR]\n"
    "       oshpc image import SRC OUT.sqsh\n"
    "SRC is docker-archive:PATH, oci:PATH[:TAG] or dir:PATH (a skopeo directory or a root\n"
    "directory). SIZE takes K, M, G, T suffixes (powers of 1024). The cache directory defaults\n"
    "to oshpc-<uid> in $SLURM_TMPDIR, $TMPDIR or /tmp, as for oshpc-fanout.\n";

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct CacheArgs {
  std::string cache_dir = rc::default_cache_dir();
  std::optional<std::uint64_t> max_size;
};

CacheArgs parse_cache_args(const std::vector<std::string>& args, bool allow_max_size) {
  CacheArgs parsed;
  for (std::size_t i = 0; i < args.size(); ++i) {
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw UsageError(args[i] + " needs a value");
      return args[++i];
    };
    if (args[i] == "--cache-dir") {
      parsed.cache_dir = value();
    } else if (args[i] == "--max-size" && allow_max_size) {
      std::string text = value();
      parsed.max_size = rc::parse_size(text);
      if (!parsed.max_size) throw UsageError("--max-size: '" + text + "' is not a size");
    } else {
      throw UsageError("unknown argument '" + args[i] + "'");
    }
  }
  return parsed;
}

std::string format_time(std::int64_t seconds) {
  if (seconds == 0) return "-";
  std::time_t t = seconds;
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
  return text;
}

void print_entry(const rc::CacheEntryInfo& entry) {
  std::string state =
      !entry.complete ? (entry.in_use ? "staging" : "partial") : (entry.in_use ? "in use" : "");
  std::printf("%-16.16s  %-6s  %10s  %-19s  %s\n", entry.digest.c_str(),
              rc::entry_kind_name(entry.kind), rc::format_bytes(entry.bytes).c_str(),
              format_time(entry.last_use).c_str(), state.c_str());
}

int cache_list(const std::vector<std::string>& args) {
  CacheArgs parsed = parse_cache_args(args, false);
  auto entries = rc::list_cache(parsed.cache_dir);
  std::uint64_t total = 0;
  std::printf("%-16s  %-6s  %10s  %-19s  %s\n", "DIGEST", "KIND", "SIZE", "LAST USE", "STATE");
  for (const auto& entry : entries) {
    print_entry(entry);
    total += entry.bytes;
  }
  std::printf("%zu entries, %s in %s\n", entries.size(), rc::format_bytes(total).c_str(),
              parsed.cache_dir.c_str());
  return 0;
}

int cache_gc(const std::vector<std::string>& args) {
  CacheArgs parsed = parse_cache_args(args, true);
  auto swept = rc::sweep_stale_jobs(parsed.cache_dir);
  auto result = rc::collect_garbage(parsed.cache_dir, parsed.max_size.value_or(UINT64_MAX));
  for (const auto& entry : result.removed) {
    std::printf("removed %s.%s (%s)\n", entry.digest.c_str(), rc::entry_kind_name(entry.kind),
                rc::format_bytes(entry.bytes).c_str());
  }
  for (const auto& entry : result.busy) {
    std::printf("kept %s.%s: in use\n", entry.digest.c_str(), rc::entry_kind_name(entry.kind));
  }
  std::printf("%s left in %s; %zu stale job directories removed\n",
              rc::format_bytes(result.bytes_after).c_str(), parsed.cache_dir.c_str(), swept.size());
  if (parsed.max_size && result.bytes_after > *parsed.max_size) {
    log::get("rootfs-cache")
        ->warn("the cache still holds {} (over {}): entries in use were kept",
               rc::format_bytes(result.bytes_after), rc::format_bytes(*parsed.max_size));
  }
  return 0;
}

int image_import(const std::vector<std::string>& args) {
  if (args.size() != 2) throw UsageError("image import needs SRC and OUT.sqsh");
  rc::import_image(args[0], args[1]);
  std::printf("imported %s into %s (metadata in %s)\n", args[0].c_str(), args[1].c_str(),
              rc::metadata_path(args[1]).c_str());
  return 0;
}

int dispatch(const std::vector<std::string>& argv) {
  if (argv.size() < 2) throw UsageError("missing command");
  std::vector<std::string> rest(argv.begin() + 2, argv.end());
  if (argv[0] == "cache" && argv[1] == "list") return cache_list(rest);
  if (argv[0] == "cache" && argv[1] == "gc") return cache_gc(rest);
  if (argv[0] == "image" && argv[1] == "import") return image_import(rest);
  throw UsageError("unknown command '" + argv[0] + " " + argv[1] + "'");
}

}  // namespace

int main(int argc, char** argv) {
  log::configure({"oshpc", -1, 0});
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  try {
    return dispatch(args);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "oshpc: error: %s\n%s", e.what(), kUsage);
    return to_int(ExitCode::kUsage);
  } catch (const rc::ImageError& e) {
    log::get("rootfs-cache")->error("{}", e.what());
    return to_int(ExitCode::kBadInput);
  } catch (const std::exception& e) {
    log::get("rootfs-cache")->error("{}", e.what());
    return to_int(ExitCode::kInfrastructure);
  }
}
