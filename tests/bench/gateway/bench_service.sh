#!/usr/bin/env bash
# Create-to-Ready latency and creates per second through the compute-driver API, with 1 and 4
# ranks, next to the baseline of one raw bubblewrap start on the same machine in the same run.
# Usage: tests/bench/gateway/bench_service.sh BUILD IMAGE [COUNT] [CONCURRENCY]
# Prints a Markdown table (and the raw JSON lines of bench_gateway) on stdout.
set -euo pipefail
build=$(cd "${1:?usage: bench_service.sh BUILD IMAGE [COUNT] [CONCURRENCY]}" && pwd)
image=$(realpath "${2:?usage: bench_service.sh BUILD IMAGE [COUNT] [CONCURRENCY]}")
count=${3:-100}
concurrency=${4:-8}
work=$(mktemp -d /tmp/oshpc-bench-gateway.XXXXXX)
chmod 700 "$work"
service_pid=
cleanup() {
  [[ -n $service_pid ]] && kill -TERM "$service_pid" 2>/dev/null && wait "$service_pid" || true
  rm -rf "$work"
}
trap cleanup EXIT

mpirun_np() {
  local args=(mpirun --oversubscribe --bind-to none -np "$1")
  [[ $(id -u) -eq 0 ]] && args+=(--allow-run-as-root)
  echo "${args[@]}"
}

# The baseline: median wall time of `bwrap --unshare-all ... true` on the staged image root.
bwrap_baseline_ms() {
  local root=$work/root
  mkdir -p "$root"
  unsquashfs -q -d "$root/r" "$image" >/dev/null 2>&1 || unsquashfs -f -d "$root/r" "$image" >/dev/null
  /usr/bin/python3 - "$root/r" <<'PY'
import statistics, subprocess, sys, time
root = sys.argv[1]
argv = ["bwrap", "--unshare-all", "--unshare-user", "--die-with-parent", "--ro-bind", root, "/",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--", "/bin/true"]
times = []
for _ in range(50):
    t = time.perf_counter()
    subprocess.run(argv, check=True)
    times.append((time.perf_counter() - t) * 1000)
print(f"{statistics.median(times):.2f}")
PY
}

# The service binds its socket before the image is staged; what is measured is a staged
# service, so one sandbox is created, seen Ready and deleted first.
warm_up() {
  local ctl=("$build/bin/oshpc-driverctl" --socket "$1" --wait-for-socket 120)
  "${ctl[@]}" create --id warm-up --token-file <(echo placeholder) -- sleep 3600 >/dev/null
  for _ in $(seq 600); do
    "${ctl[@]}" get warm-up | grep -q '"status":"True"' && break
    sleep 0.1
  done
  "${ctl[@]}" delete warm-up >/dev/null
}

# One service of `ranks` ranks; prints bench_gateway's JSON line.
measure() {
  local ranks=$1 socket=$work/s$1/driver.sock
  mkdir -m 700 -p "$work/s$ranks"
  local slots=$(( (count + ranks - 1) / ranks + 1 ))
  $(mpirun_np "$ranks") "$build/bin/oshpc-fanout" --serve "$socket" --image "$image" \
    --slots "$slots" --cache-dir "$work/cache" --output-dir "$work/out$ranks" -q &
  service_pid=$!
  warm_up "$socket"
  "$build/bin/bench_gateway" --socket "$socket" --image "$image" --count "$count" \
    --concurrency "$concurrency" --wait-for-socket 120 --timeout 600 | tail -1
  kill -TERM "$service_pid"
  wait "$service_pid" || true
  service_pid=
}

baseline=$(bwrap_baseline_ms)
one=$(measure 1)
four=$(measure 4)
echo "raw JSON: 1 rank $one"
echo "raw JSON: 4 ranks $four"
/usr/bin/python3 - "$baseline" "$one" "$four" "$count" "$concurrency" <<'PY'
import json, sys
baseline = float(sys.argv[1])
rows = [("1 rank", json.loads(sys.argv[2])), ("4 ranks", json.loads(sys.argv[3]))]
print(f"{sys.argv[4]} sandboxes (`sleep 3600`), {sys.argv[5]} creates in flight; "
      f"baseline: one raw `bwrap` start, median {baseline:.1f} ms")
print()
print("| service | create-to-Ready p50 ms | p99 ms | max ms | creates/s | p50 × raw bwrap start |")
print("|---|---|---|---|---|---|")
for name, r in rows:
    print(f"| {name} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | "
          f"{r['creates_per_s']:.1f} | {r['p50_ms'] / baseline:.2f} |")
PY
