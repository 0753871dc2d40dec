#include "rootfs-cache/image_import.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "common/log.hpp"
#include "common/sys.hpp"
#include "node-agent/process.hpp"
#include "rootfs-cache/errors.hpp"

namespace oshpc::rootfs_cache {
namespace {

auto logger() {
  return log::get("rootfs-cache");
}

constexpr const char* kOciTag = "oshpc-import";
// umoci --rootless records an owner other than the unpacking user in this xattr.
constexpr const char* kRootlessXattr = "user.rootlesscontainers";

bool starts_with(const std::string& text, const std::string& prefix) {
  return text.rfind(prefix, 0) == 0;
}

std::string last_line(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  auto pos = text.rfind('\n');
  return pos == std::string::npos ? text : text.substr(pos + 1);
}

void run_tool(const std::vector<std::string>& argv, const std::string& step) {
  std::string err;
  int status = 0;
  try {
    status = node_agent::run_command(argv, &err);
  } catch (const sys::SysError& e) {
    throw StagingError("cannot " + step + ": " + e.what() + " (is " + argv.front() +
                       " installed?)");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string last = last_line(err);
    throw StagingError("cannot " + step + ": " + argv.front() + " failed" +
                       (last.empty() ? "" : ": " + last));
  }
}

// Files whose owner in the image was not the unpacking user (umoci --rootless marks them).
std::size_t count_foreign_owners(const std::string& rootfs) {
  namespace fs = std::filesystem;
  std::size_t count = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(
           rootfs, fs::directory_options::skip_permission_denied, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (::lgetxattr(it->path().c_str(), kRootlessXattr, nullptr, 0) >= 0) ++count;
  }
  return count;
}

std::vector<std::string> string_list(const nlohmann::json& value) {
  std::vector<std::string> list;
  if (!value.is_array()) return list;
  for (const auto& item : value) {
    if (item.is_string()) list.push_back(item.get<std::string>());
  }
  return list;
}

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  nlohmann::json json = nlohmann::json::parse(in, nullptr, false);
  if (!in.is_open() || json.is_discarded()) {
    throw StagingError("cannot read " + path + " (skopeo wrote no usable OCI layout)");
  }
  return json;
}

std::string blob_path(const std::string& layout, const std::string& digest) {
  auto colon = digest.find(':');
  if (colon == std::string::npos) throw StagingError("bad digest '" + digest + "' in " + layout);
  return layout + "/blobs/" + digest.substr(0, colon) + "/" + digest.substr(colon + 1);
}

// The image configuration's Env, WorkingDir, Entrypoint and Cmd, read from the OCI layout
// (index -> manifest -> config), as the image author wrote them.
ImageMetadata metadata_from_layout(const std::string& layout, const std::string& source) {
  auto index = read_json(layout + "/index.json");
  if (!index.contains("manifests") || index["manifests"].empty()) {
    throw StagingError(layout + "/index.json lists no manifest");
  }
  auto manifest = read_json(blob_path(layout, index["manifests"][0].value("digest", "")));
  auto image_config = read_json(blob_path(layout, manifest["config"].value("digest", "")));
  auto config = image_config.value("config", nlohmann::json::object());
  ImageMetadata metadata;
  metadata.source = source;
  metadata.env = string_list(config.value("Env", nlohmann::json::array()));
  metadata.working_dir = config.value("WorkingDir", std::string());
  metadata.args = string_list(config.value("Entrypoint", nlohmann::json::array()));
  for (auto& arg : string_list(config.value("Cmd", nlohmann::json::array()))) {
    metadata.args.push_back(arg);
  }
  return metadata;
}

void write_file(const std::string& path, const std::string& text) {
  sys::UniqueFd fd = sys::open_file(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  sys::write_all(fd.get(), text, path);
}

// An OCI image (any skopeo source) -> <work>/bundle/rootfs and its metadata.
ImageMetadata unpack_oci(const std::string& skopeo_source, const std::string& work,
                         const std::string& source) {
  std::string layout = work + "/oci";
  // --insecure-policy: the sources are local files the user chose; the signature policy of
  // /etc/containers is about registries and may be missing on a compute node.
  run_tool({"skopeo", "--insecure-policy", "copy", "--quiet", skopeo_source,
            "oci:" + layout + ":" + kOciTag},
           "copy " + source + " into an OCI layout");
  std::string bundle = work + "/bundle";
  // --rootless: no subuid ranges; every file belongs to the importing user.
  run_tool({"umoci", "unpack", "--rootless", "--image", layout + ":" + kOciTag, bundle},
           "unpack " + source);
  std::size_t foreign = count_foreign_owners(bundle + "/rootfs");
  if (foreign > 0) {
    logger()->warn(
        "{} files of {} belong to users other than root in the image; in the "
        "squashfs they all belong to root (the sandbox user)",
        foreign, source);
  }
  return metadata_from_layout(layout, source);
}

void make_squashfs(const std::string& rootfs, const std::string& output) {
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  run_tool({"mksquashfs", rootfs, output, "-noappend", "-all-root", "-no-xattrs", "-quiet",
            "-no-progress", "-processors", std::to_string(threads)},
           "build " + output);
}

}  // namespace

std::string metadata_path(const std::string& image_path) {
  return image_path + ".json";
}

std::string metadata_json(const ImageMetadata& metadata) {
  nlohmann::json json = {{"oshpc_image_metadata", 1},
                         {"source", metadata.source},
                         {"env", metadata.env},
                         {"working_dir", metadata.working_dir},
                         {"args", metadata.args}};
  return json.dump(2) + "\n";
}

ImageMetadata load_image_metadata(const std::string& image_path) {
  std::string path = metadata_path(image_path);
  std::ifstream in(path);
  if (!in) {
    if (errno == ENOENT) return {};
    throw ImageError("cannot read " + path + ": " + std::strerror(errno));
  }
  nlohmann::json json = nlohmann::json::parse(in, nullptr, false);
  if (json.is_discarded() || !json.is_object() || json.value("oshpc_image_metadata", 0) != 1) {
    throw ImageError(path + " is not an oshpc image metadata file (version 1)");
  }
  ImageMetadata metadata;
  metadata.env = string_list(json.value("env", nlohmann::json::array()));
  metadata.args = string_list(json.value("args", nlohmann::json::array()));
  metadata.working_dir = json.value("working_dir", std::string());
  metadata.source = json.value("source", std::string());
  for (const auto& assignment : metadata.env) {
    if (assignment.find('=') == std::string::npos || assignment.front() == '=') {
      throw ImageError(path + ": env entry '" + assignment + "' is not KEY=VALUE");
    }
    if (assignment.find('\0') != std::string::npos) {
      throw ImageError(path + ": env entry '" + assignment.substr(0, assignment.find('\0')) +
                       "...' holds a NUL byte");
    }
  }
  return metadata;
}

std::string import_source(const std::string& source) {
  auto colon = source.find(':');
  std::string transport = colon == std::string::npos ? "" : source.substr(0, colon);
  std::string rest = colon == std::string::npos ? "" : source.substr(colon + 1);
  if (rest.empty() || (transport != "docker-archive" && transport != "oci" && transport != "dir")) {
    throw ImageError("cannot import '" + source +
                     "': expected docker-archive:PATH, oci:PATH[:TAG] or dir:PATH");
  }
  std::string path = transport == "oci" ? rest.substr(0, rest.find(':')) : rest;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw ImageError("cannot import " + source + ": " + path + ": " + std::strerror(errno));
  }
  if (transport == "dir" && ::access((path + "/manifest.json").c_str(), F_OK) != 0) {
    if (!S_ISDIR(st.st_mode)) throw ImageError("cannot import " + source + ": not a directory");
    return "rootfs:" + path;
  }
  return source;
}

