#!/usr/bin/env bash
# Self-healing layer 4: deploy a version with Helm, verify it, and roll back to the last good
# revision when it is not healthy. Steps: preflight (tools, kube context, cluster, release state;
# a release left in pending-* by an interrupted run is recovered first) -> `helm upgrade --install
# --wait` with a timeout -> verify (rollout complete, every replica Ready, /health and /ready
# answering through the Service, GET / mostly 2xx, optionally the 5xx ratio in Prometheus) ->
# on failure `helm rollback` to the last good revision, wait until it is healthy and verify it
# again -> print a timeline and a summary (text, or JSON for CI).
# A first install that fails has nothing to roll back to: the release is uninstalled instead, but
# only when its history is just the revision this run installed (never a release with history).
# A `helm history` error other than "release: not found" stops the run before any change (exit 6).
# Prerequisites: helm 3 or 4, kubectl, jq; curl for --prometheus/--pushgateway.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"
# shellcheck source=self-healing/lib/release.sh
source "${REPO_ROOT}/self-healing/lib/release.sh"

usage() {
  cat <<EOF
Usage: self-healing/auto-rollback.sh --namespace NS [options]

Deploys the chart with 'helm upgrade --install', verifies the release and rolls it back to the
last good revision when verification fails. Prints a timeline and a summary.

Options:
  -n, --namespace NS       namespace of the release (required)
  -r, --release NAME       Helm release name (default: selfheal-app)
  -c, --chart REF          chart path or reference (default: helm-chart/ of this repository)
  -t, --image-tag TAG      image tag to deploy (--set image.tag=TAG)
      --image-repository R image repository (--set image.repository=R)
  -f, --values FILE        values file for helm (repeatable)
      --set KEY=VALUE      value for helm (repeatable)
      --timeout DURATION   budget of each Helm operation and rollout wait: 90s, 5m, 1m30s (default 5m)
      --smoke-requests N   GET / requests sent through the Service after the rollout (default 20; 0: none)
      --max-error-ratio R  largest accepted share of failed GET / (smoke test) and of 5xx in
                           Prometheus, 0-1 (default 0.05)
      --prometheus URL     Prometheus base URL; when reachable, the 5xx ratio of the release's
                           Service over --prometheus-window must stay under --max-error-ratio
      --prometheus-window D  rate window of that query (default 2m)
      --pushgateway URL    push the run's result metrics (selfheal_autorollback_*) to a Pushgateway
      --pending-grace D    a release left pending-install/-upgrade/-rollback for longer than this
                           is treated as interrupted and recovered (default 5m; younger: exit 1,
                           another deploy may still be running; an update time that cannot be
                           read counts as young)
      --rollback-retry-delay D  a failed 'helm rollback' is retried once after this (default 10s)
      --kube-context NAME  kube context to use (must exist); default: the current context
      --create-namespace   create the namespace on first install
      --output FORMAT      text (default) or json: the summary on stdout (logs go to stderr)
      --dry-run            change nothing: check everything, render the release against the
                           API server (helm --dry-run=server) and print the plan
  -h, --help               this help

Exit status:
  0  deployed and verified
  1  failed before changing the release (tools, context, cluster, locked release, bad chart, a
     release with history but no revision that ever deployed: it is never uninstalled)
  2  usage error
  3  verification failed; rolled back to the last good revision, which is healthy again
  4  the rollback failed twice (retried once after --rollback-retry-delay) or is not healthy, or
     the cleanup of a failed first install is incomplete or was refused (the release has history
     this run did not create): a person has to look; the summary shows the release's history
  5  a first install failed; nothing to roll back to, the release was uninstalled (clean state)
  6  'helm history' failed with an error other than "release: not found" (API server
     unreachable, forbidden, timeout): stopped, nothing changed

Environment:
  KUBECONFIG       cluster to deploy to
  HELM             helm binary (default: helm on PATH; hack/lib.sh puts the pinned Helm 4 first)
  PUSHGATEWAY_URL  default for --pushgateway
  DRY_RUN=1        same as --dry-run

Example:
  self-healing/auto-rollback.sh -n selfheal-demo -t v1.2.3 -f helm-chart/values-demo.yaml --timeout 3m
EOF
}

