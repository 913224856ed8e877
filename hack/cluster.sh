#!/usr/bin/env bash
# The local single-node Kubernetes cluster the tests and the demo run on when there is no
# minikube: a real etcd, kube-apiserver, controller-manager, scheduler, kubelet and kube-proxy
# (built from the k8s.io/kubernetes Go module by hack/tools.sh), containerd + runc + CNI plugins
# from Debian, CoreDNS and metrics-server, images imported from tarballs (hack/image.sh).
# Everything it creates lives under ~/.cache/selfheal/cluster; `down` removes exactly that.
# Prerequisites: Linux, root. Elsewhere, use minikube (see README).
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=hack/cluster/host.sh
source "$(dirname "${BASH_SOURCE[0]}")/cluster/host.sh"

usage() {
  cat <<EOF
Usage: hack/cluster.sh <command> [options]

Commands:
  up        build what is missing, start every component, wait until the node is Ready and
            cluster DNS answers, print the KUBECONFIG to use. Running it again is a no-op.
  down      stop what 'up' started (by PID file), remove its containers, mounts, network
            and iptables rules, and delete the cluster state
  status    show each component, the node and the add-ons
  logs [C]  print the last lines of each component's log (or all of component C)
  kubeconfig  print the kubeconfig path

Options:
  --dry-run   print what would be done, change nothing
  --lines N   lines per component for 'logs' (default 20)
  -h, --help  this help

Environment:
  SELFHEAL_HOME   state and caches (default ~/.cache/selfheal); the cluster lives in \$SELFHEAL_HOME/cluster
  KUBE_VERSION    Kubernetes version to build and run (default ${KUBE_VERSION})

Example:
  sudo hack/cluster.sh up && export KUBECONFIG=${CLUSTER_KUBECONFIG} && kubectl get nodes
EOF
}

# Components in start order; down stops them in reverse.
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kube-network-policies)
PKI="${CLUSTER_STATE}/pki"
PIDS="${CLUSTER_STATE}/pids"
LOGS="${CLUSTER_STATE}/logs"
ETC="${CLUSTER_STATE}/etc"
SERVICE_CIDR=10.96.0.0/12
SERVICE_IP=10.96.0.1
DNS_IP=10.96.0.10
POD_CIDR=10.244.0.0/24
BRIDGE=selfheal0
# NetworkPolicy agent: the nftables table (inet family) it owns and the nfqueue number it reads.
NETPOL_TABLE=kube-network-policies
NETPOL_QUEUE=100
NETPOL_METRICS_PORT=9080
CNI_BIN_DIR=/usr/lib/cni
APISERVER_PORT=6443
ETCD_PORT=2379
NODE_NAME="$(hostname | tr '[:upper:]' '[:lower:]')"

cluster::kubectl() { kubectl --kubeconfig "${CLUSTER_KUBECONFIG}" "$@"; }

