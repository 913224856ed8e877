# shellcheck shell=bash
# The one shared bash library. Every script sources it, resolved from its own path:
#   source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
# It sets strict mode, REPO_ROOT, SELFHEAL_HOME (caches and local-cluster state) and puts the
# pinned tools first on PATH; it defines namespaced helpers: log::*, util::*.

set -o errexit -o nounset -o pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Everything built or downloaded lives here, keyed by version, never in the repo.
SELFHEAL_HOME="${SELFHEAL_HOME:-${HOME}/.cache/selfheal}"
SELFHEAL_BIN="${SELFHEAL_HOME}/bin"
export REPO_ROOT SELFHEAL_HOME SELFHEAL_BIN
case ":${PATH}:" in
  *":${SELFHEAL_BIN}:"*) ;;
  *) export PATH="${SELFHEAL_BIN}:${PATH}" ;;
esac
# shellcheck source=hack/versions.sh
source "${REPO_ROOT}/hack/versions.sh"

# ---------------------------------------------------------------------------------------------
# Logging: timestamped, to stderr, so stdout stays clean for data (json, kubeconfig paths).
# ---------------------------------------------------------------------------------------------
log::_ts() { date -u +%H:%M:%S; }
# log::step "doing X": the start of a step a reader follows.
log::step() { printf '%s >>> %s\n' "$(log::_ts)" "$*" >&2; }
log::info() { printf '%s     %s\n' "$(log::_ts)" "$*" >&2; }
# log::ok "X": a check that passed.
log::ok() { printf '%s ✔ %s\n' "$(log::_ts)" "$*" >&2; }
log::warn() { printf '%s !!! warning: %s\n' "$(log::_ts)" "$*" >&2; }
log::error() { printf '%s !!! error: %s\n' "$(log::_ts)" "$*" >&2; }
# log::fatal "why": print and exit 1. Bad usage should exit 2 through util::usage_error instead.
log::fatal() {
  log::error "$*"
  exit 1
}

# ---------------------------------------------------------------------------------------------
# Utilities
# ---------------------------------------------------------------------------------------------

# util::usage_error "msg": bad command line; the caller's usage() is printed, exit 2.
util::usage_error() {
  log::error "$*"
  if declare -F usage >/dev/null; then usage >&2; fi
  exit 2
}

# util::need_value FLAG "$#": in an argument loop, the flag must be followed by a value.
util::need_value() { (($2 >= 2)) || util::usage_error "$1 needs a value"; }

