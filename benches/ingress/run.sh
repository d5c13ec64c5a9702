#!/usr/bin/env bash
# The skiff ingress proxy side by side with nginx and haproxy (Debian packages), measured with
# `skiff bench`. Writes benches/results/ingress.md, benches/results/ingress/*.json and one SVG
# latency plot per protocol (the convention is at the top of benches/report.sh).
#
# All three proxy host localhost (a name every client resolves to 127.0.0.1 without a
# resolver override, so HTTP/2 and gRPC clients send it as :authority and SNI), path / (prefix)
# to one HTTP/1.1 backend, and path /skiff.echo.v1.Echo/ (prefix) to one gRPC backend over
# HTTP/2, with the same ECDSA P-256 certificate (openssl, CN/SAN localhost, from a throwaway CA) on their HTTPS
# port, HTTP/1.1 keep-alive to the HTTP backend and X-Forwarded-For/-Proto added:
#   - skiff: `bench_serve serve` (the proxy without an API server, from generated Ingresses:
#     the gRPC route is an Ingress with `skiff.dev/backend-protocol: GRPC`); it serves $ROUTES
#     more Ingress rules (other hosts); nginx and haproxy get only the bench routes;
#   - nginx: proxy_pass (keepalive upstream) and grpc_pass;
#   - haproxy: a backend server, and one with `proto h2` for gRPC.
# The HTTP backend is a separate nginx answering `200 ok` (2 bytes); the gRPC backend is
# `skiff grpc-echo`. Each proxy is pinned to $SERVER_CPU with one worker (nginx
# worker_processes 1, haproxy nbthread 1, skiff one tokio worker thread); `skiff bench` (one
# thread) and both backends share $CLIENT_CPU. Runs are interleaved (skiff, nginx, haproxy,
# skiff, ...), $REPS of each case, medians reported. Cases:
#   - h1:    HTTP/1.1 keep-alive, $CONNS connections;
#   - h1tls: the same over TLS (handshakes during the warm-up);
#   - h2tls: HTTP/2 over TLS (ALPN h2), $H2_CONNS connections x $H2_STREAMS streams;
#   - grpc:  gRPC unary (skiff.dev/grpc-echo's Echo) over TLS, $H2_CONNS x $H2_STREAMS.
# Each case runs closed loop for $DURATION s (throughput; p50/p99 under saturation, mostly
# queueing) and then open loop at $RATE requests/s for $LAT_DURATION s (latency at equal load,
# coordinated omission corrected); the plots draw the open-loop runs (the repetition with the
# median p99). Proxy CPU (utime + stime from /proc over the closed-loop run, warm-up included)
# gives requests per proxy CPU-second and how busy the proxy core was. With CROSSCHECK=1,
# wrk (h1, h1tls) and h2load (h2tls) also load each proxy once per repetition, for a
# throughput column from the usual tools. Last, `bench_serve update`: with $ROUTES rules
# served, one Ingress added, compiled and swapped, and requested (p50/p99 over $UPDATES).
#
# Usage (as root): benches/ingress/run.sh
# Environment: ROUTES (10000) DURATION (10) LAT_DURATION (5) RATE (2000) REPS (3) CONNS (50)
#              H2_CONNS (10) H2_STREAMS (10) UPDATES (50) SERVER_CPU (0) CLIENT_CPU (1)
#              CASES ("h1 h1tls h2tls grpc": a subset measures only those)
#              CROSSCHECK (0) REPORT_ONLY (0; 1: measure nothing, rewrite the fragment and plots
#              from the last run's benches/results/ingress/ with the same settings)
#              SKIFF (the skiff binary; default: cargo build --release -p skiff)
#              BENCH_SERVE (a prebuilt bench_serve binary; default: cargo build --release)
# Needs: nginx, haproxy, openssl, curl, jq (and wrk, h2load with CROSSCHECK=1); installed with
# apt-get if missing.
set -euo pipefail

