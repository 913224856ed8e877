#!/usr/bin/env bash
# NetworkPolicy is enforced: a server pod whose NetworkPolicy admits only its own namespace is
# served to a client in that namespace and refused (connect timeout) to a client in another; a
# pod without policy, its Service and cluster DNS keep working; deleting the policy opens it again.
# Traffic is pod to pod only. Prerequisites: a cluster with a NetworkPolicy agent (hack/cluster.sh
# runs kube-network-policies) and localhost/selfheal-toolbox:dev imported.
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: e2e/netpol.sh [-h|--help]

Runs the NetworkPolicy checks in two fresh namespaces (deleted at exit) and prints
"netpol: N passed, N failed". Exit status 0 only when every check passed.

Environment:
  SELFHEAL_NETPOL_ENFORCED=0  the cluster's CNI enforces no NetworkPolicy (minikube's default):
                              nothing is checked, and the script says so (0 passed, 0 failed)
EOF
}

util::no_arguments "$@"
if [[ "${SELFHEAL_NETPOL_ENFORCED:-1}" == 0 ]]; then
  log::warn "not run: SELFHEAL_NETPOL_ENFORCED=0 says this cluster enforces no NetworkPolicy (not counted)"
  check::summary netpol
  exit 0
fi
e2e::require_cluster
e2e::namespace netpol-a
NS_A="${E2E_NS}"
e2e::namespace netpol-b
NS_B="${E2E_NS}"
log::step "NetworkPolicy test in namespaces ${NS_A} and ${NS_B}"

SERVE='mkdir -p /tmp/www && echo served > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www'
# pod NAME NS APP COMMAND: a restricted-PSS pod of the toolbox image.
pod() {
  cat <<YAML
---
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $2, labels: {app: $3}}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: main
    image: localhost/selfheal-toolbox:dev
    imagePullPolicy: Never
    command: ["sh", "-c", "$4"]
    ports: [{containerPort: 8080, name: http}]
    resources: {requests: {cpu: 5m, memory: 8Mi}, limits: {memory: 16Mi}}
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
    volumeMounts: [{name: tmp, mountPath: /tmp}]
  volumes: [{name: tmp, emptyDir: {}}]
YAML
}
service() {
  printf -- '---\napiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: %s}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http}]\n' "$1"
}
policy() {
  cat <<YAML
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-same-namespace-only, namespace: ${NS_A}}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {}}]
YAML
}
{
  pod web "${NS_A}" web "${SERVE}"
  service "${NS_A}"
  pod client "${NS_A}" client 'exec sleep 600'
  pod web "${NS_B}" web "${SERVE}"
  service "${NS_B}"
  pod client "${NS_B}" client 'exec sleep 600'
} | kubectl apply -f - >/dev/null
if ! kubectl -n "${NS_A}" wait --for=condition=Ready pod --all --timeout=90s >/dev/null ||
  ! kubectl -n "${NS_B}" wait --for=condition=Ready pod --all --timeout=90s >/dev/null; then
  e2e::dump "${NS_A}"
  e2e::dump "${NS_B}"
  log::fatal "test pods did not become Ready"
fi
WEB_A="$(kubectl -n "${NS_A}" get pod web -o jsonpath='{.status.podIP}')"

# get NS TARGET PORT: one HTTP GET from NS/client; true when the server answered (3 s connect timeout).
get() {
  kubectl -n "$1" exec client -- sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 $2 $3" 2>/dev/null | grep -q served
}
refused() { ! get "$@"; }
dns() { kubectl -n "$1" exec client -- nslookup "$2" 2>/dev/null | grep -q '^Address: '; }

check::run "without a policy, a pod in another namespace is served" get "${NS_B}" "${WEB_A}" 8080
policy | kubectl apply -f - >/dev/null
# The agent applies a policy within a second or two: wait until the other namespace is refused.
check::run "NetworkPolicy: a pod in another namespace is refused (pod IP)" e2e::eventually 20 refused "${NS_B}" "${WEB_A}" 8080
check::run "NetworkPolicy: a pod in another namespace is refused (Service name)" refused "${NS_B}" "web.${NS_A}.svc.cluster.local" 80
check::run "NetworkPolicy: a pod in the same namespace is served (pod IP)" get "${NS_A}" "${WEB_A}" 8080
check::run "NetworkPolicy: a pod in the same namespace is served (Service name)" get "${NS_A}" "web.${NS_A}.svc.cluster.local" 80
check::run "a Service without a policy still answers from another namespace" get "${NS_A}" "web.${NS_B}.svc.cluster.local" 80
check::run "cluster DNS answers pods in both namespaces" dns "${NS_B}" "web.${NS_A}.svc.cluster.local"
check::run "the policy's server pod stays Ready (kubelet probes are not blocked)" \
  kubectl -n "${NS_A}" wait --for=condition=Ready pod/web --timeout=5s
kubectl -n "${NS_A}" delete networkpolicy web-same-namespace-only >/dev/null
check::run "after the policy is deleted, the other namespace is served again" e2e::eventually 20 get "${NS_B}" "${WEB_A}" 8080

check::summary netpol
