#!/usr/bin/env bash
# The main job on the example image: 200 sandboxes over 4 MPI ranks, each running Python in
# its own bubblewrap sandbox. Events go to build/demo/oshpc-demo/events.jsonl.
# Usage: scripts/demo.sh BUILD_DIR IMAGE [COUNT] [RANKS]
set -euo pipefail
build=$(realpath "${1:?usage: demo.sh BUILD_DIR IMAGE [COUNT] [RANKS]}")
image=$(realpath "${2:?usage: demo.sh BUILD_DIR IMAGE [COUNT] [RANKS]}")
count=${3:-200}
ranks=${4:-4}

mpirun_args=(--oversubscribe --bind-to none -np "$ranks")
# Open MPI refuses root unless told; the sandboxes themselves never need root.
[[ $(id -u) -eq 0 ]] && mpirun_args+=(--allow-run-as-root)

workdir="$build/demo"
mkdir -p "$workdir"
cd "$workdir"
rm -rf oshpc-demo

set +e
mpirun "${mpirun_args[@]}" "$build/bin/oshpc-fanout" \
  --image "$image" --count "$count" --job-name demo \
  -- python3 -c 'import os, platform
e = os.environ
print("sandbox %s of %s on %s, rank %s: Python %s as uid %d in %s" % (
    e["OSHPC_INDEX"], e["OSHPC_COUNT"], e["OSHPC_NODE"], e["OSHPC_RANK"],
    platform.python_version(), os.getuid(), os.getcwd()))'
status=$?
set -e

echo
echo "events:  $workdir/oshpc-demo/events.jsonl ($(wc -l < oshpc-demo/events.jsonl) lines)"
echo "outputs: $workdir/oshpc-demo/demo-<index>/stdout, for example:"
sed 's/^/  /' oshpc-demo/demo-0/stdout
echo "last events:"
tail -n 3 oshpc-demo/events.jsonl | sed 's/^/  /'
exit "$status"
