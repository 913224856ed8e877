#!/usr/bin/env bash
# The local cluster's lifecycle contract: a second `hack/cluster.sh up` changes nothing (same
# processes), and `down` leaves no process, container shim, mount, bridge, iptables chain or
# state behind. It ends with the cluster DOWN: run it last.
# Prerequisites: root, a cluster started by hack/cluster.sh up (not minikube).
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: e2e/cluster-lifecycle.sh [-h|--help]

Checks that 'hack/cluster.sh up' is idempotent and 'down' leaves nothing behind. Stops the
local cluster. Prints "lifecycle: N passed, N failed".
EOF
}

util::no_arguments "$@"

CLUSTER="${REPO_ROOT}/hack/cluster.sh"
[[ -d "${CLUSTER_STATE}/pids" ]] || log::fatal "no local cluster to test: start one with 'make cluster-up'"
pids_now() { cat "${CLUSTER_STATE}/pids/"*.pid 2>/dev/null | sort | tr '\n' ' '; }

log::step "second 'up' is a no-op"
before="$(pids_now)"
out="$("${CLUSTER}" up 2>&1)"
after="$(pids_now)"
check::run "second up reports nothing to do" grep -q "already up" <<<"${out}"
same_processes() { [[ "${before}" == "${after}" ]] && (($(wc -w <<<"${before}") == 7)); }
check::run "second up keeps the same 7 processes (${before})" same_processes

log::step "'down' leaves nothing behind"
"${CLUSTER}" down
none_alive() {
  local p
  for p in ${before}; do
    [[ -d "/proc/${p}" ]] && return 1
  done
  return 0
}
no_shims() { ! pgrep -f "containerd-shim.*${CONTAINERD_SOCK}" >/dev/null; }
no_mounts() { ! grep -qF "${CLUSTER_STATE}" /proc/mounts; }
no_bridge() { ! ip link show selfheal0 >/dev/null 2>&1; }
no_chains() {
  ! { iptables -t nat -S && iptables -t filter -S && iptables -t mangle -S; } 2>/dev/null | grep -Eq '^-N (KUBE|CNI)-'
}
check::run "no cluster process is left" e2e::eventually 15 none_alive
check::run "no container shim of this cluster is left" no_shims
check::run "no mount under the cluster state is left" no_mounts
check::run "the pod bridge is gone" no_bridge
check::run "no KUBE-/CNI- iptables chains are left" no_chains
check::run "the cluster state directory is removed" test ! -e "${CLUSTER_STATE}"
check::summary lifecycle
