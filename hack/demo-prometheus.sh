#!/usr/bin/env bash
# A Prometheus for the demo's PromQL healers (layers 9 pool and 10 breaker) on the local
# cluster, where no monitoring stack runs: the real server (hack/tools.sh install prometheus) on
# this machine, and the controller's pod reaches it on the node's address. It discovers the pods
# of one namespace and keeps those with a container port named `http`, every 5 s, with the
# `namespace` and `pod` labels a ServiceMonitor or PodMonitor scrape carries. It scrapes them
# through the API server's pod proxy as a ServiceAccount allowed only that (prom::pod_proxy_config
# in hack/lib.sh), never at a pod IP. `start` also points selfheal-controller at it
# (CONTROLLER_PROMETHEUS_URL); `stop` undoes both and removes the ServiceAccount.
# On minikube use the observability stack instead (observability/install.sh): hack/demo.sh sets
# the controller to its Prometheus, and the runner adds a PodMonitor per scenario.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: hack/demo-prometheus.sh start|stop|status [options]

  start     start Prometheus (built on first use), wait until it answers, set the controller's
            CONTROLLER_PROMETHEUS_URL to it and wait for the controller's rollout; the
            namespace must exist (its ServiceAccount prometheus is created)
  stop      remove CONTROLLER_PROMETHEUS_URL from the controller, stop Prometheus, delete its
            data and the ServiceAccount it scraped as
  status    print the URL when it runs (exit 1 when it does not)

Options:
  --namespace NS   namespace whose pods are scraped (default selfheal-demo)
  --port PORT      listen port on all addresses (default 19090)
  --no-controller  leave selfheal-controller alone (start/stop Prometheus only)
  --dry-run        print what would be done, change nothing
  -h, --help       this help

State: ${SELFHEAL_HOME}/demo-prometheus/ (pid, namespace, config, token, CA, data, log).
EOF
}

CMD=""
NS=selfheal-demo
PORT=19090
CONTROLLER=1
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    start | stop | status) [[ -z "${CMD}" ]] || util::usage_error "one command only"; CMD="$1" ;;
    --namespace) util::need_value "$1" $#; NS="$2"; shift ;;
    --port) util::need_value "$1" $#; PORT="$2"; shift ;;
    --no-controller) CONTROLLER=0 ;;
    --dry-run) export DRY_RUN=1 ;;
    *) util::usage_error "unknown argument: $1" ;;
  esac
  shift
done
[[ -n "${CMD}" ]] || util::usage_error "start, stop or status?"
if ! [[ "${PORT}" =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
  util::usage_error "--port must be a TCP port number"
fi
[[ "${NS}" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || util::usage_error "--namespace must be a Kubernetes namespace name"

STATE="${SELFHEAL_HOME}/demo-prometheus"
PIDFILE="${STATE}/pid"
export KUBECONFIG="${KUBECONFIG:-${CLUSTER_KUBECONFIG}}"

running() { [[ -f "${PIDFILE}" ]] && kill -0 "$(cat "${PIDFILE}")" 2>/dev/null; }
ready() { curl -fsS "http://127.0.0.1:${PORT}/-/ready" >/dev/null; }

# The node's address as the controller's pod sees it: the Node's InternalIP.
node_ip() {
  kubectl get nodes -o jsonpath='{.items[0].status.addresses[?(@.type=="InternalIP")].address}'
}

set_controller_url() {
  ((CONTROLLER)) || return 0
  kubectl -n selfheal-system get deployment selfheal-controller >/dev/null 2>&1 ||
    { log::warn "selfheal-controller is not installed: nothing to point at Prometheus"; return 0; }
  util::run kubectl -n selfheal-system set env deployment/selfheal-controller "$1" >/dev/null
  util::run kubectl -n selfheal-system rollout status deployment/selfheal-controller --timeout=180s
}

start() {
  util::require_tools kubectl curl
  if running; then
    log::info "already running (pid $(cat "${PIDFILE}")) on port ${PORT}"
  else
    util::port_in_use "${PORT}" && log::fatal "port ${PORT} is in use: pick another with --port"
    command -v prometheus >/dev/null || util::run "${REPO_ROOT}/hack/tools.sh" install prometheus
    log::step "starting Prometheus on :${PORT}, scraping the pods of ${NS} every 5 s (state ${STATE})"
    util::run mkdir -p "${STATE}/data"
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
      printf '%s [dry-run] %s\n' "$(log::_ts)" "prom::pod_proxy_config ${STATE} ${NS} 5s (ServiceAccount ${NS}/prometheus: list/watch pods, get pods/proxy)" >&2
    else
      kubectl get namespace "${NS}" >/dev/null 2>&1 ||
        log::fatal "namespace ${NS} does not exist: nothing to scrape (hack/demo.sh creates it)"
      echo "${NS}" >"${STATE}/namespace"
      prom::pod_proxy_config "${STATE}" "${NS}" 5s ||
        { stop_prometheus; log::fatal "could not set up the scrape of ${NS} through the API server"; }
      prometheus --config.file="${STATE}/prometheus.yml" --storage.tsdb.path="${STATE}/data" \
        --storage.tsdb.retention.time=2h --web.listen-address="0.0.0.0:${PORT}" \
        >"${STATE}/prometheus.log" 2>&1 &
      echo $! >"${PIDFILE}"
      util::wait_for "Prometheus to answer on :${PORT}" 60 ready ||
        { tail -n 20 "${STATE}/prometheus.log" >&2; stop_prometheus; log::fatal "Prometheus did not start"; }
    fi
  fi
  local ip
  ip="$(node_ip)"
  [[ -n "${ip}" ]] || log::fatal "the node has no InternalIP address: the controller could not reach Prometheus"
  log::step "pointing selfheal-controller at http://${ip}:${PORT}"
  set_controller_url "CONTROLLER_PROMETHEUS_URL=http://${ip}:${PORT}"
  log::ok "Prometheus: http://127.0.0.1:${PORT} (stop: hack/demo-prometheus.sh stop)"
}

stop_prometheus() {
  if running; then
    util::run kill "$(cat "${PIDFILE}")"
    [[ "${DRY_RUN:-0}" == 1 ]] || util::wait_for "Prometheus to stop" 30 bash -c "! kill -0 $(cat "${PIDFILE}") 2>/dev/null"
  fi
  # The namespace it scraped, as start wrote it (stop is often called without --namespace).
  if [[ -f "${STATE}/namespace" ]]; then
    util::run prom::pod_proxy_cleanup "$(cat "${STATE}/namespace")" ||
      log::warn "could not remove the ServiceAccount prometheus (is its namespace being deleted?)"
  fi
  util::run rm -rf "${STATE}"
}

stop() {
  log::step "stopping the demo Prometheus; the controller no longer asks it"
  # Prometheus first: a controller that is being removed (a test's cleanup) must not keep it
  # running. Then the controller's setting, best effort: an unanswered URL only costs it errors.
  stop_prometheus
  if kubectl -n selfheal-system get deployment selfheal-controller >/dev/null 2>&1; then
    set_controller_url "CONTROLLER_PROMETHEUS_URL-" ||
      log::warn "could not remove CONTROLLER_PROMETHEUS_URL from selfheal-controller (is it being deleted?)"
  fi
}

case "${CMD}" in
  start) start ;;
  stop) stop ;;
  status)
    running || { log::info "not running"; exit 1; }
    echo "http://127.0.0.1:${PORT}"
    ;;
esac
