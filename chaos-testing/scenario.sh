#!/usr/bin/env bash
# Chaos scenarios, one per way the platform heals: each breaks the app on purpose (the app's
# POST /crash modes, a Helm upgrade with a fault profile, evictions against the PDB), then
# watches the cluster and prints a timeline of "fault injected -> detected -> healed", with the
# availability the load generator measured meanwhile (--load URL).
# Prerequisites: kubectl and jq, a cluster in KUBECONFIG with the chart installed with
# chaos.enabled=true (helm-chart/values-demo.yaml); helm for bad-release; selfheal-demo for --load.
# shellcheck source=chaos-testing/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# name|what it breaks|what should heal it
SCENARIOS=(
  "crash-loop|a pod's process exits (POST /crash mode=exit) again and again|kubelet restarts it with growing back-off (CrashLoopBackOff); selfheal-controller recycles it when installed (layers 1, 3)"
  "liveness-failure|a pod's /health answers 503 (mode=unhealthy)|the liveness probe fails, the kubelet restarts the container (layer 1)"
  "readiness-failure|a pod's /ready answers 503 for --seconds (mode=unready)|the readiness probe takes it out of the Service's endpoints and back when it recovers, without a restart (layer 2)"
  "cpu-burn|a pod busy-loops --threads for --seconds (mode=cpu)|the HPA scales the Deployment out (layer 5); without an HPA only throttling is shown"
  "bad-release|helm upgrade of --release with app.faultProfile=--profile|self-healing/auto-rollback.sh verifies the release and rolls back to the last good revision (layer 4)"
  "bad-canary|canary/deploy.sh starts a canary of --release with fault profile errors (replica-ratio split)|canary/promote.sh's analysis sees its 5xx ratio and canary/rollback.sh removes it (layer 7); needs --load"
  "node-drain|every target pod on one node is evicted back to back, like a drain|the PodDisruptionBudget refuses evictions (HTTP 429) until replacements are Ready (layer 6)"
)

usage() {
  local s name what heal
  cat <<EOF
Usage: chaos-testing/scenario.sh SCENARIO [options]
       chaos-testing/scenario.sh list

Breaks the app one way, watches it heal and prints a timeline (UTC time, seconds since the
fault) of fault injected -> detected -> healed. Faults reach the app's POST /crash through the
API server's pods/proxy subresource, so they work wherever kubectl does.

Scenarios:
EOF
  for s in "${SCENARIOS[@]}"; do
    IFS='|' read -r name what heal <<<"${s}"
    printf '  %-18s breaks: %s\n  %-18s heals:  %s\n' "${name}" "${what}" "" "${heal}"
  done
  cat <<EOF

Options:
  -n, --namespace NS       namespace of the app (default selfheal-demo; kube-system and the other
                           kube-* namespaces are refused, selfheal-system needs --force)
  -l, --selector SEL       label selector of the target pods
                           (default app.kubernetes.io/name=selfheal-app,track=stable)
  -p, --pod NAME           break this pod (default: a random Ready pod of the selector)
  -r, --release NAME       Helm release (bad-release, bad-canary; default selfheal-app)
      --times N            crash-loop: crashes in a row (default 3)
      --seconds N          readiness-failure: seconds unready (default 20);
                           cpu-burn: seconds of burning (default 90)
      --threads N          cpu-burn: busy threads (default 2)
      --profile P          bad-release: fault profile of the bad release: unready, unhealthy,
                           errors or latency (default unready)
      --timeout D          bound of each wait for detection and for healing (default 3m)
      --load TARGET        run the selfheal-demo load generator during the scenario and print
                           its availability and latency at the end; TARGET is an http:// URL
                           (the Service's ClusterIP from the local cluster's node) or
                           NAMESPACE/SERVICE[:PORT] (API server service proxy, e.g. on minikube)
      --load-concurrency N concurrent requests of the load generator (default 4)
      --load-keepalive     reuse connections (default: a new connection per request, which is
                           what shows a missing preStop sleep or shutdown delay)
      --load-json FILE     also write the load generator's JSON report to FILE
      --force              allow the selfheal-system namespace
      --dry-run            print what would be done; inject nothing
  -h, --help               this help

Exit status: 0 healed, 1 not healed in time or an error, 2 usage, 3 scenario not available here.

Environment:
  KUBECONFIG     the cluster
  HELM           helm binary (default: helm on PATH)
  SELFHEAL_DEMO  path of the selfheal-demo binary (default: PATH, then the cargo target dir)
  DEMO_LOAD_RATE requests per second of the load generator (default 50)

Examples:
  chaos-testing/scenario.sh readiness-failure -n selfheal-demo --seconds 15
  chaos-testing/scenario.sh node-drain -n selfheal-demo \\
    --load http://127.0.0.1:\$(kubectl -n selfheal-demo get svc selfheal-app -o jsonpath='{.spec.ports[0].nodePort}')/
EOF
}

