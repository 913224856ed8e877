#!/usr/bin/env bash
# The Helm chart (helm-chart/) on a real cluster. Every values variant, rendered with
# `helm template`, passes a server-side dry-run against the API server into a namespace that
# enforces the restricted Pod Security Standard (schema and admission errors linting cannot see);
# `helm install` with the defaults (HPA, PDB and NetworkPolicy on) and the local image brings pods
# to Ready, the HPA raises the fresh Deployment to minReplicas and `helm test` passes; the PDB lets
# one pod be evicted and refuses the next; a canary track comes up next to stable; `helm upgrade`
# to a new image tag rolls while a watcher confirms the ready replicas and ready endpoints never
# drop below the desired count; a bad release (readiness never passes) stalls without losing
# capacity and `helm rollback` restores it. The NetworkPolicy is enforced (hack/cluster.sh runs a
# NetworkPolicy agent): a pod in another namespace is refused, one in the release's namespace is
# served; SELFHEAL_NETPOL_ENFORCED=0 skips that on a cluster whose CNI enforces none, and says so.
# Prerequisites: a cluster in KUBECONFIG (hack/cluster.sh up) with localhost/selfheal-app:$IMAGE_TAG
# imported (hack/image.sh --import app); helm 3 or 4 (hack/tools.sh install helm); python3, jq.
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: e2e/chart.sh [-h|--help]

Tests helm-chart/ on the cluster in a fresh namespace (deleted at exit) and prints
"chart: N passed, N failed". Exit status 0 only when every check passed.

Environment:
  KUBECONFIG   cluster to test (default: hack/cluster.sh's, ${CLUSTER_KUBECONFIG})
  IMAGE_TAG    tag of the imported app image localhost/selfheal-app (default: dev)
  HELM         helm binary (default: helm on PATH, the pinned one first)
  SELFHEAL_NETPOL_ENFORCED
               1 (default): check that a pod in another namespace is refused and one in the
               release's namespace is served. 0: the cluster enforces no NetworkPolicy (minikube
               without --cni=calico): skip that check and say it was not made

Example:
  hack/image.sh --import app && e2e/chart.sh
EOF
}

util::no_arguments "$@"

HELM="${HELM:-helm}"
util::require_tools "${HELM}" kubectl python3 jq
e2e::require_cluster

CHART="${REPO_ROOT}/helm-chart"
REPO=localhost/selfheal-app
TAG="${IMAGE_TAG:-dev}"
REL=e2e
TMP="$(mktemp -d)"
util::trap_add "rm -rf '${TMP}'"
# Called directly (not in $(...)) so its cleanup trap belongs to this shell; newer lib.sh sets
# E2E_NS, older ones print the name.
e2e::namespace chart >"${TMP}/ns"
NS="${E2E_NS:-$(cat "${TMP}/ns")}"
[[ -n "${NS}" ]] || log::fatal "e2e::namespace gave no namespace"
FULL="${REL}-selfheal-app"
K=(kubectl --namespace "${NS}")
SERVER_VERSION="$(kubectl version -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)["serverVersion"]["gitVersion"])')"
log::step "chart e2e in namespace ${NS} (restricted), Kubernetes ${SERVER_VERSION}, $("${HELM}" version --short), image ${REPO}:${TAG}"

# The image must be in the node (pullPolicy Never): say how to get it instead of timing out.
# (Output captured first: `cmd | grep -q` can fail with SIGPIPE under pipefail.)
if [[ -S "${CONTAINERD_SOCK}" ]] && ! grep -qx "${REPO}:${TAG}" <<<"$(util::ctr images ls -q 2>/dev/null || true)"; then
  log::fatal "${REPO}:${TAG} is not imported into the local cluster: run hack/image.sh --import app"
fi
LOCAL_IMAGE=(--set "image.repository=${REPO}" --set "image.tag=${TAG}" --set image.pullPolicy=Never)