# util::seconds DURATION: whole seconds of 90, 90s, 5m, 1h or 1m30s (Go-style, as kubectl and
# helm take them); fails with no output otherwise.
util::seconds() {
  local s="$1" total=0
  if [[ "${s}" =~ ^[0-9]+$ ]]; then
    printf '%s\n' "$((10#${s}))"
    return 0
  fi
  [[ "${s}" =~ ^([0-9]+[hms])+$ ]] || return 1
  while [[ "${s}" =~ ^([0-9]+)([hms])(.*)$ ]]; do
    case "${BASH_REMATCH[2]}" in
      h) total=$((total + 10#${BASH_REMATCH[1]} * 3600)) ;;
      m) total=$((total + 10#${BASH_REMATCH[1]} * 60)) ;;
      s) total=$((total + 10#${BASH_REMATCH[1]})) ;;
    esac
    s="${BASH_REMATCH[3]}"
  done
  printf '%s\n' "${total}"
}

# util::no_arguments "$@": for scripts that take only -h/--help (usage() must exist).
util::no_arguments() {
  case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) util::usage_error "unknown argument: $1" ;;
  esac
}

# util::require_tools tool...: fail with one message naming every missing tool and the fix.
util::require_tools() {
  local missing=() t
  for t in "$@"; do
    command -v "${t}" >/dev/null 2>&1 || missing+=("${t}")
  done
  if ((${#missing[@]})); then
    log::fatal "missing tools: ${missing[*]} (install them with: ${REPO_ROOT}/hack/tools.sh install)"
  fi
}

# util::require_root "what": the local cluster needs root (mounts, iptables, containerd).
util::require_root() {
  [[ "$(uname -s)" == Linux ]] || log::fatal "$1 needs Linux; on macOS or Windows use minikube (see README)"
  [[ "$(id -u)" == 0 ]] || log::fatal "$1 needs root (it starts containerd, kubelet and iptables rules); run it with sudo, or use minikube instead"
}

# util::run cmd...: print the command; skip it when DRY_RUN=1. Use for every cluster change.
util::run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%s [dry-run] %s\n' "$(log::_ts)" "$*" >&2
    return 0
  fi
  printf '%s     + %s\n' "$(log::_ts)" "$*" >&2
  "$@"
}

# util::wait_for "what" timeout_seconds cmd...: poll cmd once a second until it succeeds.
# Prints progress every 10 s and returns 1 (not exit) on timeout so callers can dump diagnostics.
util::wait_for() {
  local what="$1" timeout="$2"
  shift 2
  local start now
  start="$(date +%s)"
  local next_report=$((start + 10))
  until "$@" >/dev/null 2>&1; do
    now="$(date +%s)"
    if ((now - start >= timeout)); then
      log::error "timed out after ${timeout}s waiting for ${what}"
      return 1
    fi
    if ((now >= next_report)); then
      log::info "still waiting for ${what} ($((now - start))s/${timeout}s)"
      next_report=$((now + 10))
    fi
    sleep 1
  done
  log::info "${what}: ok after $(($(date +%s) - start))s"
}

# util::trap_add "cmd" [signal]: add to a trap instead of replacing it, so cleanups compose.
util::trap_add() {
  local cmd="$1" sig="${2:-EXIT}" current=""
  local -a parsed=()
  # `trap -p` prints a shell-quoted "trap -- 'cmd' SIG"; let the shell unquote it.
  eval "parsed=($(trap -p "${sig}"))"
  ((${#parsed[@]} >= 3)) && current="${parsed[2]}"
  trap -- "${current:+${current}; }${cmd}" "${sig}"
}

# util::port_in_use PORT: true when something listens on the TCP port.
util::port_in_use() {
  ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# util::free_port: a loopback TCP port nothing listens on right now (the kernel picks it).
util::free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# util::stop PID: end a process this script started: TERM, then KILL after 10 s.
util::stop() {
  local pid="$1" i
  kill "${pid}" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "${pid}" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "${pid}" 2>/dev/null || true
}

# util::scratch_dir: set TMP to a new temporary directory, removed at exit unless KEEP_TMP=1
# (then its path is printed at exit, for debugging). Not in a subshell: it sets a trap.
util::scratch_dir() {
  TMP="$(mktemp -d)"
  if [[ "${KEEP_TMP:-0}" == 1 ]]; then
    util::trap_add "log::info 'kept ${TMP}'"
  else
    util::trap_add "rm -rf '${TMP}'"
  fi
}

# util::host_ip: the node's primary IPv4 address (the source address of the default route).
util::host_ip() {
  local ip
  ip="$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i <= NF; i++) if ($i == "src") print $(i + 1)}')"
  [[ -n "${ip}" ]] || ip="$(hostname -I 2>/dev/null | awk '{print $1}')"
  [[ -n "${ip}" ]] || log::fatal "cannot find this machine's IPv4 address (no default route, hostname -I empty)"
  printf '%s\n' "${ip}"
}

# ---------------------------------------------------------------------------------------------
# Checks: every test script counts with these and ends with check::summary's
# "NAME: N passed, N failed" line, which hack/test.sh adds up.
# ---------------------------------------------------------------------------------------------
CHECK_PASSED=0
CHECK_FAILED=0
CHECK_FAILURES=()

# check::run "what" cmd...: run cmd, count and print the result, keep going.
check::run() {
  local what="$1"
  shift
  log::step "${what}"
  if "$@"; then
    CHECK_PASSED=$((CHECK_PASSED + 1))
    log::ok "${what} passed"
  else
    CHECK_FAILED=$((CHECK_FAILED + 1))
    CHECK_FAILURES+=("${what}")
    log::error "${what} FAILED"
  fi
  return 0
}

# check::summary NAME: list the failures, print the closing line; true when all passed.
check::summary() {
  local f
  for f in "${CHECK_FAILURES[@]}"; do log::error "failed: ${f}"; done
  printf '%s: %d passed, %d failed\n' "$1" "${CHECK_PASSED}" "${CHECK_FAILED}"
  ((CHECK_FAILED == 0))
}

# ---------------------------------------------------------------------------------------------
# minikube: what hack/demo.sh and hack/image.sh decide on a minikube cluster, as small functions
# hack/tests/minikube.sh calls directly. They read the current kube context, never change it.
# ---------------------------------------------------------------------------------------------

# minikube::node_arch: the architecture of the current kube context's Nodes, as their kubelet
# reports it: label kubernetes.io/arch, else .status.nodeInfo.architecture. Fails (1, saying
# why) when no Node can be read, or when the Nodes differ (one image platform could not serve
# every Node).
minikube::node_arch() {
  local out archs
  out="$(kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.labels.kubernetes\.io/arch}{" "}{.status.nodeInfo.architecture}{"\n"}{end}' 2>&1)" || {
    log::error "cannot read the Nodes of kube context '$(kubectl config current-context 2>/dev/null || echo none)': ${out}"
    return 1
  }
  # The label when set, else nodeInfo (awk's first field either way).
  archs="$(awk 'NF { print $1 }' <<<"${out}" | sort -u)"
  if [[ -z "${archs}" ]]; then
    log::error "no Node with an architecture in kube context '$(kubectl config current-context 2>/dev/null || echo none)'"
    return 1
  fi
  if [[ "${archs}" == *$'\n'* ]]; then
    log::error "the Nodes run different architectures ($(paste -sd, - <<<"${archs}")): the demo loads one platform of each image"
    return 1
  fi
  printf '%s\n' "${archs}"
}

# minikube::platform ARCH: the platform of hack/image.sh's image index that runs on a Node of
# ARCH (linux/amd64, linux/arm64); any other architecture fails (1) naming the supported ones.
minikube::platform() {
  case "$1" in
    amd64 | arm64) printf 'linux/%s\n' "$1" ;;
    *)
      log::error "node architecture '$1' is not supported: the images are built for linux/amd64 and linux/arm64 only (hack/image.sh --platforms)"
      return 1
      ;;
  esac
}

# minikube::profile: the minikube profile of the current kube context: MINIKUBE_PROFILE (minikube
# reads it too), else the minikube.k8s.io/name label minikube puts on its Nodes; empty when
# neither (not a minikube cluster).
minikube::profile() {
  if [[ -n "${MINIKUBE_PROFILE:-}" ]]; then
    printf '%s\n' "${MINIKUBE_PROFILE}"
    return 0
  fi
  kubectl get nodes -o jsonpath='{.items[0].metadata.labels.minikube\.k8s\.io/name}' 2>/dev/null || true
}

# minikube::target HAVE_MINIKUBE PROFILE: where `hack/demo.sh --target auto` runs: minikube when
# the minikube command is there (HAVE_MINIKUBE=yes) and the current context is a minikube
# profile's (PROFILE not empty), else the local cluster.
minikube::target() {
  if [[ "$1" == yes && -n "$2" ]]; then echo minikube; else echo local; fi
}

# minikube::addons LAYERS: the addons those demo layers need, one a line. LAYERS as hack/demo.sh
# takes it (empty = the seven recovery layers). metrics-server: layer 5's HPA and layer 8's
# (leak) memory trend. No ingress: layer 7's canary uses the replica strategy (canary/deploy.sh
# --strategy replicas), and the load goes to the Service's NodePort.
minikube::addons() {
  if [[ ",${1:-1,2,3,4,5,6,7}," =~ ,(5|8|leak|ops), ]]; then echo metrics-server; fi
}

# minikube::image_build OS: how the demo builds images for minikube: IMAGE_BUILD when set
# (tarball | docker), else `tarball` (hack/image.sh, no Docker) on Linux and `docker` (buildx)
# elsewhere, where the static Linux binaries need a Linux toolchain that buildx brings.
minikube::image_build() {
  case "${IMAGE_BUILD:-}" in
    tarball | docker) echo "${IMAGE_BUILD}" ;;
    "") if [[ "$1" == Linux ]]; then echo tarball; else echo docker; fi ;;
    *)
      log::error "IMAGE_BUILD must be tarball or docker, not '${IMAGE_BUILD}'"
      return 1
      ;;
  esac
}

# ---------------------------------------------------------------------------------------------
# The local cluster's paths (hack/cluster.sh owns them; others read them).
# ---------------------------------------------------------------------------------------------
CLUSTER_STATE="${SELFHEAL_HOME}/cluster"
CLUSTER_KUBECONFIG="${CLUSTER_STATE}/kubeconfig"
CONTAINERD_SOCK="${CLUSTER_STATE}/run/containerd.sock"
# IMAGES_DIR can be pointed elsewhere (hack/tests/images.sh builds into a temporary one).
IMAGES_DIR="${IMAGES_DIR:-${SELFHEAL_HOME}/images}"
export CLUSTER_STATE CLUSTER_KUBECONFIG CONTAINERD_SOCK IMAGES_DIR

# util::ctr args...: ctr against the local cluster's containerd, in the namespace the kubelet uses.
util::ctr() {
  ctr --address "${CONTAINERD_SOCK}" --namespace k8s.io "$@"
}

# ---------------------------------------------------------------------------------------------
# A Prometheus on this machine scrapes pods through the API server, never at a pod IP: from the
# host, traffic goes to 127.0.0.1 or the API server only (minikube in CI has no route to pods).
# ---------------------------------------------------------------------------------------------

# prom::pod_proxy_config DIR NS INTERVAL [SELECTOR]: write DIR/prometheus.yml for a Prometheus
# that scrapes, every INTERVAL, the pods of NS with a container port named `http` (and matching
# the label SELECTOR when given) through the API server's pod proxy,
# https://SERVER/api/v1/namespaces/NS/pods/POD:PORT/proxy/metrics. Discovery and scrapes go as
# the ServiceAccount NS/prometheus, which may only list/watch pods and get pods/proxy in NS
# (applied here; remove it with prom::pod_proxy_cleanup): its token (24 h) goes to DIR/token,
# the cluster CA of the current context to DIR/ca.crt. Series carry the labels a PodMonitor
# scrape gives them: namespace, pod, instance = the pod's name, and track from the pod's label
# (as the chart's ServiceMonitor podTargetLabels). The workshop rules of self-healing/ are loaded,
# so the recorded series (selfheal:http_error_ratio:rate1m, ...) that the canary analysis reads exist.
prom::pod_proxy_config() {
  local dir="$1" ns="$2" interval="$3" selector="${4:-}"
  local server host prefix ca selectors=""
  server="$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')" || return 1
  if ! [[ "${server}" =~ ^https://([^/]+)(/.*)?$ ]]; then
    log::error "the API server '${server}' is not https://HOST[:PORT][/PATH]: cannot scrape through its pod proxy"
    return 1
  fi
  host="${BASH_REMATCH[1]}"
  prefix="${BASH_REMATCH[2]%/}"
  ca="$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')" || return 1
  if [[ -n "${ca}" ]]; then
    base64 -d <<<"${ca}" >"${dir}/ca.crt" || return 1
  else
    cp "$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')" "${dir}/ca.crt" || return 1
  fi
  kubectl apply -f - >/dev/null <<EOF || return 1
apiVersion: v1
kind: ServiceAccount
metadata: {name: prometheus, namespace: ${ns}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: prometheus, namespace: ${ns}}
rules:
  - {apiGroups: [""], resources: [pods], verbs: [get, list, watch]}
  - {apiGroups: [""], resources: [pods/proxy], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: prometheus, namespace: ${ns}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: prometheus}
subjects: [{kind: ServiceAccount, name: prometheus, namespace: ${ns}}]
EOF
  (umask 077 && kubectl --namespace "${ns}" create token prometheus --duration 24h >"${dir}/token") || return 1
  [[ -z "${selector}" ]] || selectors="
        selectors: [{role: pod, label: '${selector}'}]"
  cat >"${dir}/prometheus.yml" <<EOF
# Written by prom::pod_proxy_config (hack/lib.sh): pods of ${ns} through ${server}'s pod proxy.
global: {scrape_interval: ${interval}, scrape_timeout: ${interval}, evaluation_interval: ${interval}}
rule_files: ['${REPO_ROOT}/self-healing/rules/workshop.rules.yaml']
scrape_configs:
  - job_name: pods
    scheme: https
    authorization: {credentials_file: '${dir}/token'}
    tls_config: {ca_file: '${dir}/ca.crt'}
    kubernetes_sd_configs:
      - role: pod
        api_server: '${server}'
        authorization: {credentials_file: '${dir}/token'}
        tls_config: {ca_file: '${dir}/ca.crt'}
        namespaces: {names: [${ns}]}${selectors}
    relabel_configs:
      - {source_labels: [__meta_kubernetes_pod_container_port_name], regex: http, action: keep}
      - {source_labels: [__meta_kubernetes_pod_phase], regex: Running, action: keep}
      - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
      - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
      - {source_labels: [__meta_kubernetes_pod_label_track], target_label: track}
      # Every target has the API server's address: the pod's name tells them apart.
      - {source_labels: [__meta_kubernetes_pod_name], target_label: instance}
      - source_labels: [__meta_kubernetes_namespace, __meta_kubernetes_pod_name, __meta_kubernetes_pod_container_port_number]
        regex: '(.+);(.+);(.+)'
        target_label: __metrics_path__
        replacement: '${prefix}/api/v1/namespaces/\$1/pods/\$2:\$3/proxy/metrics'
      - {target_label: __address__, replacement: '${host}'}
EOF
}

# prom::pod_proxy_cleanup NS: remove what prom::pod_proxy_config applied in NS (its token stops
# working with the ServiceAccount).
prom::pod_proxy_cleanup() {
  kubectl --namespace "$1" delete rolebinding/prometheus role/prometheus serviceaccount/prometheus \
    --ignore-not-found --wait=false >/dev/null
}
