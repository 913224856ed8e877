#!/usr/bin/env bash
# chaos-testing/ on a real cluster. The chart with the workshop values and 3 replicas;
# kill-pods.sh with a safety floor of 2 Ready deletes 6 pods while the selfheal-demo load
# generator hits the Service with a new connection per request (so a kube-proxy rule still
# naming a stopped pod would show as a failure; kept-alive connections would hide it): every kill happened (seen by a pod watch, not by the script's own
# word), the number of Ready pods never dropped below the floor in any state the watch saw, and
# the load generator's success ratio is reported and must be 100 % (graceful shutdown plus
# readiness make that possible). Guards: a kill that would breach the floor is skipped,
# --dry-run deletes nothing, kube-system and selfheal-system are refused, bad input fails with a
# message. Three scenarios: readiness-failure
# (the pod's endpoint turns not-ready and back, no restart), liveness-failure (the kubelet
# restarts the container) and node-drain (the PDB refuses an eviction with 429, every pod is
# still replaced).
# Prerequisites: a cluster in KUBECONFIG (hack/cluster.sh up) with localhost/selfheal-app:$IMAGE_TAG
# imported (hack/image.sh --import app); helm, jq, python3; cargo (builds selfheal-demo) or
# SELFHEAL_DEMO pointing at a built binary.
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=chaos-testing/lib.sh
source "${REPO_ROOT}/chaos-testing/lib.sh"

usage() {
  cat <<EOF
Usage: e2e/chaos.sh [-h|--help]

Tests chaos-testing/ on the cluster in a fresh namespace (deleted at exit) and prints
"chaos: N passed, N failed". Exit status 0 only when every check passed. The measured
availability under kill-pods is printed as "kill-pods availability: N % of M requests served ...".

Environment:
  KUBECONFIG     cluster to test (default: hack/cluster.sh's, ${CLUSTER_KUBECONFIG})
  IMAGE_TAG      tag of the imported app image localhost/selfheal-app (default: dev)
  HELM           helm binary (default: helm on PATH, the pinned one first)
  SELFHEAL_DEMO  selfheal-demo binary (default: built with cargo build -p selfheal-demo)
  KILLS          pods kill-pods deletes (default 6)

Example:
  hack/image.sh --import app && e2e/chaos.sh
EOF
}

util::no_arguments "$@"

HELM="${HELM:-helm}"
util::require_tools "${HELM}" kubectl jq python3
e2e::require_cluster

# The load generator: build it unless given (a no-op when the build is fresh).
if [[ -z "${SELFHEAL_DEMO:-}" ]]; then
  util::require_tools cargo
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${SELFHEAL_HOME}/cargo-target}"
  log::step "building the load generator (cargo build -p selfheal-demo)"
  (cd "${REPO_ROOT}" && cargo build --quiet --locked -p selfheal-demo) || log::fatal "cannot build selfheal-demo"
  export SELFHEAL_DEMO="${CARGO_TARGET_DIR}/debug/selfheal-demo"
fi
[[ -x "${SELFHEAL_DEMO}" ]] || log::fatal "SELFHEAL_DEMO=${SELFHEAL_DEMO} is not an executable"

CHART="${REPO_ROOT}/helm-chart"
KILL="${REPO_ROOT}/chaos-testing/kill-pods.sh"
SCENARIO="${REPO_ROOT}/chaos-testing/scenario.sh"
REPO=localhost/selfheal-app
TAG="${IMAGE_TAG:-dev}"
KILLS="${KILLS:-6}"
REL=chaos
FULL="${REL}-selfheal-app"
SEL="app.kubernetes.io/instance=${REL},track=stable"
TMP="$(mktemp -d)"
util::trap_add "rm -rf '${TMP}'"
e2e::namespace chaos
NS="${E2E_NS}"
K=(kubectl --namespace "${NS}")
log::step "chaos e2e in namespace ${NS} (restricted), image ${REPO}:${TAG}, load generator ${SELFHEAL_DEMO}"

