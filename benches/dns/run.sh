#!/usr/bin/env bash
# skiff-dns side by side with Knot DNS on the same zone, measured with dnsperf (and `skiff bench
# dns` for one more latency view). Writes benches/results/dns.md, benches/results/dns/ (dnsperf
# outputs, `skiff bench` JSON) and benches/results/dns/latency.svg (the convention is at the top
# of benches/report.sh).
#
# Both servers serve the benchmark cluster (skiff_dns::fixtures::bench_cluster: $SERVICES
# Services over 100 namespaces, every 5th headless with 3 endpoints, plus kube-system/kube-dns)
# on loopback: skiff-dns from its own snapshot, Knot from a master file that skiff's
# `bench_serve zone` writes from that same snapshot (every record of cluster.local; the reverse
# zones are left out and not queried). Each server is pinned to $SERVER_CPU with one worker
# thread; dnsperf is pinned to $CLIENT_CPU. Runs are interleaved (skiff, Knot, skiff, ...),
# $REPS of each:
#   - throughput: dnsperf as fast as the server answers ($DURATION s, 100 queries in flight),
#     and queries per second of server CPU (utime + stime from /proc over that run), which
#     still compares the servers when the one dnsperf core is the limit;
#   - latency: dnsperf at a fixed $RATE queries/s with -v, p50/p99 computed from every
#     query's latency (dnsperf 2.10 has no histogram option);
#   - over TCP (RFC 7766, length-prefixed, connections reused): dnsperf -m tcp as fast as the
#     server answers ($DURATION s, $TCP_CONNS connections, 100 queries in flight) with queries
#     per server CPU-second, and `skiff bench dns --tcp` closed loop ($TCP_CONNS connections,
#     --pipeline $TCP_PIPELINE, 5 s) for p50/p99 with pipelined queries;
#   - memory: the server's VmRSS (and peak, VmHWM) from /proc after the runs;
#   - `skiff bench dns` (one thread, on $CLIENT_CPU) open loop at $RATE queries/s for 5 s, one
#     name (A of svc-1.ns-1, a ClusterIP Service): p50/p99 from its HDR histogram, latency from
#     each query's intended send time; the plot draws the repetition with the median p99.
# The query mix (bench_serve's queries.txt): 40% A of ClusterIP Services, 20% A of headless
# Services (3 addresses), 20% SRV, 10% AAAA (NODATA), 10% NXDOMAIN.
#
# Usage (as root): benches/dns/run.sh
# Environment: SERVICES (10000) DURATION (10) RATE (20000) REPS (3) SERVER_CPU (0) CLIENT_CPU (1)
#              TCP_CONNS (10) TCP_PIPELINE (10)
#              BENCH_SERVE (a prebuilt bench_serve binary; default: cargo build --release)
#              SKIFF (the skiff binary for `skiff bench`; default: cargo build --release -p skiff)
# Needs: knotd (Debian package knot), dnsperf, dig (dnsutils), jq; installed with apt-get if
# missing.
set -euo pipefail