# -- arguments --------------------------------------------------------------------------------------
SCENARIO="${1:-}"
case "${SCENARIO}" in
  -h | --help) usage; exit 0 ;;
  "") util::usage_error "name a scenario (or 'list')" ;;
esac
shift
NS=selfheal-demo
SELECTOR="app.kubernetes.io/name=selfheal-app,track=stable"
POD=""
RELEASE=selfheal-app
TIMES=3
SECONDS_ARG=""
THREADS=2
PROFILE=unready
TIMEOUT=3m
LOAD_URL=""
LOAD_CONC=4
HELM="${HELM:-helm}"
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    -p | --pod) util::need_value "$1" "$#"; POD="$2"; shift ;;
    -r | --release) util::need_value "$1" "$#"; RELEASE="$2"; shift ;;
    --times) util::need_value "$1" "$#"; TIMES="$2"; shift ;;
    --seconds) util::need_value "$1" "$#"; SECONDS_ARG="$2"; shift ;;
    --threads) util::need_value "$1" "$#"; THREADS="$2"; shift ;;
    --profile) util::need_value "$1" "$#"; PROFILE="$2"; shift ;;
    --timeout) util::need_value "$1" "$#"; TIMEOUT="$2"; shift ;;
    *) chaos::common_flag "$@" || util::usage_error "unknown argument: $1"; shift $((CHAOS_FLAG_WORDS - 1)) ;;
  esac
  shift
done

if [[ "${SCENARIO}" == list ]]; then
  for s in "${SCENARIOS[@]}"; do printf '%s\n' "${s%%|*}"; done
  exit 0
fi
SPEC=""
for s in "${SCENARIOS[@]}"; do [[ "${s%%|*}" != "${SCENARIO}" ]] || SPEC="${s}"; done
[[ -n "${SPEC}" ]] || util::usage_error "unknown scenario '${SCENARIO}' (chaos-testing/scenario.sh list)"
IFS='|' read -r _ BREAKS HEALS <<<"${SPEC}"

chaos::whole_number --times "${TIMES}" 1
chaos::whole_number --threads "${THREADS}" 1
chaos::whole_number --load-concurrency "${LOAD_CONC}" 1
[[ -z "${SECONDS_ARG}" ]] || chaos::whole_number --seconds "${SECONDS_ARG}" 1
[[ "${PROFILE}" =~ ^(unready|unhealthy|errors|latency)$ ]] || util::usage_error "--profile must be unready, unhealthy, errors or latency: '${PROFILE}'"
TIMEOUT_S="$(util::seconds "${TIMEOUT}")" || util::usage_error "--timeout must be a duration like 90s, 3m or 1m30s: '${TIMEOUT}'"
((TIMEOUT_S >= 1)) || util::usage_error "--timeout must be at least 1s"
chaos::check_target "${NS}" "${SELECTOR}"

# bad-canary is judged by the canary analysis, which needs requests to judge.
if [[ "${SCENARIO}" == bad-canary && -z "${LOAD_URL}" ]]; then
  util::usage_error "bad-canary needs --load: the canary analysis compares the canary's and stable's answers to real requests"
fi
if [[ "${SCENARIO}" == bad-canary && ! -x "${REPO_ROOT}/canary/promote.sh" ]]; then
  log::error "bad-canary delegates to canary/deploy.sh and canary/promote.sh, which this checkout does not have"
  exit 3
fi

