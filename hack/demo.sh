#!/usr/bin/env bash
# `make demo`: sets up a cluster (the local one, or the current minikube), builds and loads the
# app image, installs the Helm chart with the workshop values, then breaks it on purpose and shows Kubernetes healing it, with a
# timeline: layer 1 (a crashed container is restarted by the kubelet) and layer 2 (an unready pod
# leaves the Service's endpoints and comes back). Later layers join as their parts land.
# Prerequisites: root for the local cluster (Linux), or a running minikube.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: hack/demo.sh [options]

Options:
  --target T      local | minikube | auto (default auto: minikube when it is the current
                  kube context and running, else the local cluster)
  --namespace NS  namespace for the demo (default selfheal-demo)
  --dry-run       print what would be done, change nothing
  -h, --help      this help

Clean up:  helm -n selfheal-demo uninstall selfheal-app; kubectl delete namespace selfheal-demo   (and 'make cluster-down' for the local cluster)
EOF
}

TARGET=auto
NS=selfheal-demo
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --target) [[ $# -ge 2 ]] || util::usage_error "--target needs a value"; TARGET="$2"; shift ;;
    --namespace) [[ $# -ge 2 ]] || util::usage_error "--namespace needs a value"; NS="$2"; shift ;;
    --dry-run) export DRY_RUN=1 ;;
    *) util::usage_error "unknown argument: $1" ;;
  esac
  shift
done
[[ "${TARGET}" =~ ^(auto|local|minikube)$ ]] || util::usage_error "--target must be local, minikube or auto"

if [[ "${TARGET}" == auto ]]; then
  TARGET=local
  if command -v minikube >/dev/null && [[ "$(kubectl config current-context 2>/dev/null)" == minikube ]] &&
    minikube status >/dev/null 2>&1; then
    TARGET=minikube
  fi
fi

log::step "demo on the ${TARGET} cluster, namespace ${NS}"
if [[ "${TARGET}" == local ]]; then
  util::run "${REPO_ROOT}/hack/cluster.sh" up
  export KUBECONFIG="${CLUSTER_KUBECONFIG}"
  util::run "${REPO_ROOT}/hack/image.sh" --import app
else
  util::require_tools minikube kubectl
  util::run "${REPO_ROOT}/hack/image.sh" --minikube app
fi
util::require_tools kubectl curl python3 jq

log::step "installing the chart: release selfheal-app (2+ replicas, probes, HPA, PDB, /crash on)"
command -v helm >/dev/null || util::run "${REPO_ROOT}/hack/tools.sh" install helm
util::run kubectl create namespace "${NS}" --dry-run=client -o yaml | util::run kubectl apply -f - >/dev/null
util::run kubectl label namespace "${NS}" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
# A rebuilt image keeps its tag: the restartedAt annotation rolls the pods onto it.
util::run helm upgrade --install selfheal-app "${REPO_ROOT}/helm-chart" --namespace "${NS}" \
  -f "${REPO_ROOT}/helm-chart/values-demo.yaml" \
  --set image.repository=localhost/selfheal-app --set "image.tag=${IMAGE_TAG:-dev}" \
  --set-string "podAnnotations.selfheal\.io/restartedAt=$(date +%s)" \
  --wait --timeout 3m
util::run kubectl -n "${NS}" rollout status deployment/selfheal-app --timeout=120s
[[ "${DRY_RUN:-0}" == 1 ]] && exit 0

# ---------------------------------------------------------------------------------------------
K="kubectl -n ${NS}"
T0="$(date +%s.%N)"
TIMELINE=()
mark() {
  local t
  t="$(echo "$(date +%s.%N) - ${T0}" | bc)"
  TIMELINE+=("$(printf '%7.1fs  %s' "${t}" "$*")")
  log::info "$(printf '[%6.1fs] %s' "${t}" "$*")"
}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# forward TARGET: a port-forward on 127.0.0.1, stopped at exit; its local port lands in $port.
# Not called in $(...): the port-forward and its cleanup trap must belong to this shell.
forward() {
  port="$(free_port)"
  ${K} port-forward --address 127.0.0.1 "$1" "${port}:8080" >/dev/null 2>&1 &
  util::trap_add "kill $! 2>/dev/null || true"
  util::wait_for "port-forward to $1" 20 curl -fsS -m 2 "http://127.0.0.1:${port}/health" || log::fatal "port-forward to $1 failed"
}
restarts() { ${K} get pod "$1" -o jsonpath='{.status.containerStatuses[0].restartCount}'; }
is_ready() { [[ "$(${K} get pod "$1" -o jsonpath='{.status.containerStatuses[0].ready}')" == true ]]; }
ready_endpoints() {
  ${K} get endpointslices -l kubernetes.io/service-name=selfheal-app \
    -o jsonpath='{range .items[*].endpoints[*]}{.conditions.ready}{"\n"}{end}' | grep -c true || true
}
endpoints_are() { (($(ready_endpoints) == $1)); }
endpoints_below() { (($(ready_endpoints) < $1)); }
restarted_since() { (($(restarts "$1") > $2)); }

# The pods of this rollout: old ones may still be terminating.
mapfile -t PODS < <(${K} get pods -l app.kubernetes.io/name=selfheal-app,track=stable -o json |
  jq -r '.items[] | select(.metadata.deletionTimestamp == null) | .metadata.name')
((${#PODS[@]} >= 2)) || log::fatal "expected 2 pods, found ${#PODS[@]}"

log::step "the service answers"
forward "pod/${PODS[0]}"
curl -fsS "http://127.0.0.1:${port}/" >&2
echo >&2

log::step "layer 1 — liveness restart: ${PODS[0]} crashes (POST /crash?mode=exit)"
before="$(restarts "${PODS[0]}")"
mark "fault injected: ${PODS[0]} exits non-zero (restartCount ${before})"
curl -fsS -X POST "http://127.0.0.1:${port}/crash?mode=exit" >/dev/null || true
util::wait_for "kubelet to restart the container" 60 restarted_since "${PODS[0]}" "${before}"
mark "detected: kubelet restarted the container (restartCount $(restarts "${PODS[0]}"))"
util::wait_for "${PODS[0]} Ready again" 60 is_ready "${PODS[0]}"
mark "healed: ${PODS[0]} Ready again, back in the Service"

log::step "layer 2 — readiness removal: ${PODS[1]} turns unready for 15 s"
total="$(ready_endpoints)"
forward "pod/${PODS[1]}"
mark "fault injected: ${PODS[1]} reports unready (ready endpoints: $(ready_endpoints))"
curl -fsS -X POST "http://127.0.0.1:${port}/crash?mode=unready&seconds=15" >/dev/null
util::wait_for "the Service to drop ${PODS[1]}" 30 endpoints_below "${total}"
mark "detected: readiness probe failed, Service endpoints ready: $(ready_endpoints)/${total}"
util::wait_for "${PODS[1]} back in the Service" 60 endpoints_are "${total}"
mark "healed: readiness restored, Service endpoints ready: $(ready_endpoints)/${total} (no restart: $(restarts "${PODS[1]}") restarts)"

printf '\n==== timeline ====\n'
printf '%s\n' "${TIMELINE[@]}"
cat <<EOF

The app keeps running in namespace ${NS}. Try it yourself:
  export KUBECONFIG=${KUBECONFIG:-~/.kube/config}
  kubectl -n ${NS} port-forward svc/selfheal-app 8080:80 &
  curl -X POST 'localhost:8080/crash?mode=unhealthy'      # liveness fails -> restart
  kubectl -n ${NS} get pods -w
Clean up: helm -n ${NS} uninstall selfheal-app; kubectl delete namespace ${NS}$([[ "${TARGET}" == local ]] && echo "; make cluster-down")
EOF