if [[ -S "${CONTAINERD_SOCK}" ]] && ! grep -qx "${REPO}:${TAG}" <<<"$(util::ctr images ls -q 2>/dev/null || true)"; then
  log::fatal "${REPO}:${TAG} is not imported into the local cluster: run hack/image.sh --import app"
fi

# -- the app: workshop values (POST /crash on, its drain timings), 3 fixed replicas ----------------
# The HPA is off so the replica count is the experiment's, not the autoscaler's; the PDB keeps 2.
install() {
  "${HELM}" install "${REL}" "${CHART}" --namespace "${NS}" -f "${CHART}/values-demo.yaml" \
    --set "image.repository=${REPO}" --set "image.tag=${TAG}" \
    --set autoscaling.enabled=false --set replicaCount=3 --set podDisruptionBudget.minAvailable=2 \
    --wait --timeout 3m >/dev/null &&
    [[ "$(chaos::ready_count "${NS}" "${SEL}")" == 3 ]]
}
check::run "helm install with values-demo.yaml and 3 replicas: 3 pods Ready" install
if ((CHECK_FAILED)); then
  e2e::dump "${NS}"
  check::summary chaos
  exit 1
fi

# uids: the UIDs of the target's pods, sorted (a deleted and replaced pod changes the set).
uids() { "${K[@]}" get pods -l "${SEL}" -o jsonpath='{range .items[*]}{.metadata.uid}{"\n"}{end}' | sort; }

# -- guards and bad input (nothing may be deleted) ------------------------------------------------
dry_run_deletes_nothing() {
  local before out
  before="$(uids)"
  out="$("${KILL}" -n "${NS}" -l "${SEL}" --count 3 --interval 1s --dry-run 2>&1)" || { printf '%s\n' "${out}" >&2; return 1; }
  [[ "$(grep -c '\[dry-run\] kubectl delete pod' <<<"${out}")" == 3 ]] &&
    grep -q 'pods deleted: *3 (dry-run' <<<"${out}" &&
    [[ "$(uids)" == "${before}" ]] &&
    [[ -z "$("${K[@]}" get pods -l "${SEL}" -o jsonpath='{.items[*].metadata.deletionTimestamp}')" ]]
}
check::run "kill-pods --dry-run --count 3 prints 3 deletes and deletes nothing (same pod UIDs)" dry_run_deletes_nothing

# refused NS SELECTOR PATTERN [args]: kill-pods exits 1 without deleting and says PATTERN.
refused() {
  local ns="$1" sel="$2" pattern="$3" out rc=0
  shift 3
  out="$("${KILL}" -n "${ns}" -l "${sel}" --dry-run "$@" 2>&1)" || rc=$?
  log::info "exit ${rc}: $(grep -m1 'error' <<<"${out}")"
  [[ "${rc}" == 1 ]] && grep -q -- "${pattern}" <<<"${out}" && ! grep -q 'delete pod' <<<"${out}"
}
check::run "kube-system is refused (exit 1, says why), even with --force" \
  refused kube-system k8s-app=kube-dns 'refusing to break pods in kube-system' --force
check::run "kube-node-lease is refused" refused kube-node-lease a=b 'refusing to break pods in kube-node-lease'
check::run "selfheal-system (the controller) is refused without --force" \
  refused selfheal-system app.kubernetes.io/name=selfheal-controller 'pass --force'
check::run "no pods match the selector: exit 1, says so" refused "${NS}" app=none 'no pods match selector'
check::run "an unknown namespace: exit 1, says so" refused "no-such-ns-${RANDOM}" app=x 'namespace no-such-ns-.* not found'

# floor_refuses: with --min-ready 3 and 3 Ready pods no Ready pod may go: kill-pods skips, says
# so, gives up after --timeout with exit 1, and every pod is still there.
floor_refuses() {
  local before out rc=0
  before="$(uids)"
  out="$("${KILL}" -n "${NS}" -l "${SEL}" --count 1 --min-ready 3 --timeout 5s 2>&1)" || rc=$?
  log::info "exit ${rc}: $(grep -m1 'skip:' <<<"${out}")"
  [[ "${rc}" == 1 ]] && grep -q 'skip: 3 Ready; deleting Ready pod .* would leave 2 < floor 3' <<<"${out}" &&
    grep -q 'gave up: only 0 of 1 kills' <<<"${out}" && [[ "$(uids)" == "${before}" ]]
}
check::run "the safety floor: --min-ready 3 with 3 Ready pods deletes nothing, says why, exits 1 after --timeout" floor_refuses

