#!/usr/bin/env bash
# CI only, after a failed cluster job: prints what a reader needs to debug it without rerunning:
# every object, the events in time order, the pods' describe and their (previous) container logs.
# Never fails the step itself; a cluster that is gone is reported, not an error.
# Prerequisites: kubectl and a cluster in KUBECONFIG.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../hack/lib.sh"

usage() {
  cat <<USAGE
Usage: .github/ci/dump-cluster.sh [-h|--help]

Prints kubectl get all -A, events of every namespace (oldest first), describe of every pod that
is not Running+Ready, and the logs (current and previous) of every container outside kube-system.

Environment:
  KUBECONFIG   cluster to dump
  LOG_TAIL     log lines per container (default 200)
USAGE
}

util::no_arguments "$@"

set +o errexit
util::require_tools kubectl
TAIL="${LOG_TAIL:-200}"

section() { printf '\n::group::%s\n' "$*"; }
endsection() { printf '::endgroup::\n'; }

if ! kubectl get --raw /readyz >/dev/null 2>&1; then
  log::warn "no cluster reachable with KUBECONFIG=${KUBECONFIG:-}: nothing to dump"
  exit 0
fi

section "kubectl get all -A"
kubectl get all -A -o wide
endsection

section "events (all namespaces, oldest first)"
kubectl get events -A --sort-by=.lastTimestamp
endsection

section "pods that are not Running and Ready: describe"
kubectl get pods -A --no-headers | awk '$4 != "Running" || split($3, r, "/") && r[1] != r[2] {print $1, $2}' |
  while read -r ns pod; do
    kubectl -n "${ns}" describe pod "${pod}"
  done
endsection

section "container logs (current and previous), outside kube-system"
kubectl get pods -A --no-headers -o custom-columns=NS:.metadata.namespace,NAME:.metadata.name |
  while read -r ns pod; do
    [[ "${ns}" == kube-system ]] && continue
    printf -- '--- %s/%s\n' "${ns}" "${pod}"
    kubectl -n "${ns}" logs "${pod}" --all-containers --prefix --tail="${TAIL}"
    kubectl -n "${ns}" logs "${pod}" --all-containers --prefix --tail="${TAIL}" --previous 2>/dev/null
  done
endsection
exit 0
