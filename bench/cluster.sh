#!/usr/bin/env bash
# Local-cluster lifecycle figures: `hack/cluster.sh up` from a wiped state with binaries and
# images cached, the no-op second `up`, the idle memory of every component, and `down`.
# The baseline measured in the same run is the no-op `up` (script start-up, state checks and one
# API call): the cold start is reported as a multiple of it, so machines of different speed compare.
# Prerequisites: root; the cluster must be DOWN (the benchmark starts and stops it).
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

usage() {
  cat <<USAGE
Usage: bench/cluster.sh [-h|--help]

Starts the local cluster from a wiped state, measures, and stops it again.
Prints one "name value unit" line per figure.
USAGE
}
util::no_arguments "$@"

CLUSTER="${REPO_ROOT}/hack/cluster.sh"
if "${CLUSTER}" status >/dev/null 2>&1; then
  log::fatal "the local cluster is running; this benchmark starts it from a wiped state: run 'make cluster-down' first"
fi
util::trap_add "'${CLUSTER}' down >/dev/null 2>&1 || true"
# Build and cache whatever is missing first, so only the start is timed.
"${REPO_ROOT}/hack/tools.sh" install apt kubernetes coredns metrics-server >/dev/null
"${REPO_ROOT}/hack/image.sh" cluster >/dev/null 2>&1

now() { date +%s.%N; }
t0="$(now)"
"${CLUSTER}" up >/dev/null 2>&1
t1="$(now)"
"${CLUSTER}" up >/dev/null 2>&1
t2="$(now)"

rss_mib() {
  local total=0 f pid kib
  for f in "${CLUSTER_STATE}"/pids/*.pid; do
    pid="$(<"${f}")"
    kib="$(awk '/^VmRSS:/ {print $2}' "/proc/${pid}/status" 2>/dev/null || echo 0)"
    total=$((total + kib))
  done
  echo $((total / 1024))
}
sleep 20 # let the components settle after start-up before reading idle memory
idle="$(rss_mib)"

t3="$(now)"
"${CLUSTER}" down >/dev/null 2>&1
t4="$(now)"

awk -v up="$(echo "${t1} - ${t0}" | bc)" -v noop="$(echo "${t2} - ${t1}" | bc)" \
  -v down="$(echo "${t4} - ${t3}" | bc)" -v rss="${idle}" 'BEGIN {
  printf "cluster_up_wiped_state   %6.1f s\n", up
  printf "cluster_up_noop_baseline %6.2f s\n", noop
  printf "cluster_up_vs_noop       %6.1f x\n", up / noop
  printf "cluster_down             %6.1f s\n", down
  printf "cluster_idle_rss         %6d MiB (7 components, CoreDNS and metrics-server running)\n", rss
}'
