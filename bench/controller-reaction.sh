#!/usr/bin/env bash
# selfheal-controller figures on the local cluster (or any cluster in KUBECONFIG):
#  1. reaction latency, status change -> eviction, p50/p99 over BENCH_TARGET_PODS pods with
#     BENCH_BACKGROUND_PODS other (Pending, unschedulable) pods in the cache
#     (controller/examples/bench_reaction.rs; baseline: the status-write round trip, same run);
#  2. the real binary watching the same pods: RSS and CPU after the initial sync and while idle,
#     and API requests per minute when idle (its own selfheal_controller_api_requests_total).
# The pod healer alone (--healing-policies=false): a bare cluster has no HealingPolicy CRD.
# Prerequisites: a running cluster (make cluster-up), cargo, curl. Creates and deletes one namespace.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

usage() {
  cat <<USAGE
Usage: bench/controller-reaction.sh [-h|--help]

Prints one "name value unit" line per figure.

Environment:
  KUBECONFIG              cluster to use (default: the local cluster's)
  BENCH_BACKGROUND_PODS   other pods in the cache (default 10000)
  BENCH_TARGET_PODS       pods whose reaction is timed (default 100)
  BENCH_IDLE_SECS         idle measurement window for the binary (default 60)
  MALLOC_ARENA_MAX        glibc arenas for the binary (default 2, as in the Deployment)
USAGE
}
util::no_arguments "$@"

util::require_tools cargo curl kubectl
export KUBECONFIG="${KUBECONFIG:-${HOME}/.cache/selfheal/cluster/kubeconfig}"
kubectl version >/dev/null 2>&1 || log::fatal "no cluster: run 'make cluster-up' or set KUBECONFIG"
idle="${BENCH_IDLE_SECS:-60}"
port=18089

# Where cargo puts them: CARGO_TARGET_DIR when set (make test and CI set it), else target/.
RELEASE_DIR="${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/release"
log::step "building the benchmark and the controller (release)"
cargo build --release --locked --manifest-path "${REPO_ROOT}/Cargo.toml" -p selfheal-controller \
  --example bench_reaction --bin selfheal-controller >&2

out="$(mktemp)"
util::trap_add "rm -f '${out}'"
log::step "reaction latency"
BENCH_KEEP=1 "${RELEASE_DIR}/examples/bench_reaction" | tee "${out}"
ns="$(awk '$1 == "namespace" {print $2}' "${out}")"
[[ -n "${ns}" ]] || log::fatal "benchmark did not report its namespace"
util::trap_add "kubectl delete namespace '${ns}' --wait=false >/dev/null 2>&1 || true"

log::step "the binary watching namespace ${ns}"
# Same allocator setting as controller/deploy/deployment.yaml.
MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX:-2}" "${RELEASE_DIR}/selfheal-controller" --leader-election=false --dry-run --healing-policies=false \
  --namespaces="${ns}" --pod-namespace=selfheal-bench --http-addr="127.0.0.1:${port}" \
  --min-pod-age-secs=0 >/dev/null 2>&1 &
pid=$!
util::trap_add "kill ${pid} 2>/dev/null || true"
util::wait_for "controller ready" 120 curl -fsS "http://127.0.0.1:${port}/readyz"
sleep 5
metric() { curl -fsS "http://127.0.0.1:${port}/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
requests() { curl -fsS "http://127.0.0.1:${port}/metrics" | awk '/^selfheal_controller_api_requests_total/ {s += $2} END {print s + 0}'; }
rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "binary_watched_pods $(metric selfheal_controller_watched_pods) pods"
echo "binary_rss_after_sync $(rss_mib "${pid}") MiB"
r0="$(requests)"
c0="$(cpu_ticks "${pid}")"
sleep "${idle}"
r1="$(requests)"
c1="$(cpu_ticks "${pid}")"
hz="$(getconf CLK_TCK)"
echo "binary_rss_idle $(rss_mib "${pid}") MiB"
echo "binary_idle_cpu $(awk -v a="${c0}" -v b="${c1}" -v hz="${hz}" -v s="${idle}" 'BEGIN {printf "%.2f", 100 * (b - a) / hz / s}') %"
echo "binary_idle_api_requests $(awk -v a="${r0}" -v b="${r1}" -v s="${idle}" 'BEGIN {printf "%.1f", (b - a) * 60 / s}') per_minute"
log::ok "controller benchmark done"
