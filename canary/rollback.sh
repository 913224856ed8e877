#!/usr/bin/env bash
# Rolls the canary of a helm-chart/ release back: weight 0 first (the data plane stops sending it
# requests), then the canary track is removed from the release; stable is not touched. Why is
# recorded as a Warning Event (reason CanaryRolledBack) on the stable Deployment and in its
# selfheal.io/canary-rollback annotation. Idempotent: without a canary it changes nothing.
# Prints a JSON summary. canary/promote.sh calls it when an analysis step fails.
# Prerequisites: helm, kubectl, jq; a release of helm-chart/.
# shellcheck source=canary/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF2
Usage: canary/rollback.sh --namespace NS [options]

Sets the canary's weight to 0 and removes it; stable keeps running unchanged.

Options:
${CANARY_COMMON_USAGE}
      --reason TEXT       why, recorded in the Event and the annotation (default: "manual rollback")

Exit status: 0 rolled back (or no canary to roll back); 1 failure (missing release, helm failed); 2 usage.

Output: one JSON line on stdout: {"action":"rollback","result":"rolled_back|nothing_to_do|dry_run",...}.

Environment: KUBECONFIG, HELM, DRY_RUN=1.

Example:
  canary/rollback.sh -n shop -s nginx --reason "p95 doubled in the dashboard"
EOF2
}

REASON="manual rollback"
while (($#)); do
  case "$1" in
    --reason) canary::need_value "$@" && REASON="$2" && shift 2 ;;
    *) canary::common_option "$@" || util::usage_error "unknown option: $1"; shift "${CANARY_SHIFT}" ;;
  esac
done
canary::validate

summary() {
  jq -n --arg ns "${CANARY_NAMESPACE}" --arg rel "${CANARY_RELEASE}" --arg s "${CANARY_STRATEGY}" --arg result "$1" \
    --arg image "${IMAGE:-}" --arg reason "${REASON}" --arg stable "${STABLE_DEPLOY}" \
    '{action: "rollback", result: $result, namespace: $ns, release: $rel, strategy: $s,
      canary_image: (if $image == "" then null else $image end), reason: $reason, recorded_on: ("deployment/" + $stable)}'
}
if ! canary::enabled && [[ -z "$(canary::deployment)" ]]; then
  log::ok "release ${CANARY_RELEASE} has no canary: nothing to roll back"
  canary::emit "$(summary nothing_to_do)"
  exit 0
fi
IMAGE="$(canary::canary_image)"
log::step "rolling back canary ${IMAGE} of ${CANARY_RELEASE} in ${CANARY_NAMESPACE} (${CANARY_STRATEGY}): ${REASON}"
canary::remove || log::fatal "removing the canary failed"
canary::record CanaryRolledBack Warning "canary ${IMAGE} rolled back (${CANARY_STRATEGY}): ${REASON}" ||
  log::fatal "the canary is gone, but recording why on deployment/${STABLE_DEPLOY} failed"
if [[ "${DRY_RUN}" == 1 ]]; then
  canary::emit "$(summary dry_run)"
  exit 0
fi
log::ok "canary ${IMAGE} rolled back; stable ${STABLE_DEPLOY} untouched"
canary::emit "$(summary rolled_back)"