# usage_error MESSAGE args...: kill-pods exits 2 with MESSAGE and its usage.
usage_error() {
  local pattern="$1" out rc=0
  shift
  out="$("${KILL}" "$@" 2>&1)" || rc=$?
  [[ "${rc}" == 2 ]] && grep -q -- "${pattern}" <<<"${out}" && grep -q '^Usage:' <<<"${out}"
}
check::run "bad input exits 2 with a message: --interval 5x" usage_error "--interval must be a duration" -n "${NS}" -l "${SEL}" --interval 5x
check::run "bad input: --count 0" usage_error "--count must be a whole number >= 1" -n "${NS}" -l "${SEL}" --count 0
check::run "bad input: --min-ready -1" usage_error "--min-ready must be a whole number" -n "${NS}" -l "${SEL}" --min-ready -1
check::run "bad input: no --selector" usage_error "--selector is required" -n "${NS}"
check::run "bad input: an empty --selector" usage_error "--selector must not be empty" -n "${NS}" -l " "
check::run "bad input: unknown flag" usage_error "unknown argument: --bogus" -n "${NS}" -l "${SEL}" --bogus
# scenario_fails CODE PATTERN args...: scenario.sh exits CODE and says PATTERN.
scenario_fails() {
  local code="$1" pattern="$2" out rc=0
  shift 2
  out="$("${SCENARIO}" "$@" 2>&1)" || rc=$?
  [[ "${rc}" == "${code}" ]] && grep -q -- "${pattern}" <<<"${out}"
}
check::run "scenario.sh: an unknown scenario exits 2" scenario_fails 2 "unknown scenario 'nope'" nope -n "${NS}"
check::run "scenario.sh refuses kube-system (exit 1)" scenario_fails 1 'refusing to break pods in kube-system' readiness-failure -n kube-system --dry-run
check::run "scenario.sh readiness-failure --dry-run injects nothing" scenario_fails 0 'dry-run: nothing injected' readiness-failure -n "${NS}" -l "${SEL}" --dry-run
[[ "$(uids | grep -c .)" == 3 ]] || log::error "the guard checks changed the pods"

# -- kill-pods under load ---------------------------------------------------------------------------
# The load goes to the Service's NodePort on 127.0.0.1 (values-demo.yaml makes it a NodePort;
# kube-proxy serves NodePorts on loopback on the local cluster), else through the API server's
# service proxy (minikube). Never to a ClusterIP or a pod IP.
NODE_PORT="$("${K[@]}" get service "${FULL}" -o jsonpath='{.spec.ports[0].nodePort}')"
LOAD_TARGET="http://127.0.0.1:${NODE_PORT}/"
if [[ -z "${NODE_PORT}" ]] || ! curl -fsS -m 3 -o /dev/null "${LOAD_TARGET}" 2>/dev/null; then
  LOAD_TARGET="${NS}/${FULL}:http"
  log::warn "no NodePort answering on 127.0.0.1: load through the API server's service proxy (${LOAD_TARGET})"
fi

# Every state of every target pod, from before the first kill to after the recovery.
"${K[@]}" get pods -l "${SEL}" --watch --output-watch-events -o json >"${TMP}/pods.watch" 2>"${TMP}/pods.watch.err" &
WATCHER="$!"
util::trap_add "kill ${WATCHER} 2>/dev/null || true"
e2e::eventually 10 test -s "${TMP}/pods.watch"
BEFORE_UIDS="$(uids)"
kill_pods_under_load() {
  "${KILL}" -n "${NS}" -l "${SEL}" --count "${KILLS}" --interval 5s --min-ready 2 --seed 42 \
    --load "${LOAD_TARGET}" --load-json "${TMP}/load.json" >"${TMP}/kill.out" 2>"${TMP}/kill.err"
  local rc=$?
  cat "${TMP}/kill.out" >&2
  ((rc == 0)) || { tail -20 "${TMP}/kill.err" >&2; return 1; }
}
check::run "kill-pods --count ${KILLS} --interval 5s --min-ready 2 with load on ${LOAD_TARGET}: exit 0" kill_pods_under_load
sleep 2
kill "${WATCHER}" 2>/dev/null || true
wait "${WATCHER}" 2>/dev/null || true

