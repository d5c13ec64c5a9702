#!/usr/bin/env bash
# Assembles benches/RESULTS.md from what the end-to-end benchmark scripts left in benches/results/.
#
# The convention every end-to-end script (benches/<area>/run.sh) follows:
#   - raw results go to benches/results/<area>/: the JSON of each `skiff bench ... --json` run,
#     the peer tools' raw outputs (wrk, h2load, dnsperf ...), anything worth keeping for a
#     second look. The script empties that directory when it starts, so it holds one run only.
#     These files are not committed (.gitignore).
#   - plots go to benches/results/<area>/*.svg (`skiff bench plot A.json B.json -o X.svg
#     --label A --label B`): one latency-percentile plot per case, every candidate of the case
#     on it. They are committed with RESULTS.md (small); this script links each one under its
#     area's section, in file-name order, so the fragment does not need to.
#   - its report is the markdown fragment benches/results/<area>.md, written at the end of the
#     run (a failed run leaves no fragment: write it to a temporary name and move it in place).
#     It starts with a `## <title>` heading and holds, in this order: one sentence on what was
#     compared and where (cores, pinning, repetitions); the table (a row per candidate and case,
#     the figures as medians of the interleaved repetitions, and the ratios skiff ÷ peer);
#     the peer versions (`nginx -v`, `knotd -V` ...); the exact commands the script ran, in a
#     ```text block, with the values of its settings (not $VARIABLES); the load average.
#     Fragments are not committed: RESULTS.md carries them.
# Areas so far: dns (benches/dns/run.sh), ingress (benches/ingress/run.sh), proxy
# (benches/proxy/run.sh). Any other benches/results/*.md is included the same way.
#
# This script runs nothing itself: it writes the date, the machine (CPUs, kernel, CPU model,
# memory, load average now), the skiff commit (and whether the tree had local changes), then
# each fragment present (ordered by area name) with its plots, and lists the areas whose
# fragment is missing. `make bench` runs it last.
#
# Usage: benches/report.sh [OUT] (default benches/RESULTS.md)
set -euo pipefail

BENCHES=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCHES")
RESULTS_DIR="$BENCHES/results"
OUT=${1:-$BENCHES/RESULTS.md}
KNOWN_AREAS=(dns ingress proxy)

# `make bench` passes the commit it built from (SKIFF_BENCH_COMMIT, taken when it started):
# the tree may have moved on by the time this runs at the end.
if [ -n "${SKIFF_BENCH_COMMIT:-}" ]; then
  commit=${SKIFF_BENCH_COMMIT%% *}
  dirty=${SKIFF_BENCH_COMMIT#"$commit"}
  [ -z "$dirty" ] || dirty=" ${dirty# }"
else
  commit=$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
  dirty=
  if [ "$commit" != unknown ] && [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    dirty=" (with uncommitted changes)"
  fi
fi
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)

tmp=$(mktemp "$OUT.XXXXXX")
trap 'rm -f "$tmp"' EXIT
{
  echo "# skiff benchmark results"
  echo
  echo "Written by \`benches/report.sh\` from the fragments the end-to-end scripts left in"
  echo "\`benches/results/\` (\`make bench\` runs them all, then this). Each section says how it was"
  echo "measured and the exact commands, and ends with when its run finished. The machine:"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| assembled | $(date -u '+%Y-%m-%d %H:%M UTC') |"
  echo "| machine | $(nproc) CPUs, ${cpu_model:-unknown CPU}, $mem |"
  echo "| kernel | $(uname -sr) |"
  echo "| skiff commit | \`$commit\`$dirty |"
  echo "| load average now | $(cut -d' ' -f1-3 /proc/loadavg) |"
  echo
  # The benchmarks alone keep about one process per core runnable (server and client pinned
  # to a core each, plus skiff up's own threads): a 15-minute load above 1.5 per CPU means
  # something else ran alongside them.
  if awk -v n="$(nproc)" '{exit !($3 > 1.5 * n)}' /proc/loadavg; then
    echo "**The machine was busy** while this was assembled (15-minute load average $(cut -d' ' -f3 /proc/loadavg)"
    echo "on $(nproc) CPUs): other work shared the cores, so absolute figures are noisy; the"
    echo "comparisons interleave their candidates, so the ratios are the figures to read."
    echo
  fi
  shopt -s nullglob
  missing=()
  for area in "${KNOWN_AREAS[@]}"; do
    [ -f "$RESULTS_DIR/$area.md" ] || missing+=("$area")
  done
  for fragment in "$RESULTS_DIR"/*.md; do
    area=$(basename "$fragment" .md)
    echo
    cat "$fragment"
    echo
    plots=("$RESULTS_DIR/$area"/*.svg)
    if [ ${#plots[@]} -gt 0 ]; then
      echo "Latency percentiles (\`skiff bench plot\`):"
      echo
      for svg in "${plots[@]}"; do
        name=$(basename "$svg" .svg)
        echo "- [$area/$name](results/$area/$name.svg)"
      done
      echo
      for svg in "${plots[@]}"; do
        name=$(basename "$svg" .svg)
        echo "![$area $name](results/$area/$name.svg)"
      done
      echo
    fi
    ran=$(date -u -r "$fragment" '+%Y-%m-%d %H:%M UTC')
    echo "_Fragment \`results/$area.md\` written $ran._"
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo
    echo "## Not in this report"
    echo
    for area in "${missing[@]}"; do
      echo "- $area: no \`benches/results/$area.md\` (run \`benches/$area/run.sh\` as root)"
    done
  fi
} >"$tmp"
mv "$tmp" "$OUT"
trap - EXIT
echo "wrote $OUT" >&2
