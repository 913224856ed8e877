#!/usr/bin/env bash
# Smoke test of the cluster itself: the things every recovery layer relies on. A Deployment of
# the toolbox image runs and its HTTP probes gate readiness and restart the container; a
# container that exits non-zero is restarted; a Service answers by ClusterIP and DNS name from a
# pod, and from the host the way users reach it — its NodePort on 127.0.0.1 and a kubectl
# port-forward (the host never dials a ClusterIP or pod IP); metrics-server reports pod usage
# (the HPA needs it).
# Prerequisites: a cluster in KUBECONFIG with localhost/selfheal-toolbox:dev imported
# (hack/cluster.sh up does both).
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: e2e/smoke.sh [-h|--help]

Runs the cluster smoke checks in a fresh namespace (deleted at exit) and prints
"smoke: N passed, N failed". Exit status 0 only when every check passed.

Environment:
  KUBECONFIG   cluster to test (default: hack/cluster.sh's, ${CLUSTER_KUBECONFIG})
EOF
}

util::no_arguments "$@"

e2e::require_cluster
e2e::namespace smoke
NS="${E2E_NS}"
log::step "smoke test in namespace ${NS}"

# One pod template for all workloads: restricted-compliant, toolbox image, a writable /tmp.
# $1 name, $2 shell command, $3 readiness path, $4 liveness path, $5 replicas.
workload() {
  cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1, namespace: ${NS}}
spec:
  replicas: $5
  selector: {matchLabels: {app: $1}}
  template:
    metadata: {labels: {app: $1}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: main
        image: localhost/selfheal-toolbox:dev
        imagePullPolicy: Never
        command: ["sh", "-c", "$2"]
        ports: [{containerPort: 8080, name: http}]
        readinessProbe: {httpGet: {path: $3, port: http}, periodSeconds: 1, failureThreshold: 1}
        livenessProbe: {httpGet: {path: $4, port: http}, periodSeconds: 1, failureThreshold: 2}
        resources:
          requests: {cpu: 10m, memory: 8Mi}
          limits: {memory: 32Mi}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        volumeMounts: [{name: tmp, mountPath: /tmp}]
      volumes: [{name: tmp, emptyDir: {}}]
EOF
}

SERVE='mkdir -p /tmp/www && echo ok > /tmp/www/health && hostname > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www'

{
  workload web "${SERVE}" /health /health 2
  echo ---
  # Readiness on a path that does not exist: Running, never Ready.
  workload unready "${SERVE}" /missing /health 1
  echo ---
  # Liveness on a path that does not exist: the kubelet restarts it.
  workload unlive "${SERVE}" /health /missing 1
  echo ---
  # Exits 3 after a second: restarted, then CrashLoopBackOff.
  workload crasher 'sleep 1; exit 3' /health /health 1
  echo ---
  cat <<EOF
apiVersion: v1
kind: Service
metadata: {name: web, namespace: ${NS}}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
EOF
} | kubectl apply -f - >/dev/null

pod_field() { kubectl -n "${NS}" get pods -l "app=$1" -o jsonpath="{.items[0]$2}" 2>/dev/null; }
restarts_at_least() { (($(pod_field "$1" '.status.containerStatuses[0].restartCount' || echo 0) >= $2)); }

# -- probes -------------------------------------------------------------------------------------
check::run "Deployment with HTTP readiness probes becomes Available (2/2 Ready)" \
  kubectl -n "${NS}" rollout status deployment/web --timeout=180s
not_ready_but_running() {
  [[ "$(pod_field unready '.status.phase')" == Running ]] &&
    [[ "$(pod_field unready '.status.containerStatuses[0].ready')" == false ]]
}
# Give it time to (wrongly) turn Ready: several readiness periods after it runs.
e2e::eventually 180 not_ready_but_running && sleep 5
check::run "failing readiness probe keeps a running pod out of Ready" not_ready_but_running
liveness_restarted() {
  restarts_at_least unlive 1 &&
    kubectl -n "${NS}" get events --field-selector reason=Unhealthy -o jsonpath='{.items[*].message}' | grep -q 'Liveness probe failed'
}
check::run "failing liveness probe restarts the container" e2e::eventually 90 liveness_restarted

# -- restarts -----------------------------------------------------------------------------------
crasher_restarted() {
  restarts_at_least crasher 2 && [[ "$(pod_field crasher '.status.containerStatuses[0].lastState.terminated.exitCode')" == 3 ]]
}
check::run "container exiting with code 3 is restarted (restartCount >= 2, last exit 3)" \
  e2e::eventually 120 crasher_restarted

# -- Service and DNS ----------------------------------------------------------------------------
CLIENT="$(kubectl -n "${NS}" get pods -l app=web -o jsonpath='{.items[0].metadata.name}')"
CLUSTER_IP="$(kubectl -n "${NS}" get service web -o jsonpath='{.spec.clusterIP}')"
# HTTP/1.0 by hand over nc: busybox's static wget crashes in pods (glibc NSS in a static binary).
from_pod() {
  kubectl -n "${NS}" exec "${CLIENT}" -- sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 3 $1 80" | grep -q "^web-"
}
check::run "Service ClusterIP ${CLUSTER_IP} answers from a pod" e2e::eventually 30 from_pod "${CLUSTER_IP}"
check::run "Service DNS name answers from a pod" e2e::eventually 30 from_pod "web.${NS}.svc.cluster.local"
dns_from_pod() {
  kubectl -n "${NS}" exec "${CLIENT}" -- nslookup "web.${NS}.svc.cluster.local" | grep -q "Address: *${CLUSTER_IP}\$"
}
check::run "cluster DNS resolves the Service name to its ClusterIP ${CLUSTER_IP} (nslookup in a pod)" e2e::eventually 30 dns_from_pod
# From the host: loopback only. Both web pods answer (hostnames differ): kube-proxy balances.
# answers_from_host ADDRESS: two distinct hostnames within 40 new connections.
answers_from_host() {
  local i seen=""
  for ((i = 0; i < 40; i++)); do
    seen+="$(curl -fsS -m 3 "http://$1/")"$'\n' || return 1
  done
  grep "^web-" <<<"${seen}" | sort -u | wc -l | grep -qx 2
}
web_nodeport() { e2e::nodeport "${NS}" web && e2e::eventually 30 answers_from_host "${E2E_ADDRESS}"; }
check::run "Service NodePort answers on 127.0.0.1 from the host, from both pods (kube-proxy)" web_nodeport
from_port_forward() { e2e::port_forward "${NS}" service/web 80 && e2e::eventually 30 bash -c "curl -fsS -m 3 'http://${E2E_ADDRESS}/' | grep -q '^web-'"; }
check::run "kubectl port-forward service/web answers on 127.0.0.1 (through the API server)" from_port_forward

# -- metrics-server -----------------------------------------------------------------------------
# The first sample needs about 30 s after a pod starts; kubectl top prints "<name> <cpu>m <mem>Mi".
top_has_numbers() { kubectl -n "${NS}" top pod --no-headers | grep -Eq '^web-[^ ]+ +[0-9]+m +[0-9]+Mi'; }
check::run "kubectl top pod returns CPU and memory numbers (metrics-server)" e2e::eventually 150 top_has_numbers

((CHECK_FAILED == 0)) || e2e::dump "${NS}"
check::summary smoke