# -- server-side dry-run of every variant -------------------------------------------------------
# server_dry_run NAME [helm args...]: render, then let the API server validate and admit it
# (dry-run: nothing is stored). Pod Security only warns for Deployments, so a warning fails too.
server_dry_run() {
  local name="$1"
  shift
  "${HELM}" template "dry-${name}" "${CHART}" --namespace "${NS}" --kube-version "${SERVER_VERSION}" "$@" >"${TMP}/${name}.yaml" || return 1
  # The helm test Pod names the release's ServiceAccount, and Pod admission looks it up; a dry-run
  # stores nothing, so create the (inert) ServiceAccount for real first.
  python3 -c 'import sys, yaml; print(yaml.safe_dump_all([d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ServiceAccount"]))' \
    "${TMP}/${name}.yaml" | "${K[@]}" apply -f - >/dev/null || return 1
  if ! "${K[@]}" apply --dry-run=server -f "${TMP}/${name}.yaml" >"${TMP}/${name}.out" 2>"${TMP}/${name}.err"; then
    cat "${TMP}/${name}.err" >&2
    return 1
  fi
  if grep -qi 'warning' "${TMP}/${name}.err"; then
    log::error "the API server warned: $(cat "${TMP}/${name}.err")"
    return 1
  fi
  log::info "$(wc -l <"${TMP}/${name}.out") objects accepted: $(awk '{print $1}' "${TMP}/${name}.out" | tr '\n' ' ')"
}
check::run "server-side dry-run: default values" server_dry_run default
netpol_dry_run_accepted() {
  grep -q "^networkpolicy.networking.k8s.io/dry-default-selfheal-app created" "${TMP}/default.out" &&
    grep -q "^networkpolicy.networking.k8s.io/dry-default-selfheal-app-test created" "${TMP}/default.out" &&
    grep -q "^horizontalpodautoscaler.autoscaling/dry-default-selfheal-app created" "${TMP}/default.out"
}
check::run "server-side dry-run: the default NetworkPolicies (app: Ingress + Egress; helm test egress) and HPA are accepted" netpol_dry_run_accepted
check::run "server-side dry-run: values-demo.yaml" server_dry_run demo -f "${CHART}/values-demo.yaml"
check::run "server-side dry-run: canary (ci/canary-values.yaml: canary Deployment, weighted Ingress, TLS)" \
  server_dry_run canary -f "${CHART}/ci/canary-values.yaml"
check::run "server-side dry-run: values-openshift.yaml (no fixed UID)" server_dry_run openshift -f "${CHART}/values-openshift.yaml"
check::run "server-side dry-run: ci/full-values.yaml (HPA with memory, NetworkPolicy, PDB maxUnavailable)" \
  server_dry_run full -f "${CHART}/ci/full-values.yaml"
# A negative control: the same path must reject a pod the restricted profile forbids.
privileged_rejected() {
  if server_dry_run privileged --set securityContext.allowPrivilegeEscalation=true 2>"${TMP}/privileged.log"; then
    return 1
  fi
  grep -q 'violates PodSecurity "restricted' "${TMP}/privileged.err" &&
    grep -q 'would violate PodSecurity "restricted' "${TMP}/privileged.err"
}
check::run "server-side dry-run rejects allowPrivilegeEscalation=true (the namespace really enforces restricted)" privileged_rejected

