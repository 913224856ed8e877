#!/usr/bin/env bash
# Deploy selfheal-controller from its Kustomize manifests with a given image, verify it and undo
# the Deployment's rollout when it is not healthy: the controller's counterpart of
# auto-rollback.sh (the app is a Helm release, the controller a Kustomize install).
# Steps: render controller/deploy through a temporary overlay that sets the image (by digest or
# tag) -> `kubectl apply` -> verify (rollout complete, every replica Ready and running that image,
# the Lease held by one of them) -> on failure `kubectl rollout undo` to the revision that served
# before, wait and verify it again -> timeline and summary (text, or JSON for CI: the same shape
# as auto-rollback.sh's, so .github/ci/deploy-summary.sh reads both).
# What undo does not undo: objects other than the Deployment (RBAC, CRDs, the admission policy)
# stay as applied; they are additive between versions, and the old binary ignores what it does
# not know.
# Prerequisites: kubectl (with its built-in kustomize), jq.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
# shellcheck source=self-healing/lib/release.sh
source "${REPO_ROOT}/self-healing/lib/release.sh"

usage() {
  cat <<EOF
Usage: self-healing/deploy-controller.sh --image REF [options]

Applies the controller's manifests with image REF, verifies the rollout and the leader, and
runs 'kubectl rollout undo' when verification fails. Prints a timeline and a summary.

Options:
  -i, --image REF          image to deploy, by digest (registry/name@sha256:…) or tag
                           (registry/name:tag); required
  -k, --kustomize DIR      Kustomize directory (default: controller/deploy of this repository)
      --base-image NAME    image name the manifests use, replaced by REF (default: localhost/selfheal-controller)
      --timeout DURATION   budget of the rollout and of the leader check: 90s, 3m (default 3m)
      --kube-context NAME  kube context to use (must exist); default: the current context
      --output FORMAT      text (default) or json: the summary on stdout (logs go to stderr)
      --dry-run            change nothing: render, validate against the API server
                           (kubectl apply --dry-run=server) and print the plan
  -h, --help               this help

Exit status:
  0  deployed and verified
  1  failed before changing anything (tools, context, cluster, manifests)
  2  usage error
  3  verification failed; the Deployment was rolled back to the revision that served before,
     which is healthy again
  4  the rollback failed or is not healthy: a person has to look
  5  a first install failed verification: nothing to roll back to; left in place for
     inspection (remove it with: kubectl delete -k DIR)

Environment:
  KUBECONFIG  cluster to deploy to;  DRY_RUN=1  same as --dry-run

Example:
  self-healing/deploy-controller.sh --image ghcr.io/acme/selfheal-controller@sha256:0123… --timeout 3m
EOF
}

# -- arguments --------------------------------------------------------------------------------------
IMAGE=""
KUSTOMIZE_DIR="${REPO_ROOT}/controller/deploy"
BASE_IMAGE=localhost/selfheal-controller
TIMEOUT=3m
KUBE_CONTEXT=""
OUTPUT=text
ROLLBACK_RETRY_DELAY=10s
NAMESPACE=selfheal-system # read from the manifests below; set here for release::valid_names
RELEASE=selfheal-controller
HELM=helm # release::init wants one; nothing here calls Helm

while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    -i | --image) util::need_value "$1" "$#"; IMAGE="$2"; shift ;;
    -k | --kustomize) util::need_value "$1" "$#"; KUSTOMIZE_DIR="$2"; shift ;;
    --base-image) util::need_value "$1" "$#"; BASE_IMAGE="$2"; shift ;;
    --timeout | --kube-context | -o | --output | --dry-run)
      release::common_flag "$@"; shift $((RELEASE_FLAG_WORDS - 1)) ;;
    *) util::usage_error "unknown argument: $1" ;;
  esac
  shift
done

[[ -n "${IMAGE}" ]] || util::usage_error "--image is required (registry/name@sha256:… or registry/name:tag)"
# name[:tag] or name@sha256:<64 hex>; the name may carry a registry host with a port.
IMAGE_RE='^([a-z0-9.-]+(:[0-9]+)?/)?[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$'
[[ "${IMAGE}" =~ ${IMAGE_RE} ]] ||
  util::usage_error "--image must be registry/name:tag or registry/name@sha256:<64 hex digits>: ${IMAGE}"
[[ -f "${KUSTOMIZE_DIR}/kustomization.yaml" ]] || util::usage_error "no kustomization.yaml in --kustomize ${KUSTOMIZE_DIR}"
release::valid_names
TIMEOUT_S="$(util::seconds "${TIMEOUT}")" || util::usage_error "--timeout must be a duration like 90s or 3m: ${TIMEOUT}"
((TIMEOUT_S > 0)) || util::usage_error "--timeout must be positive"
DRY_RUN="${DRY_RUN:-0}"

