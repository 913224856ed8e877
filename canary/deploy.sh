#!/usr/bin/env bash
# Starts (or re-weights) the canary track of a helm-chart/ release: a second Deployment with the
# new image tag (optionally a fault profile, to show a bad release), and a share of the traffic
# through the chosen strategy. Waits until the canary pods are Ready. Prints a JSON summary.
# Prerequisites: helm, kubectl, jq; a release of helm-chart/ (with ingress.enabled for nginx,
# httpRoute.enabled for gateway).
# shellcheck source=canary/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: canary/deploy.sh --namespace NS --image-tag TAG [options]

Starts a canary of release NAME with image TAG at --weight percent of the traffic.

Options:
${CANARY_COMMON_USAGE}
  -t, --image-tag TAG     canary image tag (required)
      --image-repository R  canary image repository (default: the stable one)
  -w, --weight W          share of the traffic in percent, 0-100 (default 10); with
                          --strategy replicas the canary gets round(stable*W/(100-W)) pods (>= 1)
      --fault-profile P   start the canary with a fault: none, errors, latency, unready, unhealthy
                          (default none; errors = a bad release for the analysis to catch)
      --fault-error-percent N  5xx share of the errors profile (default: the chart's, 50)
      --message TEXT      GET / message of the canary (default: the stable one)

Exit status: 0 the canary runs and is Ready; 1 failure (missing release, rollout failed); 2 usage.

Environment: KUBECONFIG, HELM (helm binary), DRY_RUN=1 (same as --dry-run).

Example:
  canary/deploy.sh -n shop -s replicas -t v2 --weight 25 --fault-profile errors
EOF
}

IMAGE_TAG=""
IMAGE_REPOSITORY=""
WEIGHT=10
FAULT_PROFILE=none
FAULT_ERROR_PERCENT=""
MESSAGE=""
while (($#)); do
  case "$1" in
    -t | --image-tag) canary::need_value "$@" && IMAGE_TAG="$2" && shift 2 ;;
    --image-repository) canary::need_value "$@" && IMAGE_REPOSITORY="$2" && shift 2 ;;
    -w | --weight) canary::need_value "$@" && WEIGHT="$2" && shift 2 ;;
    --fault-profile) canary::need_value "$@" && FAULT_PROFILE="$2" && shift 2 ;;
    --fault-error-percent) canary::need_value "$@" && FAULT_ERROR_PERCENT="$2" && shift 2 ;;
    --message) canary::need_value "$@" && MESSAGE="$2" && shift 2 ;;
    *) canary::common_option "$@" || util::usage_error "unknown option: $1"; shift "${CANARY_SHIFT}" ;;
  esac
done
[[ -n "${IMAGE_TAG}" ]] || util::usage_error "--image-tag is required"
canary::check_weight "${WEIGHT}"
case "${FAULT_PROFILE}" in
  none | errors | latency | unready | unhealthy) ;;
  *) util::usage_error "unknown fault profile '${FAULT_PROFILE}': none, errors, latency, unready or unhealthy" ;;
esac
canary::validate

log::step "deploying canary ${IMAGE_REPOSITORY:-$(canary::value .image.repository)}:${IMAGE_TAG} of ${CANARY_RELEASE} in ${CANARY_NAMESPACE} (${CANARY_STRATEGY}, ${WEIGHT} %, fault profile ${FAULT_PROFILE})"
canary::weight_sets "${WEIGHT}"
SETS=(--set canary.enabled=true --set-string "canary.image.tag=${IMAGE_TAG}" --set "canary.image.repository=${IMAGE_REPOSITORY}"
  --set "canary.faultProfile=${FAULT_PROFILE}" --set-string "canary.message=${MESSAGE}" "${WEIGHT_SETS[@]}")
[[ -z "${FAULT_ERROR_PERCENT}" ]] || SETS+=(--set "canary.faultErrorPercent=${FAULT_ERROR_PERCENT}")
# replicas: the first upgrade creates the canary Deployment with its pod count already right.
canary::upgrade "${SETS[@]}"
if [[ "${DRY_RUN}" != 1 ]]; then
  CANARY_DEPLOY="$(canary::deployment)"
  [[ -n "${CANARY_DEPLOY}" ]] || log::fatal "the upgrade created no canary Deployment"
  canary::wait_rollout "${CANARY_DEPLOY}" || log::fatal "canary ${CANARY_DEPLOY} did not become Ready (see above); roll it back with canary/rollback.sh"
  log::ok "canary ${CANARY_DEPLOY} Ready at ${EFFECTIVE_WEIGHT} %"
fi
canary::emit "$(jq -n --arg ns "${CANARY_NAMESPACE}" --arg rel "${CANARY_RELEASE}" --arg s "${CANARY_STRATEGY}" \
  --arg image "${IMAGE_REPOSITORY:-$(canary::value .image.repository)}:${IMAGE_TAG}" --arg fault "${FAULT_PROFILE}" \
  --argjson w "${WEIGHT}" --argjson eff "${EFFECTIVE_WEIGHT}" --argjson dry "$([[ "${DRY_RUN}" == 1 ]] && echo true || echo false)" \
  '{action: "deploy", result: (if $dry then "dry_run" else "deployed" end), namespace: $ns, release: $rel, strategy: $s,
    image: $image, fault_profile: $fault, weight: $w, effective_weight: $eff}')"