void import_image(const std::string& source, const std::string& output) {
  std::string resolved = import_source(source);
  std::string parent = std::filesystem::absolute(output).parent_path().string();
  std::string work = output + ".tmp." + std::to_string(::getpid());
  sys::remove_tree(work);
  try {
    sys::make_directories(work, 0700);
  } catch (const sys::SysError& e) {
    throw StagingError(std::string(e.what()) + " (is " + parent + " writable?)");
  }
  try {
    ImageMetadata metadata;
    std::string rootfs;
    if (starts_with(resolved, "rootfs:")) {
      rootfs = resolved.substr(7);
      metadata.source = source;
    } else {
      metadata = unpack_oci(resolved, work, source);
      rootfs = work + "/bundle/rootfs";
    }
    make_squashfs(rootfs, work + "/image.sqsh");
    write_file(work + "/image.sqsh.json", metadata_json(metadata));

    // Metadata first: a squashfs that is present always has its metadata beside it.
    std::string json_out = metadata_path(output);
    if (::rename((work + "/image.sqsh.json").c_str(), json_out.c_str()) != 0) {
      sys::throw_errno("create " + json_out);
    }
    if (::rename((work + "/image.sqsh").c_str(), output.c_str()) != 0) {
      sys::throw_errno("create " + output);
    }
  } catch (const sys::SysError& e) {
    sys::remove_tree(work);
    throw StagingError(e.what());
  } catch (...) {
    sys::remove_tree(work);
    throw;
  }
  sys::remove_tree(work);
}

}  // namespace oshpc::rootfs_cache
