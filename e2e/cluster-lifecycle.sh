#!/usr/bin/env bash
# The local cluster's lifecycle contract: a second `hack/cluster.sh up` changes nothing (same
# processes); etcd refuses clients without a certificate from its own CA; `down` leaves no
# process, container shim, mount, bridge, iptables chain, nftables table (the NetworkPolicy
# agent's, even after it was killed) or state behind, and gives back the host's own chains, tables
# and sysctls exactly as `up` found them; a failed apt step of hack/tools.sh
# leaves no policy-rc.d behind. It ends with the cluster DOWN: run it last.
# Prerequisites: root, a cluster started by hack/cluster.sh up (not minikube).
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: e2e/cluster-lifecycle.sh [-h|--help]

Checks that 'hack/cluster.sh up' is idempotent, etcd needs a client certificate, and 'down'
leaves nothing behind and restores the host's own iptables chains and sysctls. Starts the
cluster once more for that, and stops it. Prints "lifecycle: N passed, N failed".
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
same_processes() { [[ "${before}" == "${after}" ]] && (($(wc -w <<<"${before}") == 8)); }
check::run "second up keeps the same 8 processes (${before})" same_processes
NETPOL_TABLE=kube-network-policies
netpol_table() { nft list table inet "${NETPOL_TABLE}" >/dev/null 2>&1; }
check::run "the NetworkPolicy agent's nftables table (inet ${NETPOL_TABLE}) is in place" netpol_table

log::step "etcd serves TLS only, to clients with a certificate from its own CA"
PKI="${CLUSTER_STATE}/pki"
etcd_get() { curl -sS --max-time 5 "$@" "https://127.0.0.1:2379/version" >/dev/null 2>&1; }
check::run "plain HTTP to etcd is refused" bash -c '! curl -sS --max-time 5 http://127.0.0.1:2379/version >/dev/null 2>&1'
check::run "TLS without a client certificate is refused" bash -c "! curl -sS --max-time 5 --cacert '${PKI}/etcd-ca.crt' https://127.0.0.1:2379/version >/dev/null 2>&1"
refused_with_admin() { ! etcd_get --cacert "${PKI}/etcd-ca.crt" --cert "${PKI}/admin.crt" --key "${PKI}/admin.key"; }
check::run "the cluster CA's admin certificate does not open etcd" refused_with_admin
check::run "the API server's etcd client certificate does (control)" \
  etcd_get --cacert "${PKI}/etcd-ca.crt" --cert "${PKI}/apiserver-etcd-client.crt" --key "${PKI}/apiserver-etcd-client.key"

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
# Every KUBE-/CNI- chain in any table, IPv4 and IPv6, but the ones this test made on purpose.
cluster_chains() {
  local cmd table
  for cmd in iptables ip6tables; do
    for table in nat filter mangle raw; do
      "${cmd}" -t "${table}" -S 2>/dev/null | awk -v t="${cmd}/${table}" '$1 == "-N" && $2 ~ /^(KUBE|CNI)-/ && $2 !~ /-KEEP-TEST$/ {print t, $2}'
    done
  done
}
no_chains() { [[ -z "$(cluster_chains)" ]]; }
check::run "no cluster process is left" e2e::eventually 15 none_alive
check::run "no container shim of this cluster is left" no_shims
check::run "no mount under the cluster state is left" no_mounts
check::run "the pod bridge is gone" no_bridge
check::run "no KUBE-/CNI- iptables chains are left (IPv4 and IPv6)" no_chains
check::run "the NetworkPolicy agent removed its nftables table on TERM" bash -c "! nft list table inet '${NETPOL_TABLE}' >/dev/null 2>&1"
check::run "the cluster state directory is removed" test ! -e "${CLUSTER_STATE}"

