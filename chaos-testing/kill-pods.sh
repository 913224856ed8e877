#!/usr/bin/env bash
# Pod-kill chaos: every --interval, deletes one random pod matching a label selector in one
# namespace, for a --duration or a --count of kills, and never when that would leave fewer than
# --min-ready Ready pods (it says so and tries again shortly). What it breaks: a pod disappears
# without warning (a node failure, an OOM kill, a bad rollout). What should heal it: the
# ReplicaSet replaces the pod, readiness keeps the new one out of the Service until it serves,
# and graceful shutdown (preStop + drain) lets the old one finish what it started, so clients
# see no errors. Run the load generator alongside (--load URL) to turn that into a number.
# Prerequisites: kubectl and jq, a cluster in KUBECONFIG; for --load the selfheal-demo binary.
# shellcheck source=chaos-testing/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: chaos-testing/kill-pods.sh -n NAMESPACE -l SELECTOR [options]

Deletes one random pod matching SELECTOR in NAMESPACE every INTERVAL, until COUNT pods are
deleted or DURATION has passed (whichever comes first; default --count 1), keeping at least
MIN Ready pods: a kill that would leave fewer is skipped and tried again 2 s later. Terminating
pods count neither as targets nor as Ready. Prints a timeline, waits for the target to be back
to its Ready count, and prints a summary.

Options:
  -n, --namespace NS       namespace of the target (required; kube-system, kube-public and
                           kube-node-lease are always refused, selfheal-system needs --force)
  -l, --selector SEL       label selector of the target pods (required, not empty),
                           e.g. app.kubernetes.io/instance=selfheal-app
  -i, --interval D         time between kills: 10s, 1m, 90 (default 10s)
  -d, --duration D         stop after D (e.g. 2m)
  -c, --count N            stop after N kills (default 1 when --duration is not given)
  -m, --min-ready N        safety floor: never leave fewer than N Ready pods (default 1)
  -g, --grace-period S     seconds of graceful termination for each kill (kubectl delete
                           --grace-period; default: the pod's terminationGracePeriodSeconds;
                           0 with --force-kill kills at once)
      --force-kill         delete with --force (only with --grace-period 0): like a node dying
      --timeout D          give up (exit 1) when --count kills are not done after D (default:
                           the count's schedule plus 5m)
      --recover-timeout D  after the last kill, how long to wait for the Ready count to be back
                           (default 3m; 0: do not wait)
      --seed N             seed the random choice of pods (repeatable runs)
      --load TARGET        run the selfheal-demo load generator meanwhile (through the recovery)
                           and print its availability and latency at the end; TARGET is an
                           http:// URL (the Service's ClusterIP from the local cluster's node) or
                           NAMESPACE/SERVICE[:PORT] (API server service proxy, e.g. on minikube)
      --load-concurrency N concurrent requests of the load generator (default 4)
      --load-keepalive     reuse connections (default: a new connection per request, which is
                           what shows a missing preStop sleep or shutdown delay)
      --load-json FILE     also write the load generator's JSON report to FILE
      --force              allow the selfheal-system namespace (the controller itself)
      --dry-run            pick and print victims, delete nothing
  -h, --help               this help

Exit status: 0 done (and recovered), 1 error / --count not reached / not recovered, 2 usage.

Environment:
  KUBECONFIG     the cluster
  SELFHEAL_DEMO  path of the selfheal-demo binary (default: PATH, then the cargo target dir)
  DEMO_LOAD_RATE requests per second of the load generator (default 50)
  DRY_RUN=1      same as --dry-run

Examples:
  chaos-testing/kill-pods.sh -n selfheal-demo -l app.kubernetes.io/name=selfheal-app --count 5 --min-ready 2
  chaos-testing/kill-pods.sh -n selfheal-demo -l app.kubernetes.io/name=selfheal-app --duration 2m \\
    --interval 15s --load http://127.0.0.1:\$(kubectl -n selfheal-demo get svc selfheal-app -o jsonpath='{.spec.ports[0].nodePort}')/
EOF
}

