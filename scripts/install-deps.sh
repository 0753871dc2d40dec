#!/usr/bin/env bash
# Installs the Debian packages oshpc needs to build, run, test and benchmark.
# As root it installs what is missing; otherwise it prints the exact apt-get line and fails.
# Usage: scripts/install-deps.sh [build|run|test|bench]...   (default: build run)
set -euo pipefail

declare -A groups=(
  [build]="cmake g++ make pkg-config libopenmpi-dev openmpi-bin libhwloc-dev hwloc
           libseccomp-dev libcxxopts-dev libspdlog-dev libfmt-dev catch2 nlohmann-json3-dev
           libyaml-cpp-dev libssl-dev libgrpc++-dev libprotobuf-dev protobuf-compiler
           protobuf-compiler-grpc"
  [run]="bubblewrap squashfs-tools squashfuse fuse3 openmpi-bin hwloc"
  [image]="mmdebstrap squashfs-tools-ng"
  [test]="python3 python3-pytest python3-grpcio python3-protobuf procps psmisc util-linux clang libclang-rt-14-dev libc6-dev curl skopeo umoci"
  [slurm]="slurm-wlm slurm-client munge libpmix-dev"
  [bench]="charliecloud-runtime python3 tinyproxy gnuplot-nox"
)

wanted=()
for group in "${@:-build run}"; do
  for g in $group; do
    [[ -n "${groups[$g]+x}" ]] || { echo "install-deps: unknown group '$g'" >&2; exit 2; }
    wanted+=(${groups[$g]})
  done
done

missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages; as root run:" >&2
  echo "  apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# The package lists may be absent or stale on a fresh machine.
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
