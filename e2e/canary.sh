#!/usr/bin/env bash
# Layer 7 on a real cluster: canary/deploy.sh, promote.sh and rollback.sh against a helm-chart/
# release. The canary manifests (stable + canary nginx Ingress, weighted Gateway API HTTPRoute)
# are applied server-side, with the Gateway API CRDs from the sigs.k8s.io/gateway-api module;
# the scripts refuse bad input; the nginx canary-weight and HTTPRoute weights are measured through
# Traefik running in the cluster; the replica-ratio split is measured through kube-proxy; a bad
# canary (errors fault profile) is rolled back by the analysis before 100 % while stable keeps
# serving; a good canary is promoted to stable without a failed request; rollback and promotion
# are idempotent and leave an Event + annotation on the stable Deployment.
# From the host, traffic goes to 127.0.0.1 only: NodePorts (kube-proxy serves them on localhost),
# the API server (kubectl, its pod proxy for Prometheus) — never a ClusterIP or pod IP.
# Prerequisites: a cluster in KUBECONFIG with localhost/selfheal-app:$IMAGE_TAG imported
# (hack/image.sh --import app); helm, jq, curl, python3; cargo (builds selfheal-canary when
# missing); Gateway API CRD YAML (hack/tools.sh install gateway-api-crds); traefik
# (hack/tools.sh install traefik: ~15 min cold; make test builds it in the background), packed
# as localhost/traefik:$TRAEFIK_VERSION and imported by this test when missing
# (hack/image.sh --import traefik); prometheus (optional: the PromQL path).
# needs-tools: traefik
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: e2e/canary.sh [-h|--help]

Tests canary/ on the cluster in a fresh namespace (deleted at exit) and prints
"canary: N passed, N failed". Exit status 0 only when every check passed.