NS=""
SELECTOR=""
INTERVAL=10s
DURATION=""
COUNT=""
MIN_READY=1
GRACE=""
FORCE_KILL=0
TIMEOUT=""
RECOVER_TIMEOUT=3m
SEED=""
LOAD_URL=""
LOAD_CONC=4
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    -i | --interval) util::need_value "$1" "$#"; INTERVAL="$2"; shift ;;
    -d | --duration) util::need_value "$1" "$#"; DURATION="$2"; shift ;;
    -c | --count) util::need_value "$1" "$#"; COUNT="$2"; shift ;;
    -m | --min-ready) util::need_value "$1" "$#"; MIN_READY="$2"; shift ;;
    -g | --grace-period) util::need_value "$1" "$#"; GRACE="$2"; shift ;;
    --force-kill) FORCE_KILL=1 ;;
    --timeout) util::need_value "$1" "$#"; TIMEOUT="$2"; shift ;;
    --recover-timeout) util::need_value "$1" "$#"; RECOVER_TIMEOUT="$2"; shift ;;
    --seed) util::need_value "$1" "$#"; SEED="$2"; shift ;;
    *) chaos::common_flag "$@" || util::usage_error "unknown argument: $1"; shift $((CHAOS_FLAG_WORDS - 1)) ;;
  esac
  shift
done

# -- validate everything before touching the cluster ------------------------------------------
[[ -n "${NS}" ]] || util::usage_error "--namespace is required"
[[ -n "${SELECTOR}" ]] || util::usage_error "--selector is required"
INTERVAL_S="$(util::seconds "${INTERVAL}")" || util::usage_error "--interval must be a duration like 10s, 1m or 1m30s: '${INTERVAL}'"
((INTERVAL_S >= 1)) || util::usage_error "--interval must be at least 1s"
DURATION_S=""
if [[ -n "${DURATION}" ]]; then
  DURATION_S="$(util::seconds "${DURATION}")" || util::usage_error "--duration must be a duration like 30s, 2m or 1m30s: '${DURATION}'"
  ((DURATION_S >= 1)) || util::usage_error "--duration must be at least 1s"