# controller::image_entry: the Kustomize `images:` entry that replaces BASE_IMAGE by IMAGE.
controller::image_entry() {
  local name="${IMAGE}" field
  if [[ "${IMAGE}" == *@sha256:* ]]; then
    name="${IMAGE%@*}"
    field="digest: ${IMAGE#*@}"
  else
    name="${IMAGE%:*}"
    field="newTag: \"${IMAGE##*:}\""
  fi
  printf -- '- name: %s\n  newName: %s\n  %s\n' "${BASE_IMAGE}" "${name}" "${field}"
}

# controller::render FILE: the manifests with the image set, through an overlay in a temporary
# directory (the repository is never edited).
controller::render() {
  local overlay base
  overlay="$(mktemp -d)"
  util::trap_add "rm -rf '${overlay}'"
  base="$(realpath --relative-to="${overlay}" "$(realpath "${KUSTOMIZE_DIR}")")"
  {
    printf 'apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - %s\nimages:\n' "${base}"
    controller::image_entry
  } >"${overlay}/kustomization.yaml"
  kubectl kustomize "${overlay}" >"$1"
}

# -- state --------------------------------------------------------------------------------------------
release::init
K=(kubectl)
[[ -z "${KUBE_CONTEXT}" ]] || K+=(--context "${KUBE_CONTEXT}")
DEPLOYMENT=""
PREVIOUS_IMAGE=""

exit_code_of() {
  case "$1" in
    deployed | dry_run) echo 0 ;;
    rolled_back) echo 3 ;;
    rollback_failed) echo 4 ;;
    install_failed) echo 5 ;;
    *) echo 1 ;;
  esac
}

finish() {
  local code
  RESULT="${1}"
  [[ -z "${2:-}" ]] || REASON="$2"
  code="$(exit_code_of "${RESULT}")"
  release::summary "controller deploy" "${code}" \
    "$(jq -n -c --arg image "${IMAGE}" --arg previous "${PREVIOUS_IMAGE}" '{image: $image, previous_image: (if $previous == "" then null else $previous end)}')"
  exit "${code}"
}

# dep_field JSONPATH: one field of the controller Deployment (empty when it does not exist).
dep_field() { "${K[@]}" -n "${NAMESPACE}" get deployment "${DEPLOYMENT}" -o "jsonpath=$1" 2>/dev/null || true; }

# leader_is_ready_replica IMAGE: the Lease holder is a Ready pod of the Deployment running IMAGE.
# shellcheck disable=SC2317 # called through util::wait_for
leader_is_ready_replica() {
  local holder pod
  holder="$("${K[@]}" -n "${NAMESPACE}" get lease "${DEPLOYMENT}" -o 'jsonpath={.spec.holderIdentity}' 2>/dev/null)" || return 1
  [[ -n "${holder}" ]] || return 1
  pod="$("${K[@]}" -n "${NAMESPACE}" get pod "${holder}" -o json 2>/dev/null)" || return 1
  jq -e --arg image "$1" '
    .metadata.deletionTimestamp == null
    and ([.status.conditions[]? | select(.type == "Ready" and .status == "True")] | length == 1)
    and ([.spec.containers[].image] | index($image) != null)' <<<"${pod}" >/dev/null
}

# verify IMAGE: rollout complete within the budget, every replica Ready, the leader one of them.
verify() {
  local image="$1" t0 left
  t0="$(date +%s)"
  if ! "${K[@]}" -n "${NAMESPACE}" rollout status "deployment/${DEPLOYMENT}" --timeout="${TIMEOUT_S}s" >&2; then
    REASON="the rollout of ${image} did not complete within ${TIMEOUT}"
    return 1
  fi
  timeline "rollout complete: $(dep_field '{.status.readyReplicas}')/$(dep_field '{.spec.replicas}') replicas Ready"
  left=$((TIMEOUT_S - ($(date +%s) - t0)))
  ((left > 30)) || left=30
  if ! util::wait_for "the Lease ${NAMESPACE}/${DEPLOYMENT} held by a Ready replica running ${image}" "${left}" \
    leader_is_ready_replica "${image}"; then
    REASON="no Ready replica running ${image} took the Lease within ${left}s"
    return 1
  fi
  timeline "leader: $("${K[@]}" -n "${NAMESPACE}" get lease "${DEPLOYMENT}" -o 'jsonpath={.spec.holderIdentity}')"
}

# -- preflight ------------------------------------------------------------------------------------------
util::require_tools kubectl jq realpath
if [[ -n "${KUBE_CONTEXT}" ]]; then
  kubectl config get-contexts "${KUBE_CONTEXT}" >/dev/null 2>&1 || { REASON="kube context ${KUBE_CONTEXT} does not exist"; finish error; }