ROUTES=${ROUTES:-10000}
DURATION=${DURATION:-10}
LAT_DURATION=${LAT_DURATION:-5}
RATE=${RATE:-2000}
REPS=${REPS:-3}
CONNS=${CONNS:-50}
H2_CONNS=${H2_CONNS:-10}
H2_STREAMS=${H2_STREAMS:-10}
UPDATES=${UPDATES:-50}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CROSSCHECK=${CROSSCHECK:-0}
REPORT_ONLY=${REPORT_ONLY:-0}
BACKEND_PORT=${BACKEND_PORT:-18080}
GRPC_PORT=${GRPC_PORT:-18051}
WARMUP=1
HOST=localhost
GRPC_PREFIX=/skiff.echo.v1.Echo
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT="$ROOT/benches/results/ingress"
FRAGMENT="$ROOT/benches/results/ingress.md"
CANDIDATES=(skiff nginx haproxy)
read -ra CASES <<<"${CASES:-h1 h1tls h2tls grpc}"
declare -A CASE_NAME=([h1]="HTTP/1.1 keep-alive" [h1tls]="HTTPS HTTP/1.1" [h2tls]="HTTP/2 over TLS"
  [grpc]="gRPC unary over TLS")
# Plain and TLS ports per candidate.
declare -A HTTP_PORT=([skiff]=18081 [nginx]=18082 [haproxy]=18083)
declare -A HTTPS_PORT=([skiff]=18441 [nginx]=18442 [haproxy]=18443)

if [ "$(id -u)" -ne 0 ]; then
  echo "run as root (taskset, nginx's worker user)" >&2
  exit 1
fi
missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
command -v jq >/dev/null || missing+=(jq)
if [ "$CROSSCHECK" = 1 ]; then
  command -v wrk >/dev/null || missing+=(wrk)
  command -v h2load >/dev/null || missing+=(nghttp2-client)
fi
if [ ${#missing[@]} -gt 0 ]; then
  # Debian starts packaged daemons on install where it can; nothing here needs them running.
  # A fresh machine may have no package lists yet (or stale ones): update once and retry.
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
fi

TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
if [ -z "${BENCH_SERVE:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p skiff-ingress --example bench_serve)
  BENCH_SERVE="$TARGET_DIR/release/examples/bench_serve"
fi
if [ -z "${SKIFF:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p skiff)
  SKIFF="$TARGET_DIR/release/skiff"
fi

WORK=$(mktemp -d /tmp/skiff-ingress-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
# The commands of the measurement, for the fragment: one per case, as run for skiff.
url() { # candidate case → the target
  case $2 in
    h1) echo "http://$HOST:${HTTP_PORT[$1]}/" ;;
    h1tls | h2tls) echo "https://$HOST:${HTTPS_PORT[$1]}/" ;;
    grpc) echo "https://$HOST:${HTTPS_PORT[$1]}" ;;
  esac
}
bench_args() { # candidate case → skiff bench arguments (without --rate/--duration/--json)
  local tls=(--ca "$WORK/ca.crt")
  case $2 in
    h1) echo "http $(url "$1" h1) --connections $CONNS" ;;
    h1tls) echo "http $(url "$1" h1tls) ${tls[*]} --connections $CONNS" ;;
    h2tls) echo "h2 $(url "$1" h2tls) ${tls[*]} --connections $H2_CONNS --streams $H2_STREAMS" ;;
    grpc) echo "grpc $(url "$1" grpc) ${tls[*]} --connections $H2_CONNS --streams $H2_STREAMS --payload ping" ;;
  esac
}
bench() { # json, skiff bench arguments... (never fails: a failed run leaves its error in the JSON)
  local json=$1
  shift
  # shellcheck disable=SC2046
  taskset -c "$CLIENT_CPU" "$SKIFF" bench "$@" --threads 1 --warmup "${WARMUP}s" --quiet \
    --json "$json" >"${json%.json}.txt" 2>&1 || true
}


CPU_TABLE="$OUT/proxy-cpu.txt"
# REPORT_ONLY=1: no measurement, the fragment and plots again from the results in $OUT.
if [ "$REPORT_ONLY" != 1 ]; then
rm -rf "$OUT"
mkdir -p "$OUT"
rm -f "$FRAGMENT"

