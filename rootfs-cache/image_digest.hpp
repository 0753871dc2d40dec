// Image identity: the SHA-256 of the squashfs file, so every node names the same content the
// same way whatever path or copy it came from. Hashing a large image costs seconds, so the
// digest is remembered in the cache keyed by path, size, mtime and inode.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

struct evp_md_ctx_st;

namespace oshpc::rootfs_cache {

struct ImageInfo;

// Incremental SHA-256 (OpenSSL's EVP interface). Move-only. Throws StagingError if OpenSSL
// cannot set up the digest.
class Sha256 {
 public:
  Sha256();
  Sha256(Sha256&& other) noexcept;
  Sha256& operator=(Sha256&&) = delete;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  ~Sha256();

  void update(const void* data, std::size_t size);
  // The digest as 64 lower-case hex digits; the object is spent afterwards.
  std::string finish_hex();

 private:
  evp_md_ctx_st* context_ = nullptr;
};

// SHA-256 of a file, read in large chunks. Throws ImageError naming the path.
std::string file_sha256(const std::string& path);

// The image's digest: remembered in <cache_dir>/digests when the same file (path, size, mtime,
// inode) was hashed before, else hashed now and remembered. Throws ImageError when the image
// cannot be read; a digest that cannot be remembered is only logged.
std::string image_digest(const ImageInfo& image, const std::string& cache_dir);

}  // namespace oshpc::rootfs_cache