Environment:
  KUBECONFIG     cluster to test (default: hack/cluster.sh's, ${CLUSTER_KUBECONFIG})
  IMAGE_TAG      tag of the imported app image localhost/selfheal-app (default: dev)
  SPLIT_REQUESTS requests sent to measure the replica-ratio split (default 2000)
  LOAD_VIA       nodeport (default): the load and the router are reached through NodePorts on
                 127.0.0.1 (on minikube: minikube service --url). proxy: the analysis load
                 through kubectl proxy (the API server's service proxy) and the router through
                 kubectl port-forward, for clusters whose NodePorts the host cannot reach; the
                 kube-proxy split is then not measured (said, not counted)
  E2E_MINIKUBE_PROFILE  minikube profile whose 'minikube service --url' gives the NodePort
                 addresses (default: minikube when that is the current context)
  CANARY_ANALYZER  selfheal-canary binary to test (default: cargo build -p selfheal-canary)
  TRAEFIK        none: leave the router checks out (said, not counted). Otherwise the router
                 is localhost/traefik:${TRAEFIK_VERSION} in the cluster, packed from
                 hack/tools.sh's traefik when the node lacks it; no binary: those checks fail.
  HELM           helm binary (default: helm on PATH, the pinned one first)

Example:
  hack/image.sh --import app && e2e/canary.sh
EOF
}

util::no_arguments "$@"
# Where the host sends traffic: loopback only, never a ClusterIP or a pod IP. By default the load
# goes to NodePorts on 127.0.0.1 (kube-proxy serves them on localhost; on minikube, the address of
# `minikube service --url`), which kube-proxy balances per connection like the ClusterIP.
# LOAD_VIA=proxy sends the analysis load through `kubectl proxy` (the API server's service proxy)
# and reaches the router with `kubectl port-forward`; the replica-ratio split is then not measured.
LOAD_VIA="${LOAD_VIA:-nodeport}"
[[ "${LOAD_VIA}" == nodeport || "${LOAD_VIA}" == proxy ]] || util::usage_error "LOAD_VIA must be nodeport or proxy, not '${LOAD_VIA}'"

HELM="${HELM:-helm}"
export HELM
util::require_tools "${HELM}" kubectl jq curl python3
e2e::require_cluster

CHART="${REPO_ROOT}/helm-chart"
REPO=localhost/selfheal-app
TAG="${IMAGE_TAG:-dev}"
SPLIT_REQUESTS="${SPLIT_REQUESTS:-2000}"
REL=e2e
FULL="${REL}-selfheal-app"
TMP="$(mktemp -d)"
util::trap_add "rm -rf '${TMP}'"
e2e::namespace canary
NS="${E2E_NS}"
K=(kubectl --namespace "${NS}")
C=(--namespace "${NS}" --release "${REL}")
log::step "canary e2e in namespace ${NS} (restricted), image ${REPO}:${TAG}"

if [[ -S "${CONTAINERD_SOCK}" ]] && ! grep -qx "${REPO}:${TAG}" <<<"$(util::ctr images ls -q 2>/dev/null || true)"; then
  log::fatal "${REPO}:${TAG} is not imported into the local cluster: run hack/image.sh --import app"
fi
# The good canary is a new tag of the same image (a real image change rolls the pods).
NEW_TAG="${TAG}"
if [[ -S "${CONTAINERD_SOCK}" ]] && util::ctr images tag --force "${REPO}:${TAG}" "${REPO}:e2e-canary-v2" >/dev/null 2>&1; then
  NEW_TAG=e2e-canary-v2
  util::trap_add "util::ctr images rm '${REPO}:e2e-canary-v2' >/dev/null 2>&1 || true"
else
  log::warn "cannot tag ${REPO}:e2e-canary-v2 in the node's containerd (not the local cluster?): the good canary differs by its message only"
fi

# -- binaries: the analyzer and the load generator --------------------------------------------
TARGET="${CARGO_TARGET_DIR:-${REPO_ROOT}/target}"
# Always through cargo (a no-op when up to date), so a stale binary is never tested;
# CANARY_ANALYZER=path tests a given one instead.
if [[ -z "${CANARY_ANALYZER:-}" ]]; then
  log::info "building selfheal-canary (cargo build -p selfheal-canary)"
  (cd "${REPO_ROOT}" && cargo build --quiet -p selfheal-canary) >&2 || log::fatal "cannot build selfheal-canary (cargo build -p selfheal-canary)"
  CANARY_ANALYZER="${TARGET}/debug/selfheal-canary"
fi
export CANARY_ANALYZER

# The load: one new TCP connection per request, because kube-proxy balances connections, not
# requests (selfheal-demo load keeps connections alive, so a canary that starts after the load
# would see none of it). Counts answers by track and failures by kind; stops on SIGTERM.
cat >"${TMP}/load.py" <<'EOF'
import collections, http.client, json, os, signal, socket, sys, time
host, out, rate, limit = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
# Optional: a Host header (routers pick the route by it) and an X-Canary header value.
headers = {k: v for k, v in (("Host", sys.argv[5] if len(sys.argv) > 5 else ""), ("X-Canary", sys.argv[6] if len(sys.argv) > 6 else "")) if v}
stop = False
def halt(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, halt)
tracks, failures, ok, total, t = collections.Counter(), collections.Counter(), 0, 0, time.monotonic()
while not stop and (limit == 0 or total < limit):
    total += 1
    try:
        conn = http.client.HTTPConnection(host, timeout=2)
        conn.request("GET", os.environ.get("LOAD_PATH", "/"), headers=headers)
        r = conn.getresponse()
        body = r.read()
        conn.close()
        if 200 <= r.status < 300:
            ok += 1
            tracks[json.loads(body).get("track", "?")] += 1
        else:
            failures[f"status_{r.status}"] += 1
    except socket.timeout:
        failures["timeout"] += 1
    except (ConnectionRefusedError, ConnectionResetError):
        failures["connect"] += 1
    except Exception:
        failures["other"] += 1
    if rate > 0:
        t += 1.0 / rate
        time.sleep(max(0.0, t - time.monotonic()))
json.dump({"summary": {"total": total, "ok": ok, "failed": total - ok, "failures": failures, "tracks": tracks}}, open(out, "w"))
EOF

# -- Gateway API CRDs (cluster-scoped: removed at exit only when this test installed them) ------
GATEWAY_CRDS="$("${REPO_ROOT}/hack/tools.sh" path gateway-api-crds 2>/dev/null || true)"
gateway_crds() {
  [[ -d "${GATEWAY_CRDS}" ]] || { log::error "no Gateway API CRD YAML at '${GATEWAY_CRDS}': run hack/tools.sh install gateway-api-crds"; return 1; }
  if ! kubectl get crd httproutes.gateway.networking.k8s.io >/dev/null 2>&1; then
    util::trap_add "kubectl delete -f '${GATEWAY_CRDS}' --ignore-not-found --wait=false >/dev/null 2>&1 || true"
  fi
  kubectl apply --server-side --force-conflicts --field-manager=selfheal-e2e-canary -f "${GATEWAY_CRDS}" >"${TMP}/crds.out" || return 1
  kubectl wait --for=condition=Established --timeout=60s crd/httproutes.gateway.networking.k8s.io crd/gateways.gateway.networking.k8s.io >/dev/null
}
check::run "Gateway API standard-channel CRDs ($(basename "${GATEWAY_CRDS}")) applied server-side and Established" gateway_crds

# -- the manifests, server-side ---------------------------------------------------------------
# Fixed stable replicas (HPA off): the replica-ratio split and the stable pods' identity are the experiment.
VALUES=(--set "image.repository=${REPO}" --set "image.tag=${TAG}" --set image.pullPolicy=Never --set autoscaling.enabled=false --set replicaCount=3
  --set ingress.enabled=true --set httpRoute.enabled=true --set 'httpRoute.parentRefs[0].name=e2e-gateway'
  --set 'httpRoute.hostnames[0]=route.selfheal.local'
  --set app.message=stable-v1 --set tests.enabled=false)
manifests_server_side() {
  "${HELM}" template "${REL}" "${CHART}" --namespace "${NS}" "${VALUES[@]}" --set canary.enabled=true \
    --set canary.ingress.enabled=true --set canary.ingress.weight=10 --set canary.httpRoute.weight=10 >"${TMP}/canary.yaml" || return 1
  "${K[@]}" apply --server-side --dry-run=server -f "${TMP}/canary.yaml" >"${TMP}/dry.out" 2>"${TMP}/dry.err" || { cat "${TMP}/dry.err" >&2; return 1; }
  if grep -qi warning "${TMP}/dry.err"; then log::error "$(cat "${TMP}/dry.err")"; return 1; fi
  log::info "accepted: $(awk '{print $1}' "${TMP}/dry.out" | tr '\n' ' ')"
  grep -q "^ingress.networking.k8s.io/${FULL}-canary " "${TMP}/dry.out" && grep -q "^httproute.gateway.networking.k8s.io/${FULL} " "${TMP}/dry.out"
}
check::run "canary manifests (stable + nginx canary Ingress, weighted HTTPRoute, both Deployments, per-track Services) pass a server-side dry-run" \
  manifests_server_side

install_release() {
  "${HELM}" install "${REL}" "${CHART}" --namespace "${NS}" "${VALUES[@]}" >/dev/null &&
    "${K[@]}" rollout status "deployment/${FULL}" --timeout=180s >/dev/null
}
check::run "release ${REL} installed: 3 stable pods, Ingress and HTTPRoute to the all-tracks Service" install_release
# stable_state: the stable pod template and its pods; "untouched" means both stay the same.
# (Not metadata.generation: a Deployment's generation also counts annotation changes.)
stable_state() {
  "${K[@]}" get deployment "${FULL}" -o json | jq -c .spec.template
  "${K[@]}" get pods -l "app.kubernetes.io/instance=${REL},track=stable" -o jsonpath='{.items[*].metadata.name}'
}
STABLE_STATE="$(stable_state)"

# -- bad input ------------------------------------------------------------------------------------
# expect_exit CODE PATTERN cmd...: cmd exits with CODE and its stderr matches PATTERN.
expect_exit() {
  local want="$1" pattern="$2" rc=0
  shift 2
  "$@" >"${TMP}/out" 2>"${TMP}/err" || rc=$?
  if [[ "${rc}" != "${want}" ]] || ! grep -Eq "${pattern}" "${TMP}/err"; then
    log::error "exit ${rc} (want ${want}); stderr: $(tail -3 "${TMP}/err")"
    return 1
  fi
}
check::run "unknown strategy: exit 2 naming it" expect_exit 2 "unknown strategy 'istio'" "${REPO_ROOT}/canary/deploy.sh" "${C[@]}" -t x --strategy istio
check::run "weight out of range: exit 2" expect_exit 2 "weight 101 is out of range" "${REPO_ROOT}/canary/deploy.sh" "${C[@]}" -t x --weight 101
check::run "missing release: exit 1 saying how to install it" expect_exit 1 "release nope not found in namespace ${NS}" \
  "${REPO_ROOT}/canary/promote.sh" --namespace "${NS}" --release nope
check::run "missing --namespace and --image-tag: exit 2" expect_exit 2 "namespace is required|image-tag is required" "${REPO_ROOT}/canary/deploy.sh" -t x
revision() { "${HELM}" history "${REL}" --namespace "${NS}" -o json | jq 'map(.revision) | max'; }
dry_run_changes_nothing() {
  local before
  before="$(revision)"
  "${REPO_ROOT}/canary/deploy.sh" "${C[@]}" -t "${NEW_TAG}" --weight 20 --dry-run >"${TMP}/dry.json" 2>"${TMP}/dry.log" &&
    [[ "$(jq -r .result "${TMP}/dry.json")" == dry_run ]] && grep -q '\[dry-run\] helm upgrade' "${TMP}/dry.log" &&
    [[ "$(revision)" == "${before}" ]] && [[ -z "$("${K[@]}" get deployment -l track=canary -o name)" ]]
}
check::run "deploy --dry-run prints the helm upgrade and changes nothing (same revision, no canary)" dry_run_changes_nothing
nothing_to_do() {
  "${REPO_ROOT}/canary/$1.sh" "${C[@]}" >"${TMP}/noop.json" 2>/dev/null && [[ "$(jq -r .result "${TMP}/noop.json")" == nothing_to_do ]]
}
check::run "rollback without a canary: exit 0, nothing_to_do (no Event)" nothing_to_do rollback
check::run "promote without a canary: exit 0, nothing_to_do" nothing_to_do promote

# -- nginx strategy: the canary Ingress, then a rollback with a reason --------------------------
nginx_deploy() {
  "${REPO_ROOT}/canary/deploy.sh" "${C[@]}" --strategy nginx -t "${NEW_TAG}" --weight 10 >"${TMP}/d.json" || return 1
  local ann
  ann="$("${K[@]}" get ingress "${FULL}-canary" -o json | jq -c '.metadata.annotations')"
  log::info "canary Ingress annotations: ${ann}"
  jq -e '."nginx.ingress.kubernetes.io/canary" == "true" and ."nginx.ingress.kubernetes.io/canary-weight" == "10"
    and ."nginx.ingress.kubernetes.io/canary-by-header" == "X-Canary"' <<<"${ann}" >/dev/null &&
    [[ "$("${K[@]}" get ingress "${FULL}" -o jsonpath='{.spec.rules[0].http.paths[0].backend.service.name}')" == "${FULL}-stable" ]] &&
    [[ "$(jq -r .result "${TMP}/d.json")" == deployed ]]
}
check::run "nginx: deploy.sh at 10 % stores the canary Ingress (canary, canary-weight 10, canary-by-header X-Canary); stable Ingress -> ${FULL}-stable" nginx_deploy
# dry_runs_change_nothing: with a canary running, promote --dry-run and rollback --dry-run print
# their plan and leave the release revision, the canary and the events as they were.
dry_runs_change_nothing() {
  local before events
  before="$(revision)"
  events="$("${K[@]}" get events --field-selector "involvedObject.name=${FULL}" -o name | wc -l)"
  "${REPO_ROOT}/canary/promote.sh" "${C[@]}" --strategy nginx --window 1 --dry-run >"${TMP}/pd.json" 2>"${TMP}/pd.log" &&
    "${REPO_ROOT}/canary/rollback.sh" "${C[@]}" --strategy nginx --dry-run >"${TMP}/rd.json" 2>"${TMP}/rd.log" &&
    [[ "$(jq -r .result "${TMP}/pd.json")/$(jq -r .result "${TMP}/rd.json")" == dry_run/dry_run ]] &&
    grep -q '\[dry-run\] helm upgrade .*image.tag=' "${TMP}/pd.log" && grep -q '\[dry-run\] helm upgrade .*canary.enabled=false' "${TMP}/rd.log" &&
    [[ "$(revision)" == "${before}" ]] && "${K[@]}" get deployment "${FULL}-canary" >/dev/null &&
    [[ "$("${K[@]}" get events --field-selector "involvedObject.name=${FULL}" -o name | wc -l)" == "${events}" ]]
}
check::run "promote --dry-run and rollback --dry-run print their plan and change nothing (revision, canary, events)" dry_runs_change_nothing
nginx_rollback() {
  "${REPO_ROOT}/canary/rollback.sh" "${C[@]}" --strategy nginx --reason "e2e: manual rollback" >"${TMP}/r.json" || return 1
  ! "${K[@]}" get ingress "${FULL}-canary" >/dev/null 2>&1 && [[ -z "$("${K[@]}" get deployment -l track=canary -o name)" ]] &&
    [[ "$("${K[@]}" get ingress "${FULL}" -o jsonpath='{.spec.rules[0].http.paths[0].backend.service.name}')" == "${FULL}" ]] &&
    [[ "$(jq -r .result "${TMP}/r.json")" == rolled_back ]]
}
check::run "nginx: rollback.sh removes the canary Ingress and Deployment; the stable Ingress targets ${FULL} again" nginx_rollback
# rollback_recorded N PATTERN: N CanaryRolledBack Events on the stable Deployment, one matching PATTERN, and the
# annotation (it holds the latest) matching it too.
rollback_recorded() {
  local events
  events="$("${K[@]}" get events --field-selector "involvedObject.kind=Deployment,involvedObject.name=${FULL},reason=CanaryRolledBack" -o json)"
  [[ "$(jq '.items | length' <<<"${events}")" == "$1" ]] &&
    jq -r '.items[].message' <<<"${events}" | grep -q "$2" &&
    "${K[@]}" get deployment "${FULL}" -o jsonpath='{.metadata.annotations.selfheal\.io/canary-rollback}' | grep -q "$2"
}
check::run "rollback recorded: a Warning Event CanaryRolledBack on deployment/${FULL} and the selfheal.io/canary-rollback annotation" \
  rollback_recorded 1 "e2e: manual rollback"
rollback_twice() {
  "${REPO_ROOT}/canary/rollback.sh" "${C[@]}" --strategy nginx >"${TMP}/r2.json" && [[ "$(jq -r .result "${TMP}/r2.json")" == nothing_to_do ]] &&
    rollback_recorded 1 "e2e: manual rollback"
}
check::run "rollback is idempotent: a second run changes nothing and records no second Event" rollback_twice
stable_untouched() { [[ "$(stable_state)" == "${STABLE_STATE}" ]]; }
check::run "stable untouched by deploy + rollback (same pod template, same 3 pods)" stable_untouched

# -- gateway strategy: HTTPRoute backend weights --------------------------------------------------
route_weights() { "${K[@]}" get httproute "${FULL}" -o json | jq -c '[.spec.rules[-1].backendRefs[] | {name, weight}]'; }
gateway_flow() {
  "${REPO_ROOT}/canary/deploy.sh" "${C[@]}" --strategy gateway -t "${NEW_TAG}" --weight 25 >/dev/null || return 1
  local w
  w="$(route_weights)"
  log::info "HTTPRoute backendRefs at 25 %: ${w}"
  [[ "${w}" == "[{\"name\":\"${FULL}-stable\",\"weight\":75},{\"name\":\"${FULL}-canary\",\"weight\":25}]" ]] || return 1
  "${REPO_ROOT}/canary/rollback.sh" "${C[@]}" --strategy gateway --reason "e2e: gateway rollback" >/dev/null || return 1
  w="$(route_weights)"
  log::info "HTTPRoute backendRefs after the rollback: ${w}"
  # The API server defaults a backendRef's weight to 1.
  [[ "${w}" == "[{\"name\":\"${FULL}\",\"weight\":1}]" ]] && rollback_recorded 2 "e2e: gateway rollback"
}
check::run "gateway: deploy.sh at 25 % stores HTTPRoute weights stable 75 / canary 25; rollback.sh restores the single backend" gateway_flow

# -- the weights through a real router: Traefik's ingress-nginx and Gateway API providers -------------
# Traefik (built from its Go module by canary/build-traefik.sh, packed by hack/image.sh as
# localhost/traefik:VERSION) reads the same canary Ingress annotations as ingress-nginx and the
# HTTPRoute weights. It runs in the cluster (e2e/manifests/traefik.yaml: its own ServiceAccount,
# RBAC and GatewayClass, watching this namespace only) and proxies to pod IPs from its pod; the
# host reaches its entry point through the NodePort Service `router`.
ROUTER_IMAGE="localhost/traefik:${TRAEFIK_VERSION}"
ROUTER_ADDRESS=""
# measure_split NAME WANT% HOST [X-CANARY] N: N requests through the router; canary share within 3 points.
measure_split() {
  python3 "${TMP}/load.py" "${ROUTER_ADDRESS}" "${TMP}/$1.json" 0 "$5" "$3" "${4:-}" || return 1
  python3 - "${TMP}/$1.json" "$2" "$1" <<'EOF'
import json, sys
s, want = json.load(open(sys.argv[1]))["summary"], float(sys.argv[2])
got = 100.0 * s["tracks"].get("canary", 0) / s["total"]
print(f"    {sys.argv[3]}: {s['tracks']} of {s['total']} requests ({s['failed']} failed): canary {got:.1f} % (requested {want:.0f} %)", file=sys.stderr)
sys.exit(0 if s["failed"] == 0 and abs(got - want) <= 3.0 else 1)
EOF
}
# router_image: ROUTER_IMAGE is on the node: imported from hack/tools.sh's traefik binary when
# missing (hack/image.sh --import traefik; on minikube --minikube).
router_image() {
  local minikube
  minikube="$(e2e::minikube_profile)"
  if [[ -S "${CONTAINERD_SOCK}" ]] && grep -qx "${ROUTER_IMAGE}" <<<"$(util::ctr images ls -q 2>/dev/null || true)"; then
    return 0
  fi
  if [[ -n "${minikube}" ]] && minikube --profile "${minikube}" image ls 2>/dev/null | grep -qx "${ROUTER_IMAGE}"; then
    return 0
  fi
  if [[ -z "${minikube}" && ! -S "${CONTAINERD_SOCK}" ]]; then
    log::warn "not the local cluster nor minikube: ${ROUTER_IMAGE} must already be on the nodes"
    return 0
  fi
  if [[ ! -x "$("${REPO_ROOT}/hack/tools.sh" path traefik)/traefik" ]]; then
    log::error "no traefik binary to pack as ${ROUTER_IMAGE}: build it with hack/tools.sh install traefik (TRAEFIK=none skips)"
    return 1
  fi
  local how=(--import)
  [[ -z "${minikube}" ]] || how=(--minikube)
  log::info "packing ${ROUTER_IMAGE}: hack/image.sh ${how[*]} traefik"
  "${REPO_ROOT}/hack/image.sh" "${how[@]}" traefik >"${TMP}/traefik-image.log" 2>&1 || { tail -5 "${TMP}/traefik-image.log" >&2; return 1; }
}
start_router() {
  router_image || return 1
  util::trap_add "kubectl delete clusterrole,clusterrolebinding '${NS}-router' --ignore-not-found >/dev/null 2>&1 || true"
  util::trap_add "kubectl delete gatewayclass '${NS}' --ignore-not-found >/dev/null 2>&1 || true"
  if ! kubectl get ingressclass nginx >/dev/null 2>&1; then
    util::trap_add "kubectl delete ingressclass nginx --ignore-not-found >/dev/null 2>&1 || true"
    kubectl create -f - >/dev/null <<EOF || return 1
{"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "nginx"}, "spec": {"controller": "k8s.io/ingress-nginx"}}
EOF
  fi
  sed -e "s#@NAMESPACE@#${NS}#g" -e "s#@IMAGE@#${ROUTER_IMAGE}#g" "${REPO_ROOT}/e2e/manifests/traefik.yaml" |
    kubectl apply -f - >/dev/null || return 1
  if ! "${K[@]}" rollout status deployment/router --timeout=120s >/dev/null; then
    "${K[@]}" describe pods -l app=router | tail -20 >&2
    "${K[@]}" logs deployment/router --tail=20 >&2 || true
    return 1
  fi
  if [[ "${LOAD_VIA}" == proxy ]]; then
    e2e::port_forward "${NS}" service/router 8000 || return 1
  else
    e2e::nodeport "${NS}" router || return 1
  fi
  ROUTER_ADDRESS="${E2E_ADDRESS}"
  e2e::eventually 60 bash -c "curl -sf -H 'Host: selfheal.local' http://${ROUTER_ADDRESS}/ && curl -sf -H 'Host: route.selfheal.local' http://${ROUTER_ADDRESS}/" ||
    { "${K[@]}" logs deployment/router --tail=20 >&2; ROUTER_ADDRESS=""; return 1; }
  # The namespace-scoped RBAC is enough: no provider was refused anything.
  if "${K[@]}" logs deployment/router | grep -i forbidden >&2; then ROUTER_ADDRESS=""; return 1; fi
  log::info "Traefik ${ROUTER_IMAGE} in pod $("${K[@]}" get pods -l app=router -o jsonpath='{.items[0].metadata.name}'): both routes answer on ${ROUTER_ADDRESS} ($([[ "${LOAD_VIA}" == proxy ]] && echo port-forward || echo NodePort))"
}
router_canary() {
  "${REPO_ROOT}/canary/deploy.sh" "${C[@]}" --strategy nginx -t "${NEW_TAG}" --weight 10 >/dev/null &&
    "${REPO_ROOT}/canary/deploy.sh" "${C[@]}" --strategy gateway -t "${NEW_TAG}" --weight 25 >/dev/null &&
    start_router
}
if [[ "${TRAEFIK:-}" == none ]]; then
  log::warn "TRAEFIK=none: the nginx annotation and HTTPRoute weights are not measured through a router, not counted"
else
  check::run "router: Traefik in the cluster (ingress-nginx + Gateway API providers, this namespace only) serves the canary Ingress at 10 % and the HTTPRoute at 25 %" router_canary
  if [[ -n "${ROUTER_ADDRESS}" ]]; then
    check::run "router, nginx annotations: ${SPLIT_REQUESTS} requests to Host selfheal.local split canary-weight 10 ± 3 %" \
      measure_split nginx-split 10 selfheal.local "" "${SPLIT_REQUESTS}"
    header_routing() { measure_split header-always 100 selfheal.local always 50 && measure_split header-never 0 selfheal.local never 50; }
    check::run "router, nginx annotations: X-Canary: always sends 50 of 50 to the canary, X-Canary: never 0 of 50" header_routing
    check::run "router, Gateway API: ${SPLIT_REQUESTS} requests to Host route.selfheal.local split backendRefs weight 25 ± 3 %" \
      measure_split gateway-split 25 route.selfheal.local "" "${SPLIT_REQUESTS}"
    check::run "router, Gateway API: X-Canary: always sends 50 of 50 to the canary" measure_split route-always 100 route.selfheal.local always 50
    router_rollback() {
      "${REPO_ROOT}/canary/rollback.sh" "${C[@]}" --strategy nginx --reason "e2e: router rollback" >/dev/null &&
        e2e::eventually 30 measure_split after-rollback 0 selfheal.local "" 50
    }
    check::run "router: after rollback.sh every request to Host selfheal.local reaches stable (0 of 50 canary)" router_rollback
  fi
  "${K[@]}" delete deployment router --ignore-not-found --wait=false >/dev/null 2>&1 || true
fi
"${REPO_ROOT}/canary/rollback.sh" "${C[@]}" --strategy nginx --reason "e2e: end of router checks" >/dev/null 2>&1 || true

# -- the load's address: a NodePort Service of the test's own on every track of the release ----------
# (same selector as the all-tracks Service ${FULL}), or kubectl proxy with LOAD_VIA=proxy.
LOAD_HOST=""
export LOAD_PATH=/
if [[ "${LOAD_VIA}" == proxy ]]; then
  kubectl proxy --port=0 >"${TMP}/proxy.out" 2>&1 &
  util::trap_add "kill $! 2>/dev/null || true"
  e2e::eventually 20 grep -q 'Starting to serve on' "${TMP}/proxy.out" || log::fatal "kubectl proxy did not start: $(cat "${TMP}/proxy.out")"
  LOAD_HOST="$(sed -n 's/.*Starting to serve on //p' "${TMP}/proxy.out")"
  LOAD_PATH="/api/v1/namespaces/${NS}/services/http:${FULL}:http/proxy/"
  log::info "load through kubectl proxy: http://${LOAD_HOST}${LOAD_PATH}"
else
  "${K[@]}" get service "${FULL}" -o json |
    jq '{apiVersion, kind, metadata: {name: "load", namespace: .metadata.namespace},
      spec: {type: "NodePort", selector: .spec.selector, ports: [{name: "http", port: 80, targetPort: "http"}]}}' |
    kubectl apply -f - >/dev/null || log::fatal "cannot create the NodePort Service load in ${NS}"
  e2e::nodeport "${NS}" load || log::fatal "no address for the NodePort Service load in ${NS}"
  LOAD_HOST="${E2E_ADDRESS}"
  log::info "load through the NodePort Service load (selector $("${K[@]}" get service load -o jsonpath='{.spec.selector}')): http://${LOAD_HOST}/"
fi

# -- replica ratio through kube-proxy -------------------------------------------------------------
replicas_split() {
  "${REPO_ROOT}/canary/deploy.sh" "${C[@]}" --strategy replicas -t "${NEW_TAG}" --weight 25 --message canary-v2 >"${TMP}/split.json" || return 1
  e2e::eventually 60 bash -c "[[ \$(kubectl -n '${NS}' get endpointslices -l kubernetes.io/service-name=load -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}x{end}') == xxxx ]]" || return 1
  # Ready endpoints are not yet kube-proxy's rules: measure once the canary has answered.
  e2e::eventually 60 bash -c "curl -s --max-time 2 http://${LOAD_HOST}/ | grep -q '\"track\":\"canary\"'" || return 1
  python3 "${TMP}/load.py" "${LOAD_HOST}" "${TMP}/split-load.json" 0 "${SPLIT_REQUESTS}" || return 1
  python3 - "${TMP}/split-load.json" "$(jq .effective_weight "${TMP}/split.json")" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))["summary"]
