#!/usr/bin/env bash
# Manual "roll back to revision N" of a Helm release, verified like auto-rollback.sh verifies a
# deploy: `helm rollback RELEASE N --wait`, then every Deployment of the release rolled out and
# Ready, and /health + /ready answering through its Service. The CD workflow's rollback dispatch
# calls it (auto-rollback.sh picks the last good revision itself; this one takes the revision
# a person chose). Prints a summary (text, or json with the same keys as auto-rollback.sh).
# Prerequisites: helm 3 or 4, kubectl, jq; a cluster in KUBECONFIG.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

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
      --output FORMAT      text (default) or json: the summary on stdout (logs go to stderr)
      --dry-run            check the release and the revision, print the plan, change nothing
  -h, --help               this help

Exit status:
  0  rolled back to N and verified
  1  nothing changed: tools, cluster, no such release or revision
  2  usage error
  4  rolled back, but the result did not become healthy: a person has to look

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
KUBE_CONTEXT=""
OUTPUT=text
HELM="${HELM:-helm}"
need_value() { (($2 >= 2)) || util::usage_error "$1 needs a value"; }
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    -n | --namespace) need_value "$1" "$#"; NAMESPACE="$2"; shift ;;
    -r | --release) need_value "$1" "$#"; RELEASE="$2"; shift ;;
    --revision) need_value "$1" "$#"; REVISION="$2"; shift ;;
    --timeout) need_value "$1" "$#"; TIMEOUT="$2"; shift ;;
    --kube-context) need_value "$1" "$#"; KUBE_CONTEXT="$2"; shift ;;
    -o | --output) need_value "$1" "$#"; OUTPUT="$2"; shift ;;
    --dry-run) export DRY_RUN=1 ;;
    *) util::usage_error "unknown argument: $1" ;;
  esac
  shift
