// OCI import: an image from a Docker archive, an OCI layout or a skopeo directory (or a plain
// root directory) becomes a squashfs file the fan-out can stage, with the image's default
// environment and working directory beside it in OUT.json. Built on skopeo (copy into an OCI
// layout), umoci (unpack, rootless) and mksquashfs.
#pragma once

#include <string>
#include <vector>

namespace oshpc::rootfs_cache {

// What an OCI image says about how to run it, kept next to the squashfs as IMAGE.json:
//   {"oshpc_image_metadata": 1, "source": "...", "env": ["PATH=/usr/bin", ...],
//    "working_dir": "/app", "args": ["python3"]}
struct ImageMetadata {
  std::vector<std::string> env;   // "KEY=VALUE", the image's defaults
  std::string working_dir;        // "" when the image names none
  std::vector<std::string> args;  // entrypoint followed by cmd; informational
  std::string source;
};

// The metadata file that goes with an image file.
std::string metadata_path(const std::string& image_path);

// Reads IMAGE.json; an image without one gets empty metadata. Throws ImageError naming the
// file when it exists but cannot be read or parsed.
ImageMetadata load_image_metadata(const std::string& image_path);

// Serialises metadata as load_image_metadata reads it. Pure.
std::string metadata_json(const ImageMetadata& metadata);

// Parses "docker-archive:PATH", "oci:PATH[:TAG]" or "dir:PATH" into the skopeo source name;
// a dir: that holds no manifest.json is a plain root directory (returned as "rootfs:PATH").
// Throws ImageError for anything else.
std::string import_source(const std::string& source);

// Imports `source` into `output` (a squashfs file) and `output`.json. Files are owned by root
// in the result whatever their owners in the image (a warning says so when they differed).
// Work happens in a temporary directory next to `output`, removed on failure; the two files
// appear only when complete. Throws ImageError (bad source) or StagingError (a tool failed,
// named with its last line of output).
void import_image(const std::string& source, const std::string& output);

}  // namespace oshpc::rootfs_cache
