#!/usr/bin/env bash
# Promotes the running canary of a helm-chart/ release step by step: at each weight (10, 25, 50,
# 100 by default) it measures a window and lets selfheal-canary compare canary and stable (error
# ratio, p95 latency, minimum requests). A failed step rolls the canary back (canary/rollback.sh's
# path: weight 0, canary removed, stable untouched, Event + annotation). When every step passed,
# stable is switched to the canary's image and settings, and only once the new stable pods are
# Ready is the canary removed (ingress-nginx answers 503 at weight 100 while stable has no ready
# pods). Idempotent: without a canary there is nothing to do; a stable already on the canary's
# image skips straight to removing the canary. Prints a JSON summary.
# Prerequisites: helm, kubectl, jq; selfheal-canary (built with cargo when missing); traffic on the
# release while it runs (users, or selfheal-demo load).
# shellcheck source=canary/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: canary/promote.sh --namespace NS [options]

Steps the canary of release NAME through --steps, analysing each; promotes it or rolls it back.

Options:
${CANARY_COMMON_USAGE}
      --steps LIST        weights in percent, ascending, comma-separated (default 10,25,50,100);
                          with --strategy replicas a step of 100 is the switch itself (no window)
      --window SECONDS    measurement window per step (default 30)
      --max-inconclusive N  windows without a verdict (too few requests) tolerated per step
                          before rolling back (default 3)
      --prometheus URL    analyse with Prometheus (increase() over the window) instead of
                          scraping every pod's /metrics through the API server
      --selector S        PromQL label matchers for the app's series (default namespace="NS")
      --min-requests N    fewest canary requests per window for a verdict (default 50)
      --max-error-ratio R        highest canary 5xx ratio, 0-1 (default 0.05)
      --max-error-ratio-delta R  highest canary minus stable 5xx ratio, 0-1 (default 0.02)
      --max-p95-ratio X          highest canary p95 / stable p95 (default 1.5)

Exit status: 0 promoted (or nothing to promote); 3 rolled back by the analysis; 1 failure
(missing release, rollout failed, analyzer error); 2 usage.

Output: one JSON line on stdout: {"action":"promote","result":"promoted|rolled_back|
nothing_to_do|dry_run", "steps":[{"weight","effective_weight","verdict","analysis"}], ...}.

Environment: KUBECONFIG, HELM, CANARY_ANALYZER (selfheal-canary binary), DRY_RUN=1.

Example:
  canary/promote.sh -n shop -s replicas --steps 25,50,100 --window 20 --json promote.json
EOF
}

STEPS=10,25,50,100
WINDOW=30
MAX_INCONCLUSIVE=3
CANARY_PROMETHEUS=""
CANARY_SELECTOR=""
ANALYZER_ARGS=()
while (($#)); do
  case "$1" in
    --steps) canary::need_value "$@" && STEPS="$2" && shift 2 ;;
    --window) canary::need_value "$@" && WINDOW="$2" && shift 2 ;;
    --max-inconclusive) canary::need_value "$@" && MAX_INCONCLUSIVE="$2" && shift 2 ;;
    --prometheus) canary::need_value "$@" && CANARY_PROMETHEUS="$2" && shift 2 ;;
    --selector) canary::need_value "$@" && CANARY_SELECTOR="$2" && shift 2 ;;
    --min-requests | --max-error-ratio | --max-error-ratio-delta | --max-p95-ratio)
      canary::need_value "$@" && ANALYZER_ARGS+=("$1" "$2") && shift 2 ;;
    *) canary::common_option "$@" || util::usage_error "unknown option: $1"; shift "${CANARY_SHIFT}" ;;
  esac
