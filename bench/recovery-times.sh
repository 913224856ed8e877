#!/usr/bin/env bash
# Recovery time of each self-healing layer next to the fastest the settings allow: runs
# `selfheal-demo run` in a fresh namespace (the runner installs the chart there and removes it),
# then prints, per layer, the measured fault → healed time, the theoretical minimum the runner
# computed from the live Deployment's probe settings, the controller's thresholds and Helm's
# timeout (formula included), and their ratio. Gaps over 2× are explained in demo/README.md.
# Prerequisites: a cluster in KUBECONFIG with the app and controller images imported,
# metrics-server; helm, jq, cargo. Installs selfheal-controller when absent and removes only
# what it installed.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

usage() {
  cat <<USAGE
Usage: bench/recovery-times.sh [--layer N]... [-h|--help]

Prints a table: layer, measured time to heal, theoretical minimum, ratio, formula.

Options:
  --layer N     only layer N (repeatable or comma-separated); default all
  -h, --help    this help

Environment:
  KUBECONFIG    cluster to use (default: the local cluster's)
  BENCH_OUT     keep report.json and timeline.svg here (default: a temporary directory)
USAGE
}

LAYERS=""
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --layer) [[ $# -ge 2 ]] || util::usage_error "--layer needs a value"; LAYERS="${LAYERS:+${LAYERS},}$2"; shift ;;
    *) util::usage_error "unknown argument: $1" ;;
  esac
  shift
done
[[ -z "${LAYERS}" || "${LAYERS}" =~ ^[1-7](,[1-7])*$ ]] || util::usage_error "--layer must be numbers 1-7"

util::require_tools kubectl helm jq cargo python3
export KUBECONFIG="${KUBECONFIG:-${CLUSTER_KUBECONFIG}}"
kubectl get --raw /readyz >/dev/null 2>&1 || log::fatal "no cluster: run 'make cluster-up' or set KUBECONFIG"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${SELFHEAL_HOME}/cargo-target}"
OUT="${BENCH_OUT:-$(mktemp -d)}"
[[ -n "${BENCH_OUT:-}" ]] || util::trap_add "rm -rf '${OUT}'"
mkdir -p "${OUT}"

if ! kubectl get namespace selfheal-system >/dev/null 2>&1; then
  log::step "installing selfheal-controller for layer 3 (removed at exit)"
  kubectl kustomize "${REPO_ROOT}/controller/deploy" >"${OUT}/controller.yaml"
  remove=(namespace/selfheal-system)
  for obj in clusterrole/selfheal-controller clusterrolebinding/selfheal-controller customresourcedefinition/healingpolicies.selfheal.io; do
    kubectl get "${obj}" >/dev/null 2>&1 || remove+=("${obj}")
  done
  util::trap_add "kubectl delete ${remove[*]} --ignore-not-found --wait=false >/dev/null 2>&1 || true"
  kubectl apply -f "${OUT}/controller.yaml" >/dev/null
  kubectl -n selfheal-system rollout status deployment/selfheal-controller --timeout=180s >&2
fi

log::step "building the runner (cargo build -p selfheal-demo)"
cargo build -q -p selfheal-demo --manifest-path "${REPO_ROOT}/Cargo.toml"
NS="sh-bench-demo-$(date +%s)"
ARGS=(run --namespace "${NS}" --repo-root "${REPO_ROOT}" --json "${OUT}/report.json" --svg "${OUT}/timeline.svg")
[[ -n "${LAYERS}" ]] && ARGS+=(--layer "${LAYERS}")
log::step "selfheal-demo ${ARGS[*]}"
# The runner creates the namespace and deletes it afterwards; a crash leaves it: clean up anyway.
util::trap_add "kubectl delete namespace '${NS}' --ignore-not-found --wait=false >/dev/null 2>&1 || true"
"${CARGO_TARGET_DIR}/debug/selfheal-demo" "${ARGS[@]}" || log::warn "some layer did not heal (see the table); figures below are what was measured"

echo
printf '%-22s %10s %10s %7s  %s\n' layer measured minimum ratio "minimum = "
jq -r '.layers[] | [
    "\(.layer) \(.name)",
    (if .time_to_heal_secs then "\(.time_to_heal_secs * 10 | round / 10) s" else "-" end),
    (if .theoretical_min then "\(.theoretical_min.heal_secs) s" else "-" end),
    (if .time_to_heal_secs and .theoretical_min and .theoretical_min.heal_secs > 0
       then "\(.time_to_heal_secs / .theoretical_min.heal_secs * 100 | round / 100)" else "-" end),
    (if .theoretical_min then .theoretical_min.basis else (.reason // "") end)
  ] | @tsv' "${OUT}/report.json" |
  while IFS=$'\t' read -r layer measured minimum ratio basis; do
    printf '%-22s %10s %10s %7s  %s\n' "${layer}" "${measured}" "${minimum}" "${ratio}" "${basis}"
  done
[[ -n "${BENCH_OUT:-}" ]] && log::info "report and timeline kept in ${OUT}"
exit 0
