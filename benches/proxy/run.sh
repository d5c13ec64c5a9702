#!/usr/bin/env bash
# Service data planes end to end: pod → ClusterIP through skiff's eBPF socket load balancer
# and through its userspace proxy, against pod → pod IP (the physical limit) and against an
# nftables DNAT ruleset of the shape kube-proxy's nftables mode programs (the peer).
#
# For each data plane (MODES) one `skiff up --proxy-mode MODE` (release binary $SKIFF, its own
# name, free ports, data dir in a temp dir), pinned to $SERVER_CPU (so its pods are too: the
# echo backend, and the userspace proxy itself), runs a 1-replica Deployment of skiff.dev/echo
# (the one backend) behind a ClusterIP Service, and a skiff.dev/pause "client" pod. The load
# generator `skiff bench` runs inside the client pod's network namespace (`ip netns exec
# skiff-NAME-pod-UID`), pinned to $CLIENT_CPU with one thread, against three targets:
#   direct    the echo pod's IP:8080
#   clusterip the Service's ClusterIP:80 (translated by the data plane under test)
#   nftables  VIP $VIP:80 (from 10.112.0.0/16, outside the service CIDR and, like it, routed
#             `unreachable` in the node namespace), DNATed to the echo pod by an nftables table
#             in skiff's node namespace: a `service-ips` verdict map (daddr . proto . port) →
#             per-service chain → `numgen random` → per-endpoint chain → `dnat`, with
#             kube-proxy's mark-for-masquerade/masquerading chains and its endpoints-check
#             filter hook. It is loaded only while the nftables candidate runs: a NAT table
#             turns on conntrack in the namespace (and, with the bridge calling netfilter, for
#             bridged pod-to-pod traffic too), which the other candidates must not pay.
# Two measurements per candidate, interleaved (direct, clusterip, nftables; REPS times):
#   connect  `skiff bench tcp` connect-only (a request is a TCP handshake), closed loop,
#            $TCP_CONNS connections: new connections per second and connect latency;
#   http     `skiff bench http` keep-alive, closed loop, $HTTP_CONNS connections: requests per
#            second and request latency.
# Then (SCALE, eBPF session only) new-connection cost against the number of Services: N
# selector-less ClusterIP Services created through the API (the eBPF maps hold all of them),
# and an nftables table with N services, connect runs at each N.
# The client pod's namespace gets a wide ephemeral port range and tcp_tw_reuse so connect
# runs do not run out of ports; the node namespace gets the VIP route. Everything lives in
# skiff's namespaces and goes when `skiff up` exits (SIGTERM by PID on exit).
#
# Output: $OUT/*.json (skiff bench JSON, one per run), $OUT/*.svg (skiff bench plot of the
# median run of each candidate), $OUT/../proxy.md (the table, commands, versions).
# Usage (as root): benches/proxy/run.sh     (FRAGMENT_ONLY=1: redo plots and fragment from $OUT)
# Environment: SKIFF ($CARGO_TARGET_DIR or target, /release/skiff) MODES ("ebpf userspace") REPS (5) SCALE_REPS (3) DURATION (5s)
#              TCP_CONNS (4) HTTP_CONNS (10) SERVER_CPU (0) CLIENT_CPU (1) SCALE ("1000 10000";
#              empty: skip) OUT (benches/results/proxy)
# Needs: nft (Debian package nftables), jq, curl (installed with apt-get if missing) and kubectl
# 1.29-1.33 (not in Debian: upstream's).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SKIFF=${SKIFF:-${CARGO_TARGET_DIR:-$ROOT/target}/release/skiff}
MODES=${MODES:-ebpf userspace}
REPS=${REPS:-5}
SCALE_REPS=${SCALE_REPS:-3}
DURATION=${DURATION:-5s}
TCP_CONNS=${TCP_CONNS:-4}
HTTP_CONNS=${HTTP_CONNS:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SCALE=${SCALE-1000 10000}
OUT=${OUT:-$ROOT/benches/results/proxy}
MD=$(dirname "$OUT")/proxy.md
VIP=10.112.0.10
VIP_CIDR=10.112.0.0/16
POD_CIDR=10.244.0.0/16
NFT_TABLE=kube-proxy-bench

if [ "$(id -u)" -ne 0 ]; then
  echo "run as root (network namespaces, BPF, nftables)" >&2
  exit 1
fi
[ -x "$SKIFF" ] || { echo "no skiff binary at $SKIFF (cargo build --release -p skiff, or set SKIFF)" >&2; exit 1; }
missing=()
command -v nft >/dev/null || missing+=(nftables)
command -v jq >/dev/null || missing+=(jq)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  # A fresh machine may have no package lists yet (or stale ones): update once and retry.
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
fi
# kubectl is not installed here: Debian's kubernetes-client (1.20) is older than the 1.29-1.33
# skiff serves, so it comes from upstream.
command -v kubectl >/dev/null || {
  echo "needs kubectl 1.29-1.33 on PATH (https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/;" \
    "Debian's kubernetes-client is too old)" >&2
  exit 1
}
command -v taskset >/dev/null || { echo "needs taskset (util-linux)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/skiff-proxy-bench.XXXXXX)
UP_PID=
stop_up() {
  if [ -n "$UP_PID" ]; then
    kill -TERM "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
    UP_PID=
  fi
}
cleanup() {
  stop_up
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$OUT"
if [ -z "${FRAGMENT_ONLY:-}" ]; then
  rm -f "$OUT"/*.json "$OUT"/*.svg
  echo "LOAD_START='$(cut -d' ' -f1-3 /proc/loadavg)'" >"$WORK/run.env"
  echo "RUN_DATE=$(date -u +%F)" >>"$WORK/run.env"
else
  MODES= # only the plots and the fragment, from the JSON of the last run
fi

log() { echo "[$(date +%T)] $*" >&2; }

manifests() {
  cat <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
        - name: echo
          image: skiff.dev/echo
          env: [{name: PORT, value: "8080"}]
          readinessProbe: {httpGet: {path: /health, port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers: [{name: pause, image: skiff.dev/pause}]
EOF
}

# kube-proxy nftables-mode shape: N services (the first is the bench VIP → the echo pod; the
# others 10.112.x.y → the same pod, never used), each a verdict-map element → service chain →
# numgen → endpoint chain → dnat.
nft_ruleset() { # n backend_ip → ruleset on stdout
  local n=$1 be=$2
  awk -v n="$n" -v be="$be" -v vip="$VIP" -v podcidr="$POD_CIDR" -v t="$NFT_TABLE" '
  function chain(name, hook, body) {
    printf "  chain %s {\n", name
    if (hook != "") printf "    %s; policy accept;\n", hook
    printf "%s  }\n", body
  }
  BEGIN {
    printf "table ip %s {\n", t
    print "  map no-endpoint-services {\n    type ipv4_addr . inet_proto . inet_service : verdict\n  }"
    print "  map service-ips {\n    type ipv4_addr . inet_proto . inet_service : verdict"
    printf "    elements = {"
    for (i = 0; i < n; i++) {
      ip = (i == 0) ? vip : sprintf("10.112.%d.%d", 1 + int(i / 250), 1 + i % 250)
      addr[i] = ip
      printf "%s\n      %s . tcp . 80 : goto service-%d", (i ? "," : ""), ip, i
    }
    print " }\n  }"
    chain("filter-forward", "type filter hook forward priority -110", "    ct state new jump endpoints-check\n")
    chain("filter-output", "type filter hook output priority -110", "    ct state new jump endpoints-check\n")
    chain("endpoints-check", "", "    ip daddr . meta l4proto . th dport vmap @no-endpoint-services\n")
    chain("nat-prerouting", "type nat hook prerouting priority dstnat", "    jump services\n")
    chain("nat-output", "type nat hook output priority -100", "    jump services\n")
    chain("nat-postrouting", "type nat hook postrouting priority srcnat", "    jump masquerading\n")
    chain("mark-for-masquerade", "", "    meta mark set meta mark or 0x4000\n")
    chain("masquerading", "", "    meta mark and 0x4000 == 0 return\n    meta mark set meta mark xor 0x4000\n    masquerade fully-random\n")
    chain("services", "", "    ip daddr . meta l4proto . th dport vmap @service-ips\n")
    for (i = 0; i < n; i++) {
      chain("service-" i, "", sprintf("    ip daddr %s tcp dport 80 ip saddr != %s jump mark-for-masquerade\n    numgen random mod 1 vmap { 0 : goto endpoint-%d }\n", addr[i], podcidr, i))
      chain("endpoint-" i, "", sprintf("    ip saddr %s jump mark-for-masquerade\n    meta l4proto tcp dnat to %s:8080\n", be, be))
    }
    print "}"
  }'
}

selectorless_services() { # from to → a List of Services on stdout
  awk -v a="$1" -v b="$2" 'BEGIN {
    print "{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": ["
    for (i = a; i < b; i++)
      printf "%s{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"scale-%d\"}, \"spec\": {\"ports\": [{\"port\": 80, \"targetPort\": 8080}]}}\n", (i > a ? "," : ""), i
    print "]}"
  }'
}

nft_in_node() { ip netns exec "$NODE_NS" nft "$@"; }
nft_load() { # n
  nft_ruleset "$1" "$ECHO_IP" >"$WORK/nft.rules"
  nft_in_node -f "$WORK/nft.rules"
}
nft_unload() { nft_in_node delete table ip "$NFT_TABLE" 2>/dev/null || true; }

in_client() { ip netns exec "$CLIENT_NS" "$@"; }
bench() { # name kind target → JSON in $OUT/name.json
  local name=$1 kind=$2 target=$3 json="$OUT/$1.json"
  local args=(--duration "$DURATION" --threads 1 --quiet --json "$json")
  if [ "$kind" = connect ]; then
    args=(tcp "$target" --connections "$TCP_CONNS" "${args[@]}")
  else
    args=(http "http://$target/" --connections "$HTTP_CONNS" "${args[@]}")
  fi
  in_client taskset -c "$CLIENT_CPU" "$SKIFF" bench "${args[@]}" >/dev/null || {
    echo "skiff bench ${args[*]} failed (inside $CLIENT_NS)" >&2
    exit 1
  }
  log "$(printf '%-34s %10.0f/s  p50 %7.1f µs  p99 %7.1f µs  errors %s' "$name" \
    "$(jq .throughput "$json")" "$(jq .latency_us.p50 "$json")" "$(jq .latency_us.p99 "$json")" \
    "$(jq .errors.total "$json")")"
}
target_of() {
  case $1 in
    direct) echo "$ECHO_IP:8080" ;;
    clusterip) echo "$CLUSTER_IP:80" ;;
    nftables) echo "$VIP:80" ;;
  esac
}
run_candidate() { # mode candidate rep kinds...
  local mode=$1 cand=$2 rep=$3
  shift 3
  [ "$cand" = nftables ] && nft_load "${NFT_SERVICES:-1}"
  for kind in "$@"; do
    bench "$mode-$cand-$kind${SUFFIX:-}-$rep" "$kind" "$(target_of "$cand")"
  done
  [ "$cand" = nftables ] && nft_unload
  return 0
}

admin_metric() { # name → value
  curl -s "http://$ADMIN/metrics" | awk -v m="$1" '$1 == m {print $2}'
}

for mode in $MODES; do
  NAME=pbench$$$mode
  NODE_NS=skiff-$NAME
  DATA=$WORK/$mode
  mkdir -p "$DATA"
  log "skiff up --proxy-mode $mode (netns $NODE_NS)"
  taskset -c "$SERVER_CPU" "$SKIFF" up --name "$NAME" --data-dir "$DATA" --proxy-mode "$mode" \
    --api-port 0 --http-port 0 --https-port 0 --dns-port 0 --admin-addr 127.0.0.1:0 \
    >"$DATA/up.out" 2>"$DATA/up.log" &
  UP_PID=$!
  KUBECONFIG=
  for _ in $(seq 600); do
    KUBECONFIG=$(sed -n 's/^skiff is ready: kubeconfig=//p' "$DATA/up.out")
    [ -n "$KUBECONFIG" ] && break
    kill -0 "$UP_PID" 2>/dev/null || { tail -20 "$DATA/up.log" >&2; exit 1; }
    sleep 0.2
  done
  [ -n "$KUBECONFIG" ] || { echo "skiff up not ready in 120 s" >&2; tail -20 "$DATA/up.log" >&2; exit 1; }
  export KUBECONFIG
  sed 's/\x1b\[[0-9;]*m//g' "$DATA/up.log" >"$DATA/up.txt"
  ADMIN=$(grep 'admin endpoint' "$DATA/up.txt" | grep -o 'addr=127.0.0.1:[0-9]*' | head -1 | cut -d= -f2)
  if [ "$mode" = ebpf ] && ! grep -q 'service proxy: eBPF socket load balancing' "$DATA/up.txt"; then
    echo "asked for ebpf but skiff did not load it:" >&2
    grep 'service proxy' "$DATA/up.txt" >&2
    exit 1
  fi

  manifests | kubectl apply -f - >/dev/null
  kubectl rollout status deployment/echo --timeout=120s >/dev/null
  kubectl wait --for=condition=Ready pod/client --timeout=120s >/dev/null
  kubectl wait --for=condition=Ready pod -l app=echo --timeout=120s >/dev/null
  ECHO_IP=$(kubectl get pod -l app=echo -o jsonpath='{.items[0].status.podIP}')
  CLUSTER_IP=$(kubectl get svc echo -o jsonpath='{.spec.clusterIP}')
  CLIENT_NS=skiff-$NAME-pod-$(kubectl get pod client -o jsonpath='{.metadata.uid}')
  ip netns list | grep -q "^$CLIENT_NS\b" || { echo "no netns $CLIENT_NS" >&2; exit 1; }
  log "echo pod $ECHO_IP, ClusterIP $CLUSTER_IP, VIP $VIP, client netns $CLIENT_NS"

  in_client sysctl -qw net.ipv4.ip_local_port_range="1024 65535" net.ipv4.tcp_tw_reuse=1
  ip netns exec "$NODE_NS" ip route replace unreachable "$VIP_CIDR"

  # Every target answers before anything is measured (and the ClusterIP only once programmed).
  nft_load 1
  for cand in direct clusterip nftables; do
    ok=
    for _ in $(seq 50); do
      if in_client curl -sf -m 2 -o /dev/null "http://$(target_of $cand)/"; then ok=1; break; fi
      sleep 0.2
    done
    [ -n "$ok" ] || { echo "$cand (http://$(target_of $cand)/) does not answer from the client pod" >&2; exit 1; }
  done
  nft_unload

  for rep in $(seq "$REPS"); do
    for cand in direct clusterip nftables; do
      run_candidate "$mode" "$cand" "$rep" connect http
    done
  done

  if [ "$mode" = ebpf ] && [ -n "$SCALE" ]; then
    have=0
    for n in $SCALE; do
      log "programming $n Services (API) and an nftables table of $n services"
      selectorless_services "$have" "$n" >"$WORK/scale.json"
      kubectl create --validate=false -f "$WORK/scale.json" >/dev/null
      have=$n
      # The proxy has them all once its gauge counts them (+ echo, kube-dns, kubernetes).
      for _ in $(seq 600); do
        [ "$(admin_metric skiff_proxy_service_ports)" -ge "$((n + 3))" ] 2>/dev/null && break
        sleep 0.5
      done
      log "proxy service ports programmed: $(admin_metric skiff_proxy_service_ports)"
      for rep in $(seq "$SCALE_REPS"); do
        for cand in direct clusterip nftables; do
          NFT_SERVICES=$n SUFFIX=-$n run_candidate "$mode" "$cand" "$rep" connect
        done
      done
    done
  fi

  # Listen-queue overflows over the whole session: the node namespace (the userspace proxy's
  # listeners) and the echo pod's (the direct target's); each dropped SYN costs a client 1 s.
  ECHO_NS=skiff-$NAME-pod-$(kubectl get pod -l app=echo -o jsonpath='{.items[0].metadata.uid}')
  for ns in "$NODE_NS" "$ECHO_NS"; do
    ip netns exec "$ns" nstat -asz TcpExtListenOverflows | awk '$1 == "TcpExtListenOverflows" {print $2}'
  done | paste -sd' ' >"$OUT/$mode-overflows.txt"
  stop_up
  log "skiff up ($mode) stopped; $(ip netns list | grep -c "$NAME" || true) of its namespaces left"
done
if [ -z "${FRAGMENT_ONLY:-}" ]; then
  echo "LOAD_END='$(cut -d' ' -f1-3 /proc/loadavg)'" >>"$WORK/run.env"
  cp "$WORK/run.env" "$OUT/run.env"
fi
# shellcheck disable=SC1091
. "$OUT/run.env"
MODES=$(for m in ebpf userspace; do [ -e "$OUT/$m-direct-connect-1.json" ] && echo "$m"; done | xargs)

# ---- the fragment: medians of the repetitions --------------------------------------------
reps_of() { # prefix → its repetitions' JSON files (prefix-N.json only, not prefix-SCALE-N.json)
  local f
  for f in "$1"-*.json; do
    if [[ ${f#"$1"-} =~ ^[0-9]+\.json$ ]]; then echo "$f"; fi
  done
}
median_of() { # files... (field from $FIELD) → median
  for f in "$@"; do jq "$FIELD" "$f"; done | sort -g | awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print "nan"}'
}
stat() { # mode cand kind field [suffix]
  # shellcheck disable=SC2046
  FIELD=$4 median_of $(reps_of "$OUT/$1-$2-$3${5:-}")
}
slow() { # JSON files... → requests that took ≥ 900 ms (a SYN retransmit), summed; estimated
  # from the percentile spectrum (the share above the last point under 900 ms)
  for f in "$@"; do
    jq '(.percentiles | map(select(.[1] < 900000)) | last) as $p
      | if .latency_us.max < 900000 then 0 else (.requests * (100 - ($p[0] // 0)) / 100) end' "$f"
  done | awk '{s += $1} END {printf "%.0f", s}'
}
median_run() { # mode cand kind [suffix] → the JSON file of the median-throughput run
  for f in $(reps_of "$OUT/$1-$2-$3${4:-}"); do echo "$(jq .throughput "$f") $f"; done |
    sort -g | awk '{v[NR]=$2} END {print v[int((NR+1)/2)]}'
}

plots=()
for kind in connect http; do
  inputs=() labels=()
  for mode in $MODES; do
    for cand in direct clusterip nftables; do
      # direct and nftables do not depend on the data plane: plot them from the first session.
      if [ "$cand" != clusterip ] && [ "$mode" != "${MODES%% *}" ]; then continue; fi
      inputs+=("$(median_run "$mode" "$cand" "$kind")")
      case $cand in
        clusterip) labels+=(--label "ClusterIP, $mode") ;;
        direct) labels+=(--label "pod IP (direct)") ;;
        nftables) labels+=(--label "nftables DNAT VIP") ;;
      esac
    done
  done
  "$SKIFF" bench plot "${inputs[@]}" "${labels[@]}" -o "$OUT/proxy-$kind.svg" >/dev/null
  plots+=("results/proxy/proxy-$kind.svg")  # relative to benches/RESULTS.md
done

{
  echo "## Service proxy: pod → ClusterIP end to end"
  echo
  echo "$RUN_DATE, \`benches/proxy/run.sh\`, $(uname -r), $(nproc) CPUs, load average" \
    "$LOAD_START at the start and $LOAD_END at the end; $("$SKIFF" --version), $(nft --version | head -1)."
  echo "Median of $REPS interleaved repetitions (direct, clusterip, nftables) of $DURATION each;"
  echo "client \`skiff bench\` in the client pod's netns on CPU $CLIENT_CPU (one thread), skiff up and"
  echo "its pods (the echo backend, the userspace proxy) on CPU $SERVER_CPU."
  echo
  echo "| target | data plane session | new conn/s | connect p50 | connect p99 | req/s (keep-alive) | request p50 | request p99 | conn/s ÷ direct | connect p50 ÷ direct | req/s ÷ direct | request p50 ÷ direct |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for mode in $MODES; do
    dc=$(stat "$mode" direct connect .throughput)
    dh=$(stat "$mode" direct http .throughput)
    dp=$(stat "$mode" direct http .latency_us.p50)
    dc50=$(stat "$mode" direct connect .latency_us.p50)
    for cand in direct clusterip nftables; do
      c=$(stat "$mode" "$cand" connect .throughput)
      h=$(stat "$mode" "$cand" http .throughput)
      p=$(stat "$mode" "$cand" http .latency_us.p50)
      awk -v cand="$cand" -v mode="$mode" -v c="$c" -v h="$h" -v p="$p" -v dc="$dc" -v dh="$dh" -v dp="$dp" -v dc50="$dc50" \
        -v c50="$(stat "$mode" "$cand" connect .latency_us.p50)" -v c99="$(stat "$mode" "$cand" connect .latency_us.p99)" \
        -v p99="$(stat "$mode" "$cand" http .latency_us.p99)" 'BEGIN {
          name = (cand == "direct") ? "pod IP (direct)" : (cand == "clusterip") ? "**ClusterIP (" mode ")**" : "nftables DNAT VIP"
          printf "| %s | %s | %.0f | %.0f µs | %.0f µs | %.0f | %.0f µs | %.0f µs | %.2f | %.2f | %.2f | %.2f |\n",
            name, mode, c, c50, c99, h, p, p99, c / dc, c50 / dc50, h / dh, p / dp }'
    done
  done
  echo
  echo "Connect requests of ≥ 900 ms (a SYN dropped and retransmitted; all $REPS repetitions, estimated"
  echo "from the latency spectrum), and listen-queue overflows (\`nstat\` TcpExtListenOverflows, whole"
  echo "session) in the node namespace / the echo pod's namespace:"
  echo
  for mode in $MODES; do
    # shellcheck disable=SC2046
    printf -- "- %s session: direct %s, ClusterIP %s, nftables %s; overflows %s\n" "$mode" \
      "$(slow $(reps_of "$OUT/$mode-direct-connect"))" "$(slow $(reps_of "$OUT/$mode-clusterip-connect"))" \
      "$(slow $(reps_of "$OUT/$mode-nftables-connect"))" \
      "$(sed 's# # / #' "$OUT/$mode-overflows.txt" 2>/dev/null || echo "not recorded")"
  done
  if [ -n "$SCALE" ] && [[ " $MODES " == *" ebpf "* ]]; then
    echo
    echo "New-connection cost against the number of Services programmed (eBPF session; connect runs;"
    echo "N selector-less ClusterIP Services through the API, an nftables table of N services; median of $SCALE_REPS):"
    echo
    echo "| Services | direct conn/s | connect p50 | ClusterIP (eBPF) conn/s | ÷ direct | connect p50 | nftables conn/s | ÷ direct | connect p50 |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for n in 1 $SCALE; do
      sfx=$([ "$n" = 1 ] && echo "" || echo "-$n")
      awk -v n="$n" -v d="$(stat ebpf direct connect .throughput "$sfx")" -v d50="$(stat ebpf direct connect .latency_us.p50 "$sfx")" \
        -v e="$(stat ebpf clusterip connect .throughput "$sfx")" -v e50="$(stat ebpf clusterip connect .latency_us.p50 "$sfx")" \
        -v f="$(stat ebpf nftables connect .throughput "$sfx")" -v f50="$(stat ebpf nftables connect .latency_us.p50 "$sfx")" \
        'BEGIN {printf "| %s | %.0f | %.0f µs | %.0f | %.2f | %.0f µs | %.0f | %.2f | %.0f µs |\n", n, d, d50, e, e / d, e50, f, f / d, f50}'
    done
  fi
  echo
  echo "Plots (latency by percentile, the median run of each): [new connections](${plots[0]}), [keep-alive requests](${plots[1]})."
  echo
  echo "Commands (inside \`ip netns exec <client pod netns> taskset -c $CLIENT_CPU\`):"
  echo
  echo '```'
  echo "skiff bench tcp  TARGET --connections $TCP_CONNS --duration $DURATION --threads 1   # connect only"
  echo "skiff bench http http://TARGET/ --connections $HTTP_CONNS --duration $DURATION --threads 1"
  echo '```'
  echo
  echo "The nftables ruleset (N = 1; node namespace, loaded only for its runs):"
  echo
  echo '```'
  ECHO_IP=ECHO_POD_IP nft_ruleset 1 ECHO_POD_IP
  echo '```'
} >"$MD"
cat "$MD"