# -- install, helm test ---------------------------------------------------------------------------
# The chart's defaults: HPA (2-5 pods), PDB minAvailable 1, NetworkPolicy.
INSTALL_VALUES=("${LOCAL_IMAGE[@]}" --set app.message=release-1)
install_release() {
  "${HELM}" install "${REL}" "${CHART}" --namespace "${NS}" "${INSTALL_VALUES[@]}" >"${TMP}/install.out" &&
    "${K[@]}" rollout status "deployment/${FULL}" --timeout=180s
}
check::run "helm install with ${REPO}:${TAG}: rollout completes" install_release
no_replicas_field() {
  "${K[@]}" get hpa "${FULL}" >/dev/null &&
    "${HELM}" get manifest "${REL}" --namespace "${NS}" | python3 -c '
import sys, yaml
d = [d for d in yaml.safe_load_all(sys.stdin) if d and d["kind"] == "Deployment"]
sys.exit(0 if len(d) == 1 and "replicas" not in d[0]["spec"] else 1)'
}
check::run "HPA on by default: the installed Deployment manifest has no replicas field (the HPA owns it)" no_replicas_field
two_ready() {
  "${K[@]}" wait pod -l "app.kubernetes.io/instance=${REL},track=stable" --for=condition=Ready --timeout=5s >/dev/null &&
    [[ "$("${K[@]}" get deployment "${FULL}" -o jsonpath='{.spec.replicas}/{.status.readyReplicas}')" == 2/2 ]]
}
all_pods_ready() {
  e2e::eventually 90 two_ready &&
    log::info "HPA: $("${K[@]}" get hpa "${FULL}" --no-headers)"
}
check::run "the HPA raises the fresh Deployment to minReplicas: 2 stable pods Ready (probes on /health and /ready pass)" all_pods_ready
notes_say_next_steps() {
  grep -q "port-forward service/${FULL}" "${TMP}/install.out" && grep -q "helm test ${REL}" "${TMP}/install.out" &&
    grep -q "Without metrics-server the HPA waits" "${TMP}/install.out" &&
    ! grep -q "NOTE: this cluster serves no metrics.k8s.io" "${TMP}/install.out"
}
check::run "NOTES.txt tells what to run next (port-forward, helm test) and what the HPA needs (this cluster serves metrics.k8s.io)" notes_say_next_steps

# -- NetworkPolicy ----------------------------------------------------------------------------------
# netpol_dns_peer_real: the policy's DNS egress peer selects this cluster's DNS pods on the port
# their Service targets; were it wrong, an enforcing CNI would cut name resolution.
netpol_dns_peer_real() {
  local np dns_ns dns_sel dns_port pods target
  np="$("${K[@]}" get networkpolicy "${FULL}" -o json)" || return 1
  [[ "$(jq -c .spec.policyTypes <<<"${np}")" == '["Ingress","Egress"]' ]] || return 1
  dns_ns="$(jq -r '.spec.egress[0].to[0].namespaceSelector.matchLabels["kubernetes.io/metadata.name"]' <<<"${np}")"
  dns_sel="$(jq -r '.spec.egress[0].to[0].podSelector.matchLabels | to_entries | map("\(.key)=\(.value)") | join(",")' <<<"${np}")"
  dns_port="$(jq -r '[.spec.egress[0].ports[] | "\(.protocol)/\(.port)"] | sort | join(" ")' <<<"${np}")"
  pods="$(kubectl --namespace "${dns_ns}" get pods -l "${dns_sel}" --field-selector=status.phase=Running -o name)"
  target="$(kubectl --namespace "${dns_ns}" get pods -l "${dns_sel}" -o jsonpath='{range .items[0].spec.containers[*].ports[*]}{.protocol}/{.containerPort}{" "}{end}')"
  log::info "DNS egress to ${dns_ns} pods ${dns_sel} (${pods//$'\n'/ }) on ${dns_port}; the DNS pods listen on ${target}"
  [[ -n "${pods}" && "${dns_port}" == "TCP/53 UDP/53" && " ${target}" == *" UDP/53 "* && " ${target}" == *" TCP/53 "* ]]
}
check::run "NetworkPolicy installed (Ingress + Egress); its DNS egress selects this cluster's running DNS pods on their ports" netpol_dns_peer_real