# ---------------------------------------------------------------------------------------------
# Processes: one PID file per component; a PID counts only if it still runs that binary.
# ---------------------------------------------------------------------------------------------
cluster::pid() {
  local f="${PIDS}/$1.pid" pid
  [[ -f "${f}" ]] || return 1
  pid="$(<"${f}")"
  [[ -r "/proc/${pid}/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -q -- "$1" || return 1
  printf '%s\n' "${pid}"
}

cluster::running() { cluster::pid "$1" >/dev/null; }

# cluster::start NAME cmd...: in its own session, so it outlives the calling shell.
cluster::start() {
  local name="$1"
  shift
  if cluster::running "${name}"; then
    log::info "${name} already running (pid $(cluster::pid "${name}"))"
    return 0
  fi
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    util::run "$@"
    return 0
  fi
  mkdir -p "${PIDS}" "${LOGS}"
  setsid "$@" >>"${LOGS}/${name}.log" 2>&1 </dev/null &
  echo $! >"${PIDS}/${name}.pid"
  log::info "started ${name} (pid $!, log ${LOGS}/${name}.log)"
}

cluster::stop() {
  local name="$1" pid i
  pid="$(cluster::pid "${name}")" || {
    rm -f "${PIDS}/${name}.pid"
    return 0
  }
  util::run kill "${pid}"
  [[ "${DRY_RUN:-0}" == 1 ]] && return 0
  # kube-apiserver drains for up to a minute on TERM; nothing needs that here.
  for ((i = 0; i < 100; i++)); do
    [[ -d "/proc/${pid}" ]] || break
    sleep 0.1
  done
  [[ -d "/proc/${pid}" ]] && kill -9 "${pid}" 2>/dev/null
  rm -f "${PIDS}/${name}.pid"
  log::info "stopped ${name} (pid ${pid})"
}

# ---------------------------------------------------------------------------------------------
# Preparation: tools, images, certificates, configuration.
# ---------------------------------------------------------------------------------------------
cluster::ensure_tools() {
  local need=0 t
  for t in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    [[ -x "${SELFHEAL_BIN}/${t}" ]] || need=1
  done
  for t in containerd runc etcd ctr iptables nft openssl conntrack; do
    command -v "${t}" >/dev/null || need=1
  done
  [[ -x "${CNI_BIN_DIR}/bridge" ]] || need=1
  ((need)) && util::run "${REPO_ROOT}/hack/tools.sh" install apt kubernetes
  [[ -x "${SELFHEAL_BIN}/coredns" ]] || util::run "${REPO_ROOT}/hack/tools.sh" install coredns
  [[ -x "${SELFHEAL_BIN}/metrics-server" ]] || util::run "${REPO_ROOT}/hack/tools.sh" install metrics-server
  [[ -x "${SELFHEAL_BIN}/kube-network-policies" ]] || util::run "${REPO_ROOT}/hack/tools.sh" install kube-network-policies
  return 0
}

cluster::ensure_images() {
  local name missing=()
  for name in pause coredns metrics-server toolbox; do
    [[ -f "${IMAGES_DIR}/${name}.tar" ]] || missing+=("${name}")
  done
  # Add-on images follow the pinned versions: rebuild when the pin moved.
  grep -q "coredns:${COREDNS_VERSION}" "${IMAGES_DIR}/coredns.tar" 2>/dev/null || missing+=(coredns)
  grep -q "metrics-server:${METRICS_SERVER_VERSION}" "${IMAGES_DIR}/metrics-server.tar" 2>/dev/null || missing+=(metrics-server)
  if ((${#missing[@]})); then
    mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
    util::run "${REPO_ROOT}/hack/image.sh" "${missing[@]}"
  fi
  return 0
}

# cluster::cert NAME CN O [SAN] [CA]: key + certificate signed by CA (default: the cluster CA).
cluster::cert() {
  local name="$1" cn="$2" org="$3" san="${4:-}" ca="${5:-ca}"
  [[ -f "${PKI}/${name}.crt" ]] && return 0
  local subj="/CN=${cn}"
  [[ -n "${org}" ]] && subj="/O=${org}/CN=${cn}"
  openssl genrsa -out "${PKI}/${name}.key" 2048 2>/dev/null
  openssl req -new -key "${PKI}/${name}.key" -subj "${subj}" -out "${PKI}/${name}.csr"
  if [[ -n "${san}" ]]; then
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' "${san}" >"${PKI}/${name}.ext"
  else
    printf 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n' >"${PKI}/${name}.ext"
  fi
  openssl x509 -req -in "${PKI}/${name}.csr" -CA "${PKI}/${ca}.crt" -CAkey "${PKI}/${ca}.key" \
    -CAcreateserial -days 825 -extfile "${PKI}/${name}.ext" -out "${PKI}/${name}.crt" 2>/dev/null
  rm -f "${PKI}/${name}.csr" "${PKI}/${name}.ext"
}

cluster::ca() {
  local name="$1" cn="$2"
  [[ -f "${PKI}/${name}.crt" ]] && return 0
  openssl genrsa -out "${PKI}/${name}.key" 2048 2>/dev/null
  openssl req -x509 -new -key "${PKI}/${name}.key" -days 3650 -subj "/CN=${cn}" -out "${PKI}/${name}.crt"
}

# cluster::kubeconfig FILE USER CERT
cluster::kubeconfig() {
  local file="$1" user="$2" cert="$3"
  [[ -f "${file}" ]] && return 0
  kubectl config --kubeconfig="${file}" set-cluster selfheal --server="https://127.0.0.1:${APISERVER_PORT}" \
    --certificate-authority="${PKI}/ca.crt" --embed-certs=true >/dev/null
  kubectl config --kubeconfig="${file}" set-credentials "${user}" --client-certificate="${PKI}/${cert}.crt" \
    --client-key="${PKI}/${cert}.key" --embed-certs=true >/dev/null
  kubectl config --kubeconfig="${file}" set-context selfheal --cluster=selfheal --user="${user}" >/dev/null
  kubectl config --kubeconfig="${file}" use-context selfheal >/dev/null
  chmod 600 "${file}"
}

cluster::pki() {
  [[ "${DRY_RUN:-0}" == 1 ]] && { log::info "[dry-run] would create certificates in ${PKI}"; return 0; }
  log::step "certificates and kubeconfigs (${PKI})"
  mkdir -p "${PKI}"
  chmod 700 "${PKI}"
  cluster::ca ca selfheal-ca
  # The aggregation layer (metrics-server) needs its own CA for the front-proxy client.
  cluster::ca front-proxy-ca selfheal-front-proxy-ca
  # etcd has its own CA, as in a kubeadm cluster: a certificate from the cluster CA (any user's)
  # must not open the database, and only certificates from this CA do.
  cluster::ca etcd-ca selfheal-etcd-ca
  if [[ ! -f "${PKI}/sa.key" ]]; then
    openssl genrsa -out "${PKI}/sa.key" 2048 2>/dev/null
    openssl rsa -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null
  fi
  cluster::cert apiserver kube-apiserver "" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:${NODE_NAME},IP:127.0.0.1,IP:${SERVICE_IP},IP:${HOST_IP}"
  cluster::cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cluster::cert admin selfheal-admin system:masters
  cluster::cert controller-manager system:kube-controller-manager ""
  cluster::cert scheduler system:kube-scheduler ""
  cluster::cert kubelet "system:node:${NODE_NAME}" system:nodes
  cluster::cert kube-proxy system:kube-proxy ""
  cluster::cert kube-network-policies system:kube-network-policies ""
  cluster::cert front-proxy-client front-proxy-client "" "" front-proxy-ca
  cluster::cert etcd-server selfheal-etcd "" "DNS:localhost,IP:127.0.0.1" etcd-ca
  cluster::cert etcd-peer selfheal-etcd-peer "" "DNS:localhost,IP:127.0.0.1" etcd-ca
  cluster::cert apiserver-etcd-client kube-apiserver-etcd-client "" "" etcd-ca
  cluster::kubeconfig "${CLUSTER_KUBECONFIG}" selfheal-admin admin
  cluster::kubeconfig "${CLUSTER_STATE}/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
  cluster::kubeconfig "${CLUSTER_STATE}/scheduler.kubeconfig" system:kube-scheduler scheduler
  cluster::kubeconfig "${CLUSTER_STATE}/kubelet.kubeconfig" "system:node:${NODE_NAME}" kubelet
  cluster::kubeconfig "${CLUSTER_STATE}/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
  cluster::kubeconfig "${CLUSTER_STATE}/kube-network-policies.kubeconfig" system:kube-network-policies kube-network-policies
  printf '%s\n' "${HOST_IP}" >"${CLUSTER_STATE}/host-ip"
}

# cluster::render TEMPLATE OUT: fill @VARS@ from this script's settings.
cluster::render() {
  sed -e "s#@STATE@#${CLUSTER_STATE}#g" -e "s#@PAUSE_IMAGE@#${PAUSE_IMAGE}#g" \
    -e "s#@CNI_BIN_DIR@#${CNI_BIN_DIR}#g" -e "s#@BRIDGE@#${BRIDGE}#g" -e "s#@POD_CIDR@#${POD_CIDR}#g" \
    -e "s#@DNS_IP@#${DNS_IP}#g" -e "s#@NODE_NAME@#${NODE_NAME}#g" \
    -e "s#@COREDNS_IMAGE@#localhost/coredns:${COREDNS_VERSION}#g" \
    -e "s#@METRICS_SERVER_IMAGE@#localhost/metrics-server:${METRICS_SERVER_VERSION}#g" \
    "${REPO_ROOT}/hack/cluster/$1" >"$2"
}

cluster::config() {
  [[ "${DRY_RUN:-0}" == 1 ]] && return 0
  mkdir -p "${ETC}" "${CLUSTER_STATE}/cni/net.d" "${CLUSTER_STATE}/run" "${CLUSTER_STATE}/pod-logs"
  cluster::render containerd.toml "${ETC}/containerd.toml"
  cluster::render 10-selfheal.conflist "${CLUSTER_STATE}/cni/net.d/10-selfheal.conflist"
  cluster::render kubelet.yaml "${ETC}/kubelet.yaml"
  cluster::render kube-proxy.yaml "${ETC}/kube-proxy.yaml"
  cluster::render coredns.yaml "${ETC}/coredns.yaml"
  cluster::render metrics-server.yaml "${ETC}/metrics-server.yaml"
  cluster::render kube-network-policies.yaml "${ETC}/kube-network-policies.yaml"
}

# ---------------------------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------------------------
cluster::start_containerd() {
  cluster::start containerd containerd --config "${ETC}/containerd.toml"
  [[ "${DRY_RUN:-0}" == 1 ]] && return 0
  util::wait_for "containerd" 30 util::ctr version || cluster::fail containerd
  local name have
  have="$(util::ctr images ls -q 2>/dev/null || true)"
  for name in pause coredns metrics-server toolbox; do
    local ref
    ref="$(python3 -c 'import json,sys,tarfile; t=tarfile.open(sys.argv[1]); print(json.load(t.extractfile("manifest.json"))[0]["RepoTags"][0])' "${IMAGES_DIR}/${name}.tar")"
    # Re-import when the tarball is newer than the last import (a rebuilt image).
    if grep -qxF "${ref}" <<<"${have}" && [[ "${IMAGES_DIR}/${name}.tar" -ot "${CLUSTER_STATE}/images-imported" ]]; then
      continue
    fi
    util::ctr images import "${IMAGES_DIR}/${name}.tar" >/dev/null
    log::info "imported ${ref}"
  done
  touch "${CLUSTER_STATE}/images-imported"
}

# etcd serves TLS only and requires a client certificate from its own CA (clients and peer), so
# a local user cannot read or write the cluster's data (and become cluster-admin) through
# 127.0.0.1:2379. Metrics stay on plain HTTP at 127.0.0.1:2381, as kubeadm does: read-only.
cluster::start_etcd() {
  local url="https://127.0.0.1:${ETCD_PORT}" peer=https://127.0.0.1:2380
  cluster::start etcd etcd --name selfheal --data-dir "${CLUSTER_STATE}/etcd" \
    --listen-client-urls "${url}" --advertise-client-urls "${url}" \
    --cert-file "${PKI}/etcd-server.crt" --key-file "${PKI}/etcd-server.key" \
    --client-cert-auth --trusted-ca-file "${PKI}/etcd-ca.crt" \
    --listen-peer-urls "${peer}" --initial-advertise-peer-urls "${peer}" --initial-cluster "selfheal=${peer}" \
    --peer-cert-file "${PKI}/etcd-peer.crt" --peer-key-file "${PKI}/etcd-peer.key" \
    --peer-client-cert-auth --peer-trusted-ca-file "${PKI}/etcd-ca.crt" \
    --listen-metrics-urls http://127.0.0.1:2381
}

cluster::start_apiserver() {
  cluster::start kube-apiserver "${SELFHEAL_BIN}/kube-apiserver" \
    --etcd-servers="https://127.0.0.1:${ETCD_PORT}" --etcd-cafile="${PKI}/etcd-ca.crt" \
    --etcd-certfile="${PKI}/apiserver-etcd-client.crt" --etcd-keyfile="${PKI}/apiserver-etcd-client.key" \
    --secure-port="${APISERVER_PORT}" --advertise-address="${HOST_IP}" \
    --tls-cert-file="${PKI}/apiserver.crt" --tls-private-key-file="${PKI}/apiserver.key" --client-ca-file="${PKI}/ca.crt" \
    --kubelet-client-certificate="${PKI}/apiserver-kubelet-client.crt" --kubelet-client-key="${PKI}/apiserver-kubelet-client.key" \
    --service-account-key-file="${PKI}/sa.pub" --service-account-signing-key-file="${PKI}/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="${SERVICE_CIDR}" --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction --allow-privileged=true \
    --requestheader-client-ca-file="${PKI}/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-extra-headers-prefix=X-Remote-Extra- --requestheader-group-headers=X-Remote-Group \
    --requestheader-username-headers=X-Remote-User \
    --proxy-client-cert-file="${PKI}/front-proxy-client.crt" --proxy-client-key-file="${PKI}/front-proxy-client.key" \
    --enable-aggregator-routing=true --shutdown-delay-duration=0s
  [[ "${DRY_RUN:-0}" == 1 ]] && return 0
  util::wait_for "kube-apiserver /readyz" 90 cluster::kubectl get --raw /readyz || cluster::fail kube-apiserver
}

cluster::start_rest() {
  cluster::start kube-controller-manager "${SELFHEAL_BIN}/kube-controller-manager" \
    --kubeconfig="${CLUSTER_STATE}/controller-manager.kubeconfig" \
    --authentication-kubeconfig="${CLUSTER_STATE}/controller-manager.kubeconfig" \
    --authorization-kubeconfig="${CLUSTER_STATE}/controller-manager.kubeconfig" \
    --cluster-signing-cert-file="${PKI}/ca.crt" --cluster-signing-key-file="${PKI}/ca.key" --root-ca-file="${PKI}/ca.crt" \
    --service-account-private-key-file="${PKI}/sa.key" --use-service-account-credentials=true \
    --service-cluster-ip-range="${SERVICE_CIDR}" --cluster-cidr="${POD_CIDR}" --allocate-node-cidrs=false \
    --bind-address=127.0.0.1 --leader-elect=false
  cluster::start kube-scheduler "${SELFHEAL_BIN}/kube-scheduler" \
    --kubeconfig="${CLUSTER_STATE}/scheduler.kubeconfig" \
    --authentication-kubeconfig="${CLUSTER_STATE}/scheduler.kubeconfig" \
    --authorization-kubeconfig="${CLUSTER_STATE}/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false
  mkdir -p "${CLUSTER_STATE}/kubelet"
  # Two dead instances per container, not one: this kubelet with containerd 1.6 reports the
  # second-newest dead instance as lastState, and with one kept that one is already deleted, so
  # `kubectl logs --previous` (and the controller's crash evidence) found nothing. Flag only: the
  # KubeletConfiguration file has no field for it.
  cluster::start kubelet "${SELFHEAL_BIN}/kubelet" --config="${ETC}/kubelet.yaml" \
    --kubeconfig="${CLUSTER_STATE}/kubelet.kubeconfig" --root-dir="${CLUSTER_STATE}/kubelet" \
    --hostname-override="${NODE_NAME}" --node-ip="${HOST_IP}" --v=1 \
    --maximum-dead-containers-per-container=2
  cluster::start kube-proxy "${SELFHEAL_BIN}/kube-proxy" --config="${ETC}/kube-proxy.yaml"
}

# NetworkPolicy enforcement (the bridge CNI has none): kube-network-policies, a host process like
# kube-proxy. Its nftables table (inet kube-network-policies) sends the first packet of each new
# connection from or to a pod selected by some NetworkPolicy to nfqueue NETPOL_QUEUE; the agent
# answers accept or drop. Fail-closed: while the agent is down and its table is still there, new
# connections of those pods are dropped (established ones, other pods and root processes on the
# node, e.g. kubelet probes, are not affected). On TERM it removes its table itself.
cluster::start_netpol() {
  util::run cluster::kubectl apply -f "${ETC}/kube-network-policies.yaml" >/dev/null
  cluster::start kube-network-policies "${SELFHEAL_BIN}/kube-network-policies" \
    --kubeconfig="${CLUSTER_STATE}/kube-network-policies.kubeconfig" --hostname-override="${NODE_NAME}" \
    --nfqueue-id="${NETPOL_QUEUE}" --metrics-bind-address="127.0.0.1:${NETPOL_METRICS_PORT}" --v=1
  [[ "${DRY_RUN:-0}" == 1 ]] && return 0
  util::wait_for "NetworkPolicy rules (nftables table inet ${NETPOL_TABLE})" 60 \
    nft list table inet "${NETPOL_TABLE}" || cluster::fail kube-network-policies
}


cluster::node_ready() {
  [[ "$(cluster::kubectl get node "${NODE_NAME}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

cluster::dns_answers() {
  busybox nslookup kubernetes.default.svc.cluster.local "${DNS_IP}" 2>/dev/null | grep -q "${SERVICE_IP}"
}

cluster::addons() {
  util::run cluster::kubectl apply -f "${ETC}/coredns.yaml" -f "${ETC}/metrics-server.yaml" >/dev/null
}

# cluster::fail COMPONENT: stop with the component's log tail, the thing a reader needs first.
cluster::fail() {
  log::error "$1 did not come up; last lines of ${LOGS}/$1.log:"
  tail -n 30 "${LOGS}/$1.log" >&2 2>/dev/null || true
  log::fatal "cluster start failed at $1 (full logs: hack/cluster.sh logs $1; clean up: hack/cluster.sh down)"
}

cluster::preflight() {
  local port
  for port in "${APISERVER_PORT}" "${ETCD_PORT}" 10250 "${NETPOL_METRICS_PORT}"; do
    if util::port_in_use "${port}"; then
      log::fatal "port ${port} is already in use: another cluster (minikube, kind, a kubelet) may be running here; stop it or use it instead"
    fi
  done
}

cluster::up() {
  util::require_root "the local cluster"
  local c all_running=1 any_running=0
  for c in "${COMPONENTS[@]}"; do
    if cluster::running "${c}"; then any_running=1; else all_running=0; fi
  done
  HOST_IP="$(util::host_ip)"
  if ((all_running)) && cluster::node_ready; then
    log::ok "cluster already up: nothing to do"
    cluster::print_env
    return 0
  fi
  if ((!any_running)) && [[ -d "${CLUSTER_STATE}/pki" ]]; then
    # State without processes: a reboot or a crash. Start clean rather than half-reuse it.
    log::warn "found cluster state but no running component; cleaning it up first"
    cluster::down
  elif ((any_running)) && [[ "$(cat "${CLUSTER_STATE}/host-ip" 2>/dev/null)" != "${HOST_IP}" ]]; then
    log::fatal "this machine's IP changed to ${HOST_IP}; the certificates name the old one: run hack/cluster.sh down, then up"
  fi
  ((any_running)) || cluster::preflight
  local t0
  t0="$(date +%s)"
  cluster::ensure_tools
  cluster::ensure_images
  log::step "starting the local cluster (Kubernetes ${KUBE_VERSION}, node ${NODE_NAME}, ${HOST_IP})"
  mkdir -p "${CLUSTER_STATE}"
  chmod 700 "${CLUSTER_STATE}"
  cluster::pki
  cluster::config
  cluster::host_network
  cluster::start_containerd
  cluster::start_etcd
  cluster::start_apiserver
  cluster::start_rest
  [[ "${DRY_RUN:-0}" == 1 ]] && return 0
  util::wait_for "node ${NODE_NAME} Ready" 90 cluster::node_ready || cluster::fail kubelet
  util::wait_for "default ServiceAccount" 60 cluster::kubectl get serviceaccount default || cluster::fail kube-controller-manager
  cluster::start_netpol
  cluster::addons
  util::wait_for "CoreDNS rollout" 120 cluster::kubectl -n kube-system rollout status deployment/coredns --timeout=5s ||
    {
      cluster::kubectl -n kube-system describe pods -l k8s-app=kube-dns >&2 || true
      cluster::fail kubelet
    }
  util::wait_for "cluster DNS answering at ${DNS_IP}" 60 cluster::dns_answers || cluster::fail kube-proxy
  log::ok "cluster up in $(($(date +%s) - t0))s (metrics-server becomes available about 20 s later)"
  cluster::print_env
}

cluster::print_env() {
  log::info "use it with:  export KUBECONFIG=${CLUSTER_KUBECONFIG}"
}

# ---------------------------------------------------------------------------------------------
# down: containers first (their shims outlive containerd), then components, then leftovers.
# ---------------------------------------------------------------------------------------------
cluster::remove_containers() {
  [[ -S "${CONTAINERD_SOCK}" ]] && cluster::running containerd || return 0
  local t c
  # Their shims would otherwise outlive containerd. (util::run's own lines go to stderr.)
  for t in $(util::ctr tasks ls -q 2>/dev/null); do util::run util::ctr tasks kill -s SIGKILL "${t}" >/dev/null || true; done
  [[ "${DRY_RUN:-0}" == 1 ]] || sleep 1
  for t in $(util::ctr tasks ls -q 2>/dev/null); do util::run util::ctr tasks rm -f "${t}" >/dev/null || true; done
  for c in $(util::ctr containers ls -q 2>/dev/null); do util::run util::ctr containers rm "${c}" >/dev/null || true; done
}

cluster::down() {
  util::require_root "the local cluster"
  log::step "stopping the local cluster"
  local i c
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    c="${COMPONENTS[i]}"
    case "${c}" in
      containerd) cluster::remove_containers ;;
    esac
    cluster::stop "${c}"
  done
  # Shims are reparented when containerd stops; only ours name our socket.
  util::run pkill -9 -f "containerd-shim.*-address ${CONTAINERD_SOCK}" 2>/dev/null || true
  local m
  while read -r m; do
    util::run umount "${m}" 2>/dev/null || util::run umount -l "${m}" 2>/dev/null || true
  done < <(awk '{print $2}' /proc/mounts | grep -F "${CLUSTER_STATE}/" | sort -r)
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do
    [[ -z "$(ip netns pids "${ns}" 2>/dev/null)" ]] && util::run ip netns delete "${ns}"
  done
  ip link show "${BRIDGE}" >/dev/null 2>&1 && util::run ip link delete "${BRIDGE}"
  cluster::remove_netpol_table
  cluster::restore_iptables
  cluster::restore_sysctls
  util::run rm -f /var/lib/cni/results/selfheal-* 2>/dev/null || true
  util::run rm -rf "${CLUSTER_STATE}"
  log::ok "cluster down: processes stopped, state removed (${CLUSTER_STATE})"
}

# ---------------------------------------------------------------------------------------------
cluster::status() {
  local c pid rc=0
  for c in "${COMPONENTS[@]}"; do
    if pid="$(cluster::pid "${c}")"; then
      printf '%-26s running (pid %s)\n' "${c}" "${pid}"
    else
      printf '%-26s stopped\n' "${c}"
      rc=1
    fi
  done
  if ((rc == 0)); then
    cluster::kubectl get nodes -o wide 2>&1 || rc=1
    cluster::kubectl -n kube-system get deployments 2>&1 || rc=1
    cluster::kubectl get apiservice v1beta1.metrics.k8s.io 2>&1 || true
    printf 'KUBECONFIG=%s\n' "${CLUSTER_KUBECONFIG}"
  fi
  return "${rc}"
}

cluster::logs() {
  local only="${1:-}" c
  for c in "${COMPONENTS[@]}"; do
    [[ -z "${only}" || "${only}" == "${c}" ]] || continue
    [[ -f "${LOGS}/${c}.log" ]] || { log::warn "no log for ${c}"; continue; }
    if [[ -n "${only}" ]]; then
      cat "${LOGS}/${c}.log"
    else
      printf '==> %s <==\n' "${c}"
      tail -n "${LINES_PER}" "${LOGS}/${c}.log"
    fi
  done
}

main() {
  local cmd="" arg=""
  LINES_PER=20
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --dry-run) export DRY_RUN=1 ;;
      --lines) [[ $# -ge 2 ]] || util::usage_error "--lines needs a number"; LINES_PER="$2"; shift ;;
      -*) util::usage_error "unknown option: $1" ;;
      *) if [[ -z "${cmd}" ]]; then cmd="$1"; else arg="$1"; fi ;;
    esac
    shift
  done
  case "${cmd}" in
    up) cluster::up ;;
    down) cluster::down ;;
    status) cluster::status ;;
    logs) cluster::logs "${arg}" ;;
    kubeconfig) printf '%s\n' "${CLUSTER_KUBECONFIG}" ;;
    "") util::usage_error "no command given" ;;
    *) util::usage_error "unknown command: ${cmd}" ;;
  esac
}

main "$@"