want = float(sys.argv[2])
got = 100.0 * s["tracks"].get("canary", 0) / s["total"]
print(f"    measured: {s['tracks']} of {s['total']} requests ({s['failed']} failed): canary {got:.1f} % "
      f"(requested 25 %, replica ratio 1 of 4 pods = {want:.0f} %)", file=sys.stderr)
sys.exit(0 if s["failed"] == 0 and abs(got - want) <= 3.0 else 1)
EOF
}
if [[ "${LOAD_VIA}" == nodeport ]]; then
  check::run "replicas: 1 canary + 3 stable pods behind one Service; ${SPLIT_REQUESTS} requests to its NodePort (${LOAD_HOST}) split 25 % ± 3 % to the canary" replicas_split
else
  log::warn "LOAD_VIA=proxy: the API server's service proxy, not kube-proxy, picks the pods: replica-ratio split not measured, not counted"
  "${REPO_ROOT}/canary/deploy.sh" "${C[@]}" --strategy replicas -t "${NEW_TAG}" --weight 25 >/dev/null 2>&1 || true
fi
"${REPO_ROOT}/canary/rollback.sh" "${C[@]}" --strategy replicas --reason "e2e: end of split measurement" >/dev/null 2>&1 || true

# -- load on every track while the canary is analysed: the same address ----------------------------
LOAD_PID=""
start_load() {
  python3 "${TMP}/load.py" "${LOAD_HOST}" "$1" 40 0 &
  LOAD_PID=$!
  util::trap_add "kill ${LOAD_PID} 2>/dev/null || true"
}
# stop_load FILE: stop the load and wait for its summary (call it directly, not in $(...): only
# this shell can wait for its child).
stop_load() {
  kill -TERM "${LOAD_PID}" 2>/dev/null || true
  wait "${LOAD_PID}" 2>/dev/null || true
  [[ -s "$1" ]] || { log::error "the load wrote no summary to $1"; return 1; }
}

