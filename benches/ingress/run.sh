#!/usr/bin/env bash
# The skiff ingress proxy side by side with nginx and haproxy (Debian packages), measured with
# wrk and h2load.
#
# All three proxy host bench.test, path / (prefix) to one backend, with the same ECDSA P-256
# certificate (openssl, CN/SAN bench.test) on their HTTPS port, HTTP/1.1 keep-alive to the
# backend and X-Forwarded-For/-Proto added. skiff serves $ROUTES more Ingress rules (other
# hosts) from `bench_serve serve` (the proxy without an API server, from generated Ingresses);
# nginx and haproxy get only the bench route. The backend is a separate nginx answering
# `200 ok` (2 bytes). Each proxy is pinned to $SERVER_CPU with one worker (nginx
# worker_processes 1, haproxy nbthread 1, skiff one tokio worker thread); the load generators
# and the backend share $CLIENT_CPU. Runs are interleaved (skiff, nginx, haproxy, skiff, ...),
# $REPS of each, medians reported:
#   - h1:    wrk, HTTP/1.1 keep-alive, $CONNS connections, one thread, $DURATION s;
#   - h1tls: the same over TLS (wrk's handshakes happen once per connection);
#   - h2tls: h2load, HTTP/2 over TLS (ALPN h2), $H2_CONNS connections x $H2_STREAMS streams,
#            $DURATION s; p50/p99 computed from h2load's per-request log (--log-file).
# wrk gives p50/p99 itself (--latency). Also `bench_serve update`: with $ROUTES rules served,
# one Ingress added, compiled and swapped, and requested (p50/p99 over $UPDATES changes).
# gRPC unary is not measured.
#
# Usage (as root): benches/ingress/run.sh
# Environment: ROUTES (10000) DURATION (10) REPS (3) CONNS (50) H2_CONNS (10) H2_STREAMS (10)
#              UPDATES (50) SERVER_CPU (0) CLIENT_CPU (1)
#              BENCH_SERVE (a prebuilt bench_serve binary; default: cargo build --release)
# Needs: nginx, haproxy, wrk, h2load (nghttp2-client), openssl; installed with apt-get if missing.
set -euo pipefail

ROUTES=${ROUTES:-10000}
DURATION=${DURATION:-10}
REPS=${REPS:-3}
CONNS=${CONNS:-50}
H2_CONNS=${H2_CONNS:-10}
H2_STREAMS=${H2_STREAMS:-10}
UPDATES=${UPDATES:-50}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
BACKEND_PORT=${BACKEND_PORT:-18080}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CANDIDATES=(skiff nginx haproxy)
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
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v openssl >/dev/null || missing+=(openssl)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  # Debian starts packaged daemons on install where it can; nothing here needs them running.
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -z "${BENCH_SERVE:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p skiff-ingress --example bench_serve)
  BENCH_SERVE="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/bench_serve"
fi