done
[[ "${NAMESPACE}" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || util::usage_error "--namespace is required and must be a namespace name: '${NAMESPACE}'"
[[ "${RELEASE}" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || util::usage_error "--release must be a DNS-1123 label: ${RELEASE}"
[[ "${REVISION}" =~ ^[1-9][0-9]*$ ]] || util::usage_error "--revision is required and must be a positive number: '${REVISION}'"
[[ "${TIMEOUT}" =~ ^([0-9]+[hms])+$ ]] || util::usage_error "--timeout must be a duration like 90s or 5m: ${TIMEOUT}"
[[ "${OUTPUT}" =~ ^(text|json)$ ]] || util::usage_error "--output must be text or json: ${OUTPUT}"
DRY_RUN="${DRY_RUN:-0}"

START_EPOCH="$(date +%s)"
TIMELINE=()
RESULT=""
REASON=""
PREVIOUS_REVISION=""
DEPLOYED_REVISION=""
SERVING_REVISION=""
SERVING_IMAGES=""
K=(kubectl --namespace "${NAMESPACE}")
H=("${HELM}" --namespace "${NAMESPACE}")
if [[ -n "${KUBE_CONTEXT}" ]]; then
  K+=(--context "${KUBE_CONTEXT}")
  H+=(--kube-context "${KUBE_CONTEXT}")
fi

timeline() {
  TIMELINE+=("$(($(date +%s) - START_EPOCH))|$(date -u +%H:%M:%SZ)|$*")
  log::info "[timeline +$(($(date +%s) - START_EPOCH))s] $*"
}

serving_state() {
  local images
  SERVING_REVISION="$("${H[@]}" status "${RELEASE}" -o json 2>/dev/null | jq -r '.version // empty')" || SERVING_REVISION=""
  images="$("${K[@]}" get deployments -l "app.kubernetes.io/instance=${RELEASE}" \
    -o jsonpath='{range .items[*]}{range .spec.template.spec.containers[*]}{.image}{"\n"}{end}{end}' 2>/dev/null || true)"
  SERVING_IMAGES="$(sed '/^$/d' <<<"${images}" | sort -u | tr '\n' ' ')"
  SERVING_IMAGES="${SERVING_IMAGES% }"
}

# finish RESULT [REASON]: print the summary and exit with the result's code.
finish() {
  RESULT="$1"
  [[ -z "${2:-}" ]] || REASON="$2"
  local code elapsed=$(($(date +%s) - START_EPOCH)) e
  case "${RESULT}" in rolled_back | dry_run) code=0 ;; rollback_failed) code=4 ;; *) code=1 ;; esac
  if [[ "${OUTPUT}" == json ]]; then
    printf '%s\n' "${TIMELINE[@]}" | jq -R -s -c \
      --arg release "${RELEASE}" --arg namespace "${NAMESPACE}" --arg result "${RESULT}" --arg reason "${REASON}" \
      --arg target "${REVISION}" --arg previous "${PREVIOUS_REVISION}" --arg deployed "${DEPLOYED_REVISION}" \
      --arg serving "${SERVING_REVISION}" --arg images "${SERVING_IMAGES}" \
      --argjson exit_code "${code}" --argjson duration "${elapsed}" --argjson dry_run "$([[ "${DRY_RUN}" == 1 ]] && echo true || echo false)" '
      def num: if . == "" then null else tonumber end;
      {release: $release, namespace: $namespace, result: $result, exit_code: $exit_code,
       reason: (if $reason == "" then null else $reason end), dry_run: $dry_run,
       target_revision: ($target | num), previous_revision: ($previous | num),
       deployed_revision: ($deployed | num), serving_revision: ($serving | num),
       serving_images: ($images | split(" ") | map(select(. != ""))), duration_seconds: $duration,
       timeline: (split("\n") | map(select(. != "") | split("|") |
         {elapsed_seconds: (.[0] | tonumber), time: .[1], event: (.[2:] | join("|"))}))}'
  else
    printf '\n==== rollback-to: %s/%s ====\n' "${NAMESPACE}" "${RELEASE}"
    for e in "${TIMELINE[@]}"; do
      printf '  +%4ss  %s  %s\n' "${e%%|*}" "$(cut -d'|' -f2 <<<"${e}")" "$(cut -d'|' -f3- <<<"${e}")"
    done
    printf 'result:   %s (exit %s) after %ss\n' "${RESULT}" "${code}" "${elapsed}"
    [[ -z "${REASON}" ]] || printf 'why:      %s\n' "${REASON}"
    printf 'serving:  revision %s%s\n' "${SERVING_REVISION:-none}" "${SERVING_IMAGES:+, image ${SERVING_IMAGES}}"
  fi
  exit "${code}"
}

fail_early() {
  log::error "$1"
  timeline "stopped before changing anything: $1"
  finish error "$1"
}

# shellcheck disable=SC2317 # called through util::wait_for
svc_ok() { "${K[@]}" get --raw "/api/v1/namespaces/${NAMESPACE}/services/http:$1:$2/proxy$3" >/dev/null 2>&1; }

# verify: every Deployment of the release rolled out, /health and /ready through its Service.
verify() {
  local deployments=() d svc port path
  mapfile -t deployments < <("${K[@]}" get deployments -l "app.kubernetes.io/instance=${RELEASE}" -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}')
  ((${#deployments[@]})) || { REASON="the release has no Deployment"; return 1; }
  for d in "${deployments[@]}"; do
    "${K[@]}" rollout status "deployment/${d}" --timeout="${TIMEOUT}" >&2 ||
      { REASON="rollout of deployment/${d} did not complete within ${TIMEOUT}"; return 1; }
  done
  read -r svc port <<<"$("${K[@]}" get services -l "app.kubernetes.io/instance=${RELEASE}" -o json |
    jq -r '[.items[] | select((.metadata.labels.track // "") == "")] | first // empty | "\(.metadata.name) \(.spec.ports[0].name // .spec.ports[0].port)"')"
  [[ -n "${svc:-}" ]] || { REASON="the release has no Service"; return 1; }
  for path in /health /ready; do
    util::wait_for "${path} through service/${svc}" 30 svc_ok "${svc}" "${port}" "${path}" ||
      { REASON="${path} through service/${svc} did not answer 2xx within 30s"; return 1; }
  done
  log::ok "deployments rolled out; /health and /ready answer through service/${svc}"
}

util::require_tools "${HELM}" kubectl jq
"${K[@]}" get --raw /readyz >/dev/null 2>&1 || fail_early "the API server is not reachable (KUBECONFIG=${KUBECONFIG:-unset})"
HISTORY="$("${H[@]}" history "${RELEASE}" --max 1000 -o json 2>/dev/null)" || fail_early "release ${RELEASE} not found in namespace ${NAMESPACE}"
PREVIOUS_REVISION="$(jq -r 'last | .revision // empty' <<<"${HISTORY}")"
jq -e --argjson r "${REVISION}" 'any(.[]; .revision == $r)' <<<"${HISTORY}" >/dev/null ||
  fail_early "revision ${REVISION} is not in the history of ${RELEASE} (kept: $(jq -r 'map(.revision) | join(", ")' <<<"${HISTORY}"))"
timeline "start: roll ${RELEASE} back from revision ${PREVIOUS_REVISION} to revision ${REVISION} ($(jq -r --argjson r "${REVISION}" '.[] | select(.revision == $r) | "\(.status), chart \(.chart), app \(.app_version)"' <<<"${HISTORY}"))"

if [[ "${DRY_RUN}" == 1 ]]; then
  util::run "${H[@]}" rollback "${RELEASE}" "${REVISION}" --wait --timeout "${TIMEOUT}"
  timeline "plan: helm rollback to ${REVISION} creates revision $((PREVIOUS_REVISION + 1)); then verify"
  serving_state
  finish dry_run
fi

if ! util::run "${H[@]}" rollback "${RELEASE}" "${REVISION}" --wait --timeout "${TIMEOUT}" >&2; then
  REASON="helm rollback to revision ${REVISION} failed or timed out"
fi
DEPLOYED_REVISION="$("${H[@]}" history "${RELEASE}" --max 1 -o json 2>/dev/null | jq -r 'last | .revision // empty')"
if [[ -z "${REASON}" ]] && verify; then
  serving_state
  timeline "verified: revision ${SERVING_REVISION} (the manifest of revision ${REVISION}) healthy (${SERVING_IMAGES})"
  finish rolled_back
fi
log::error "rollback not healthy: ${REASON}"
timeline "FAILED: ${REASON}"
"${K[@]}" get deployments,pods -l "app.kubernetes.io/instance=${RELEASE}" -o wide >&2 2>/dev/null || true
serving_state
finish rollback_failed
