#!/usr/bin/env bash
# Every benchmark of the project, each next to its baseline; the `make bench` entry point.
# Usage: tests/bench/run-all.sh BUILD IMAGE
#   BUILD  a CMake build tree (bin/oshpc-fanout ...); missing benchmark targets are built
#   IMAGE  the example squashfs image (build/images/debian-bookworm.sqsh)
# Writes BUILD/bench/results.md (Markdown for docs/benchmarks.md: each figure with the command
# that reproduces it and the machine it ran on), the raw outputs next to it, and PNG plots
# into docs/img/ (gnuplot; Debian package gnuplot-nox, installed when missing and root).
# Environment: OSHPC_BENCH_QUICK=1 runs smaller sizes (a smoke test, not figures);
#   OSHPC_BENCH_IMG (default docs/img) where the PNGs go; OSHPC_BENCH_ONLY="events scaling"
#   runs only those (events scaling topo proxy fanout staging gateway; results.md then holds
#   only them).
# Runs as root or as an ordinary user; running it again overwrites its outputs.
set -uo pipefail

readonly repo=$(cd "$(dirname "$0")/../.." && pwd)
[[ $# -eq 2 ]] || { echo "usage: $0 BUILD IMAGE" >&2; exit 2; }
readonly build=$(cd "$1" && pwd) || exit 2
readonly image=$(realpath "$2")
readonly out=$build/bench
readonly img=${OSHPC_BENCH_IMG:-$repo/docs/img}
readonly quick=${OSHPC_BENCH_QUICK:-0}
readonly results=$out/results.md
readonly python=/usr/bin/python3
readonly only=${OSHPC_BENCH_ONLY:-events scaling topo proxy fanout staging gateway}
wanted() { [[ " $only " == *" $1 "* ]]; }

note() { echo "bench: $*" >&2; }
mpirun_np() {
  local args=(mpirun --oversubscribe --bind-to none -np "$1")
  [[ $(id -u) -eq 0 ]] && args+=(--allow-run-as-root)
  echo "${args[@]}"
}

machine() {
  local cpu
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
  echo "$(nproc) CPUs (${cpu:-unknown}), $(free -g | awk '/^Mem:/ { print $2 }') GiB," \
    "Linux $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)"
}

# A section of results.md: title, the command, the machine, then what the caller appends.
section() {
  { echo; echo "### $1"; echo; echo "Reproduce: \`$2\`  "; echo "Machine: $(machine)"; echo; } \
    >>"$results"
}

ensure_gnuplot() {
  command -v gnuplot >/dev/null && return 0
  if [[ $(id -u) -eq 0 ]]; then
    note "installing gnuplot-nox"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnuplot-nox >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y -q gnuplot-nox >/dev/null; }
  fi
  command -v gnuplot >/dev/null || { note "gnuplot missing (apt-get install gnuplot-nox): no plots"; return 1; }
}

# Builds benchmark targets that the tree lacks (others' targets too, if they exist).
ensure_targets() {
  local target missing=()
  for target in "$@"; do [[ -x $build/bin/$target ]] || missing+=("$target"); done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  note "building ${missing[*]}"
  cmake --build "$build" -j "$(nproc)" --target "${missing[@]}" >"$out/build.log" 2>&1 \
    || note "could not build ${missing[*]} (see $out/build.log)"
}

# --- Event plane --------------------------------------------------------------------------

bench_events() {
  local bin=$build/bin/bench_event_plane nodes=20000 quarter=5000
  [[ -x $bin ]] || { note "skip event plane: no $bin"; return; }
  [[ $quick == 1 ]] && { nodes=400; quarter=100; }
  local tmpfs=/dev/shm
  [[ -d $tmpfs && -w $tmpfs ]] || tmpfs=${XDG_RUNTIME_DIR:-/tmp}
  local file=$tmpfs/oshpc-bench-events-$$.jsonl np
  np=$(mpirun_np 2)
  note "event plane: $nodes nodes x 64 sandboxes"
  : >"$out/events.jsonl"
  local label args
  while IFS='|' read -r label args; do
    # shellcheck disable=SC2086
    # </dev/null: mpirun reads stdin, which here is the list of runs.
    $np "$bin" --json $args </dev/null >>"$out/events.jsonl" 2>>"$out/events.err" \
      || note "event plane ($label) failed; see $out/events.err"
    rm -f "$file"
  done <<EOF
transport only|--nodes $nodes --transport-only
JSON to /dev/null|--nodes $nodes --events /dev/null
JSON to tmpfs|--nodes $nodes --events $file
JSON to /dev/null, 1/4 job|--nodes $quarter --events /dev/null
small batches, transport only|--nodes $nodes --sandboxes-per-batch 1 --transport-only
small batches, JSON to /dev/null|--nodes $nodes --sandboxes-per-batch 1 --events /dev/null
EOF
  section "Event plane: rank 0 ingest (20,000 nodes x 64 sandboxes, 4 events each)" \
    "$(mpirun_np 2) $build/bin/bench_event_plane --nodes $nodes [--events FILE] [--transport-only]"
  $python - "$out/events.jsonl" >>"$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("| run | events | batches/s | events/s (wall) | events/s (rank 0 busy) | "
      "events/s (rank 0 CPU processing) | bytes written | rank 0 peak RSS | generator peak RSS |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in rows:
    what = ("transport only (baseline)" if r["transport_only"]
            else f"JSON to {r['events_file']}")
    if r["nodes"] < max(x["nodes"] for x in rows):
        what += f", {r['nodes']} nodes"
    if r["sandboxes_per_batch"]:
        what += f", {r['sandboxes_per_batch']} sandbox per batch ({r['mean_batch_bytes']:.0f} B)"
    print(f"| {what} | {r['events']:,} | {r['batches_per_s']:,.0f} | {r['events_per_s_wall']:,.0f} | "
          f"{r['events_per_s_busy']:,.0f} | {r['events_per_s_cpu']:,.0f} | "
          f"{r['bytes_written']:,} | "
          f"{r['rss_rank0_kib'] / 1024:.1f} MiB | {r['rss_generator_kib'] / 1024:.1f} MiB |")
PY
  $python - "$out/events.jsonl" >"$out/events.dat" <<'PY'
import json, sys
for r in (json.loads(l) for l in open(sys.argv[1]) if l.strip()):
    label = "transport" if r["transport_only"] else (
        "/dev/null" if r["events_file"] == "/dev/null" else "tmpfs")
    if r["nodes"] < 20000 and not r["transport_only"]:
        label += f" ({r['nodes']} nodes)"
    if r["sandboxes_per_batch"]:
        label += ", small"
    print(f"\"{label}\" {r['events_per_s_wall'] / 1e6:.3f} {r['events_per_s_busy'] / 1e6:.3f} "
          f"{r['events_per_s_cpu'] / 1e6:.3f}")
PY
  plot "event-plane" "$out/events.dat" <<'GP'
set title "Event plane: events/s ingested and written by rank 0 (one core)"
set ylabel "million events/s (log scale)"
set logscale y
set yrange [0.02:40]
set xtics rotate by -20 noenhanced
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set key top right
plot DAT using 2:xtic(1) title "over wall time", '' using 3 title "over rank 0 busy time", \
     '' using 4 title "over rank 0 CPU time processing", \
     1 with lines dashtype 2 lw 2 title "goal 1 M/s"
GP
}

# --- Fan-out scaling ----------------------------------------------------------------------

bench_scaling() {
  local count=400 ranks=1,2,4,8,16
  [[ $quick == 1 ]] && { count=40; ranks=1,2,4; }
  note "fan-out scaling: $count sandboxes over $ranks ranks"
  if ! $python "$repo/tests/bench/scaling/bench_scaling.py" --build "$build" --image "$image" \
      --count "$count" --ranks "$ranks" --out "$out" >"$out/scaling.md" 2>"$out/scaling.err"; then
    note "fan-out scaling failed; see $out/scaling.err"
    return
  fi
  section "Fan-out scaling: $count sandboxes of /bin/true over 1-16 ranks on this machine" \
    "tests/bench/scaling/bench_scaling.py --build $build --image $image --count $count --ranks $ranks"
  cat "$out/scaling.md" >>"$results"
  plot "scaling" "$out/scaling.dat" <<'GP'
set title "Fan-out on one machine: 400 sandboxes of /bin/true"
set xlabel "MPI ranks (mpirun --oversubscribe)"
set ylabel "seconds after mpirun starts"
set y2label "sandboxes/s"
set logscale x 2
set xtics (1, 2, 4, 8, 16)
set xrange [0.8:20]
set ytics nomirror
set y2tics
set yrange [0:*]
set y2range [0:*]
set key top left
plot DAT using 1:2 with linespoints lw 2 title "first started", \
     '' using 1:3 with linespoints lw 2 title "last started", \
     '' using 1:6 with linespoints lw 2 dashtype 2 title "trivial MPI program (wall)", \
     '' using 1:5 axes x1y2 with linespoints lw 2 title "sandboxes/s (right)"
GP
}

# --- Others' benchmarks: run whichever exist ------------------------------------------------

bench_topo() {
  local bin=$build/bin/bench_topo_plan
  [[ -x $bin ]] || { note "skip topology planning: no $bin"; return; }
  note "topology planning"
  section "Topology: planning a million sandboxes" "$bin"
  { echo '```'; "$bin" 2>&1; echo '```'; } >>"$results"
}

bench_python() {  # TITLE SCRIPT ARGS...
  local title=$1 rel=$2 script=$repo/$2
  shift 2
  [[ -f $script ]] || { note "skip $title: no $script"; return; }
  note "$title"
  section "$title" "/usr/bin/python3 $rel $*"
  local log slug
  slug=$(tr -cs 'a-zA-Z0-9' '-' <<<"${title,,}")
  log=$out/$(basename "$script" .py)-${slug%-}.txt
  if $python "$script" "$@" >"$log" 2>&1; then
    { echo '```'; cat "$log"; echo '```'; } >>"$results"
  else
    echo "failed; see \`$log\`" >>"$results"
    note "$title failed; see $log"
  fi
}

bench_staging() {
  local script
  script=$(ls "$repo"/tests/bench/staging/bench_*.py 2>/dev/null | head -n 1)
  [[ -n $script ]] || { note "skip staging: no tests/bench/staging/bench_*.py"; return; }
  bench_python "Image staging" "${script#"$repo"/}" --build "$build" --image "$image"
}

# --- Plots --------------------------------------------------------------------------------

# plot NAME DATAFILE < gnuplot body (uses DAT); the PNG goes to $img/NAME.png.
plot() {
  [[ $have_gnuplot == 1 && -s $2 ]] || { cat >/dev/null; return; }
  local body
  body=$(cat)
  gnuplot <<GP 2>>"$out/gnuplot.err" || note "gnuplot failed for $1; see $out/gnuplot.err"
set terminal pngcairo size 900,540 font "sans,10"
set output "$img/$1.png"
DAT = "$2"
set bmargin 5
set label 1 "$(machine)" at screen 0.01, 0.02 font "sans,8" noenhanced
$body
GP
  [[ -s $img/$1.png ]] && echo "![$1](img/$1.png)" >>"$results"
}

# --- Gateway service -----------------------------------------------------------------------

bench_gateway_service() {
  local count=100 title="Gateway service: create-to-Ready through the compute-driver API"
  [[ $quick == 1 ]] && count=10
  note "$title"
  section "$title" "tests/bench/gateway/bench_service.sh $build $image $count 8"
  if "$repo/tests/bench/gateway/bench_service.sh" "$build" "$image" "$count" 8 \
      >"$out/gateway.txt" 2>"$out/gateway.err"; then
    grep -v '^raw JSON' "$out/gateway.txt" >>"$results"
  else
    echo "failed; see \`$out/gateway.err\`" >>"$results"
    note "$title failed; see $out/gateway.err"
  fi
}

main() {
  mkdir -p "$out" "$img"
  : >"$results"
  rm -f "$out/events.err" "$out/gnuplot.err"
  have_gnuplot=0
  ensure_gnuplot && have_gnuplot=1
  ensure_targets bench_event_plane bench_topo_plan oshpc-proxy-harness oshpc-seccomp-export \
    bench_gateway oshpc-driverctl
  echo "Benchmarks run by \`tests/bench/run-all.sh $build $image\`." >>"$results"

  wanted events && bench_events
  wanted scaling && bench_scaling
  wanted topo && bench_topo
  wanted proxy && bench_python "Egress proxy: CONNECT set-up and throughput" \
    tests/bench/proxy/bench_proxy.py --build "$build" --small-pipes-too
  # The same with the sink behind a 10gbit link, as egress leaves a compute node (root only).
  [[ $(id -u) -eq 0 ]] && wanted proxy &&
    bench_python "Egress proxy behind a 10gbit link" \
      tests/bench/proxy/bench_proxy.py --build "$build" --link 10gbit
  wanted fanout && bench_python "Fan-out start-up: oshpc-fanout vs bwrap vs ch-run" \
    tests/bench/fanout/bench_fanout.py --build "$build" --image "$image"
  wanted staging && bench_staging
  wanted gateway && bench_gateway_service
  publish_results
  note "results: $results (also in docs/benchmarks.md); plots: $img"
}

# Puts results.md between the markers of the last section of docs/benchmarks.md, leaving the
# analysed sections before it as they are.
publish_results() {
  local doc=$repo/docs/benchmarks.md
  [[ -w $doc ]] || { note "cannot write $doc; results stay in $results"; return; }
  "$python" - "$doc" "$results" <<'PY'
import sys
doc, results = sys.argv[1], sys.argv[2]
begin, end = "<!-- make bench writes between these markers -->", "<!-- end of make bench output -->"
text = open(doc).read()
if begin not in text or end not in text:
    text = text.rstrip() + "\n\n## Latest `make bench` run\n\n" + begin + "\n" + end + "\n"
head, rest = text.split(begin, 1)
tail = rest.split(end, 1)[1]
body = open(results).read()
open(doc, "w").write(head + begin + "\n" + body.rstrip() + "\n" + end + tail)
PY
}

main