fi
"${K[@]}" get --raw /readyz >/dev/null 2>&1 || { REASON="the API server does not answer (kubectl get --raw /readyz)"; finish error; }
MANIFEST="$(mktemp)"
util::trap_add "rm -f '${MANIFEST}'"
controller::render "${MANIFEST}" 2>"${MANIFEST}.err" || { REASON="kubectl kustomize failed: $(tail -n 3 "${MANIFEST}.err")"; rm -f "${MANIFEST}.err"; finish error; }
rm -f "${MANIFEST}.err"
# The one Deployment of the manifests, and the image it will run (proves the overlay matched).
read -r NAMESPACE DEPLOYMENT RENDERED_IMAGE < <("${K[@]}" apply --dry-run=client -o json -f "${MANIFEST}" 2>/dev/null |
  jq -r '[.items[]? // . | select(.kind == "Deployment")] | if length == 1 then .[0] | "\(.metadata.namespace) \(.metadata.name) \(.spec.template.spec.containers[0].image)" else "" end') || true
[[ -n "${DEPLOYMENT}" ]] || { REASON="the manifests in ${KUSTOMIZE_DIR} do not hold exactly one Deployment"; finish error; }
RELEASE="${DEPLOYMENT}"
[[ "${RENDERED_IMAGE}" == "${IMAGE}" ]] ||
  { REASON="the manifests run ${RENDERED_IMAGE}, not ${IMAGE}: is --base-image ${BASE_IMAGE} the image they name?"; finish error; }
PREVIOUS_REVISION="$(dep_field '{.metadata.annotations.deployment\.kubernetes\.io/revision}')"
PREVIOUS_IMAGE="$(dep_field '{.spec.template.spec.containers[0].image}')"
timeline "preflight ok: ${NAMESPACE}/${DEPLOYMENT} ${PREVIOUS_REVISION:+at revision ${PREVIOUS_REVISION} (${PREVIOUS_IMAGE})}${PREVIOUS_REVISION:-not installed}; deploying ${IMAGE}"

if [[ "${DRY_RUN}" == 1 ]]; then
  # A server-side dry run persists nothing, so on a first install the namespace it would create
  # does not exist for the objects inside it: those are then checked client-side only.
  checked="every object server-side"
  if "${K[@]}" get namespace "${NAMESPACE}" >/dev/null 2>&1; then
    "${K[@]}" apply --dry-run=server -f "${MANIFEST}" >&2 || { REASON="the API server refused the manifests (kubectl apply --dry-run=server)"; finish error; }
  else
    "${K[@]}" apply --dry-run=client -o json -f "${MANIFEST}" | jq '.items |= map(select(.metadata.namespace == null))' |
      "${K[@]}" apply --dry-run=server -f - >&2 || { REASON="the API server refused the cluster-scoped manifests (kubectl apply --dry-run=server)"; finish error; }
    checked="cluster-scoped objects server-side, the ones in namespace ${NAMESPACE} (not there yet) client-side"
  fi
  timeline "dry run: manifests accepted (${checked}); would apply them, verify, and undo to revision ${PREVIOUS_REVISION:-none} on failure"
  finish dry_run
fi

# -- deploy ---------------------------------------------------------------------------------------------
util::run "${K[@]}" apply -f "${MANIFEST}" >&2 || { REASON="kubectl apply failed"; finish error; }
DEPLOYED_REVISION="$(dep_field '{.metadata.annotations.deployment\.kubernetes\.io/revision}')"
timeline "applied: revision ${DEPLOYED_REVISION:-?}"
if verify "${IMAGE}"; then
  SERVING_REVISION="$(dep_field '{.metadata.annotations.deployment\.kubernetes\.io/revision}')"
  SERVING_IMAGES="${IMAGE}"
  finish deployed
fi
timeline "verification failed: ${REASON}"
FAILURE="${REASON}"
if [[ -z "${PREVIOUS_REVISION}" ]]; then
  finish install_failed "${FAILURE}; first install, nothing to roll back to: left in place (kubectl delete -k ${KUSTOMIZE_DIR})"
fi

# -- rollback: the revision that served before this run ---------------------------------------------------
# `rollout undo` goes back to the previous ReplicaSet's template; when apply changed nothing in the
# template (same image) there is no new revision and nothing to undo.
if [[ "${DEPLOYED_REVISION}" == "${PREVIOUS_REVISION}" ]]; then
  finish rollback_failed "${FAILURE}; the pod template did not change (revision ${PREVIOUS_REVISION}), so there is no earlier revision to undo to"
fi
util::run "${K[@]}" -n "${NAMESPACE}" rollout undo "deployment/${DEPLOYMENT}" --to-revision="${PREVIOUS_REVISION}" >&2 ||
  finish rollback_failed "${FAILURE}; kubectl rollout undo failed"
timeline "rollout undo to the template of revision ${PREVIOUS_REVISION} (${PREVIOUS_IMAGE})"
if verify "${PREVIOUS_IMAGE}"; then
  SERVING_REVISION="$(dep_field '{.metadata.annotations.deployment\.kubernetes\.io/revision}')"
  SERVING_IMAGES="${PREVIOUS_IMAGE}"
  finish rolled_back "${FAILURE}; rolled back to ${PREVIOUS_IMAGE}"
fi
finish rollback_failed "${FAILURE}; after the undo: ${REASON}"
