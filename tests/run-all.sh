#!/usr/bin/env bash
# Runs every test: unit tests (ctest), then the integration tests twice, as root and as an
# ordinary user, since the target user is unprivileged and nothing may silently need root.
# Usage: tests/run-all.sh BUILD_DIR IMAGE
set -euo pipefail
build=$(realpath "${1:?usage: run-all.sh BUILD_DIR IMAGE}")
image=$(realpath "${2:?usage: run-all.sh BUILD_DIR IMAGE}")
here=$(cd "$(dirname "$0")" && pwd)
test_user=${OSHPC_TEST_USER:-oshpc}
export OSHPC_BUILD_DIR=$build OSHPC_IMAGE=$image OSHPC_TEST_IMAGE=$image
# Real machine descriptions (hwloc XML) live in shared/ beside the repository.
export OSHPC_TOPOLOGY_DIR=$(realpath -m "$here/../../shared/data/topologies")

echo "== unit tests"
(cd "$build" && ctest --output-on-failure -L unit)

pytest_integration() {
  /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@"
}

echo "== integration tests as $(id -un)"
pytest_integration "$here/integration"

if [[ $(id -u) -eq 0 ]]; then
  # A real one-node Slurm (slurmctld, slurmd, munged) started and stopped by the fixture.
  echo "== Slurm tests"
  pytest_integration "$here/slurm"
fi

if [[ $(id -u) -eq 0 ]]; then
  id "$test_user" >/dev/null 2>&1 || useradd -m "$test_user"
  # The ordinary user runs from a copy it can read, wherever CI cloned the tree.
  copy=$(mktemp -d /tmp/oshpc-user-tests.XXXXXX)
  trap 'rm -rf "$copy"' EXIT
  mkdir -p "$copy/build/bin" "$copy/tests"
  cp -a "$build/bin/." "$copy/build/bin/"
  cp "$image" "$copy/image.sqsh"
  cp -a "$here/integration" "$copy/tests/"
  cp -a "$here/../scripts" "$copy/"
  chown -R "$test_user" "$copy"
  chmod 755 "$copy"
  echo "== integration tests as $test_user"
  runuser -u "$test_user" -- env -i PATH="$PATH" HOME="/home/$test_user" \
    OSHPC_BUILD_DIR="$copy/build" OSHPC_IMAGE="$copy/image.sqsh" OSHPC_TEST_IMAGE="$copy/image.sqsh" OSHPC_TOPOLOGY_DIR="$OSHPC_TOPOLOGY_DIR" \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider "$copy/tests/integration"
fi