fi
if [[ -n "${COUNT}" ]]; then
  chaos::whole_number --count "${COUNT}" 1
  COUNT=$((10#${COUNT}))
elif [[ -z "${DURATION_S}" ]]; then
  COUNT=1
fi
chaos::whole_number --min-ready "${MIN_READY}" 0
MIN_READY=$((10#${MIN_READY}))
DELETE_FLAGS=(--wait=false)
if [[ -n "${GRACE}" ]]; then
  chaos::whole_number --grace-period "${GRACE}" 0
  DELETE_FLAGS+=("--grace-period=$((10#${GRACE}))")
fi
if ((FORCE_KILL)); then
  [[ "${GRACE}" == 0 ]] || util::usage_error "--force-kill needs --grace-period 0"
  DELETE_FLAGS+=(--force)
fi
if [[ -n "${TIMEOUT}" ]]; then
  TIMEOUT_S="$(util::seconds "${TIMEOUT}")" || util::usage_error "--timeout must be a duration: '${TIMEOUT}'"
else
  TIMEOUT_S=$((${COUNT:-0} * INTERVAL_S + 300))
fi
RECOVER_S="$(util::seconds "${RECOVER_TIMEOUT}")" || util::usage_error "--recover-timeout must be a duration: '${RECOVER_TIMEOUT}'"
if [[ -n "${SEED}" ]]; then
  chaos::whole_number --seed "${SEED}" 0
  RANDOM=$((10#${SEED}))
fi
chaos::whole_number --load-concurrency "${LOAD_CONC}" 1
chaos::check_target "${NS}" "${SELECTOR}"

util::require_tools kubectl jq
[[ -z "${LOAD_URL}" ]] || chaos::require_load
chaos::require_namespace "${NS}"

TARGET="pods '${SELECTOR}' in namespace ${NS}"
PODS="$(chaos::pods "${NS}" "${SELECTOR}")" || log::fatal "cannot list pods in ${NS}"
[[ -n "${PODS}" ]] || log::fatal "no pods match selector '${SELECTOR}' in namespace ${NS} (kubectl -n ${NS} get pods --show-labels)"
TOTAL="$(grep -c . <<<"${PODS}")"
READY0="$(chaos::ready_count "${NS}" "${SELECTOR}")"
if ((MIN_READY >= TOTAL)); then
  log::warn "--min-ready ${MIN_READY} with ${TOTAL} pods: no Ready pod can be deleted unless the target grows; only unready pods will be"
fi

PLAN=()
[[ -z "${COUNT}" ]] || PLAN+=("${COUNT} kills")
[[ -z "${DURATION_S}" ]] || PLAN+=("${DURATION_S}s")
DRY_NOTE=""
[[ "${DRY_RUN:-0}" != 1 ]] || DRY_NOTE=" (dry-run: nothing is deleted)"
PLAN_TEXT="${PLAN[0]}${PLAN[1]:+ or ${PLAN[1]}}"
log::step "kill-pods: ${TARGET}: one every ${INTERVAL_S}s until ${PLAN_TEXT}, keeping >= ${MIN_READY} Ready${DRY_NOTE}"
log::info "target now: ${TOTAL} pods, ${READY0} Ready"

# -- the loop ---------------------------------------------------------------------------------
KILLS=0
SKIPS=0
MIN_SEEN="${READY0}"
chaos::timeline_start
[[ -z "${LOAD_URL}" ]] || chaos::load_start "${LOAD_URL}" "${LOAD_CONC}"

summary() {
  printf '\n==== kill-pods summary ====\n'
  printf 'target:            %s\n' "${TARGET}"
  printf 'pods deleted:      %d%s\n' "${KILLS}" "$([[ "${DRY_RUN:-0}" == 1 ]] && echo ' (dry-run: would have been deleted)')"
  printf 'kills skipped:     %d (safety floor %d Ready)\n' "${SKIPS}" "${MIN_READY}"
  printf 'lowest Ready:      %d (counted before each kill, minus the pod killed)\n' "${MIN_SEEN}"
}
# shellcheck disable=SC2317 # called by the INT/TERM trap
interrupted() {
  chaos::mark "interrupted"
  chaos::load_report || true
  summary
  exit 130
}
trap interrupted INT TERM

done_yet() {
  [[ -n "${COUNT}" ]] && ((KILLS >= COUNT)) && return 0
  [[ -n "${DURATION_S}" ]] && (($(date +%s) - START_S >= DURATION_S)) && return 0
  return 1
}
START_S="$(date +%s)"
DEADLINE=$((START_S + TIMEOUT_S))
RESULT=0
chaos::mark "start: ${TOTAL} pods, ${READY0} Ready, floor ${MIN_READY}"
until done_yet; do
  if [[ -n "${COUNT}" && -z "${DURATION_S}" ]] && (($(date +%s) >= DEADLINE)); then
    chaos::mark "gave up: only ${KILLS} of ${COUNT} kills within --timeout ${TIMEOUT_S}s"
    RESULT=1
    break
  fi
  if ! PODS="$(chaos::pods "${NS}" "${SELECTOR}")"; then
    chaos::mark "cannot list the target's pods; trying again"
    sleep 2
    continue
  fi
  READY="$(awk '$2 == "true"' <<<"${PODS}" | grep -c . || true)"
  ((READY >= MIN_SEEN)) || MIN_SEEN="${READY}"
  if [[ -z "${PODS}" ]]; then
    chaos::mark "skip: no pod of the target is left (all terminating or gone)"
    SKIPS=$((SKIPS + 1))
    sleep 2
    continue
  fi
  mapfile -t CANDIDATES <<<"${PODS}"
  read -r VICTIM VICTIM_READY _ <<<"${CANDIDATES[RANDOM % ${#CANDIDATES[@]}]}"
  LEFT="${READY}"
  [[ "${VICTIM_READY}" == true ]] && LEFT=$((READY - 1))
  if ((LEFT < MIN_READY)); then
    chaos::mark "skip: ${READY} Ready; deleting Ready pod ${VICTIM} would leave ${LEFT} < floor ${MIN_READY}; waiting for capacity"
    SKIPS=$((SKIPS + 1))
    sleep 2
    continue
  fi
  if ! util::run kubectl delete pod --namespace "${NS}" "${VICTIM}" "${DELETE_FLAGS[@]}" >/dev/null; then
    chaos::mark "delete of ${VICTIM} failed; trying again"
    sleep 2
    continue
  fi
  KILLS=$((KILLS + 1))
  ((LEFT >= MIN_SEEN)) || MIN_SEEN="${LEFT}"
  chaos::mark "kill ${KILLS}${COUNT:+/${COUNT}}: deleted ${VICTIM} ($([[ "${VICTIM_READY}" == true ]] && echo Ready || echo unready)); Ready ${READY} -> ${LEFT}"
  done_yet && break
  sleep "${INTERVAL_S}"
done

# -- recovery -----------------------------------------------------------------------------------
# shellcheck disable=SC2317 # called through util::wait_for
back_to() { (($(chaos::ready_count "${NS}" "${SELECTOR}") >= $1)); }
if [[ "${DRY_RUN:-0}" != 1 && "${RESULT}" == 0 && "${RECOVER_S}" -gt 0 ]]; then
  chaos::wait_mark "${RECOVER_S}" "recovered: ${READY0} Ready again" back_to "${READY0}" || RESULT=1
fi
chaos::mark "end: $(chaos::ready_count "${NS}" "${SELECTOR}") Ready"
chaos::load_report || RESULT=1
summary
exit "${RESULT}"