# -- arguments --------------------------------------------------------------------------------------
NAMESPACE=""
RELEASE=selfheal-app
CHART="${REPO_ROOT}/helm-chart"
IMAGE_TAG=""
IMAGE_REPOSITORY=""
VALUES=()
SETS=()
TIMEOUT=5m
SMOKE_REQUESTS=20
MAX_ERROR_RATIO=0.05
PROMETHEUS=""
PROMETHEUS_WINDOW=2m
PUSHGATEWAY="${PUSHGATEWAY_URL:-}"
PENDING_GRACE=5m
ROLLBACK_RETRY_DELAY=10s
KUBE_CONTEXT=""
CREATE_NAMESPACE=0
OUTPUT=text
HELM="${HELM:-helm}"

while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    -c | --chart) util::need_value "$1" "$#"; CHART="$2"; shift ;;
    -t | --image-tag) util::need_value "$1" "$#"; IMAGE_TAG="$2"; shift ;;
    --image-repository) util::need_value "$1" "$#"; IMAGE_REPOSITORY="$2"; shift ;;
    -f | --values) util::need_value "$1" "$#"; VALUES+=("$2"); shift ;;
    --set) util::need_value "$1" "$#"; SETS+=("$2"); shift ;;
    --smoke-requests) util::need_value "$1" "$#"; SMOKE_REQUESTS="$2"; shift ;;
    --max-error-ratio) util::need_value "$1" "$#"; MAX_ERROR_RATIO="$2"; shift ;;
    --prometheus) util::need_value "$1" "$#"; PROMETHEUS="$2"; shift ;;
    --prometheus-window) util::need_value "$1" "$#"; PROMETHEUS_WINDOW="$2"; shift ;;
    --pushgateway) util::need_value "$1" "$#"; PUSHGATEWAY="$2"; shift ;;
    --pending-grace) util::need_value "$1" "$#"; PENDING_GRACE="$2"; shift ;;
    --create-namespace) CREATE_NAMESPACE=1 ;;
    *) release::common_flag "$@" || util::usage_error "unknown argument: $1"; shift $((RELEASE_FLAG_WORDS - 1)) ;;
  esac
  shift
done

release::valid_names
TIMEOUT_S="$(util::seconds "${TIMEOUT}")" || util::usage_error "--timeout must be a duration like 90s, 5m or 1m30s: ${TIMEOUT}"
((TIMEOUT_S > 0)) || util::usage_error "--timeout must be positive"
PENDING_GRACE_S="$(util::seconds "${PENDING_GRACE}")" || util::usage_error "--pending-grace must be a duration: ${PENDING_GRACE}"
util::seconds "${PROMETHEUS_WINDOW}" >/dev/null || util::usage_error "--prometheus-window must be a duration: ${PROMETHEUS_WINDOW}"
[[ "${SMOKE_REQUESTS}" =~ ^[0-9]+$ ]] || util::usage_error "--smoke-requests must be a number: ${SMOKE_REQUESTS}"
[[ "${MAX_ERROR_RATIO}" =~ ^(0(\.[0-9]+)?|1(\.0+)?)$ ]] || util::usage_error "--max-error-ratio must be between 0 and 1: ${MAX_ERROR_RATIO}"
for v in "${VALUES[@]}"; do [[ -f "${v}" ]] || util::usage_error "values file not found: ${v}"; done
for v in "${SETS[@]}"; do [[ "${v}" == *=* ]] || util::usage_error "--set needs KEY=VALUE: ${v}"; done
[[ "${IMAGE_TAG}" =~ ^[A-Za-z0-9_.-]{0,128}$ ]] || util::usage_error "--image-tag is not a valid tag: ${IMAGE_TAG}"
DRY_RUN="${DRY_RUN:-0}"

# -- state of this run (the summary is built from it; see self-healing/lib/release.sh) -------------
release::init
# RESULT: deployed | rolled_back | rollback_failed | install_failed | install_cleanup_failed | dry_run |
# history_error | error
HELM_MAJOR=""
ROLLBACK_EPOCH=""
CLUSTER_OK=0 # set once the API server answered: the summary may then ask it what serves

# -- summary ------------------------------------------------------------------------------------------
exit_code_of() {
  case "$1" in
    deployed | dry_run) echo 0 ;;
    rolled_back) echo 3 ;;
    rollback_failed | install_cleanup_failed) echo 4 ;;
    install_failed) echo 5 ;;
    history_error) echo 6 ;;
    *) echo 1 ;;
  esac
}

summary() {
  release::summary auto-rollback "$1" "$(jq -n -c --arg image_tag "${IMAGE_TAG}" --arg helm "${HELM_MAJOR}" \
    '{image_tag: $image_tag, helm_major_version: (if $helm == "" then null else ($helm | tonumber) end)}')"
}