# watch_facts: from the pod watch: pods that got a deletionTimestamp, and the lowest number of
# Ready, non-terminating pods in any state after the target first had 3 of them.
watch_facts() {
  PYTHONPATH="${REPO_ROOT}/e2e" python3 - "${TMP}/pods.watch" <<'EOF'
import json, sys

from watchstream import stream

def ready(pod):
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or [])

pods, deleted, lowest, started, events = {}, set(), None, False, 0
for ev in stream(sys.argv[1]):
    events += 1
    pod = ev["object"]
    name = pod["metadata"]["name"]
    if pod["metadata"].get("deletionTimestamp"):
        deleted.add(name)
    if ev["type"] == "DELETED":
        pods.pop(name, None)
    else:
        pods[name] = ready(pod)
    n = sum(pods.values())
    if not started and n >= 3:
        started = True
    if started:
        lowest = n if lowest is None else min(lowest, n)
print(json.dumps({"events": events, "deleted": len(deleted), "lowest_ready": lowest, "ready_at_end": sum(pods.values())}))
EOF
}
FACTS="$(watch_facts 2>&1)" || FACTS='{}'
log::info "pod watch: ${FACTS}"
fact() { jq -r ".$1 // \"none\"" <<<"${FACTS}"; }
all_kills_seen() { [[ "$(fact deleted)" == "${KILLS}" ]] && grep -q "^pods deleted: *${KILLS}\$" "${TMP}/kill.out"; }
check::run "the pod watch saw exactly ${KILLS} pods deleted ($(fact deleted)), as the script reports" all_kills_seen
floor_held() { [[ "$(fact lowest_ready)" =~ ^[0-9]+$ ]] && (($(fact lowest_ready) >= 2)); }
check::run "Ready pods never fell below the floor of 2 in any of the $(fact events) watched states (lowest: $(fact lowest_ready))" floor_held
# recovered: 3 Ready pods again; with 3 or more kills, at least one original pod was replaced.
recovered() {
  [[ "$(chaos::ready_count "${NS}" "${SEL}")" == 3 ]] &&
    [[ "$(comm -12 <(printf '%s\n' "${BEFORE_UIDS}") <(uids) | grep -c .)" -lt 3 ]]
}
check::run "recovered: 3 Ready pods, original ones replaced" recovered

AVAILABILITY="availability: none (the load generator wrote no report)"
[[ -s "${TMP}/load.json" ]] && AVAILABILITY="$(chaos::load_summary "${TMP}/load.json")"
printf 'kill-pods %s\n' "${AVAILABILITY}"
load_all_served() {
  [[ -s "${TMP}/load.json" ]] || return 1
  # At least 10 requests a second over the run: a load generator that sent nothing proves nothing.
  jq -e '.summary | .total >= (.duration_secs * 10) and .failed == 0 and .success_ratio == 1' "${TMP}/load.json" >/dev/null ||
    { jq -c '.summary | del(.series)' "${TMP}/load.json" >&2; jq -c '[.summary.series[] | select(.failed > 0)]' "${TMP}/load.json" >&2; return 1; }
}
check::run "the load generator's success ratio during ${KILLS} kills with 3 replicas is 100 %" load_all_served

