#!/usr/bin/env bash
# Manual "roll back to revision N" of a Helm release, verified like auto-rollback.sh verifies a
# deploy: `helm rollback RELEASE N --wait`, then every Deployment of the release rolled out and
# Ready, and /health + /ready answering through its Service. The CD workflow's rollback dispatch
# calls it (auto-rollback.sh picks the last good revision itself; this one takes the revision
# a person chose). Prints a summary (text, or json with the same keys as auto-rollback.sh).
# Prerequisites: helm 3 or 4, kubectl, jq; a cluster in KUBECONFIG.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
# shellcheck source=self-healing/lib/release.sh
source "${REPO_ROOT}/self-healing/lib/release.sh"

usage() {
  cat <<USAGE
Usage: self-healing/rollback-to.sh --namespace NS --revision N [options]

Rolls the release back to revision N (a new revision with N's manifest), waits for it and
verifies it. Refuses a revision that is not in the release's history.

Options:
  -n, --namespace NS       namespace of the release (required)
  -r, --release NAME       Helm release name (default: selfheal-app)
      --revision N         revision to roll back to (required; see: helm -n NS history NAME)
      --timeout DURATION   Helm wait and rollout budget, e.g. 90s, 5m (default 5m)
      --kube-context NAME  kube context to use (default: the current one)
      --rollback-retry-delay D  a failed 'helm rollback' is retried once after this (default 10s)
      --output FORMAT      text (default) or json: the summary on stdout (logs go to stderr)
      --dry-run            check the release and the revision, print the plan, change nothing
  -h, --help               this help

Exit status:
  0  rolled back to N and verified
  1  nothing changed: tools, cluster, no such release or revision
  2  usage error
  4  helm rollback failed twice (retried once) or the result did not become healthy: a person
     has to look; the summary shows the release's history
  6  'helm history' failed with an error other than "release: not found" (API server
     unreachable, forbidden, timeout): stopped, nothing changed

Environment:
  KUBECONFIG  cluster;  HELM  helm binary (default: helm on PATH);  DRY_RUN=1  same as --dry-run

Example:
  self-healing/rollback-to.sh -n selfheal --release selfheal-app --revision 7 --output json
USAGE
}

NAMESPACE=""
RELEASE=selfheal-app
REVISION=""
TIMEOUT=5m
ROLLBACK_RETRY_DELAY=10s
KUBE_CONTEXT=""
OUTPUT=text
HELM="${HELM:-helm}"
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --revision) util::need_value "$1" "$#"; REVISION="$2"; shift ;;
    *) release::common_flag "$@" || util::usage_error "unknown argument: $1"; shift $((RELEASE_FLAG_WORDS - 1)) ;;
  esac
  shift
done
release::valid_names
[[ "${REVISION}" =~ ^[1-9][0-9]*$ ]] || util::usage_error "--revision is required and must be a positive number: '${REVISION}'"
TIMEOUT_S="$(util::seconds "${TIMEOUT}")" || util::usage_error "--timeout must be a duration like 90s, 5m or 1m30s: ${TIMEOUT}"
((TIMEOUT_S > 0)) || util::usage_error "--timeout must be positive"
DRY_RUN="${DRY_RUN:-0}"
# What release::verify checks after the rollback: rollouts, every replica Ready, /health and
# /ready through the Service; no GET / smoke test and no Prometheus query (a person chose N).
SMOKE_REQUESTS=0
MAX_ERROR_RATIO=0
PROMETHEUS=""
PROMETHEUS_WINDOW=2m

release::init

# finish RESULT [REASON]: print the summary and exit with the result's code.
finish() {
  RESULT="$1"
  [[ -z "${2:-}" ]] || REASON="$2"
  local code
  case "${RESULT}" in rolled_back | dry_run) code=0 ;; rollback_failed) code=4 ;; history_error) code=6 ;; *) code=1 ;; esac
  # A person has to look: show them the release's revisions and status.
  if ((code == 4)); then release::capture_state; fi
  release::summary rollback-to "${code}" "$(jq -n -c --arg target "${REVISION}" '{target_revision: ($target | tonumber)}')"
  exit "${code}"
}

fail_early() {
  log::error "$1"
  timeline "stopped before changing anything: $1"
  finish error "$1"
}

util::require_tools "${HELM}" kubectl jq
"${K[@]}" get --raw /readyz >/dev/null 2>&1 || fail_early "the API server is not reachable (KUBECONFIG=${KUBECONFIG:-unset})"
if ! release::read_history; then
  log::error "could not read the history of release ${RELEASE} in ${NAMESPACE}: ${HISTORY_ERROR}"
  timeline "stopped before changing anything: could not read the release's history"
  finish history_error "could not read the history of release ${RELEASE} in ${NAMESPACE}: ${HISTORY_ERROR}; stopped before changing anything"
fi
[[ "${HISTORY}" != '[]' ]] || fail_early "release ${RELEASE} not found in namespace ${NAMESPACE}"
PREVIOUS_REVISION="$(jq -r 'last | .revision // empty' <<<"${HISTORY}")"
jq -e --argjson r "${REVISION}" 'any(.[]; .revision == $r)' <<<"${HISTORY}" >/dev/null ||
  fail_early "revision ${REVISION} is not in the history of ${RELEASE} (kept: $(jq -r 'map(.revision) | join(", ")' <<<"${HISTORY}"))"
timeline "start: roll ${RELEASE} back from revision ${PREVIOUS_REVISION} to revision ${REVISION} ($(jq -r --argjson r "${REVISION}" '.[] | select(.revision == $r) | "\(.status), chart \(.chart), app \(.app_version)"' <<<"${HISTORY}"))"

if [[ "${DRY_RUN}" == 1 ]]; then
  util::run "${H[@]}" rollback "${RELEASE}" "${REVISION}" --wait --timeout "${TIMEOUT_S}s"
  timeline "plan: helm rollback to ${REVISION} creates revision $((PREVIOUS_REVISION + 1)); then verify"
  release::serving_state
  finish dry_run
fi

if ! release::rollback "${REVISION}"; then
  REASON="helm rollback to revision ${REVISION} failed twice (retried after ${ROLLBACK_RETRY_DELAY_S}s): ${ROLLBACK_ERROR}"
fi
DEPLOYED_REVISION="$("${H[@]}" history "${RELEASE}" --max 1 -o json 2>/dev/null | jq -r 'last | .revision // empty')"
if [[ -z "${REASON}" ]] && release::verify 1; then
  release::serving_state
  timeline "verified: revision ${SERVING_REVISION} (the manifest of revision ${REVISION}) healthy (${SERVING_IMAGES})"
  finish rolled_back
fi
log::error "rollback not healthy: ${REASON}"
timeline "FAILED: ${REASON}"
"${K[@]}" get deployments,pods -l "app.kubernetes.io/instance=${RELEASE}" -o wide >&2 2>/dev/null || true
release::serving_state
finish rollback_failed