done
IFS=, read -r -a WEIGHTS <<<"${STEPS}"
((${#WEIGHTS[@]})) || util::usage_error "--steps is empty"
previous=0
for w in "${WEIGHTS[@]}"; do
  canary::check_weight "${w}"
  ((w > previous)) || util::usage_error "--steps must be ascending and above 0: ${STEPS}"
  previous="${w}"
done
[[ "${WINDOW}" =~ ^[1-9][0-9]*$ ]] || util::usage_error "--window must be a whole number of seconds: ${WINDOW}"
[[ "${MAX_INCONCLUSIVE}" =~ ^[0-9]+$ ]] || util::usage_error "--max-inconclusive must be a count: ${MAX_INCONCLUSIVE}"
export CANARY_PROMETHEUS CANARY_SELECTOR
canary::validate

summary() {
  jq -n --arg ns "${CANARY_NAMESPACE}" --arg rel "${CANARY_RELEASE}" --arg s "${CANARY_STRATEGY}" --arg result "$1" \
    --arg image "${IMAGE}" --arg reason "${2:-}" --argjson steps "${STEP_LOG}" \
    '{action: "promote", result: $result, namespace: $ns, release: $rel, strategy: $s, image: $image,
      reason: (if $reason == "" then null else $reason end), steps: $steps}'
}
STEP_LOG='[]'
IMAGE=""
if ! canary::enabled; then
  log::ok "release ${CANARY_RELEASE} has no canary: nothing to promote (stable runs $(canary::value .image.repository):$(canary::value .image.tag))"
  canary::emit "$(summary nothing_to_do)"
  exit 0
fi
IMAGE="$(canary::canary_image)"
STABLE_IMAGE="$(canary::value .image.repository):$(canary::value .image.tag)"

# rollback_because REASON: the rollback path of canary/rollback.sh, then exit 3.
rollback_because() {
  log::error "canary ${IMAGE} failed: $1"
  "${REPO_ROOT}/canary/rollback.sh" --namespace "${CANARY_NAMESPACE}" --release "${CANARY_RELEASE}" \
    --strategy "${CANARY_STRATEGY}" --chart "${CANARY_CHART}" --timeout "${CANARY_TIMEOUT}" --reason "$1" >/dev/null ||
    log::fatal "the rollback itself failed: look at 'helm history ${CANARY_RELEASE} -n ${CANARY_NAMESPACE}'"
  canary::emit "$(summary rolled_back "$1")"
  exit 3
}

# stable_is_canary: stable already runs what the canary runs (image, fault profile, message).
stable_is_canary() {
  local m
  m="$(canary::value .canary.message)"
  [[ "${STABLE_IMAGE}" == "${IMAGE}" && "$(canary::value .app.faultProfile)" == "$(canary::value .canary.faultProfile)" &&
    (-z "${m}" || "${m}" == "$(canary::value .app.message)") ]]
}
if stable_is_canary; then
  # A previous run switched stable and stopped before removing the canary.
  log::info "stable already runs ${IMAGE}: only the canary is left to remove"
else
  for w in "${WEIGHTS[@]}"; do
    if [[ "${CANARY_STRATEGY}" == replicas && "${w}" == 100 ]]; then
      break # the switch below is the 100 % step
    fi
    canary::set_weight "${w}" || rollback_because "canary pods did not become Ready at ${w} %"
    if [[ "${DRY_RUN}" == 1 ]]; then
      log::info "[dry-run] would analyse a ${WINDOW}s window at ${w} %"
      continue
    fi
    tries=0
    while :; do
      rc=0
      canary::analyze "${WINDOW}" || rc=$?
      verdict="$(jq -r '.verdict' <<<"${ANALYSIS}")"
      STEP_LOG="$(jq -c --argjson w "${w}" --argjson e "${EFFECTIVE_WEIGHT}" --argjson a "${ANALYSIS}" \
        '. + [{weight: $w, effective_weight: $e, verdict: $a.verdict, analysis: $a}]' <<<"${STEP_LOG}")"
      case "${rc}" in
        0) log::ok "step ${w} %: canary as good as stable"; break ;;
        1) rollback_because "analysis at ${w} %: $(jq -r '.reasons | join("; ")' <<<"${ANALYSIS}")" ;;
        2)
          tries=$((tries + 1))
          if ((tries > MAX_INCONCLUSIVE)); then
            rollback_because "no verdict at ${w} % after $((tries)) windows: $(jq -r '.reasons | join("; ")' <<<"${ANALYSIS}")"
          fi
          log::warn "step ${w} %: inconclusive ($(jq -r '.reasons | join("; ")' <<<"${ANALYSIS}")), measuring again (${tries}/${MAX_INCONCLUSIVE})"
          ;;
        *) log::fatal "selfheal-canary failed (${verdict}): $(jq -r '.error // "see above"' <<<"${ANALYSIS}"); the canary is left as it is" ;;
      esac
    done
  done

  # Stable takes the canary's image and settings; the canary keeps serving until it is Ready.
  log::step "switching stable ${STABLE_DEPLOY} to ${IMAGE}"
  SWITCH=(--set-string "image.repository=${IMAGE%:*}" --set-string "image.tag=${IMAGE##*:}"
    --set-string "image.digest=$(canary::value .canary.image.digest)"
    --set "app.faultProfile=$(canary::value .canary.faultProfile)"
    --set "app.faultErrorPercent=$(canary::value .canary.faultErrorPercent)"
    --set "app.faultLatencyMs=$(canary::value .canary.faultLatencyMs)"
    --set "app.faultLeakMibPerSec=$(canary::value .canary.faultLeakMibPerSec)"
    --set "app.faultLeakCapMib=$(canary::value .canary.faultLeakCapMib)"
    --set "app.poolSize=$(canary::value .canary.poolSize)"
    --set "app.poolWaitMs=$(canary::value .canary.poolWaitMs)")
  message="$(canary::value .canary.message)"
  [[ -z "${message}" ]] || SWITCH+=(--set-string "app.message=${message}")
  canary::upgrade "${SWITCH[@]}"
  canary::wait_rollout "${STABLE_DEPLOY}" || log::fatal "stable did not become Ready on ${IMAGE}: the canary is left serving; roll back with canary/rollback.sh and helm rollback"
fi

canary::remove || log::fatal "removing the canary failed"
if [[ "${DRY_RUN}" == 1 ]]; then
  canary::emit "$(summary dry_run)"
  exit 0
fi
canary::record CanaryPromoted Normal "canary ${IMAGE} promoted to stable (${CANARY_STRATEGY}, steps ${STEPS})"
log::ok "canary ${IMAGE} promoted: stable ${STABLE_DEPLOY} runs it"
canary::emit "$(summary promoted)"