# -- scenarios ------------------------------------------------------------------------------------------
# readiness-failure: an independent EndpointSlice watch must see the pod's endpoint ready ->
# not ready -> ready, and its container must not restart.
readiness_failure() {
  local pod before
  pod="$(chaos::pick_pod "${NS}" "${SEL}" ready)" || return 1
  before="$(chaos::restarts "${NS}" "${pod}")"
  "${K[@]}" get endpointslices -l "kubernetes.io/service-name=${FULL}" --watch -o json >"${TMP}/eps.watch" 2>/dev/null &
  local w=$!
  sleep 1
  "${SCENARIO}" readiness-failure -n "${NS}" -l "${SEL}" --pod "${pod}" --seconds 10 --timeout 60s >"${TMP}/ready.out" 2>"${TMP}/ready.err"
  local rc=$?
  sleep 1
  kill "${w}" 2>/dev/null || true
  wait "${w}" 2>/dev/null || true
  cat "${TMP}/ready.out" >&2
  ((rc == 0)) || { tail -20 "${TMP}/ready.err" >&2; return 1; }
  python3 - "${TMP}/eps.watch" "${pod}" <<'EOF' || return 1
import json, sys
text, pos, dec, seq = open(sys.argv[1]).read(), 0, json.JSONDecoder(), []
while True:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        break
    s, pos = dec.raw_decode(text, pos)
    for e in s.get("endpoints") or []:
        if (e.get("targetRef") or {}).get("name") == sys.argv[2]:
            r = bool(e.get("conditions", {}).get("ready"))
            if not seq or seq[-1] != r:
                seq.append(r)
print(f"    endpoint of {sys.argv[2]}: ready sequence {seq}", file=sys.stderr)
sys.exit(0 if seq[:3] == [True, False, True] else 1)
EOF
  [[ "$(chaos::restarts "${NS}" "${pod}")" == "${before}" ]]
}
check::run "scenario readiness-failure: the endpoint is removed (not ready) and restored, no restart" readiness_failure

# liveness-failure: the kubelet restarts the container (restartCount grows, read from the API
# here, not from the script) and the pod is Ready again.
liveness_failure() {
  local pod before rc=0
  pod="$(chaos::pick_pod "${NS}" "${SEL}" ready)" || return 1
  before="$(chaos::restarts "${NS}" "${pod}")"
  "${SCENARIO}" liveness-failure -n "${NS}" -l "${SEL}" --pod "${pod}" --timeout 90s >"${TMP}/live.out" 2>"${TMP}/live.err" || rc=$?
  cat "${TMP}/live.out" >&2
  ((rc == 0)) || { tail -20 "${TMP}/live.err" >&2; return 1; }
  (($(chaos::restarts "${NS}" "${pod}") > before)) && chaos::pod_ready "${NS}" "${pod}" &&
    grep -q 'Liveness probe failed' <<<"$("${K[@]}" get events --field-selector "involvedObject.name=${pod},reason=Unhealthy" -o jsonpath='{.items[*].message}')"
}
check::run "scenario liveness-failure: a Liveness probe failed Event, the container restarted, the pod Ready again" liveness_failure

node_drain() {
  local before out rc=0
  before="$(uids)"
  out="$("${SCENARIO}" node-drain -n "${NS}" -l "${SEL}" --timeout 90s 2>"${TMP}/drain.err")" || rc=$?
  printf '%s\n' "${out}" >&2
  ((rc == 0)) || { tail -20 "${TMP}/drain.err" >&2; return 1; }
  # minAvailable 2 of 3: the second back-to-back eviction must meet a 429.
  grep -q 'refused .*(429' <<<"${out}" &&
    [[ "$(grep -c ' evicted [a-z0-9-]* ([0-9]/3)' <<<"${out}")" == 3 ]] &&
    e2e::eventually 60 none_of "${before}" &&
    [[ "$(chaos::ready_count "${NS}" "${SEL}")" == 3 ]]
}
# none_of UIDS: no pod of the target (terminating ones included) has one of these UIDs.
none_of() { [[ -z "$(comm -12 <(printf '%s\n' "$1") <(uids))" ]]; }
check::run "scenario node-drain: the PDB (minAvailable 2) refuses an eviction with 429, all 3 pods are still evicted and replaced" node_drain

((CHECK_FAILED == 0)) || e2e::dump "${NS}"
check::summary chaos