# -- a bad canary is rolled back by the analysis ------------------------------------------------------
ROLLBACKS_BEFORE_BAD="$("${K[@]}" get events --field-selector "involvedObject.name=${FULL},reason=CanaryRolledBack" -o json | jq '.items | length')"
# With a Prometheus binary, the bad canary is judged from a real Prometheus on 127.0.0.1
# (scraping every pod of the release each second) instead of the direct scrapes: the PromQL path
# of selfheal-canary against a real server, which reads the recorded series of the workshop
# recording rules (loaded by prom::pod_proxy_config). It scrapes through the API server's pod proxy
# (SERVER/api/v1/namespaces/NS/pods/NAME:8080/proxy/metrics, instance=NAME), as a ServiceAccount
# allowed only to list pods and get pods/proxy in this namespace (prom::pod_proxy_config in
# hack/lib.sh): no route to pod IPs needed.
PROM_BIN="$(command -v prometheus 2>/dev/null || true)"
PROM_URL=""
# ready_targets_up: Prometheus scrapes at least one pod, and every Ready pod's target is up (a
# wrong path or RBAC shows here; a pod on its way out may be down).
ready_targets_up() {
  curl -s "${PROM_URL}/api/v1/targets" |
    jq -e '[.data.activeTargets[] | select(.discoveredLabels.__meta_kubernetes_pod_ready == "true")] | length > 0 and all(.health == "up")' >/dev/null
}
start_prometheus() {
  local port
  port="$(util::free_port)"
  mkdir -p "${TMP}/prom-config"
  prom::pod_proxy_config "${TMP}/prom-config" "${NS}" 1s "app.kubernetes.io/instance=${REL},track" || return 1
  "${PROM_BIN}" --config.file="${TMP}/prom-config/prometheus.yml" --storage.tsdb.path="${TMP}/prom" \
    --web.listen-address="127.0.0.1:${port}" >"${TMP}/prometheus.log" 2>&1 &
  util::trap_add "kill $! 2>/dev/null || true"
  PROM_URL="http://127.0.0.1:${port}"
  e2e::eventually 30 curl -sf "${PROM_URL}/-/ready" || { tail -5 "${TMP}/prometheus.log" >&2; return 1; }
  e2e::eventually 30 ready_targets_up ||
    { curl -s "${PROM_URL}/api/v1/targets" | jq -c '[.data.activeTargets[] | {instance: .labels.instance, health, lastError}]' >&2; return 1; }
  log::info "Prometheus at ${PROM_URL} scrapes $(curl -s "${PROM_URL}/api/v1/targets" | jq '.data.activeTargets | length') pods every second through the API server's pod proxy (/api/v1/namespaces/${NS}/pods/NAME:PORT/proxy/metrics)"
}
bad_canary() {
  "${REPO_ROOT}/canary/deploy.sh" "${C[@]}" --strategy replicas -t "${NEW_TAG}" --weight 10 --fault-profile errors >/dev/null || return 1
  local source=()
  if [[ -n "${PROM_BIN}" ]]; then
    start_prometheus || return 1
    source=(--prometheus "${PROM_URL}")
  else
    log::warn "no prometheus binary (hack/tools.sh install prometheus): the bad canary is judged from direct scrapes"
  fi
  start_load "${TMP}/bad-load.json"
  local rc=0
  "${REPO_ROOT}/canary/promote.sh" "${C[@]}" --strategy replicas --window 15 "${source[@]}" --json "${TMP}/bad.json" >/dev/null || rc=$?
  local load
  stop_load "${TMP}/bad-load.json" || return 1
  load="$(jq -c .summary "${TMP}/bad-load.json")"
  log::info "promote exit ${rc}: $(jq -c '{result, reason, steps: [.steps[] | {weight, effective_weight, verdict, source: .analysis.source, canary_error_ratio: .analysis.canary.error_ratio, canary_requests: .analysis.canary.requests}]}' "${TMP}/bad.json")"
  log::info "load on ${FULL} during it: ${load}"
  [[ "${rc}" == 3 && "$(jq -r .result "${TMP}/bad.json")" == rolled_back ]] &&
    jq -e '.steps[-1].weight < 100 and .steps[-1].verdict == "rollback"' "${TMP}/bad.json" >/dev/null &&
    [[ -z "$("${K[@]}" get deployment -l track=canary -o name)" ]] &&
    # Stable kept serving: the only failures are the canary's own 500s (no refused connection, timeout or 503).
    jq -e '.summary.ok > 0 and ((.summary.failures | keys) - ["status_500"] | length) == 0' "${TMP}/bad-load.json" >/dev/null
}
check::run "bad canary (errors profile): promote.sh's analysis (Prometheus when available) rolls it back at its first step (< 100 %), exit 3; the only failed requests are the canary's 500s" bad_canary
check::run "the analysis' rollback is recorded on deployment/${FULL}" rollback_recorded "$((ROLLBACKS_BEFORE_BAD + 1))" "analysis at"
check::run "stable untouched by the bad canary (same pod template, same 3 pods)" stable_untouched