log::step "the host's own chains, nftables tables and sysctls survive 'up' and 'down'"
# Chains named like the cluster's (so a cleanup by name would take them), with a jump from a
# built-in chain; an nftables table of the host's own; and bridge netfilter off, which 'up' turns
# on and 'down' must turn off again. Between the two, the NetworkPolicy agent is killed (-9), so
# its table stays behind for 'down' to remove.
KEEP_NFT=selfheal-keep-test
KEEP_FILTER=KUBE-KEEP-TEST KEEP_NAT=CNI-KEEP-TEST
forward_before="$(sysctl -n net.ipv4.ip_forward)"
bridge_nf_before="$(sysctl -n net.bridge.bridge-nf-call-iptables 2>/dev/null || echo absent)"
remove_markers() {
  iptables -t filter -D FORWARD -j "${KEEP_FILTER}" 2>/dev/null || true
  iptables -t filter -F "${KEEP_FILTER}" 2>/dev/null && iptables -t filter -X "${KEEP_FILTER}" 2>/dev/null
  iptables -t nat -D POSTROUTING -s 192.0.2.0/24 -j "${KEEP_NAT}" 2>/dev/null || true
  iptables -t nat -F "${KEEP_NAT}" 2>/dev/null && iptables -t nat -X "${KEEP_NAT}" 2>/dev/null
  nft delete table inet "${KEEP_NFT}" 2>/dev/null || true
  [[ "${bridge_nf_before}" == absent ]] || sysctl -qw "net.bridge.bridge-nf-call-iptables=${bridge_nf_before}"
  return 0
}
util::trap_add remove_markers
iptables -t filter -N "${KEEP_FILTER}" && iptables -t filter -A "${KEEP_FILTER}" -j RETURN
iptables -t filter -A FORWARD -j "${KEEP_FILTER}"
iptables -t nat -N "${KEEP_NAT}" && iptables -t nat -A "${KEEP_NAT}" -j RETURN
iptables -t nat -A POSTROUTING -s 192.0.2.0/24 -j "${KEEP_NAT}"
nft add table inet "${KEEP_NFT}"
bridge_nf_set=0
if [[ "${bridge_nf_before}" != absent ]]; then
  sysctl -qw net.bridge.bridge-nf-call-iptables=0
  bridge_nf_set=1
fi
"${CLUSTER}" up >/dev/null
bridge_nf_on() { [[ "$(sysctl -n net.bridge.bridge-nf-call-iptables)" == 1 ]]; }
check::run "up turned bridge netfilter on" bridge_nf_on
kill -9 "$(cat "${CLUSTER_STATE}/pids/kube-network-policies.pid")"
check::run "a killed NetworkPolicy agent leaves its table (fail-closed)" e2e::eventually 5 netpol_table
"${CLUSTER}" down
markers_kept() {
  iptables -t filter -C FORWARD -j "${KEEP_FILTER}" && iptables -t filter -C "${KEEP_FILTER}" -j RETURN &&
    iptables -t nat -C POSTROUTING -s 192.0.2.0/24 -j "${KEEP_NAT}" && iptables -t nat -C "${KEEP_NAT}" -j RETURN
}
check::run "chains ${KEEP_FILTER} and ${KEEP_NAT}, their rules and the jumps into them survive down" markers_kept
check::run "every chain the cluster made is gone (IPv4 and IPv6)" no_chains
check::run "down removed the killed agent's nftables table" bash -c "! nft list table inet '${NETPOL_TABLE}' >/dev/null 2>&1"
check::run "the host's nftables table ${KEEP_NFT} survives down" nft list table inet "${KEEP_NFT}"
check::run "net.ipv4.ip_forward is back to ${forward_before}" test "$(sysctl -n net.ipv4.ip_forward)" == "${forward_before}"
if ((bridge_nf_set)); then
  check::run "net.bridge.bridge-nf-call-iptables is back to 0" test "$(sysctl -n net.bridge.bridge-nf-call-iptables)" == 0
fi
remove_markers

log::step "a failed apt step of hack/tools.sh leaves no policy-rc.d"
# In a private mount namespace whose /usr/sbin has no policy-rc.d (the host's own, if any, is not
# touched), with apt-get and dpkg-query replaced by fakes: one reports a package missing, the
# other fails the install.
fakes="$(mktemp -d)"
util::trap_add "rm -rf '${fakes}'"
printf '#!/bin/sh\nexit 1\n' >"${fakes}/dpkg-query"
# shellcheck disable=SC2016 # the $1 is the fake's own argument
printf '#!/bin/sh\ncase "$1" in update) exit 0 ;; esac\necho "E: simulated failure" >&2\nexit 100\n' >"${fakes}/apt-get"
chmod +x "${fakes}/dpkg-query" "${fakes}/apt-get"
apt_fails_clean() {
  # shellcheck disable=SC2016 # expanded by the inner shell, from its own arguments
  unshare -m bash -c '
    set -e
    sbin="$(mktemp -d)"
    mount -t tmpfs tmpfs "${sbin}"
    cp -a /usr/sbin/. "${sbin}/"
    rm -f "${sbin}/policy-rc.d"
    mount --bind "${sbin}" /usr/sbin
    if PATH="$1:${PATH}" "$2/hack/tools.sh" install apt >/dev/null 2>&1; then
      echo "tools.sh install apt succeeded with a failing apt-get" >&2
      exit 1
    fi
    if [[ -e /usr/sbin/policy-rc.d ]]; then
      echo "policy-rc.d left behind after the failed apt step" >&2
      exit 1
    fi' _ "${fakes}" "${REPO_ROOT}"
}
check::run "tools.sh exits non-zero and removes the policy-rc.d it wrote" apt_fails_clean
check::summary lifecycle