util::require_tools kubectl jq
[[ "${SCENARIO}" != bad-release && "${SCENARIO}" != bad-canary ]] || util::require_tools "${HELM}"
[[ -z "${LOAD_URL}" ]] || chaos::require_load
chaos::require_namespace "${NS}"
K=(kubectl --namespace "${NS}")
DRY="${DRY_RUN:-0}"

# -- helpers ------------------------------------------------------------------------------------------
# target_pod: --pod, or a random Ready pod of the selector; sets POD.
target_pod() {
  if [[ -n "${POD}" ]]; then
    "${K[@]}" get pod "${POD}" >/dev/null 2>&1 || log::fatal "pod ${POD} not found in ${NS}"
    return 0
  fi
  POD="$(chaos::pick_pod "${NS}" "${SELECTOR}" ready)" ||
    log::fatal "no Ready pod matches '${SELECTOR}' in ${NS} (kubectl -n ${NS} get pods --show-labels)"
}

# dry_stop "what would be watched": in dry-run mode nothing was injected, so there is nothing to
# watch: say what would have been, and end the scenario.
dry_stop() {
  [[ "${DRY}" == 1 ]] || return 0
  chaos::mark "dry-run: nothing injected; would now wait for: $*"
  exit 0
}


# shellcheck disable=SC2317 # the helpers below are called through util::wait_for
restarted_since() { local r; r="$(chaos::restarts "${NS}" "$1")"; [[ -n "${r}" ]] && ((r > $2)); }
# shellcheck disable=SC2317
restarted_or_gone() { restarted_since "$1" "$2" || chaos::pod_gone "${NS}" "$1"; }
# exited_since POD RESTARTS: the container is not running any more (or already restarted, or the
# pod is gone): the kubelet has seen the crash.
# shellcheck disable=SC2317
exited_since() {
  restarted_or_gone "$1" "$2" && return 0
  [[ -z "$(chaos::pod_field "${NS}" "$1" '{.status.containerStatuses[0].state.running}')" ]]
}
# shellcheck disable=SC2317
ready_or_gone() { chaos::pod_ready "${NS}" "$1" || chaos::pod_gone "${NS}" "$1"; }
# shellcheck disable=SC2317
ready_back_to() { (($(chaos::ready_count "${NS}" "${SELECTOR}") >= $1)); }
# shellcheck disable=SC2317
out_of_service() { chaos::pod_unready "${NS}" "$1" && ! chaos::pod_in_endpoints "${NS}" "$1"; }
# shellcheck disable=SC2317
back_in_service() { chaos::pod_ready "${NS}" "$1" && chaos::pod_in_endpoints "${NS}" "$1"; }
last_exit() { chaos::pod_field "${NS}" "$1" '{.status.containerStatuses[0].lastState.terminated.reason} (exit code {.status.containerStatuses[0].lastState.terminated.exitCode})'; }

# -- scenarios: each injects, then waits (bounded) for detection and healing ----------------------------
scenario_crash_loop() {
  target_pod
  local i r before ready0 state
  ready0="$(chaos::ready_count "${NS}" "${SELECTOR}")"
  for ((i = 1; i <= TIMES; i++)); do
    before="$(chaos::restarts "${NS}" "${POD}")"
    chaos::mark "fault ${i}/${TIMES}: POST /crash mode=exit to ${POD} (restartCount ${before:-?})"
    # The app answers 202 before it exits.
    chaos::crash "${NS}" "${POD}" '{"mode":"exit"}' >/dev/null || return 1
    dry_stop "the container to exit, the kubelet to restart it after its back-off, ${POD} Ready again"
    if ! util::wait_for "${POD}'s container to exit" "${TIMEOUT_S}" exited_since "${POD}" "${before}" 2>/dev/null; then
      chaos::mark "NOT within ${TIMEOUT_S}s: ${POD}'s container kept running (is chaos.enabled=true?)"
      return 1
    fi
    if chaos::pod_gone "${NS}" "${POD}"; then
      chaos::mark "detected: ${POD} is gone: recycled (selfheal-controller evicts crash-looping pods)"
      break
    fi
    state="$(chaos::pod_field "${NS}" "${POD}" '{.status.containerStatuses[0].state.waiting.reason}{.status.containerStatuses[0].state.terminated.reason}')"
    chaos::mark "detected: ${POD}'s container exited: ${state:-restarted at once}"
    chaos::wait_mark "${TIMEOUT_S}" "the kubelet restarted ${POD} (or it was recycled)" restarted_or_gone "${POD}" "${before}" || return 1
    if ! chaos::pod_gone "${NS}" "${POD}"; then
      r="$(chaos::restarts "${NS}" "${POD}")"
      chaos::mark "restartCount ${r}, last state $(last_exit "${POD}")"
    fi
    # Wait for Ready before the next crash: the back-off (10 s, 20 s, 40 s ...) is the point.
    chaos::wait_mark "${TIMEOUT_S}" "${POD} Ready again after the back-off (or recycled)" ready_or_gone "${POD}" || return 1
    chaos::pod_gone "${NS}" "${POD}" && { chaos::mark "${POD} was recycled by the controller"; break; }
  done
  chaos::wait_mark "${TIMEOUT_S}" "healed: the target has ${ready0} Ready pods again" ready_back_to "${ready0}"
}

