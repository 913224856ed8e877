# shellcheck shell=bash
# Helpers for the cluster tests in e2e/: a namespace per test file (deleted at exit), bounded
# polling and diagnostics. Checks and the closing line are check::run / check::summary (hack/lib.sh).
# Tests run against $KUBECONFIG (hack/cluster.sh's cluster by default, or minikube).
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

export KUBECONFIG="${KUBECONFIG:-${CLUSTER_KUBECONFIG}}"

# e2e::require_cluster: fail loudly, never skip, when there is no cluster to test.
e2e::require_cluster() {
  util::require_tools kubectl
  if ! kubectl get --raw /readyz >/dev/null 2>&1; then
    log::fatal "no cluster reachable with KUBECONFIG=${KUBECONFIG}: start one with 'make cluster-up' (or point KUBECONFIG at minikube)"
  fi
}

# e2e::namespace PREFIX: create a fresh namespace, named in E2E_NS, and delete it (without
# waiting) at exit. Call it directly, not in $(...): the cleanup trap belongs to this shell.
# The namespace enforces the restricted Pod Security Standard, like the platform's own.
e2e::namespace() {
  E2E_NS="$1-$(date +%s)-${RANDOM}"
  kubectl create namespace "${E2E_NS}" >/dev/null
  kubectl label namespace "${E2E_NS}" pod-security.kubernetes.io/enforce=restricted selfheal.io/e2e=true >/dev/null
  util::trap_add "kubectl delete namespace '${E2E_NS}' --wait=false >/dev/null 2>&1 || true"
}


# e2e::eventually TIMEOUT cmd...: true once cmd succeeds within TIMEOUT seconds.
e2e::eventually() {
  local timeout="$1"
  shift
  local deadline=$(($(date +%s) + timeout))
  until "$@" >/dev/null 2>&1; do
    (($(date +%s) < deadline)) || return 1
    sleep 1
  done
}

# e2e::dump NS: what a reader needs when a check failed.
e2e::dump() {
  log::info "diagnostics for namespace $1:"
  kubectl -n "$1" get all -o wide >&2 || true
  kubectl -n "$1" get events --sort-by=.lastTimestamp >&2 || true
}