# A throwaway CA and a leaf for $HOST signed by it: rustls (skiff bench) refuses a self-signed
# CA certificate as the server's own (CaUsedAsEndEntity). Clients trust ca.crt.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj "/CN=skiff bench CA" -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$HOST" \
  -keyout "$WORK/tls.key" -out "$WORK/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n' "$HOST" >"$WORK/leaf.ext"
openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 30 -extfile "$WORK/leaf.ext" -out "$WORK/tls.crt" 2>/dev/null
cat "$WORK/tls.crt" "$WORK/tls.key" >"$WORK/tls.pem"
mkdir -p "$WORK/nginx-backend" "$WORK/nginx"

# nginx's temp paths default under /var/lib/nginx; each instance gets its own prefix instead.
nginx_common() {
  cat <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
EOF
}
{
  nginx_common "$WORK/nginx-backend"
  cat <<EOF
http {
    access_log off;
    client_body_temp_path $WORK/nginx-backend/body;
    proxy_temp_path $WORK/nginx-backend/proxy;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$BACKEND_PORT;
        location / { return 200 "ok"; }
    }
}
EOF
} >"$WORK/nginx-backend.conf"
{
  nginx_common "$WORK/nginx"
  cat <<EOF
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    keepalive_requests 100000000;
    upstream backend {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 128;
        keepalive_requests 100000000;
    }
    upstream grpc_backend {
        server 127.0.0.1:$GRPC_PORT;
        keepalive 128;
        keepalive_requests 100000000;
    }
    ssl_certificate $WORK/tls.crt;
    ssl_certificate_key $WORK/tls.key;
    # Unknown hosts get 404, as from the other two.
    server {
        listen 127.0.0.1:${HTTP_PORT[nginx]} default_server;
        listen 127.0.0.1:${HTTPS_PORT[nginx]} ssl http2 default_server;
        return 404;
    }
    server {
        listen 127.0.0.1:${HTTP_PORT[nginx]};
        listen 127.0.0.1:${HTTPS_PORT[nginx]} ssl http2;
        server_name $HOST;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
        location $GRPC_PREFIX/ {
            grpc_pass grpc://grpc_backend;
            grpc_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            grpc_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF
} >"$WORK/nginx.conf"
cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
    log stderr format raw local0 err
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    option forwardfor
    http-reuse always
frontend bench
    bind 127.0.0.1:${HTTP_PORT[haproxy]}
    bind 127.0.0.1:${HTTPS_PORT[haproxy]} ssl crt $WORK/tls.pem alpn h2,http/1.1
    http-request set-header X-Forwarded-Proto https if { ssl_fc }
    http-request set-header X-Forwarded-Proto http if !{ ssl_fc }
    acl bench_host hdr(host),field(1,:) -i $HOST
    acl grpc_path path_beg $GRPC_PREFIX/
    http-request deny deny_status 404 unless bench_host
    use_backend grpc if grpc_path
    use_backend backend
backend backend
    server b1 127.0.0.1:$BACKEND_PORT
backend grpc
    server g1 127.0.0.1:$GRPC_PORT proto h2
EOF

start() { # cpu, log, command...
  local cpu=$1 log=$2
  shift 2
  taskset -c "$cpu" "$@" >"$log" 2>&1 &
  PIDS+=($!)
}
# Something already listening on one of the ports (another run of this script?) would make a
# candidate fail to start, or answer in its place: refuse, naming the port.
for port in "$BACKEND_PORT" "$GRPC_PORT" "${HTTP_PORT[@]}" "${HTTPS_PORT[@]}"; do
  if [ -n "$(ss -Htln "sport = :$port" 2>/dev/null)" ]; then
    echo "port $port is already in use on this machine (another benchmark run?); the ports are" \
      "BACKEND_PORT, GRPC_PORT, 18081-18083 and 18441-18443" >&2
    exit 1
  fi
done
start "$CLIENT_CPU" "$WORK/backend.log" nginx -p "$WORK/nginx-backend" -c "$WORK/nginx-backend.conf"
start "$CLIENT_CPU" "$WORK/grpc-echo.log" "$SKIFF" grpc-echo --listen 127.0.0.1 --port "$GRPC_PORT"
start "$SERVER_CPU" "$WORK/nginx.log" nginx -p "$WORK/nginx" -c "$WORK/nginx.conf"
start "$SERVER_CPU" "$WORK/haproxy.log" haproxy -f "$WORK/haproxy.cfg"
start "$SERVER_CPU" "$WORK/skiff.log" "$BENCH_SERVE" serve --routes "$ROUTES" --threads 1 \
  --host "$HOST" --backend "127.0.0.1:$BACKEND_PORT" --grpc-backend "127.0.0.1:$GRPC_PORT" \
  --http "127.0.0.1:${HTTP_PORT[skiff]}" --https "127.0.0.1:${HTTPS_PORT[skiff]}" \
  --cert "$WORK/tls.crt" --key "$WORK/tls.key"
declare -A PID=([nginx]=${PIDS[2]} [haproxy]=${PIDS[3]} [skiff]=${PIDS[4]})

# Every candidate answers the bench host with the backend's body on HTTP/1.1, HTTPS and
# HTTP/2, gRPC through the echo route, and 404 for an unknown host.
for c in "${CANDIDATES[@]}"; do
  ok=
  for _ in $(seq 150); do
    if [ "$(curl -s "http://$HOST:${HTTP_PORT[$c]}/" 2>/dev/null)" = ok ]; then
      ok=1
      break
    fi
    sleep 0.2
  done
  [ -n "$ok" ] || { echo "$c does not answer" >&2; cat "$WORK"/*.log >&2; exit 1; }
  for v in --http1.1 --http2; do
    body=$(curl -s --cacert "$WORK/ca.crt" $v "https://$HOST:${HTTPS_PORT[$c]}/")
    [ "$body" = ok ] || { echo "$c: https $v answered [$body]" >&2; exit 1; }
  done
  proto=$(curl -s --cacert "$WORK/ca.crt" --http2 -o /dev/null -w '%{http_version}' \
    "https://$HOST:${HTTPS_PORT[$c]}/")
  [ "$proto" = 2 ] || { echo "$c: no HTTP/2 over TLS (got $proto)" >&2; exit 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: other.test' "http://127.0.0.1:${HTTP_PORT[$c]}/")
  [ "$code" = 404 ] || { echo "$c: unknown host answered $code, not 404" >&2; exit 1; }
  taskset -c "$CLIENT_CPU" "$SKIFF" bench grpc "$(url "$c" grpc)" --ca "$WORK/ca.crt" --payload ping \
    --connections 1 --duration 1s --warmup 0s --quiet --json "$WORK/check-$c.json" >/dev/null 2>&1 || true
  read -r n e err < <(jq -r '"\(.requests) \(.errors.total) \(.error // "-")"' "$WORK/check-$c.json" 2>/dev/null ||
    echo "0 0 no-json")
  [ "$n" -gt 0 ] && [ "$e" = 0 ] || { echo "$c: gRPC echo through the proxy failed: $n answers, $e errors, $err" >&2; exit 1; }
done

wrk_run() { # url → requests/s
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" "$1" | awk '/^Requests\/sec/ {print $2}'
}
h2load_run() { # url → requests/s
  taskset -c "$CLIENT_CPU" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$DURATION" "$1" |
    awk '/^finished in/ {gsub(",", "", $4); print $4}'
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICKS=$(getconf CLK_TCK)
# One line per closed-loop run: candidate case rep requests/proxy-CPU-s proxy-busy% crosscheck-RPS
: >"$CPU_TABLE"
for rep in $(seq "$REPS"); do
  for c in "${CANDIDATES[@]}"; do
    for t in "${CASES[@]}"; do
      base="$OUT/$t-$c-$rep"
      before=$(cpu_ticks "${PID[$c]}")
      # shellcheck disable=SC2046
      bench "$base.json" $(bench_args "$c" "$t") --duration "${DURATION}s"
      after=$(cpu_ticks "${PID[$c]}")
      # shellcheck disable=SC2046
      bench "$base-open.json" $(bench_args "$c" "$t") --duration "${LAT_DURATION}s" --rate "$RATE/s"
      cross=-
      if [ "$CROSSCHECK" = 1 ]; then
        case $t in
          h1 | h1tls) cross=$(wrk_run "$(url "$c" "$t")" | tee "$base-wrk.txt") ;;
          h2tls) cross=$(h2load_run "$(url "$c" "$t")" | tee "$base-h2load.txt") ;;
        esac
      fi
      # Requests per second of proxy CPU (utime + stime, warm-up included, so the warm-up is
      # counted at the measured rate): what the proxy costs even when the client core is the
      # limit; and how busy the proxy core was.
      rps=$(jq -r '.throughput' "$base.json" 2>/dev/null || echo 0)
      read -r per_cpu busy < <(awk -v r="$rps" -v d=$((DURATION + WARMUP)) -v t=$((after - before)) \
        -v hz="$TICKS" 'BEGIN {printf "%.0f %.0f\n", (t > 0) ? r * d / (t / hz) : 0, 100 * t / hz / d}')
      echo "$c $t $rep $per_cpu $busy ${cross:--}" >>"$CPU_TABLE"
      jq -r --arg c "$c" --arg t "$t" --arg rep "$rep" --arg busy "$busy" \
        '"\($c) \($t) #\($rep): \(.throughput | floor) req/s, p50 \(.latency_us.p50) µs, p99 \(.latency_us.p99) µs, \(.errors.total) errors, proxy core \($busy)%\(if .error then ", " + .error else "" end)"' \
        "$base.json" >&2 2>/dev/null || echo "$c $t #$rep: no result" >&2
    done
  done
done

rss() { awk '/^VmRSS/ {printf "%.1f\n", $2/1024}' "/proc/$1/status"; }
for c in "${CANDIDATES[@]}"; do echo "$c $(rss "${PID[$c]}")"; done >"$OUT/rss.txt"
cut -d' ' -f1-3 /proc/loadavg >"$OUT/load.txt"
taskset -c "$SERVER_CPU" "$BENCH_SERVE" update --routes "$ROUTES" --reps "$UPDATES" --threads 1 >"$OUT/update.txt"
fi # REPORT_ONLY

declare -A RSS
while read -r c r; do RSS[$c]=$r; done <"$OUT/rss.txt"
LOAD=$(cat "$OUT/load.txt")
UPDATE=$(cat "$OUT/update.txt")

# The median; of an even count, the mean of the middle two.
median() { sort -g | awk '{v[NR]=$1} END {if (NR == 0) print "nan"; else if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2] + v[NR/2+1]) / 2}'; }
jqcol() { # candidate case suffix jq-expression → median over the repetitions that ran (a run
  # that failed, e.g. no answer to its first request, counts in the errors column only)
  for rep in $(seq "$REPS"); do
    jq -r "if .error == null and .requests > 0 then $4 else empty end" "$OUT/$2-$1-$rep$3.json" 2>/dev/null || true
  done | median
}
cpucol() { # candidate case column → median over the closed-loop runs that ran
  awk -v c="$1" -v t="$2" '$1 == c && $2 == t {print $3}' "$CPU_TABLE" | while read -r rep; do
    if jq -e '.error == null and .requests > 0' "$OUT/$2-$1-$rep.json" >/dev/null 2>&1; then
      awk -v c="$1" -v t="$2" -v r="$rep" -v k="$3" '$1 == c && $2 == t && $3 == r && $k != "-" {print $k}' "$CPU_TABLE"
    fi
  done | median
}
errsum() { # candidate case → errors by kind over every run of the case, and failed runs
  for rep in $(seq "$REPS"); do
    for s in "" -open; do
      jq -r '(.errors.by_kind | to_entries[] | "\(.value)\t\(.key)"),
        (if .error then "1\trun failed: " + .error else empty end)' "$OUT/$2-$1-$rep$s.json" 2>/dev/null || true
    done
  done | awk -F'\t' '{n[$2] += $1} END {for (k in n) printf "%s%d× %s", (i++ ? "; " : ""), n[k], k}'
}
fmt_us() { awk -v v="$1" 'BEGIN {if (v == "nan") print "–"; else if (v >= 1000000) printf "%.2f s\n", v / 1000000; else if (v >= 1000) printf "%.2f ms\n", v / 1000; else printf "%.0f µs\n", v}'; }
fmt_n() { # 12345.6 → 12,346
  awk -v v="$1" 'BEGIN {
    if (v == "nan") { print "–"; exit }
    s = sprintf("%.0f", v); out = ""
    while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
    print s out }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "nan" || b == "nan" || b == 0) print "–"; else printf "%.2f×\n", a / b}'; }

# The plot per case: the open-loop run of each candidate whose p99 is the median of its reps.
for t in "${CASES[@]}"; do
  inputs=()
  labels=()
  for c in "${CANDIDATES[@]}"; do
    m=$(jqcol "$c" "$t" -open '.latency_us.p99')
    for rep in $(seq "$REPS"); do
      f="$OUT/$t-$c-$rep-open.json"
      if [ "$(jq -r '.latency_us.p99' "$f" 2>/dev/null)" = "$m" ] && [ "$(jq -r '.requests' "$f")" -gt 0 ]; then
        inputs+=("$f")
        labels+=(--label "$c")
        break
      fi
    done
  done
  if [ ${#inputs[@]} -gt 0 ]; then
    "$SKIFF" bench plot "${inputs[@]}" "${labels[@]}" -o "$OUT/$t.svg" >/dev/null ||
      echo "plot of $t failed" >&2
  fi
done

NGINX_V=$(nginx -v 2>&1 | awk -F/ '{print $2}')
HAPROXY_V=$(haproxy -v | awk 'NR==1 {print $3}')
tmp="$FRAGMENT.tmp"
{
  echo "## Ingress: skiff vs nginx $NGINX_V and HAProxy $HAPROXY_V"
  echo
  echo "Each proxy routes host \`$HOST\` path \`/\` to one HTTP/1.1 backend (nginx answering \`200 ok\`)"
  echo "and path \`$GRPC_PREFIX/\` to one gRPC backend (\`skiff grpc-echo\`) over HTTP/2, with the same"
  echo "ECDSA P-256 certificate; skiff also serves $ROUTES other Ingress rules. One proxy core (CPU"
  echo "$SERVER_CPU, one worker each); \`skiff bench\` (one thread) and both backends on CPU $CLIENT_CPU."
  echo "Median of $REPS interleaved repetitions (skiff, nginx, haproxy, skiff, ...). Closed loop:"
  echo "${DURATION} s as fast as answers come ($CONNS connections for HTTP/1.1, $H2_CONNS × $H2_STREAMS streams"
  echo "for HTTP/2 and gRPC), so its p50/p99 are mostly queueing; open loop: $RATE requests/s for"
  echo "${LAT_DURATION} s, latency from each request's intended send time (the plots). Requests per proxy"
  echo "CPU-second: the closed-loop requests over the proxy's utime + stime."
  echo
  echo "| proxy | case | RPS | p50 | p99 | p50 @ $RATE/s | p99 @ $RATE/s | requests per proxy CPU-s | proxy core busy | RSS | errors |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  for t in "${CASES[@]}"; do
    for c in "${CANDIDATES[@]}"; do
      echo "| $c | ${CASE_NAME[$t]} | $(fmt_n "$(jqcol "$c" "$t" "" .throughput)") |" \
        "$(fmt_us "$(jqcol "$c" "$t" "" .latency_us.p50)") | $(fmt_us "$(jqcol "$c" "$t" "" .latency_us.p99)") |" \
        "$(fmt_us "$(jqcol "$c" "$t" -open .latency_us.p50)") | $(fmt_us "$(jqcol "$c" "$t" -open .latency_us.p99)") |" \
        "$(fmt_n "$(cpucol "$c" "$t" 4)") | $(cpucol "$c" "$t" 5)% | ${RSS[$c]} MiB | $(e=$(errsum "$c" "$t"); echo "${e:-0}") |"
    done
  done
  echo
  echo "Ratios (skiff ÷ peer; above 1 is better for RPS and requests per CPU-second, below 1 for latency):"
  echo
  echo "| case | peer | RPS | requests per proxy CPU-s | p99 (closed) | p50 @ $RATE/s | p99 @ $RATE/s |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  for t in "${CASES[@]}"; do
    for p in nginx haproxy; do
      echo "| ${CASE_NAME[$t]} | $p | $(ratio "$(jqcol skiff "$t" "" .throughput)" "$(jqcol "$p" "$t" "" .throughput)") |" \
        "$(ratio "$(cpucol skiff "$t" 4)" "$(cpucol "$p" "$t" 4)") |" \
        "$(ratio "$(jqcol skiff "$t" "" .latency_us.p99)" "$(jqcol "$p" "$t" "" .latency_us.p99)") |" \
        "$(ratio "$(jqcol skiff "$t" -open .latency_us.p50)" "$(jqcol "$p" "$t" -open .latency_us.p50)") |" \
        "$(ratio "$(jqcol skiff "$t" -open .latency_us.p99)" "$(jqcol "$p" "$t" -open .latency_us.p99)") |"
    done
  done
  echo
  max_client=$(for f in "$OUT"/*.json; do jq -r '.client_cpu.percent' "$f" 2>/dev/null || true; done | sort -g | tail -1)
  max_client=$(awk -v v="$max_client" 'BEGIN {if (v != "") printf "%.0f", v}')
  echo "Client (\`skiff bench\`, one thread): at most ${max_client:-?}% of its core in any run."
  if [ "$CROSSCHECK" = 1 ]; then
    echo "Cross-check, RPS from the usual tools (median; wrk -t1 -c$CONNS for HTTP/1.1, h2load -t1"
    echo "-c$H2_CONNS -m$H2_STREAMS for HTTP/2): $(for t in h1 h1tls h2tls; do for c in "${CANDIDATES[@]}"; do
      printf '%s %s %s; ' "$c" "$t" "$(fmt_n "$(cpucol "$c" "$t" 6)")"
    done; done)"
  fi
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
  echo "Configuration changes (\`bench_serve update\`, one core): $UPDATE"
  echo
  echo "Versions: nginx $NGINX_V, HAProxy $HAPROXY_V, $("$SKIFF" --version), OpenSSL $(openssl version | awk '{print $2}')."
  echo "Load average after the runs: $LOAD."
  echo
  echo "Commands (run by \`benches/ingress/run.sh\`; each \`skiff bench\` pinned with \`taskset -c $CLIENT_CPU\`):"
  echo
  echo '```text'
  echo "taskset -c $SERVER_CPU bench_serve serve --routes $ROUTES --threads 1 --host $HOST --backend 127.0.0.1:$BACKEND_PORT --grpc-backend 127.0.0.1:$GRPC_PORT --http 127.0.0.1:${HTTP_PORT[skiff]} --https 127.0.0.1:${HTTPS_PORT[skiff]} --cert tls.crt --key tls.key"
  echo "taskset -c $SERVER_CPU nginx -c nginx.conf          # worker_processes 1, master_process off"
  echo "taskset -c $SERVER_CPU haproxy -f haproxy.cfg       # nbthread 1"
  echo "taskset -c $CLIENT_CPU nginx -c nginx-backend.conf  # the HTTP backend"
  echo "taskset -c $CLIENT_CPU skiff grpc-echo --listen 127.0.0.1 --port $GRPC_PORT"
  for t in "${CASES[@]}"; do
    echo "skiff bench $(bench_args skiff "$t" | sed "s|$WORK/||") --threads 1 --warmup ${WARMUP}s --duration ${DURATION}s --json $t-skiff-REP.json"
    echo "skiff bench $(bench_args skiff "$t" | sed "s|$WORK/||") --threads 1 --warmup ${WARMUP}s --duration ${LAT_DURATION}s --rate $RATE/s --json $t-skiff-REP-open.json"
  done
  if [ "$CROSSCHECK" = 1 ]; then echo "wrk -t1 -c$CONNS -d${DURATION}s URL; h2load -t1 -c$H2_CONNS -m$H2_STREAMS -D $DURATION URL"; fi
  echo "taskset -c $SERVER_CPU bench_serve update --routes $ROUTES --reps $UPDATES --threads 1"
  echo '```'
  echo
  echo "nginx and haproxy: the same with their ports (${HTTP_PORT[nginx]}/${HTTPS_PORT[nginx]} and ${HTTP_PORT[haproxy]}/${HTTPS_PORT[haproxy]}); their"
  echo "configurations are in the script."
} >"$tmp"
mv "$tmp" "$FRAGMENT"
cat "$FRAGMENT"