scenario_liveness_failure() {
  target_pod
  local before
  before="$(chaos::restarts "${NS}" "${POD}")"
  chaos::mark "fault: POST /crash mode=unhealthy to ${POD}: /health answers 503 (restartCount ${before})"
  chaos::crash "${NS}" "${POD}" '{"mode":"unhealthy"}' >/dev/null || return 1
  dry_stop "the liveness probe to fail and the kubelet to restart ${POD}, then ${POD} Ready"
  chaos::wait_mark "${TIMEOUT_S}" "detected: liveness probe failed, the kubelet restarted ${POD}" restarted_since "${POD}" "${before}" || return 1
  chaos::mark "restartCount $(chaos::restarts "${NS}" "${POD}"), last state $(last_exit "${POD}")"
  # The fault lives in the process's memory: the restart clears it.
  chaos::wait_mark "${TIMEOUT_S}" "healed: ${POD} Ready again (fresh process, fault gone)" chaos::pod_ready "${NS}" "${POD}"
}

scenario_readiness_failure() {
  target_pod
  local secs="${SECONDS_ARG:-20}" before
  before="$(chaos::restarts "${NS}" "${POD}")"
  # The kubelet marks the pod unready after failureThreshold failed probes, periodSeconds apart:
  # a shorter fault is never seen, so do not wait for it longer than that can take.
  local period threshold need
  period="$(chaos::pod_field "${NS}" "${POD}" '{.spec.containers[0].readinessProbe.periodSeconds}')"
  threshold="$(chaos::pod_field "${NS}" "${POD}" '{.spec.containers[0].readinessProbe.failureThreshold}')"
  need=$((${period:-10} * ${threshold:-3}))
  ((secs > need)) || log::warn "--seconds ${secs} is not longer than the readiness probe's period x failureThreshold (${period:-10}s x ${threshold:-3}): the kubelet may never see the fault"
  chaos::mark "fault: POST /crash mode=unready seconds=${secs} to ${POD}: /ready answers 503 (probe: every ${period:-10}s, unready after ${threshold:-3} failures)"
  chaos::crash "${NS}" "${POD}" "{\"mode\":\"unready\",\"seconds\":${secs}}" >/dev/null || return 1
  dry_stop "${POD} unready and out of the EndpointSlices, then back after ${secs}s"
  local detect_timeout=$((secs + need + 10))
  ((detect_timeout <= TIMEOUT_S)) || detect_timeout="${TIMEOUT_S}"
  chaos::wait_mark "${detect_timeout}" "detected: readiness probe failed, ${POD} unready and removed from the Service's endpoints" out_of_service "${POD}" || return 1
  chaos::wait_mark "${TIMEOUT_S}" "healed: ${POD} Ready and back in the endpoints" back_in_service "${POD}" || return 1
  local after
  after="$(chaos::restarts "${NS}" "${POD}")"
  chaos::mark "restartCount ${before} -> ${after}: $([[ "${after}" == "${before}" ]] && echo 'no restart, as readiness never restarts' || echo 'restarted (unexpected for a readiness fault)')"
  [[ "${after}" == "${before}" ]]
}