# pod_finished NAMESPACE NAME: the pod has Succeeded or Failed.
pod_finished() {
  local phase
  phase="$(kubectl --namespace "$1" get pod "$2" -o jsonpath='{.status.phase}')"
  [[ "${phase}" == Succeeded || "${phase}" == Failed ]]
}
# probe_from NAMESPACE NAME URL: a restricted pod in NAMESPACE runs the app image's probe against
# URL; true when it answered 2xx. The pod's output goes to the log.
probe_from() {
  local ns="$1" name="$2" url="$3" phase
  kubectl --namespace "${ns}" apply -f - >/dev/null <<YAML || return 1
apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: ${ns}, labels: {app: netpol-client}}
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
  containers:
  - name: probe
    image: ${REPO}:${TAG}
    imagePullPolicy: Never
    args: [probe, "${url}", --timeout-ms, "3000"]
    resources: {requests: {cpu: 10m, memory: 8Mi, ephemeral-storage: 1Mi}, limits: {memory: 32Mi, ephemeral-storage: 16Mi}}
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
YAML
  e2e::eventually 60 pod_finished "${ns}" "${name}" || {
    log::error "pod ${ns}/${name} did not finish within 60 s"
    return 1
  }
  phase="$(kubectl --namespace "${ns}" get pod "${name}" -o jsonpath='{.status.phase}')"
  log::info "${ns}/${name} -> ${url}: ${phase}: $(kubectl --namespace "${ns}" logs "${name}" 2>&1 | tail -1)"
  [[ "${phase}" == Succeeded ]]
}
# netpol_enforcement_check: with a CNI that enforces NetworkPolicy, a pod in another namespace is
# refused and a pod in the release's namespace is served, both through the Service's DNS name.
netpol_enforcement_check() {
  local other="${NS}-other" url="http://${FULL}.${NS}.svc:80/ready"
  kubectl create namespace "${other}" >/dev/null || return 1
  util::trap_add "kubectl delete namespace '${other}' --wait=false >/dev/null 2>&1 || true"
  kubectl label namespace "${other}" pod-security.kubernetes.io/enforce=restricted selfheal.io/e2e=true >/dev/null || return 1
  probe_from "${NS}" netpol-same "${url}" || { log::error "a pod in ${NS} (the release's namespace) was not served"; return 1; }
  if probe_from "${other}" netpol-other "${url}"; then
    log::error "a pod in ${other} was served: the NetworkPolicy is not enforced"
    return 1
  fi
}
if [[ "${SELFHEAL_NETPOL_ENFORCED:-1}" == 1 ]]; then
  check::run "NetworkPolicy enforced: a pod in another namespace is refused, one in ${NS} is served (via ${FULL}.${NS}.svc)" netpol_enforcement_check
else
  log::warn "NetworkPolicy enforcement is NOT checked (SELFHEAL_NETPOL_ENFORCED=${SELFHEAL_NETPOL_ENFORCED}): the policy is applied, nobody tested who it refuses"
fi

helm_test() {
  "${HELM}" test "${REL}" --namespace "${NS}" --timeout 120s >"${TMP}/test.out" 2>&1 || { cat "${TMP}/test.out" >&2; return 1; }
  [[ "$("${K[@]}" get pod "${FULL}-test" -o jsonpath='{.status.phase}')" == Succeeded ]] &&
    grep -q "^ok: http://${FULL}.${NS}.svc:80/ready answered 200" <<<"$("${K[@]}" logs "${FULL}-test" -c ready)"
}
check::run "helm test passes (pod ${FULL}-test probes /health and /ready through the Service)" helm_test

# get_root SERVICE: GET / of a Service through the API server's service proxy (works on any cluster).
get_root() { kubectl get --raw "/api/v1/namespaces/${NS}/services/http:$1:http/proxy/"; }
answers_json() { get_root "${FULL}" | python3 -c "import json, sys; d = json.load(sys.stdin); sys.exit(0 if d['track'] == 'stable' and d['message'] == '$1' and d['namespace'] == '${NS}' else 1)"; }
check::run "the Service answers GET / with track stable, the release message and the Downward API namespace" \
  e2e::eventually 30 answers_json release-1