# push_metrics: the run's outcome for the SelfhealHelmRollback alert (Pushgateway, POST keeps the
# other metrics of the group, so the last rollback's timestamp survives later good runs).
push_metrics() {
  [[ -n "${PUSHGATEWAY}" && "${DRY_RUN}" != 1 ]] || return 0
  local body now success=0
  now="$(date +%s)"
  [[ "${RESULT}" == deployed ]] && success=1
  body="# TYPE selfheal_autorollback_last_run_timestamp_seconds gauge
selfheal_autorollback_last_run_timestamp_seconds ${now}
# TYPE selfheal_autorollback_last_run_success gauge
selfheal_autorollback_last_run_success ${success}
"
  if [[ -n "${ROLLBACK_EPOCH}" ]]; then
    body+="# TYPE selfheal_autorollback_last_rollback_timestamp_seconds gauge
selfheal_autorollback_last_rollback_timestamp_seconds ${ROLLBACK_EPOCH}
# TYPE selfheal_autorollback_last_rollback_healthy gauge
selfheal_autorollback_last_rollback_healthy $([[ "${RESULT}" == rolled_back ]] && echo 1 || echo 0)
"
  fi
  if curl -fsS -m 10 --data-binary @- \
    "${PUSHGATEWAY%/}/metrics/job/selfheal-autorollback/namespace/${NAMESPACE}/release/${RELEASE}" <<<"${body}" >/dev/null; then
    log::info "pushed the run's metrics to ${PUSHGATEWAY}"
  else
    log::warn "could not push metrics to ${PUSHGATEWAY} (the SelfhealHelmRollback alert will not see this run)"
  fi
}

# finish RESULT [REASON]: record, report, exit with the result's code.
finish() {
  RESULT="$1"
  [[ -z "${2:-}" ]] || REASON="$2"
  local code
  code="$(exit_code_of "${RESULT}")"
  # A person has to look: show them the release's revisions and status.
  if ((code == 4)) && [[ "${DRY_RUN}" != 1 ]]; then release::capture_state; fi
  push_metrics
  summary "${code}"
  exit "${code}"
}

# fail_early "why": nothing was changed (exit 1).
fail_early() {
  log::error "$1"
  timeline "stopped before changing anything: $1"
  ((CLUSTER_OK)) && release::serving_state
  finish error "$1"
}

# fail_history: `helm history` failed with an error other than "release: not found" (exit 6).
fail_history() {
  local why="could not read the history of release ${RELEASE} in ${NAMESPACE}: ${HISTORY_ERROR}; $1"
  log::error "${why}"
  timeline "stopped: ${why}"
  release::serving_state
  finish history_error "${why}"
}

# fail_never_deployed: the release has revisions but none that ever deployed. Uninstalling it
# could delete something a person still needs (the script never removes a release with history).
fail_never_deployed() {
  fail_early "release ${RELEASE} has $(jq length <<<"${HISTORY}") revision(s) but none ever deployed successfully (latest: revision ${LATEST_REVISION}, ${LATEST_STATUS}); the script never uninstalls a release with history: look at it (helm -n ${NAMESPACE} history ${RELEASE}) and, if it is safe, remove it (helm -n ${NAMESPACE} uninstall ${RELEASE}), then run again"
}

# -- helm and cluster helpers --------------------------------------------------------------------------
# no_release_left: Helm says the release does not exist and the API server lists none of its
# Deployments, Services or Pods (a failing read is not "gone").
# shellcheck disable=SC2317 # called through util::wait_for
no_release_left() {
  local objects
  release::read_history && [[ "${HISTORY}" == '[]' ]] &&
    objects="$("${K[@]}" get deployments,services,pods -l "app.kubernetes.io/instance=${RELEASE}" -o name)" &&
    [[ -z "${objects}" ]]
}