SERVICES=${SERVICES:-10000}
DURATION=${DURATION:-10}
RATE=${RATE:-20000}
REPS=${REPS:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
TCP_CONNS=${TCP_CONNS:-10}
TCP_PIPELINE=${TCP_PIPELINE:-10}
SKIFF_PORT=${SKIFF_PORT:-5300}
KNOT_PORT=${KNOT_PORT:-5301}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT="$ROOT/benches/results/dns"
FRAGMENT="$ROOT/benches/results/dns.md"
LAT_QNAME=svc-1.ns-1.svc.cluster.local.
# skiff bench keeps one query in flight per socket: 200 queries/s each leaves 5 ms per answer
# and stays below the ~1000/s per connection its open-loop timer holds exactly.
LAT_CONNS=$((RATE / 200 > 10 ? RATE / 200 : 10))

if [ "$(id -u)" -ne 0 ]; then
  echo "run as root (taskset and knotd's run directory)" >&2
  exit 1
fi
missing=()
command -v knotd >/dev/null || missing+=(knot)
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v dig >/dev/null || missing+=(dnsutils)
command -v jq >/dev/null || missing+=(jq)
if [ ${#missing[@]} -gt 0 ]; then
  # A fresh machine may have no package lists yet (or stale ones): update once and retry.
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
fi

if [ -z "${BENCH_SERVE:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p skiff-dns --example bench_serve)
  BENCH_SERVE="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/bench_serve"
fi
if [ -z "${SKIFF:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p skiff)
  SKIFF="${CARGO_TARGET_DIR:-$ROOT/target}/release/skiff"
fi

WORK=$(mktemp -d /tmp/skiff-dns-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
rm -rf "$OUT"
mkdir -p "$OUT"
rm -f "$FRAGMENT"

"$BENCH_SERVE" zone --services "$SERVICES" --out "$WORK"
mkdir -p "$WORK/run" "$WORK/db"
cat >"$WORK/knot.conf" <<EOF
server:
    rundir: "$WORK/run"
    listen: 127.0.0.1@$KNOT_PORT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$WORK/db"
template:
  - id: default
    storage: "$WORK"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
zone:
  - domain: cluster.local
    file: cluster.local.zone
log:
  - target: stderr
    any: warning
EOF

# Something already listening there (another run of this script?) would answer in place of a
# candidate: refuse, naming the port.
for port in "$SKIFF_PORT" "$KNOT_PORT"; do
  if [ -n "$(ss -Htuln "sport = :$port" 2>/dev/null)" ]; then
    echo "port $port is already in use on this machine (another benchmark run?): set SKIFF_PORT/KNOT_PORT" >&2
    exit 1
  fi
done
taskset -c "$SERVER_CPU" "$BENCH_SERVE" serve --services "$SERVICES" \
  --listen "127.0.0.1:$SKIFF_PORT" --threads 1 >"$WORK/skiff.log" 2>&1 &
SKIFF_PID=$!
PIDS+=("$SKIFF_PID")
taskset -c "$SERVER_CPU" knotd -c "$WORK/knot.conf" >"$WORK/knot.log" 2>&1 &
KNOT_PID=$!
PIDS+=("$KNOT_PID")

probe=svc-1.ns-1.svc.cluster.local
for port in "$SKIFF_PORT" "$KNOT_PORT"; do
  for _ in $(seq 100); do
    if [ -n "$(dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" "$probe" A 2>/dev/null)" ]; then
      break
    fi
    sleep 0.2
  done
  if [ -z "$(dig +short +time=1 +tries=1 @127.0.0.1 -p "$port" "$probe" A 2>/dev/null)" ]; then
    echo "no answer on port $port" >&2
    cat "$WORK/skiff.log" "$WORK/knot.log" >&2
    exit 1
  fi
done

# Same answers from both (the record sets, sorted) for a sample of the queries.
for q in "svc-1.ns-1.svc.cluster.local A" "svc-5.ns-5.svc.cluster.local A" \
  "_http._tcp.svc-10.ns-10.svc.cluster.local SRV" "_http._tcp.svc-11.ns-11.svc.cluster.local SRV" \
  "cluster.local NS" "ns.dns.cluster.local A" "dns-version.cluster.local TXT"; do
  # shellcheck disable=SC2086
  a=$(dig +short @127.0.0.1 -p "$SKIFF_PORT" $q | sort)
  # shellcheck disable=SC2086
  b=$(dig +short @127.0.0.1 -p "$KNOT_PORT" $q | sort)
  if [ "$a" != "$b" ]; then
    echo "answers differ for $q: skiff [$a] knot [$b]" >&2
    exit 1
  fi
done
# shellcheck disable=SC2086
for server in skiff knot; do
  port=$([ $server = skiff ] && echo "$SKIFF_PORT" || echo "$KNOT_PORT")
  dig @127.0.0.1 -p "$port" nope.ns-1.svc.cluster.local A | grep -q 'status: NXDOMAIN' ||
    { echo "$server: no NXDOMAIN" >&2; exit 1; }
done

dnsperf_qps() { # port, raw output file, [extra dnsperf flags] → "qps lost"
  local port=$1 out=$2
  shift 2
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l "$DURATION" \
    -q 100 -t 2 "$@" >"$out" 2>&1 || true
  awk '/Queries per second/ {q=$4} /Queries lost/ {l=$3} END {print q, l}' "$out"
}
skiff_bench_tcp() { # port, json → "qps p50_us p99_us"
  taskset -c "$CLIENT_CPU" "$SKIFF" bench dns "127.0.0.1:$1" --tcp --qname "$LAT_QNAME" --qtype A \
    --connections "$TCP_CONNS" --pipeline "$TCP_PIPELINE" --duration 5s --threads 1 --quiet \
    --json "$2" >/dev/null 2>&1 || true
  jq -r '"\(.throughput) \(.latency_us.p50) \(.latency_us.p99)"' "$2" 2>/dev/null || echo "- - -"
}
dnsperf_latency() { # port, raw output file (the summary; the per-query lines are not kept) → "p50_us p99_us"
  taskset -c "$CLIENT_CPU" dnsperf -s 127.0.0.1 -p "$1" -d "$WORK/queries.txt" -l 5 \
    -Q "$RATE" -q 1000 -t 2 -v 2>/dev/null >"$WORK/verbose.txt" || true
  grep -v '^> ' "$WORK/verbose.txt" >"$2" || true
  awk '/^> / {print $NF * 1e6}' "$WORK/verbose.txt" | sort -g |
    awk '{v[NR]=$1} END {if (NR == 0) {print "- -"; exit} p50=v[int(NR*0.5)+1]; p99=v[int(NR*0.99)+1]; printf "%.0f %.0f\n", p50, p99}'
}
skiff_bench_latency() { # port, json → "p50_us p99_us"
  taskset -c "$CLIENT_CPU" "$SKIFF" bench dns "127.0.0.1:$1" --qname "$LAT_QNAME" --qtype A \
    --rate "$RATE/s" --connections "$LAT_CONNS" --duration 5s --threads 1 --quiet --json "$2" >/dev/null 2>&1 || true
  jq -r '"\(.latency_us.p50) \(.latency_us.p99)"' "$2" 2>/dev/null || echo "- -"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, all threads
# Queries answered per second of server CPU: what the server costs, even when the one dnsperf
# core (not the server) is the limit. qps, CPU ticks the server used over the $DURATION s run.
per_cpu() {
  awk -v q="$1" -v d="$DURATION" -v t="$2" -v hz="$TICKS" \
    'BEGIN {printf "%.0f", (t > 0 && q != "") ? q * d / (t / hz) : 0}'
}

RESULTS="$WORK/results"
: >"$RESULTS"
TICKS=$(getconf CLK_TCK)
for rep in $(seq "$REPS"); do
  for server in skiff knot; do
    port=$([ $server = skiff ] && echo "$SKIFF_PORT" || echo "$KNOT_PORT")
    pid=$([ $server = skiff ] && echo "$SKIFF_PID" || echo "$KNOT_PID")
    before=$(cpu_ticks "$pid")
    read -r qps lost < <(dnsperf_qps "$port" "$OUT/dnsperf-$server-$rep.txt")
    after=$(cpu_ticks "$pid")
    udp_per_cpu=$(per_cpu "$qps" $((after - before)))
    read -r p50 p99 < <(dnsperf_latency "$port" "$OUT/dnsperf-$server-$rep-rate.txt")
    read -r b50 b99 < <(skiff_bench_latency "$port" "$OUT/$server-$rep.json")
    before=$(cpu_ticks "$pid")
    read -r tqps tlost < <(dnsperf_qps "$port" "$OUT/dnsperf-$server-$rep-tcp.txt" -m tcp -c "$TCP_CONNS")
    after=$(cpu_ticks "$pid")
    tper_cpu=$(per_cpu "$tqps" $((after - before)))
    read -r bq t50 t99 < <(skiff_bench_tcp "$port" "$OUT/$server-$rep-tcp.json")
    echo "$server $rep $qps $lost $p50 $p99 $udp_per_cpu $b50 $b99 ${tqps:--} ${tlost:--} $tper_cpu $bq $t50 $t99" |
      tee -a "$RESULTS" >&2
  done
done

rss() { awk '/^VmRSS/ {r=$2} /^VmHWM/ {h=$2} END {printf "%.1f %.1f\n", r/1024, h/1024}' "/proc/$1/status"; }
read -r skiff_rss skiff_hwm < <(rss "$SKIFF_PID")
read -r knot_rss knot_hwm < <(rss "$KNOT_PID")

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
col() { awk -v s="$1" -v c="$2" '$1 == s && $c != "-" {print $c}' "$RESULTS" | median; }
cp "$RESULTS" "$OUT/results.txt"
LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
KNOT_V=$(knotd -V | head -1 | awk '{print $NF}')
DNSPERF_V=$(dnsperf -h 2>&1 | awk '/^Version:/ {print $2; exit}')
[ -n "$DNSPERF_V" ] || DNSPERF_V=$(dpkg-query -W -f='${Version}' dnsperf 2>/dev/null || true)

# The plot: the `skiff bench dns` run of each server with the median p99.
inputs=()
labels=()
for server in skiff knot; do
  m=$(col $server 9)
  for rep in $(seq "$REPS"); do
    f="$OUT/$server-$rep.json"
    if [ "$(jq -r '.latency_us.p99' "$f" 2>/dev/null)" = "$m" ]; then
      inputs+=("$f")
      labels+=(--label "$([ $server = skiff ] && echo skiff-dns || echo "knot $KNOT_V")")
      break
    fi
  done
done
if [ ${#inputs[@]} -gt 0 ]; then
  "$SKIFF" bench plot "${inputs[@]}" "${labels[@]}" -o "$OUT/latency.svg" >/dev/null || echo "plot failed" >&2
fi

us() { awk -v v="$1" 'BEGIN {if (v == "" || v == "-") print "–"; else if (v >= 1000000) printf "%.2f s\n", v / 1000000; else if (v >= 1000) printf "%.2f ms\n", v / 1000; else printf "%.0f µs\n", v}'; }
num() {
  awk -v v="$1" 'BEGIN {
    if (v == "" || v == "-") { print "–"; exit }
    s = sprintf("%.0f", v); out = ""
    while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
    print s out }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "" || a == "-" || b == "-" || b == 0) print "–"; else printf "%.2f×\n", a / b}'; }
tmp="$FRAGMENT.tmp"
{
  echo "## Cluster DNS: skiff-dns vs Knot DNS $KNOT_V"
  echo
  echo "Both serve the same zone ($SERVICES Services over 100 namespaces, every 5th headless with 3"
  echo "endpoints; Knot from a master file skiff writes from its own snapshot, answers checked equal"
  echo "with \`dig\` first) over UDP on loopback, one thread each pinned to CPU $SERVER_CPU; the clients on"
  echo "CPU $CLIENT_CPU. Median of $REPS interleaved repetitions (skiff, Knot, skiff, ...). dnsperf's query"
  echo "mix: 40% A (ClusterIP), 20% A (headless, 3 addresses), 20% SRV, 10% AAAA (NODATA), 10%"
  echo "NXDOMAIN. QPS at saturation (100 in flight, ${DURATION} s); p50/p99 from every query's latency"
  echo "(\`dnsperf -v\`) at $RATE queries/s; \`skiff bench dns\`: open loop at $RATE queries/s, one"
  echo "name, $LAT_CONNS sockets, latency from each query's intended send time (the plot); RSS from /proc after the runs."
  echo
  echo "| server | QPS | queries per server CPU-s | dnsperf p50 @ $RATE/s | dnsperf p99 | skiff bench p50 @ $RATE/s | skiff bench p99 | RSS | peak RSS | lost |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for server in skiff knot; do
    r=$([ $server = skiff ] && echo "$skiff_rss $skiff_hwm" || echo "$knot_rss $knot_hwm")
    name=$([ $server = skiff ] && echo skiff-dns || echo "Knot DNS $KNOT_V")
    # shellcheck disable=SC2086
    set -- $r
    echo "| $name | $(num "$(col $server 3)") | $(num "$(col $server 7)") | $(us "$(col $server 5)") |" \
      "$(us "$(col $server 6)") | $(us "$(col $server 8)") | $(us "$(col $server 9)") | $1 MiB | $2 MiB | $(col $server 4) |"
  done
  echo "| skiff ÷ Knot | $(ratio "$(col skiff 3)" "$(col knot 3)") | $(ratio "$(col skiff 7)" "$(col knot 7)") |" \
    "$(ratio "$(col skiff 5)" "$(col knot 5)") | $(ratio "$(col skiff 6)" "$(col knot 6)") |" \
    "$(ratio "$(col skiff 8)" "$(col knot 8)") | $(ratio "$(col skiff 9)" "$(col knot 9)") |" \
    "$(ratio "$skiff_rss" "$knot_rss") | $(ratio "$skiff_hwm" "$knot_hwm") | |"
  echo
  echo "Over TCP (RFC 7766; the same servers, connections reused): dnsperf \`-m tcp -c $TCP_CONNS\` as fast"
  echo "as the server answers (100 queries in flight, ${DURATION} s), and \`skiff bench dns --tcp\` closed loop"
  echo "with $TCP_CONNS connections × $TCP_PIPELINE pipelined queries (one name, 5 s)."
  echo
  echo "| server | dnsperf TCP QPS | queries per server CPU-s | lost | skiff bench QPS | skiff bench p50 | skiff bench p99 |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  for server in skiff knot; do
    name=$([ $server = skiff ] && echo skiff-dns || echo "Knot DNS $KNOT_V")
    echo "| $name | $(num "$(col $server 10)") | $(num "$(col $server 12)") | $(col $server 11) |" \
      "$(num "$(col $server 13)") | $(us "$(col $server 14)") | $(us "$(col $server 15)") |"
  done
  echo "| skiff ÷ Knot | $(ratio "$(col skiff 10)" "$(col knot 10)") | $(ratio "$(col skiff 12)" "$(col knot 12)") | |" \
    "$(ratio "$(col skiff 13)" "$(col knot 13)") | $(ratio "$(col skiff 14)" "$(col knot 14)") | $(ratio "$(col skiff 15)" "$(col knot 15)") |"
  echo
  warned=$(for f in "$OUT"/*.json; do
    jq -r --arg f "$(basename "$f" .json)" '.warnings[] | "- `\($f)`: \(.)"' "$f" 2>/dev/null || true
  done)
  if [ -n "$warned" ]; then
    echo "\`skiff bench\` warnings (those runs' figures carry them):"
    echo
    echo "$warned"
    echo
  fi
  echo "Versions: Knot DNS $KNOT_V, dnsperf ${DNSPERF_V:-?}, $("$SKIFF" --version). Load average after the runs: $LOAD."
  echo
  echo "Commands (run by \`benches/dns/run.sh\`):"
  echo
  echo '```text'
  echo "bench_serve zone --services $SERVICES --out DIR      # cluster.local.zone for Knot, queries.txt"
  echo "taskset -c $SERVER_CPU bench_serve serve --services $SERVICES --listen 127.0.0.1:$SKIFF_PORT --threads 1"
  echo "taskset -c $SERVER_CPU knotd -c knot.conf             # udp-workers 1, tcp-workers 1, listen 127.0.0.1@$KNOT_PORT"
  echo "taskset -c $CLIENT_CPU dnsperf -s 127.0.0.1 -p PORT -d queries.txt -l $DURATION -q 100 -t 2"
  echo "taskset -c $CLIENT_CPU dnsperf -s 127.0.0.1 -p PORT -d queries.txt -l 5 -Q $RATE -q 1000 -t 2 -v"
  echo "taskset -c $CLIENT_CPU skiff bench dns 127.0.0.1:PORT --qname $LAT_QNAME --qtype A --rate $RATE/s --connections $LAT_CONNS --duration 5s --threads 1 --json SERVER-REP.json"
  echo "taskset -c $CLIENT_CPU dnsperf -s 127.0.0.1 -p PORT -d queries.txt -l $DURATION -q 100 -t 2 -m tcp -c $TCP_CONNS"
  echo "taskset -c $CLIENT_CPU skiff bench dns 127.0.0.1:PORT --tcp --qname $LAT_QNAME --qtype A --connections $TCP_CONNS --pipeline $TCP_PIPELINE --duration 5s --threads 1 --json SERVER-REP-tcp.json"
  echo '```'
} >"$tmp"
mv "$tmp" "$FRAGMENT"

echo
echo "skiff-dns vs Knot DNS $KNOT_V, $SERVICES Services, one server core (cpu $SERVER_CPU), dnsperf on cpu $CLIENT_CPU, median of $REPS interleaved runs"
printf "%-10s %10s %6s %14s %14s %14s %9s %9s\n" server QPS lost "q/CPU-second" "p50 µs@$RATE" \
  "p99 µs@$RATE" "RSS MiB" "peak MiB"
for server in skiff knot; do
  r=$([ $server = skiff ] && echo "$skiff_rss $skiff_hwm" || echo "$knot_rss $knot_hwm")
  # shellcheck disable=SC2086
  printf "%-10s %10.0f %6s %14s %14s %14s %9s %9s\n" "$server" "$(col $server 3)" "$(col $server 4)" \
    "$(col $server 7)" "$(col $server 5)" "$(col $server 6)" $r
done
awk -v sq="$(col skiff 3)" -v kq="$(col knot 3)" -v sr="$skiff_rss" -v kr="$knot_rss" \
  -v sc="$(col skiff 7)" -v kc="$(col knot 7)" \
  -v s5="$(col skiff 5)" -v k5="$(col knot 5)" -v s9="$(col skiff 6)" -v k9="$(col knot 6)" \
  'BEGIN {printf "skiff/knot: QPS %.2fx, queries per CPU-second %.2fx, p50 %.2fx, p99 %.2fx, RSS %.2fx\n", sq/kq, sc/kc, s5/k5, s9/k9, sr/kr}'
echo "load average during the run: $LOAD"
echo "wrote $FRAGMENT"