pdb_live() {
  [[ "$("${K[@]}" get pdb "${FULL}" -o jsonpath='{.status.currentHealthy}/{.status.desiredHealthy}/{.status.disruptionsAllowed}')" == 2/1/1 ]]
}
check::run "PDB is live: 2 healthy, 1 desired, 1 disruption allowed (a drain can proceed)" e2e::eventually 30 pdb_live
# evict POD: the Eviction API (what node drains and the selfheal controller use); prints its answer.
evict() {
  kubectl create --raw "/api/v1/namespaces/${NS}/pods/$1/eviction" -f - 2>&1 <<EOF
{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "$1", "namespace": "${NS}"}}
EOF
}
# one_evicted_next_refused: the first eviction is accepted (the budget is not a wall), the second,
# right after, is refused while only one pod is healthy.
one_evicted_next_refused() {
  local pods out
  read -r -a pods <<<"$("${K[@]}" get pod -l "app.kubernetes.io/instance=${REL},track=stable" -o jsonpath='{.items[*].metadata.name}')"
  ((${#pods[@]} == 2)) || { log::error "want 2 stable pods, found: ${pods[*]}"; return 1; }
  out="$(evict "${pods[0]}")" || { log::error "eviction of ${pods[0]} refused: ${out}"; return 1; }
  log::info "eviction of ${pods[0]} accepted"
  if out="$(evict "${pods[1]}")"; then
    log::error "eviction of ${pods[1]} was accepted too: the budget kept nothing"
    return 1
  fi
  log::info "eviction of ${pods[1]} refused: ${out}"
  grep -q 'disruption budget' <<<"${out}"
}
check::run "the PDB lets one pod be evicted through the Eviction API and refuses the next (429: would violate the disruption budget)" one_evicted_next_refused
check::run "the evicted pod is replaced: 2 stable pods Ready again" e2e::eventually 90 two_ready
no_token() {
  [[ "$("${K[@]}" get pod -l "app.kubernetes.io/instance=${REL},track=stable" -o jsonpath='{.items[0].spec.automountServiceAccountToken}')" == false ]] &&
    ! grep -q serviceaccount <<<"$("${K[@]}" get pod -l "app.kubernetes.io/instance=${REL},track=stable" -o jsonpath='{.items[*].spec.containers[*].volumeMounts}')"
}
check::run "pods run without a ServiceAccount token" no_token

# -- canary track -----------------------------------------------------------------------------------
canary_up() {
  "${HELM}" upgrade "${REL}" "${CHART}" --namespace "${NS}" --reuse-values --set canary.enabled=true \
    --set canary.replicaCount=1 --set canary.message=canary-1 >/dev/null &&
    "${K[@]}" rollout status "deployment/${FULL}-canary" --timeout=120s &&
    grep -q '"track":"canary"' <<<"$(get_root "${FULL}-canary")" &&
    grep -q '"track":"stable"' <<<"$(get_root "${FULL}-stable")"
}
check::run "canary enabled: ${FULL}-canary Ready, its Service answers track canary, ${FULL}-stable answers stable" canary_up
three_endpoints() {
  [[ "$("${K[@]}" get endpointslices -l "kubernetes.io/service-name=${FULL}" -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}x{end}')" == xxx ]]
}
check::run "the all-tracks Service has 3 ready endpoints (2 stable + 1 canary: replica-ratio split)" e2e::eventually 30 three_endpoints
canary_down() {
  "${HELM}" upgrade "${REL}" "${CHART}" --namespace "${NS}" --reuse-values --set canary.enabled=false >/dev/null &&
    e2e::eventually 60 bash -c "! kubectl --namespace '${NS}' get deployment '${FULL}-canary' >/dev/null 2>&1"
}
check::run "canary disabled: its Deployment and Services are removed" canary_down

# -- upgrade to a new tag under a watcher -------------------------------------------------------------
# watch_capacity FILE: stream every stored state of the stable Deployment (to FILE.deploy) and of
# the all-tracks Service's EndpointSlices (to FILE.eps) with kubectl --watch -o json: no sampling
# gap. Starts two background jobs; their PIDs go to WATCHERS.
WATCHERS=()
watch_capacity() {
  "${K[@]}" get deployment "${FULL}" --watch -o json >"$1.deploy" 2>"$1.deploy.err" &
  WATCHERS+=("$!")
  "${K[@]}" get endpointslices -l "kubernetes.io/service-name=${FULL}" --watch -o json >"$1.eps" 2>"$1.eps.err" &
  WATCHERS+=("$!")
  util::trap_add "kill ${WATCHERS[*]} 2>/dev/null || true"
}
# capacity_held FILE MIN: in every observed state there were at least MIN ready replicas and MIN
# ready endpoints (summed over the Service's slices), and the watcher saw the rollout (a surge pod).
capacity_held() {
  PYTHONPATH="${REPO_ROOT}/e2e" python3 - "$1" "$2" <<'EOF'
import json, sys

from watchstream import stream

need = int(sys.argv[2])
deploy = [(d["status"].get("readyReplicas", 0), d["status"].get("replicas", 0)) for d in stream(sys.argv[1] + ".deploy")]
slices, eps = {}, []
for s in stream(sys.argv[1] + ".eps"):
    slices[s["metadata"]["name"]] = sum(1 for e in s.get("endpoints") or [] if e.get("conditions", {}).get("ready"))
    eps.append(sum(slices.values()))
if len(deploy) < 3 or not eps:
    sys.exit(f"too few states seen: {len(deploy)} Deployment, {len(eps)} EndpointSlice")
min_ready, max_pods, min_eps = min(r for r, _ in deploy), max(p for _, p in deploy), min(eps)
print(f"    {len(deploy)} Deployment states: min ready replicas {min_ready}, max pods {max_pods}; "
      f"{len(eps)} EndpointSlice states: min ready endpoints {min_eps} (desired {need})", file=sys.stderr)
sys.exit(0 if min_ready >= need and min_eps >= need and max_pods > 2 else 1)
EOF
}

NEW_TAG="${TAG}"
if [[ -S "${CONTAINERD_SOCK}" ]] && util::ctr images tag --force "${REPO}:${TAG}" "${REPO}:e2e-v2" >/dev/null 2>&1; then
  NEW_TAG=e2e-v2
  util::trap_add "util::ctr images rm '${REPO}:e2e-v2' >/dev/null 2>&1 || true"
else
  log::warn "cannot tag ${REPO}:e2e-v2 in the node's containerd (not the local cluster?): upgrading with a changed setting only"
fi
# maxUnavailable 0: never fewer ready pods than desired (the HPA's 2), above the PDB's minAvailable.
MIN_READY="$("${K[@]}" get deployment "${FULL}" -o jsonpath='{.spec.replicas}')"
watch_capacity "${TMP}/capacity"
sleep 2
upgrade_release() {
  "${HELM}" upgrade "${REL}" "${CHART}" --namespace "${NS}" --reuse-values --set "image.tag=${NEW_TAG}" \
    --set app.message=release-2 >/dev/null &&
    "${K[@]}" rollout status "deployment/${FULL}" --timeout=180s
}
check::run "helm upgrade to ${REPO}:${NEW_TAG}: rollout completes" upgrade_release
sleep 2
kill "${WATCHERS[@]}" 2>/dev/null || true
wait "${WATCHERS[@]}" 2>/dev/null || true
check::run "during the upgrade ready replicas and ready endpoints never dropped below the desired ${MIN_READY} (maxUnavailable 0)" \
  capacity_held "${TMP}/capacity" "${MIN_READY}"
new_pods_only() {
  local images
  images="$("${K[@]}" get pods -l "app.kubernetes.io/instance=${REL},track=stable" --field-selector=status.phase=Running -o jsonpath='{range .items[*]}{.spec.containers[0].image}{"\n"}{end}' | sort -u)"
  [[ "${images}" == "${REPO}:${NEW_TAG}" ]]
}
check::run "only pods of the new tag remain" e2e::eventually 60 new_pods_only
check::run "the Service answers with the upgraded release's message" e2e::eventually 30 answers_json release-2
check::run "helm test passes after the upgrade" helm_test

# -- a bad release stalls without losing capacity; helm rollback restores it ----------------------------
bad_release_stalls() {
  "${HELM}" upgrade "${REL}" "${CHART}" --namespace "${NS}" --reuse-values --set app.faultProfile=unready \
    --set app.message=release-bad >/dev/null || return 1
  # Long enough for several readiness periods of the new pod.
  sleep 20
  local s
  s="$("${K[@]}" get deployment "${FULL}" -o jsonpath='{.status.readyReplicas}/{.status.updatedReplicas}/{.status.replicas}')"
  log::info "after 20 s: ready/updated/total = ${s}"
  [[ "${s}" == 2/1/3 ]] && answers_json release-2
}
check::run "bad release (faultProfile=unready): the new pod never turns Ready, 2 old pods keep serving" bad_release_stalls
# healthy_profile_only: exactly 2 pods, none of them started with a fault profile.
healthy_profile_only() {
  [[ "$("${K[@]}" get pods -l "app.kubernetes.io/instance=${REL},track=stable" -o jsonpath='{range .items[*]}{.spec.containers[0].env[?(@.name=="APP_FAULT_PROFILE")].value}{"\n"}{end}')" == $'none\nnone' ]]
}
rollback_release() {
  "${HELM}" rollback "${REL}" --namespace "${NS}" >/dev/null &&
    "${K[@]}" rollout status "deployment/${FULL}" --timeout=120s &&
    e2e::eventually 90 healthy_profile_only && answers_json release-2 &&
    [[ "$("${HELM}" history "${REL}" --namespace "${NS}" -o json | python3 -c 'import json, sys; print(json.load(sys.stdin)[-1]["description"])')" == "Rollback to"* ]]
}
check::run "helm rollback restores the previous revision" rollback_release

# -- HPA -------------------------------------------------------------------------------------------
# hpa_has_cpu: the HPA reports a CPU utilisation and the Deployment has at least 2 ready pods.
hpa_has_cpu() {
  [[ "$("${K[@]}" get hpa "${FULL}" -o jsonpath='{.status.currentMetrics[0].resource.current.averageUtilization}')" =~ ^[0-9]+$ ]] &&
    (($("${K[@]}" get deployment "${FULL}" -o jsonpath='{.status.readyReplicas}') >= 2))
}
hpa_works() {
  e2e::eventually 150 hpa_has_cpu &&
    log::info "HPA: $("${K[@]}" get hpa "${FULL}" --no-headers)"
}
check::run "autoscaling (default): the HPA reads CPU utilisation from metrics-server (requests set) and holds minReplicas 2" hpa_works
hpa_off() {
  "${HELM}" upgrade "${REL}" "${CHART}" --namespace "${NS}" --reuse-values --set autoscaling.enabled=false >/dev/null &&
    e2e::eventually 30 bash -c "! kubectl --namespace '${NS}' get hpa '${FULL}' >/dev/null 2>&1" &&
    [[ "$("${K[@]}" get deployment "${FULL}" -o jsonpath='{.spec.replicas}')" == 2 ]] &&
    "${K[@]}" rollout status "deployment/${FULL}" --timeout=60s >/dev/null
}
check::run "autoscaling off: the HPA is removed and the Deployment gets replicaCount (2) back" hpa_off

((CHECK_FAILED == 0)) || { e2e::dump "${NS}"; "${HELM}" history "${REL}" --namespace "${NS}" >&2 || true; }
check::summary chart
