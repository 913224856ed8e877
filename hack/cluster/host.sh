# shellcheck shell=bash
# Sourced by hack/cluster.sh (not run on its own): what the local cluster changes on the host
# and how `down` undoes exactly that. Uses CLUSTER_STATE, NETPOL_TABLE and hack/lib.sh.
# ---------------------------------------------------------------------------------------------
# The host: `up` records what it is about to change (iptables chains and rules, sysctls) before
# it changes anything, and `down` undoes exactly that. A chain or rule that was there before `up`
# — another Kubernetes, a firewall, a VPN — is left as it was, whatever its name.
# ---------------------------------------------------------------------------------------------
HOST_RECORD="${CLUSTER_STATE}/host-before"
HOST_SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables)
IPTABLES_TABLES=(nat filter mangle raw)

# cluster::record_host: once per cluster life (a second `up` keeps the first record: that one
# saw the host before anything was changed).
cluster::record_host() {
  [[ "${DRY_RUN:-0}" == 1 || -f "${HOST_RECORD}/complete" ]] && return 0
  rm -rf "${HOST_RECORD}"
  mkdir -p "${HOST_RECORD}"
  local cmd table key
  for cmd in iptables ip6tables; do
    command -v "${cmd}" >/dev/null || continue
    for table in "${IPTABLES_TABLES[@]}"; do
      "${cmd}" -t "${table}" -S >"${HOST_RECORD}/${cmd}-${table}" 2>/dev/null || rm -f "${HOST_RECORD}/${cmd}-${table}"
    done
  done
  for key in "${HOST_SYSCTLS[@]}"; do
    # A key that does not exist yet (br_netfilter not loaded) is recorded as absent: nothing to restore.
    printf '%s=%s\n' "${key}" "$(sysctl -n "${key}" 2>/dev/null || echo absent)"
  done >"${HOST_RECORD}/sysctl"
  if command -v nft >/dev/null; then
    nft list tables 2>/dev/null >"${HOST_RECORD}/nft-tables" || rm -f "${HOST_RECORD}/nft-tables"
  fi
  touch "${HOST_RECORD}/complete"
}

cluster::host_network() {
  cluster::record_host
  # Pods reach Services through iptables on the bridge: forwarding and bridge netfilter on.
  # (Kernel modules are loaded but never unloaded: `down` cannot tell who else uses them.)
  modprobe br_netfilter 2>/dev/null || true
  modprobe overlay 2>/dev/null || true
  util::run sysctl -qw net.ipv4.ip_forward=1
  util::run sysctl -qw net.bridge.bridge-nf-call-iptables=1 ||
    log::warn "net.bridge.bridge-nf-call-iptables is not settable (br_netfilter missing): Services may not answer from pods"
}

# cluster::iptables_undo BEFORE NOW: the iptables-restore commands that remove what appeared
# between the two `iptables -S` listings: chains named KUBE-*/CNI-* (kubelet, kube-proxy, the
# bridge and portmap plugins) that are new, and the new rules in older chains that jump into
# them. Rules are compared as whole lines; nothing is evaluated by the shell.
cluster::iptables_undo() {
  awk '
    FILENAME == ARGV[1] { before[$0] = 1; next }
    $1 == "-N" && !before[$0] && $2 ~ /^(KUBE|CNI)-/ { ours[$2] = 1; order[++n] = $2; next }
    $1 == "-A" { rules[++r] = $0 }
    END {
      for (i = 1; i <= r; i++) {
        nw = split(rules[i], w, " ")
        target = ""
        for (j = 1; j < nw; j++) if (w[j] == "-j" || w[j] == "-g") target = w[j + 1]
        if (!ours[w[2]] && !before[rules[i]] && ours[target]) { sub(/^-A /, "-D ", rules[i]); print rules[i] }
      }
      for (i = 1; i <= n; i++) print "-F " order[i]
      for (i = 1; i <= n; i++) print "-X " order[i]
    }' "$1" "$2"
}

cluster::restore_iptables() {
  local cmd table now undo line
  [[ -f "${HOST_RECORD}/complete" ]] ||
    log::warn "no record of the host before 'up' (${HOST_RECORD}): treating every KUBE-*/CNI-* chain as this cluster's"
  for cmd in iptables ip6tables; do
    command -v "${cmd}" >/dev/null || continue
    for table in "${IPTABLES_TABLES[@]}"; do
      now="$("${cmd}" -t "${table}" -S 2>/dev/null)" || continue
      undo="$(cluster::iptables_undo <(cat "${HOST_RECORD}/${cmd}-${table}" 2>/dev/null) <(printf '%s\n' "${now}"))"
      [[ -n "${undo}" ]] || continue
      log::info "${cmd} -t ${table}: removing $(grep -c '^-X ' <<<"${undo}" || true) chains and $(grep -c '^-D ' <<<"${undo}" || true) jumps this cluster added"
      if [[ "${DRY_RUN:-0}" == 1 ]]; then
        while read -r line; do log::info "[dry-run] ${cmd}-restore --noflush -t ${table}: ${line}"; done <<<"${undo}"
        continue
      fi
      # One transaction per table; if it is refused (a rule changed meanwhile), one at a time.
      printf '*%s\n%s\nCOMMIT\n' "${table}" "${undo}" | "${cmd}-restore" --noflush 2>/dev/null && continue
      while read -r line; do
        printf '*%s\n%s\nCOMMIT\n' "${table}" "${line}" | "${cmd}-restore" --noflush ||
          log::warn "${cmd} -t ${table}: could not apply '${line}'"
      done <<<"${undo}"
    done
  done
}

cluster::restore_sysctls() {
  [[ -f "${HOST_RECORD}/sysctl" ]] || return 0
  local key value
  while IFS='=' read -r key value; do
    [[ "${value}" != absent && "$(sysctl -n "${key}" 2>/dev/null)" != "${value}" ]] || continue
    util::run sysctl -qw "${key}=${value}" || log::warn "could not restore ${key} to ${value}"
  done <"${HOST_RECORD}/sysctl"
}

# cluster::remove_netpol_table: the agent's table, when it could not remove it (killed, crashed).
# A table of that name that was there before `up` is not ours and stays.
cluster::remove_netpol_table() {
  command -v nft >/dev/null || return 0
  nft list table inet "${NETPOL_TABLE}" >/dev/null 2>&1 || return 0
  grep -qxF "table inet ${NETPOL_TABLE}" "${HOST_RECORD}/nft-tables" 2>/dev/null && return 0
  util::run nft delete table inet "${NETPOL_TABLE}"
}