# owner_deployment POD: the Deployment owning the pod's ReplicaSet (empty when none).
owner_deployment() {
  local rs
  rs="$(chaos::pod_field "${NS}" "$1" '{.metadata.ownerReferences[?(@.kind=="ReplicaSet")].name}')"
  [[ -n "${rs}" ]] || return 0
  "${K[@]}" get replicaset "${rs}" -o jsonpath='{.metadata.ownerReferences[?(@.kind=="Deployment")].name}' 2>/dev/null || true
}
# hpa_state HPA: its CPU reading, target and replica bounds in one line.
hpa_state() {
  "${K[@]}" get hpa "$1" -o json | jq -r '"CPU \(.status.currentMetrics[0].resource.current.averageUtilization // "?")% of requests (target \(.spec.metrics[0].resource.target.averageUtilization // "?")%), min \(.spec.minReplicas), max \(.spec.maxReplicas), desired \(.status.desiredReplicas)"'
}
# shellcheck disable=SC2317
hpa_wants_more() { (($("${K[@]}" get hpa "$1" -o jsonpath='{.status.desiredReplicas}') > $2)); }
# shellcheck disable=SC2317
deployment_ready_at_least() { (($("${K[@]}" get deployment "$1" -o jsonpath='{.status.readyReplicas}') >= $2)); }

scenario_cpu_burn() {
  target_pod
  local secs="${SECONDS_ARG:-90}" deploy hpa replicas0 desired
  deploy="$(owner_deployment "${POD}")"
  hpa=""
  [[ -z "${deploy}" ]] || hpa="$("${K[@]}" get hpa -o json | jq -r --arg d "${deploy}" \
    '[.items[] | select(.spec.scaleTargetRef.kind == "Deployment" and .spec.scaleTargetRef.name == $d)][0].metadata.name // empty')"
  chaos::mark "fault: POST /crash mode=cpu seconds=${secs} threads=${THREADS} to ${POD}"
  chaos::crash "${NS}" "${POD}" "{\"mode\":\"cpu\",\"seconds\":${secs},\"threads\":${THREADS}}" >/dev/null || return 1
  if [[ -z "${hpa}" ]]; then
    chaos::mark "no HPA scales ${deploy:-the pod owner}: nothing scales out; the CPU limit throttles ${POD}"
    dry_stop "nothing (no HPA)"
    sleep 30
    chaos::mark "usage: $(kubectl top pod --namespace "${NS}" "${POD}" --no-headers 2>/dev/null || echo 'kubectl top unavailable (metrics-server?)')"
    return 0
  fi
  replicas0="$("${K[@]}" get deployment "${deploy}" -o jsonpath='{.status.replicas}')"
  chaos::mark "HPA ${hpa} scales deployment/${deploy} (${replicas0} replicas now; $(hpa_state "${hpa}"))"
  dry_stop "HPA ${hpa} to want more than ${replicas0} replicas, then them Ready"
  chaos::wait_mark "${TIMEOUT_S}" "detected: HPA ${hpa} wants more replicas (metrics-server saw the CPU)" hpa_wants_more "${hpa}" "${replicas0}" || return 1
  desired="$("${K[@]}" get hpa "${hpa}" -o jsonpath='{.status.desiredReplicas}')"
  chaos::mark "HPA: $(hpa_state "${hpa}")"
  chaos::wait_mark "${TIMEOUT_S}" "healed: deployment/${deploy} scaled out to ${desired} Ready replicas" deployment_ready_at_least "${deploy}" "${desired}" || return 1
  chaos::mark "the burn ends ${secs}s after the fault; the HPA scales back in after its scale-down stabilization window"
}