# -- preflight ------------------------------------------------------------------------------------------
missing=()
for t in "${HELM}" kubectl jq; do command -v "${t}" >/dev/null 2>&1 || missing+=("${t}"); done
if [[ -n "${PROMETHEUS}${PUSHGATEWAY}" ]] && ! command -v curl >/dev/null 2>&1; then missing+=(curl); fi
if ((${#missing[@]})); then
  # No jq means no JSON summary either: say it plainly and stop.
  log::error "missing tools: ${missing[*]} (install them with: ${REPO_ROOT}/hack/tools.sh install, or your package manager)"
  exit 1
fi

HELM_VERSION_STRING="$("${HELM}" version --template '{{.Version}}' 2>/dev/null || true)"
HELM_MAJOR="$(sed -E 's/^v?([0-9]+).*/\1/' <<<"${HELM_VERSION_STRING}")"
[[ "${HELM_MAJOR}" =~ ^[34]$ ]] || fail_early "unsupported helm version '${HELM_VERSION_STRING}' (need Helm 3 or 4)"
HELM_UPGRADE_HELP="$("${HELM}" upgrade --help 2>&1)"
# Helm 4 renamed --atomic to --rollback-on-failure; Helm 3.13+ and 4 take --dry-run=server.
if grep -q -- '--rollback-on-failure' <<<"${HELM_UPGRADE_HELP}"; then ATOMIC_FLAG=--rollback-on-failure; else ATOMIC_FLAG=--atomic; fi
if grep -qE -- '--dry-run string' <<<"${HELM_UPGRADE_HELP}"; then DRY_RUN_FLAG=--dry-run=server; else DRY_RUN_FLAG=--dry-run; fi

if [[ -n "${KUBE_CONTEXT}" ]]; then
  grep -qxF "${KUBE_CONTEXT}" <<<"$(kubectl config get-contexts -o name 2>/dev/null || true)" ||
    fail_early "kube context '${KUBE_CONTEXT}' does not exist in ${KUBECONFIG:-~/.kube/config} (kubectl config get-contexts)"
  CONTEXT="${KUBE_CONTEXT}"
else
  CONTEXT="$(kubectl config current-context 2>/dev/null || true)"
  [[ -n "${CONTEXT}" ]] || fail_early "no current kube context (KUBECONFIG=${KUBECONFIG:-unset}); pass --kube-context or set KUBECONFIG"
fi
SERVER="$(kubectl config view --minify ${KUBE_CONTEXT:+--context "${KUBE_CONTEXT}"} -o jsonpath='{.clusters[0].cluster.server}' 2>/dev/null || true)"
log::step "auto-rollback: release ${RELEASE} in ${NAMESPACE}, context ${CONTEXT} (${SERVER}), Helm ${HELM_VERSION_STRING}$([[ "${DRY_RUN}" == 1 ]] && echo ', DRY RUN')"
"${K[@]}" get --raw /readyz >/dev/null 2>&1 || fail_early "the API server of context ${CONTEXT} (${SERVER}) is not reachable or not ready"
CLUSTER_OK=1
if ! "${K[@]}" get namespace "${NAMESPACE}" >/dev/null 2>&1 && ((CREATE_NAMESPACE == 0)); then
  fail_early "namespace ${NAMESPACE} does not exist in context ${CONTEXT} (wrong context? or pass --create-namespace)"
fi
if [[ -n "${IMAGE_TAG}" ]]; then
  timeline "start: deploy image tag ${IMAGE_TAG} (context ${CONTEXT}, timeout ${TIMEOUT_S}s)"
else
  timeline "start: deploy (chart's image tag, context ${CONTEXT}, timeout ${TIMEOUT_S}s)"
fi

release::read_history ||
  fail_history "stopped before changing anything (only Helm's 'Error: release: not found' is read as no release)"
LATEST_STATUS="$(jq -r 'last | .status // empty' <<<"${HISTORY}")"
LATEST_REVISION="$(jq -r 'last | .revision // empty' <<<"${HISTORY}")"
PREVIOUS_REVISION="$(release::last_good_revision "${HISTORY}")"
if [[ -n "${LATEST_STATUS}" ]]; then
  log::info "release ${RELEASE}: latest revision ${LATEST_REVISION} is ${LATEST_STATUS}; last good revision ${PREVIOUS_REVISION:-none}"
else
  log::info "release ${RELEASE} does not exist yet: first install"
fi

# -- an interrupted run left the release pending-*: recover before deploying ----------------------------
# Young (or of an age that cannot be read): another deploy may still be running, leave it alone.
if [[ "${LATEST_STATUS}" == pending-* ]]; then
  updated="$(jq -r 'last | .updated // empty' <<<"${HISTORY}")"
  read -r pending_action age <<<"$(release::pending_action "${updated}" "$(date +%s)" "${PENDING_GRACE_S}")"
  if [[ "${age}" == unknown ]]; then
    fail_early "revision ${LATEST_REVISION} is ${LATEST_STATUS} and its update time '${updated}' cannot be read: treated as recent (another deploy may still be running); look at it with: helm -n ${NAMESPACE} history ${RELEASE}"
  fi
  if [[ "${pending_action}" != recover ]]; then
    fail_early "revision ${LATEST_REVISION} is ${LATEST_STATUS} since ${age}s (< --pending-grace ${PENDING_GRACE_S}s): another deploy may still be running"
  fi
fi

# A release whose revisions all failed (or an interrupted first install) has nothing to roll back
# to, and uninstalling a release with history is never done here: a person decides.
[[ -z "${LATEST_STATUS}" || -n "${PREVIOUS_REVISION}" ]] || fail_never_deployed

if [[ "${LATEST_STATUS}" == pending-* ]]; then
  timeline "revision ${LATEST_REVISION} left ${LATEST_STATUS} by an interrupted run ${age}s ago: recovering"
  if ! release::rollback "${PREVIOUS_REVISION}"; then
    release::serving_state
    finish rollback_failed "could not roll the ${LATEST_STATUS} release back to revision ${PREVIOUS_REVISION} (tried twice): ${ROLLBACK_ERROR}"
  fi
  timeline "recovered: rolled back to revision ${PREVIOUS_REVISION} (the last good one)"
  if [[ "${DRY_RUN}" != 1 ]]; then
    release::read_history ||
      fail_history "stopped after recovering the pending release (it now runs the manifests of revision ${PREVIOUS_REVISION}); nothing deployed"
    PREVIOUS_REVISION="$(release::last_good_revision "${HISTORY}")"
  fi
fi

# -- deploy ------------------------------------------------------------------------------------------------
HELM_ARGS=(upgrade --install "${RELEASE}" "${CHART}" --wait --timeout "${TIMEOUT_S}s")
((CREATE_NAMESPACE)) && HELM_ARGS+=(--create-namespace)
[[ -z "${IMAGE_TAG}" ]] || HELM_ARGS+=(--set "image.tag=${IMAGE_TAG}")
[[ -z "${IMAGE_REPOSITORY}" ]] || HELM_ARGS+=(--set "image.repository=${IMAGE_REPOSITORY}")
for v in "${VALUES[@]}"; do HELM_ARGS+=(--values "${v}"); done
for v in "${SETS[@]}"; do HELM_ARGS+=(--set "${v}"); done
FIRST_INSTALL=0
if [[ -z "${PREVIOUS_REVISION}" ]]; then
  FIRST_INSTALL=1
  # Nothing to roll back to: let Helm remove a failed install itself (Helm 3 --atomic, Helm 4
  # --rollback-on-failure); our own cleanup below catches what it leaves.
  HELM_ARGS+=("${ATOMIC_FLAG}")
fi

if [[ "${DRY_RUN}" == 1 ]]; then
  next=$((${LATEST_REVISION:-0} + 1))
  if [[ "${LATEST_STATUS}" == pending-* ]]; then
    # Helm refuses to render an upgrade of a pending release; the real run recovers it first.
    log::info "dry run: the release is ${LATEST_STATUS}, so Helm cannot render the upgrade now; render skipped"
    [[ -z "${PREVIOUS_REVISION}" ]] || next=$((next + 1))
  else
    log::step "dry run: rendering the release against the API server (${DRY_RUN_FLAG}); nothing is stored"
    if ! "${H[@]}" "${HELM_ARGS[@]}" "${DRY_RUN_FLAG}" >/dev/null; then
      fail_early "helm ${DRY_RUN_FLAG} rejected the release (chart, values or API validation)"
    fi
  fi
  util::run "${H[@]}" "${HELM_ARGS[@]}"
  if ((FIRST_INSTALL)); then
    timeline "plan: install revision 1; on failure uninstall it (nothing to roll back to)"
  else
    timeline "plan: upgrade to revision ${next}; verify; on failure roll back to revision ${PREVIOUS_REVISION}"
  fi
  release::serving_state
  finish dry_run
fi

log::step "deploying: helm ${HELM_ARGS[*]}"
DEPLOY_EPOCH="$(date +%s)"
timeline "helm upgrade --install started$( ((FIRST_INSTALL)) && echo " (first install, ${ATOMIC_FLAG})")"
DEPLOY_OK=1
HELM_ERR="$(mktemp)"
util::trap_add "rm -f '${HELM_ERR}'"
if ! util::run "${H[@]}" "${HELM_ARGS[@]}" >&2 2>"${HELM_ERR}"; then
  DEPLOY_OK=0
  cat "${HELM_ERR}" >&2
  REASON="helm upgrade --install failed after $(($(date +%s) - DEPLOY_EPOCH))s: $(grep -m1 '^Error:' "${HELM_ERR}" | cut -c1-300 || true)"
fi
if release::read_history; then
  DEPLOYED_REVISION="$(jq -r 'last | .revision // empty' <<<"${HISTORY}")"
else
  log::warn "could not read the release's history after the deploy: ${HISTORY_ERROR}"
fi
if ((DEPLOY_OK)); then
  timeline "helm finished: revision ${DEPLOYED_REVISION} deployed; verifying"
  if release::verify 1; then
    release::serving_state
    timeline "verified: revision ${SERVING_REVISION} healthy (${SERVING_IMAGES})"
    finish deployed
  fi
fi
log::error "deploy failed: ${REASON}"
timeline "FAILED: ${REASON}"
"${K[@]}" get deployments,pods -l "app.kubernetes.io/instance=${RELEASE}" -o wide >&2 2>/dev/null || true

# -- first install: nothing to roll back to, leave a clean state ----------------------------------------------
if ((FIRST_INSTALL)); then
  log::step "first install failed: nothing to roll back to, removing the release"
  # Only the revision this run installed is removed. History this run did not create means the
  # release existed after all (an install that raced ours, or a history read that lied): keep it.
  if ! release::read_history; then
    release::serving_state
    timeline "NOT uninstalling: the history of ${RELEASE} cannot be read (${HISTORY_ERROR})"
    finish install_cleanup_failed "${REASON}; the release was not removed: its history could not be read (${HISTORY_ERROR})"
  fi
  if [[ "${HISTORY}" != '[]' ]] && ! release::only_this_install "${HISTORY}"; then
    release::serving_state
    timeline "NOT uninstalling: ${RELEASE} has revisions $(jq -r 'map(.revision) | join(",")' <<<"${HISTORY}"), not just the revision 1 this run installed"
    finish install_cleanup_failed "${REASON}; the release was not removed: its history ($(jq -r '(if length > 5 then "..., " else "" end) + (.[-5:] | map("\(.revision) \(.status)") | join(", "))' <<<"${HISTORY}")) is not just the revision 1 this run installed, so someone else installed or upgraded it meanwhile; a person has to look"
  fi
  if [[ "${HISTORY}" != '[]' ]]; then
    util::run "${H[@]}" uninstall "${RELEASE}" --wait --timeout "${TIMEOUT_S}s" >&2 || true
  fi
  if util::wait_for "release ${RELEASE} and its objects gone" "${TIMEOUT_S}" no_release_left; then
    SERVING_REVISION=""
    timeline "release removed: nothing of ${RELEASE} is left in ${NAMESPACE}"
    finish install_failed
  fi
  release::serving_state
  timeline "cleanup incomplete: objects of ${RELEASE} remain"
  finish install_cleanup_failed
fi

# -- roll back to the last good revision ---------------------------------------------------------------------
FAIL_REASON="${REASON}"
log::step "rolling back ${RELEASE} to revision ${PREVIOUS_REVISION}"
ROLLBACK_EPOCH="$(date +%s)"
timeline "helm rollback to revision ${PREVIOUS_REVISION} started"
if ! release::rollback "${PREVIOUS_REVISION}"; then
  release::serving_state
  finish rollback_failed "${FAIL_REASON}; then helm rollback to revision ${PREVIOUS_REVISION} failed twice (retried after ${ROLLBACK_RETRY_DELAY_S}s): ${ROLLBACK_ERROR}"
fi
REASON=""
[[ -z "${PROMETHEUS}" ]] || timeline "verifying the rollback without the Prometheus query: its ${PROMETHEUS_WINDOW} window still holds the failed revision's errors"
if ! release::verify 0; then
  release::serving_state
  timeline "rollback revision ${SERVING_REVISION} is NOT healthy: ${REASON}"
  finish rollback_failed "${FAIL_REASON}; the rollback to revision ${PREVIOUS_REVISION} is not healthy either: ${REASON}"
fi
release::serving_state
timeline "healthy again: revision ${SERVING_REVISION} (rollback to ${PREVIOUS_REVISION}) serves ${SERVING_IMAGES}, $(($(date +%s) - DEPLOY_EPOCH))s after the deploy started"
finish rolled_back "${FAIL_REASON}"
