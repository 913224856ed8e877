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

# Traffic from the host goes to loopback only (issue 23): a NodePort on 127.0.0.1, a
# `kubectl port-forward` or the API server's proxy — never a ClusterIP, pod IP or node IP.
# Both helpers below set E2E_ADDRESS (host:port), which the scripts that source this file read.
E2E_ADDRESS=""

# e2e::minikube_profile: the minikube profile under test (E2E_MINIKUBE_PROFILE, else the one
# minikube::profile reads from the Nodes), or nothing on a cluster that is not minikube.
e2e::minikube_profile() {
  if [[ -n "${E2E_MINIKUBE_PROFILE:-}" ]]; then
    echo "${E2E_MINIKUBE_PROFILE}"
  else
    minikube::profile
  fi
}

# e2e::nodeport NS SERVICE: sets E2E_ADDRESS to the host:port where this host reaches the
# NodePort Service: 127.0.0.1:NODEPORT (kube-proxy serves NodePorts on localhost; hack/cluster.sh
# sets route_localnet), or, on minikube (e2e::minikube_profile), the address
# `minikube service --url` prints (it keeps running
# as a tunnel on some drivers: stopped at exit). Call it directly, not in $(...).
# shellcheck disable=SC2034 # E2E_ADDRESS is read by the caller
e2e::nodeport() {
  local ns="$1" svc="$2" profile out port
  profile="$(e2e::minikube_profile)"
  if [[ -z "${profile}" ]]; then
    port="$(kubectl --namespace "${ns}" get service "${svc}" -o jsonpath='{.spec.ports[0].nodePort}')" || return 1
    [[ -n "${port}" ]] || { log::error "service ${ns}/${svc} has no nodePort"; return 1; }
    E2E_ADDRESS="127.0.0.1:${port}"
    return 0
  fi
  util::require_tools minikube
  out="$(mktemp)"
  util::trap_add "rm -f '${out}'"
  minikube --profile "${profile}" service --url --namespace "${ns}" "${svc}" >"${out}" 2>&1 &
  # SIGINT: on tunnel drivers (Docker Desktop) that is how minikube closes its ssh tunnel.
  util::trap_add "kill -INT $! 2>/dev/null || true"
  e2e::eventually 60 grep -q '^http://' "${out}" || { log::error "minikube service --url ${svc}: $(cat "${out}")"; return 1; }
  E2E_ADDRESS="$(sed -n 's|^http://||p' "${out}" | head -1)"
}

# e2e::port_forward NS TARGET PORT: sets E2E_ADDRESS to 127.0.0.1:LOCAL, where
# `kubectl port-forward TARGET :PORT` (through the API server) listens; stopped at exit.
# TARGET is service/NAME or pod/NAME; a Service is forwarded to one of its pods.
# shellcheck disable=SC2034 # E2E_ADDRESS is read by the caller
e2e::port_forward() {
  local out
  out="$(mktemp)"
  util::trap_add "rm -f '${out}'"
  kubectl --namespace "$1" port-forward --address 127.0.0.1 "$2" ":$3" >"${out}" 2>&1 &
  util::trap_add "kill $! 2>/dev/null || true"
  e2e::eventually 30 grep -q '^Forwarding from 127.0.0.1:' "${out}" || { log::error "kubectl port-forward $2: $(cat "${out}")"; return 1; }
  E2E_ADDRESS="$(sed -n 's|^Forwarding from \(127.0.0.1:[0-9]*\) .*|\1|p' "${out}" | head -1)"
}

# e2e::dump NS: what a reader needs when a check failed.
e2e::dump() {
  log::info "diagnostics for namespace $1:"
  kubectl -n "$1" get all -o wide >&2 || true
  kubectl -n "$1" get events --sort-by=.lastTimestamp >&2 || true
}


