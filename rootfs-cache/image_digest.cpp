#include "rootfs-cache/image_digest.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <vector>

#include "common/log.hpp"
#include "common/sys.hpp"
#include "rootfs-cache/cache.hpp"
#include "rootfs-cache/errors.hpp"
#include "rootfs-cache/staging.hpp"

namespace oshpc::rootfs_cache {
namespace {

auto logger() {
  return log::get("rootfs-cache");
}

constexpr std::size_t kReadChunk = 4 << 20;

// One line: "<digest> <size> <mtime_ns> <inode> <path>"; the fields guard against a stale hit.
std::string remembered_line(const ImageInfo& image, const std::string& digest) {
  return digest + " " + std::to_string(image.size) + " " + std::to_string(image.mtime_ns) + " " +
         std::to_string(image.inode) + " " + image.path + "\n";
}

std::string recall(const std::string& path, const ImageInfo& image) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return "";
  auto space = line.find(' ');
  if (space != 64) return "";
  std::string digest = line.substr(0, space);
  return remembered_line(image, digest) == line + "\n" ? digest : "";
}

void remember(const std::string& path, const ImageInfo& image, const std::string& digest) {
  std::string temporary = path + ".tmp." + std::to_string(::getpid());
  try {
    sys::UniqueFd fd = sys::open_file(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    sys::write_all(fd.get(), remembered_line(image, digest), temporary);
    if (::rename(temporary.c_str(), path.c_str()) != 0) sys::throw_errno("rename " + temporary);
  } catch (const std::exception& e) {
    ::unlink(temporary.c_str());
    logger()->warn("cannot remember the digest of {}: {}", image.path, e.what());
  }
}

}  // namespace

Sha256::Sha256() : context_(EVP_MD_CTX_new()) {
  if (!context_ || EVP_DigestInit_ex(context_, EVP_sha256(), nullptr) != 1) {
    EVP_MD_CTX_free(context_);
    throw StagingError("OpenSSL cannot set up SHA-256");
  }
}

Sha256::Sha256(Sha256&& other) noexcept : context_(other.context_) {
  other.context_ = nullptr;
}

Sha256::~Sha256() {
  EVP_MD_CTX_free(context_);
}

void Sha256::update(const void* data, std::size_t size) {
  EVP_DigestUpdate(context_, data, size);
}

std::string Sha256::finish_hex() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(context_, digest, &length);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) {
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xf];
  }
  return hex;
}

std::string file_sha256(const std::string& path) {
  sys::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.is_open()) throw ImageError("cannot read image " + path + ": " + std::strerror(errno));
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  Sha256 hash;
  std::vector<char> buffer(kReadChunk);
  while (true) {
    ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      throw ImageError("cannot read image " + path + ": " + std::strerror(errno));
    }
    hash.update(buffer.data(), static_cast<std::size_t>(n));
  }
  return hash.finish_hex();
}

std::string image_digest(const ImageInfo& image, const std::string& cache_dir) {
  std::string remembered_path = CacheLayout{cache_dir}.digests_dir() + "/" + image.key;
  if (std::string digest = recall(remembered_path, image); !digest.empty()) return digest;
  std::string digest = file_sha256(image.path);
  remember(remembered_path, image, digest);
  return digest;
}

}  // namespace oshpc::rootfs_cache
