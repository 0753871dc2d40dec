#!/usr/bin/env bash
# Builds the example image: Debian bookworm minbase with python3-minimal, curl and
# ca-certificates, as one squashfs file (about 50 MB, about a minute).
# Uses the host's apt sources. Needs root (mmdebstrap's root mode) or, as an ordinary user,
# fakechroot and fakeroot (mmdebstrap's fakechroot mode).
# Usage: examples/images/build-debian.sh OUT.sqsh
set -euo pipefail
out=${1:?usage: build-debian.sh OUT.sqsh}
packages=python3-minimal,curl,ca-certificates

mode=root
if [[ $(id -u) -ne 0 ]]; then
  command -v fakechroot >/dev/null && command -v fakeroot >/dev/null || {
    echo "build-debian: as an ordinary user this needs fakechroot and fakeroot;" \
         "or run it as root" >&2
    exit 1
  }
  mode=fakechroot
fi

mkdir -p "$(dirname "$out")"
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
mmdebstrap --quiet --mode="$mode" --variant=minbase --include="$packages" \
  --format=squashfs bookworm "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "build-debian: wrote $out ($(du -h "$out" | cut -f1))" >&2