WORK=$(mktemp -d /tmp/skiff-ingress-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -subj /CN=bench.test -addext subjectAltName=DNS:bench.test \
  -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
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
        server_name bench.test;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
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
    acl bench_host hdr(host),field(1,:) -i bench.test
    http-request deny deny_status 404 unless bench_host
    use_backend backend if bench_host
backend backend
    server b1 127.0.0.1:$BACKEND_PORT
EOF

start() { # cpu, log, command...
  local cpu=$1 log=$2
  shift 2
  taskset -c "$cpu" "$@" >"$log" 2>&1 &
  PIDS+=($!)
}
start "$CLIENT_CPU" "$WORK/backend.log" nginx -p "$WORK/nginx-backend" -c "$WORK/nginx-backend.conf"
start "$SERVER_CPU" "$WORK/nginx.log" nginx -p "$WORK/nginx" -c "$WORK/nginx.conf"
start "$SERVER_CPU" "$WORK/haproxy.log" haproxy -f "$WORK/haproxy.cfg"
start "$SERVER_CPU" "$WORK/skiff.log" "$BENCH_SERVE" serve --routes "$ROUTES" --threads 1 \
  --backend "127.0.0.1:$BACKEND_PORT" --http "127.0.0.1:${HTTP_PORT[skiff]}" \
  --https "127.0.0.1:${HTTPS_PORT[skiff]}" --cert "$WORK/tls.crt" --key "$WORK/tls.key"
declare -A PID=([skiff]=${PIDS[3]} [nginx]=${PIDS[1]} [haproxy]=${PIDS[2]})

# Every candidate answers the bench host with the backend's body on all three protocols.
for c in "${CANDIDATES[@]}"; do
  ok=
  for _ in $(seq 150); do
    if [ "$(curl -s -H 'Host: bench.test' "http://127.0.0.1:${HTTP_PORT[$c]}/" 2>/dev/null)" = ok ]; then
      ok=1
      break
    fi
    sleep 0.2
  done
  [ -n "$ok" ] || { echo "$c does not answer" >&2; cat "$WORK"/*.log >&2; exit 1; }
  for v in --http1.1 --http2; do
    body=$(curl -s -k $v --resolve "bench.test:${HTTPS_PORT[$c]}:127.0.0.1" \
      "https://bench.test:${HTTPS_PORT[$c]}/")
    [ "$body" = ok ] || { echo "$c: https $v answered [$body]" >&2; exit 1; }
  done
  proto=$(curl -s -k --http2 -o /dev/null -w '%{http_version}' \
    --resolve "bench.test:${HTTPS_PORT[$c]}:127.0.0.1" "https://bench.test:${HTTPS_PORT[$c]}/")
  [ "$proto" = 2 ] || { echo "$c: no HTTP/2 over TLS (got $proto)" >&2; exit 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: other.test' "http://127.0.0.1:${HTTP_PORT[$c]}/")
  [ "$code" = 404 ] || { echo "$c: unknown host answered $code, not 404" >&2; exit 1; }
done

wrk_run() { # url → "rps p50_ms p99_ms errors"
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -H 'Host: bench.test' "$1" |
    awk '
      function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
      /^ +50%/ {p50 = ms($2)} /^ +99%/ {p99 = ms($2)} /^Requests\/sec/ {rps = $2}
      /Non-2xx|Socket errors/ {err = err $0 ";"}
      END {printf "%s %.3f %.3f %s\n", rps, p50, p99, (err == "" ? "-" : "errors")}'
}
h2_run() { # url → "rps p50_ms p99_ms errors"
  local log="$WORK/h2.log"
  rm -f "$log"
  local out
  out=$(taskset -c "$CLIENT_CPU" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$DURATION" \
    -H ':authority: bench.test' --log-file="$log" "$1")
  local rps fail
  rps=$(awk '/^finished in/ {print $4}' <<<"$out" | tr -d ',')
  # In -D mode the requests still in flight when time is up count as failed/errored; only
  # answers other than 2xx count here.
  fail=$(awk '/^status codes:/ {print $5 + $7 + $9}' <<<"$out")
  read -r p50 p99 < <(awk '{print $3}' "$log" | sort -g |
    awk '{v[NR]=$1} END {if (NR == 0) {print "- -"; exit} printf "%.3f %.3f\n", v[int(NR*0.5)+1]/1000, v[int(NR*0.99)+1]/1000}')
  echo "$rps $p50 $p99 $([ "${fail:-0}" = 0 ] && echo - || echo "errors")"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
RESULTS="$WORK/results"
: >"$RESULTS"
TICKS=$(getconf CLK_TCK)
for rep in $(seq "$REPS"); do
  for c in "${CANDIDATES[@]}"; do
    for t in h1 h1tls h2tls; do
      before=$(cpu_ticks "${PID[$c]}")
      case $t in
        h1) r=$(wrk_run "http://127.0.0.1:${HTTP_PORT[$c]}/") ;;
        h1tls) r=$(wrk_run "https://127.0.0.1:${HTTPS_PORT[$c]}/") ;;
        h2tls) r=$(h2_run "https://127.0.0.1:${HTTPS_PORT[$c]}/") ;;
      esac
      after=$(cpu_ticks "${PID[$c]}")
      # Requests per second of proxy CPU (utime + stime): what the proxy costs, even when the
      # client core (load generator and backend) is the limit; and how busy the proxy core was.
      read -r per_cpu busy < <(awk -v r="${r%% *}" -v d="$DURATION" -v t=$((after - before)) \
        -v hz="$TICKS" 'BEGIN {printf "%.0f %.0f\n", (t > 0) ? r * d / (t / hz) : 0, 100 * t / hz / d}')
      echo "$c $t $rep $r $per_cpu $busy" | tee -a "$RESULTS" >&2
    done
  done
done

rss() { awk '/^VmRSS/ {printf "%.1f\n", $2/1024}' "/proc/$1/status"; }
median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
col() { awk -v c="$1" -v t="$2" -v k="$3" '$1 == c && $2 == t {print $k}' "$RESULTS" | median; }
echo
echo "skiff ingress vs nginx $(nginx -v 2>&1 | awk -F/ '{print $2}') and haproxy $(haproxy -v | awk 'NR==1 {print $3}')," \
  "one proxy core (cpu $SERVER_CPU), wrk/h2load and the backend on cpu $CLIENT_CPU," \
  "median of $REPS interleaved runs of ${DURATION}s; skiff with $ROUTES extra rules"
printf "%-8s %-6s %10s %9s %9s %12s %10s %7s\n" proxy test RPS "p50 ms" "p99 ms" "req/CPU-s" "proxy CPU%" errors
for t in h1 h1tls h2tls; do
  for c in "${CANDIDATES[@]}"; do
    errs=$(awk -v c="$c" -v t="$t" '$1 == c && $2 == t && $7 != "-"' "$RESULTS" | wc -l)
    printf "%-8s %-6s %10.0f %9s %9s %12s %10s %7s\n" "$c" "$t" "$(col "$c" "$t" 4)" "$(col "$c" "$t" 5)" \
      "$(col "$c" "$t" 6)" "$(col "$c" "$t" 8)" "$(col "$c" "$t" 9)" "$errs/$REPS"
  done
done
for t in h1 h1tls h2tls; do
  awk -v t="$t" -v sr="$(col skiff "$t" 4)" -v nr="$(col nginx "$t" 4)" -v s9="$(col skiff "$t" 6)" \
    -v n9="$(col nginx "$t" 6)" -v sc="$(col skiff "$t" 8)" -v nc="$(col nginx "$t" 8)" \
    'BEGIN {printf "%s skiff/nginx: RPS %.2fx, requests per CPU-second %.2fx, p99 %.2fx\n", t, sr/nr, sc/nc, s9/n9}'
done
echo "RSS MiB after the runs: skiff $(rss "${PID[skiff]}") nginx $(rss "${PID[nginx]}") haproxy $(rss "${PID[haproxy]}")"
echo "load average during the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
taskset -c "$SERVER_CPU" "$BENCH_SERVE" update --routes "$ROUTES" --reps "$UPDATES" --threads 1