# e2e::crasher NAME NAMESPACE [SECONDS] [REPLICAS]: prints a restricted-PSS Deployment (REPLICAS,
# default 1, of the toolbox image) whose container exits 1 after SECONDS (default 2): the crash
# loop that layer 3 and its tests need. Pipe it to kubectl apply -f -.
e2e::crasher() {
  local name="$1" ns="$2" secs="${3:-2}" replicas="${4:-1}"
  cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: ${name}, namespace: ${ns}}
spec:
  replicas: ${replicas}
  selector: {matchLabels: {app: ${name}}}
  template:
    metadata: {labels: {app: ${name}}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: main
        image: localhost/selfheal-toolbox:dev
        imagePullPolicy: Never
        command: ["sh", "-c", "echo failing on purpose; sleep ${secs}; exit 1"]
        resources: {requests: {cpu: 5m, memory: 8Mi}, limits: {memory: 16Mi}}
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
YAML
}

# e2e::install_controller own|reuse [DIR]: kubectl apply -k DIR (default controller/deploy; the
# demo uses controller/deploy-demo, the same objects on demo timings) (namespace selfheal-system,
# the HealingPolicy CRD, RBAC). An earlier test's cleanup still deleting the namespace or the CRD
# is waited for. An installed controller is an error with `own` (the test needs its own), or is
# used and left alone with `reuse`. At exit it deletes exactly what it created: the namespace, and
# the cluster-scoped objects that did not exist before (deleting a CRD that was there would delete
# every HealingPolicy in the cluster).
E2E_CONTROLLER_NS=selfheal-system
e2e::install_controller() {
  local reuse=0 manifest obj dir="${2:-controller/deploy}"
  case "${1:-}" in
    own) ;;
    reuse) reuse=1 ;;
    *) log::fatal "e2e::install_controller needs own or reuse" ;;
  esac
  for obj in "namespace/${E2E_CONTROLLER_NS}" crd/healingpolicies.selfheal.io; do
    e2e::eventually 180 e2e::not_terminating "${obj}" || log::fatal "${obj} is still being deleted after 180 s"
  done
  if kubectl get namespace "${E2E_CONTROLLER_NS}" >/dev/null 2>&1; then
    ((reuse)) || log::fatal "namespace ${E2E_CONTROLLER_NS} already exists: a controller is installed; this test installs and removes its own"
    log::info "selfheal-controller already installed in ${E2E_CONTROLLER_NS}: using it, leaving it alone"
    return 0
  fi
  manifest="$(mktemp)"
  util::trap_add "rm -f '${manifest}'"
  kubectl kustomize "${REPO_ROOT}/${dir}" >"${manifest}"
  e2e::remove_at_exit "${manifest}"
  log::step "installing selfheal-controller (kubectl apply -k ${dir}); removed at exit: ${E2E_CREATED[*]}"
  kubectl apply -f "${manifest}" >/dev/null
}

# e2e::remove_at_exit MANIFEST: before MANIFEST is applied (by the test or by a script under
# test), arrange that its namespace and cluster-scoped objects that do not exist yet are deleted
# at exit (listed in E2E_CREATED); objects that were there before are left alone.
e2e::remove_at_exit() {
  local obj existing
  E2E_CREATED=()
  existing="$(kubectl get -f "$1" -o name --ignore-not-found 2>/dev/null || true)"
  while read -r obj; do
    case "${obj}" in
      namespace/* | clusterrole.* | clusterrolebinding.* | customresourcedefinition.* | validatingadmissionpolicy*)
        grep -qxF "${obj}" <<<"${existing}" || E2E_CREATED+=("${obj}") ;;
    esac
  done < <(kubectl apply --dry-run=client -o name -f "$1")
  util::trap_add "kubectl delete ${E2E_CREATED[*]} --ignore-not-found --wait=false >/dev/null 2>&1 || true"
}

# e2e::not_terminating KIND/NAME: the object is absent or not being deleted.
e2e::not_terminating() {
  local ts
  ts="$(kubectl get "$1" -o jsonpath='{.metadata.deletionTimestamp}' 2>/dev/null)" || return 0
  [[ -z "${ts}" ]]
}
