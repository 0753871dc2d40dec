#!/usr/bin/env bash
# bench_gateway against bench_gateway_fake_driver: every sandbox Ready and deleted (exit 0), then
# every fifth ending Ready=False/ImagePullFailed (exit 1), then no driver at all (exit 1).
# Usage: smoke.sh BIN_DIR
set -euo pipefail
bin=${1:?usage: smoke.sh BIN_DIR}
dir=$(mktemp -d)
fake=
cleanup() {
  [[ -n $fake ]] && kill "$fake" 2>/dev/null && wait "$fake" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

start_fake() {
  "$bin/bench_gateway_fake_driver" --socket "$dir/driver.sock" "$@" &
  fake=$!
}

stop_fake() {
  kill "$fake"
  wait "$fake" || true
  fake=
  rm -f "$dir/driver.sock"
}

bench() {
  "$bin/bench_gateway" --socket "$dir/driver.sock" --image fake.sqsh --count 40 \
    --concurrency 4 --wait-for-socket 10 --timeout 20 "$@"
}

start_fake --ready-ms 20
bench >"$dir/out" 2>"$dir/err" || { cat "$dir/out" "$dir/err"; echo "FAIL: healthy run"; exit 1; }
tail -1 "$dir/out" | grep -q '"ready":40,"failed":0' || { cat "$dir/out"; echo "FAIL: report"; exit 1; }
cat "$dir/out"
stop_fake

start_fake --ready-ms 20 --fail-every 5
if bench -- sleep 1 >"$dir/out" 2>"$dir/err"; then
  cat "$dir/out" "$dir/err"; echo "FAIL: failures not reported"; exit 1
fi
grep -q 'Ready=False ImagePullFailed' "$dir/err" || { cat "$dir/err"; echo "FAIL: reason"; exit 1; }
tail -1 "$dir/out" | grep -q '"failed":8' || { cat "$dir/out"; echo "FAIL: count"; exit 1; }
stop_fake

if "$bin/bench_gateway" --socket "$dir/driver.sock" --image x 2>"$dir/err"; then
  echo "FAIL: no driver but exit 0"; exit 1
fi
grep -q 'UNAVAILABLE' "$dir/err" || { cat "$dir/err"; echo "FAIL: absent socket"; exit 1; }
echo "bench_gateway smoke: ok"