scenario_bad_release() {
  local tmp values last rc=0
  "${HELM}" status "${RELEASE}" --namespace "${NS}" >/dev/null 2>&1 ||
    log::fatal "no Helm release ${RELEASE} in ${NS} (--release)"
  tmp="$(mktemp -d)"
  util::trap_add "rm -rf '${tmp}'"
  values="${tmp}/values.yaml"
  # auto-rollback.sh takes complete values (no --reuse-values): start from the release's own.
  "${HELM}" get values "${RELEASE}" --namespace "${NS}" -o yaml >"${values}"
  last="$("${HELM}" history "${RELEASE}" --namespace "${NS}" -o json | jq -r '[.[] | select(.status == "deployed")][-1].revision // "none"')"
  chaos::mark "fault: upgrade ${RELEASE} (deployed revision ${last}) with app.faultProfile=${PROFILE} through self-healing/auto-rollback.sh --timeout ${TIMEOUT_S}s"
  local args=(--namespace "${NS}" --release "${RELEASE}" --values "${values}" --set "app.faultProfile=${PROFILE}" --timeout "${TIMEOUT_S}s")
  [[ "${DRY}" != 1 ]] || args+=(--dry-run)
  HELM="${HELM}" "${REPO_ROOT}/self-healing/auto-rollback.sh" "${args[@]}" >"${tmp}/summary" || rc=$?
  sed 's/^/    | /' "${tmp}/summary"
  case "${rc}" in
    0)
      if [[ "${DRY}" == 1 ]]; then chaos::mark "dry-run: auto-rollback.sh planned the upgrade"; return 0; fi
      chaos::mark "NOT healed: the bad release (${PROFILE}) passed verification and is deployed; roll back with: ${HELM} rollback ${RELEASE} ${last} -n ${NS}"
      return 1 ;;
    3)
      chaos::mark "detected: auto-rollback.sh's verification failed the release"
      chaos::mark "healed: rolled back to revision ${last}'s configuration, verified healthy (now revision $("${HELM}" history "${RELEASE}" --namespace "${NS}" -o json | jq -r '.[-1].revision'))"
      ;;
    *)
      chaos::mark "NOT healed: auto-rollback.sh exited ${rc} (see its summary above)"
      return 1 ;;
  esac
}

scenario_bad_canary() {
  local tmp tag rc=0 dry=()
  "${HELM}" status "${RELEASE}" --namespace "${NS}" >/dev/null 2>&1 ||
    log::fatal "no Helm release ${RELEASE} in ${NS} (--release)"
  tmp="$(mktemp -d)"
  util::trap_add "rm -rf '${tmp}'"
  [[ "${DRY}" != 1 ]] || dry=(--dry-run)
  # The same image as stable: the fault profile alone makes this canary bad.
  tag="$("${K[@]}" get deployment -l "app.kubernetes.io/instance=${RELEASE},track=stable" -o jsonpath='{.items[0].spec.template.spec.containers[0].image}')"
  tag="${tag##*:}"
  chaos::mark "fault: canary/deploy.sh: a canary of ${RELEASE} (tag ${tag}) with fault profile errors, 25 % of the pods behind the Service"
  HELM="${HELM}" "${REPO_ROOT}/canary/deploy.sh" -n "${NS}" -r "${RELEASE}" -s replicas -t "${tag}" --weight 25 \
    --fault-profile errors "${dry[@]}" --json "${tmp}/deploy.json" >/dev/null || { chaos::mark "canary/deploy.sh failed"; return 1; }
  dry_stop "canary/promote.sh's analysis to fail the canary and roll it back"
  chaos::mark "canary Ready; canary/promote.sh analyses it at each step (20 s windows)"
  HELM="${HELM}" "${REPO_ROOT}/canary/promote.sh" -n "${NS}" -r "${RELEASE}" -s replicas --steps 25,50,100 --window 20 \
    --json "${tmp}/promote.json" >/dev/null || rc=$?
  case "${rc}" in
    3)
      chaos::mark "detected: $(jq -r '.reason' "${tmp}/promote.json")"
      chaos::mark "healed: canary rolled back (weight 0, canary track removed; Event CanaryRolledBack on the stable Deployment)"
      chaos::wait_mark "${TIMEOUT_S}" "no canary pod left" no_canary_pods
      ;;
    0)
      chaos::mark "NOT healed: the analysis promoted the bad canary ($(jq -c '[.steps[].verdict]' "${tmp}/promote.json"))"
      return 1 ;;
    *)
      chaos::mark "NOT healed: canary/promote.sh exited ${rc}"
      return 1 ;;
  esac
}
# shellcheck disable=SC2317
no_canary_pods() { [[ -z "$("${K[@]}" get pods -l "app.kubernetes.io/instance=${RELEASE},track=canary" -o name)" ]]; }