# -- a good canary is promoted ---------------------------------------------------------------------
good_canary() {
  "${REPO_ROOT}/canary/deploy.sh" "${C[@]}" --strategy replicas -t "${NEW_TAG}" --weight 10 --message stable-v2 >/dev/null || return 1
  start_load "${TMP}/good-load.json"
  local rc=0
  "${REPO_ROOT}/canary/promote.sh" "${C[@]}" --strategy replicas --steps 25,50,100 --window 12 --json "${TMP}/good.json" >/dev/null || rc=$?
  sleep 3 # requests in flight while the canary pods drain
  local load
  stop_load "${TMP}/good-load.json" || return 1
  load="$(jq -c .summary "${TMP}/good-load.json")"
  log::info "promote exit ${rc}: $(jq -c '{result, steps: [.steps[] | {weight, effective_weight, verdict, canary_requests: .analysis.canary.requests, stable_requests: .analysis.stable.requests}]}' "${TMP}/good.json")"
  log::info "load on ${FULL} during it: ${load}"
  [[ "${rc}" == 0 && "$(jq -r .result "${TMP}/good.json")" == promoted ]] &&
    [[ "$("${K[@]}" get deployment "${FULL}" -o jsonpath='{.spec.template.spec.containers[0].image}')" == "${REPO}:${NEW_TAG}" ]] &&
    [[ -z "$("${K[@]}" get deployment -l track=canary -o name)" ]] &&
    curl -s --max-time 3 "http://${LOAD_HOST}${LOAD_PATH}" | grep -q '"message":"stable-v2"' &&
    jq -e '.summary.ok > 0 and .summary.failed == 0' "${TMP}/good-load.json" >/dev/null
}
check::run "good canary: promote.sh passes 25 % and 50 %, switches stable to ${REPO}:${NEW_TAG} and removes the canary, with 0 failed requests" good_canary
promoted_recorded() {
  "${K[@]}" get events --field-selector "involvedObject.name=${FULL},reason=CanaryPromoted" -o json | jq -e '.items | length == 1' >/dev/null &&
    "${REPO_ROOT}/canary/promote.sh" "${C[@]}" --strategy replicas >"${TMP}/p2.json" 2>/dev/null &&
    [[ "$(jq -r .result "${TMP}/p2.json")" == nothing_to_do ]]
}
check::run "promotion recorded (Event CanaryPromoted); promote.sh again: nothing_to_do" promoted_recorded

((CHECK_FAILED == 0)) || { e2e::dump "${NS}"; "${HELM}" history "${REL}" --namespace "${NS}" >&2 || true; }
check::summary canary