scenario_node_drain() {
  target_pod
  local node ready0 pods pod rc refusals=0 evicted=0 min deadline ready
  node="$(chaos::pod_field "${NS}" "${POD}" '{.spec.nodeName}')"
  ready0="$(chaos::ready_count "${NS}" "${SELECTOR}")"
  min="${ready0}"
  mapfile -t pods < <(chaos::pods "${NS}" "${SELECTOR}" | awk -v n="${node}" '$3 == n {print $1}')
  # Never cordon: on a single-node cluster nothing could be scheduled any more. The evictions
  # are exactly what `kubectl drain` sends; only the cordon is left out.
  chaos::mark "drain of node ${node} (simulated: no cordon, only this target's pods): evicting ${#pods[@]} pods back to back"
  "${K[@]}" get pdb -o json | jq -r '.items[] | "    PDB \(.metadata.name): minAvailable \(.spec.minAvailable // "-"), maxUnavailable \(.spec.maxUnavailable // "-"), healthy \(.status.currentHealthy)/\(.status.expectedPods), disruptions allowed \(.status.disruptionsAllowed)"'
  if [[ "${DRY}" == 1 ]]; then
    local p
    for p in "${pods[@]}"; do chaos::evict "${NS}" "${p}"; done
    dry_stop "each eviction to be accepted or refused (429) by the PDB until replacements are Ready"
  fi
  local out
  for pod in "${pods[@]}"; do
    deadline=$(($(date +%s) + TIMEOUT_S))
    while :; do
      rc=0
      out="$(chaos::evict "${NS}" "${pod}" 2>&1)" || rc=$?
      ready="$(chaos::ready_count "${NS}" "${SELECTOR}")"
      ((ready >= min)) || min="${ready}"
      case "${rc}" in
        0)
          evicted=$((evicted + 1))
          chaos::mark "evicted ${pod} (${evicted}/${#pods[@]}); ${ready} Ready"
          break ;;
        2)
          # Print the first refusal and every fifth: the retry loop asks once a second.
          refusals=$((refusals + 1))
          ((refusals % 5 != 1)) ||
            chaos::mark "refused ${pod} (429, ${refusals} so far): $(grep -o 'Cannot evict pod[^.]*' <<<"${out}" | head -1) (${ready} Ready); retrying"
          ;;
        *)
          chaos::mark "eviction of ${pod} failed: ${out}"
          return 1 ;;
      esac
      if (($(date +%s) >= deadline)); then
        chaos::mark "NOT within ${TIMEOUT_S}s: ${pod} still not evictable"
        return 1
      fi
      sleep 1
    done
  done
  chaos::mark "drained: ${evicted} pods evicted, ${refusals} evictions refused by the PDB (429), Ready never below ${min} (sampled)"
  chaos::wait_mark "${TIMEOUT_S}" "healed: the target has ${ready0} Ready pods again (replacements)" ready_back_to "${ready0}"
}

# -- run ----------------------------------------------------------------------------------------------
log::step "scenario ${SCENARIO} in namespace ${NS}$([[ "${DRY}" == 1 ]] && echo ' (dry-run: nothing is injected)')"
log::info "breaks: ${BREAKS}"
log::info "heals:  ${HEALS}"
chaos::timeline_start
RESULT=0
[[ -z "${LOAD_URL}" ]] || chaos::load_start "${LOAD_URL}" "${LOAD_CONC}"
case "${SCENARIO}" in
  crash-loop) scenario_crash_loop || RESULT=1 ;;
  liveness-failure) scenario_liveness_failure || RESULT=1 ;;
  readiness-failure) scenario_readiness_failure || RESULT=1 ;;
  cpu-burn) scenario_cpu_burn || RESULT=1 ;;
  bad-release) scenario_bad_release || RESULT=1 ;;
  bad-canary) scenario_bad_canary || RESULT=1 ;;
  node-drain) scenario_node_drain || RESULT=1 ;;
esac
chaos::load_report || RESULT=1
if ((RESULT == 0)); then
  log::ok "scenario ${SCENARIO}: healed"
else
  log::error "scenario ${SCENARIO}: not healed (see the timeline); kubectl -n ${NS} get pods,events"
fi
exit "${RESULT}"
