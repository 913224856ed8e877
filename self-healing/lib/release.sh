# shellcheck shell=bash
# Shared by self-healing/auto-rollback.sh and self-healing/rollback-to.sh: the state of one run
# against one Helm release, its timeline, how a release is verified, and the summary both print.
# Source it after hack/lib.sh; parse arguments (release::common_flag), then call release::init.
#
# Globals the caller sets before release::init: NAMESPACE, RELEASE, KUBE_CONTEXT (may be empty),
# HELM, OUTPUT (text|json), DRY_RUN. For release::verify also: TIMEOUT_S, SMOKE_REQUESTS,
# MAX_ERROR_RATIO, PROMETHEUS (may be empty), PROMETHEUS_WINDOW.
# Globals this file owns: START_EPOCH, TIMELINE, RESULT, REASON, PREVIOUS_REVISION,
# DEPLOYED_REVISION, SERVING_REVISION, SERVING_IMAGES, and the command arrays K (kubectl) and H (helm).

# release::common_flag ARGS...: parse one flag both scripts take from the front of ARGS into
# NAMESPACE, RELEASE, TIMEOUT, KUBE_CONTEXT, OUTPUT or DRY_RUN. Sets RELEASE_FLAG_WORDS to the
# words it used (1 or 2); returns 1 when $1 is not a common flag. Usage in a script's loop:
#   *) release::common_flag "$@" || util::usage_error "unknown argument: $1"; shift $((RELEASE_FLAG_WORDS - 1)) ;;
# shellcheck disable=SC2034 # the globals are the caller's
release::common_flag() {
  RELEASE_FLAG_WORDS=1
  case "$1" in
    -n | --namespace) util::need_value "$1" "$#"; NAMESPACE="$2"; RELEASE_FLAG_WORDS=2 ;;
    -r | --release) util::need_value "$1" "$#"; RELEASE="$2"; RELEASE_FLAG_WORDS=2 ;;
    --timeout) util::need_value "$1" "$#"; TIMEOUT="$2"; RELEASE_FLAG_WORDS=2 ;;
    --kube-context) util::need_value "$1" "$#"; KUBE_CONTEXT="$2"; RELEASE_FLAG_WORDS=2 ;;
    -o | --output) util::need_value "$1" "$#"; OUTPUT="$2"; RELEASE_FLAG_WORDS=2 ;;
    --dry-run) export DRY_RUN=1 ;;
    *) return 1 ;;
  esac
}

# release::valid_names: NAMESPACE and RELEASE are names Kubernetes and Helm accept.
release::valid_names() {
  [[ "${NAMESPACE}" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] ||
    util::usage_error "--namespace is required and must be a namespace name: '${NAMESPACE}'"
  [[ "${RELEASE}" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ && ${#RELEASE} -le 53 ]] ||
    util::usage_error "--release must be a DNS-1123 label of at most 53 characters: ${RELEASE}"
  [[ "${OUTPUT}" =~ ^(text|json)$ ]] || util::usage_error "--output must be text or json: ${OUTPUT}"
}

release::init() {
  START_EPOCH="$(date +%s)"
  TIMELINE=() # "elapsed_seconds|utc time|event"
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
}

timeline() {
  local now
  now="$(date +%s)"
  TIMELINE+=("$((now - START_EPOCH))|$(date -u +%H:%M:%SZ)|$*")
  log::info "[timeline +$((now - START_EPOCH))s] $*"
}

# release::summary TITLE CODE [EXTRA_JSON]: the run's summary on stdout: text, or one JSON object
# (common keys, plus the script's own keys from EXTRA_JSON, an object).
release::summary() {
  local title="$1" code="$2" extra="${3:-{\}}" elapsed=$(($(date +%s) - START_EPOCH)) e
  if [[ "${OUTPUT}" == json ]]; then
    printf '%s\n' "${TIMELINE[@]}" | jq -R -s -c \
      --arg release "${RELEASE}" --arg namespace "${NAMESPACE}" --arg result "${RESULT}" \
      --arg reason "${REASON}" --arg previous "${PREVIOUS_REVISION}" --arg deployed "${DEPLOYED_REVISION}" \
      --arg serving "${SERVING_REVISION}" --arg images "${SERVING_IMAGES}" --argjson extra "${extra}" \
      --argjson exit_code "${code}" --argjson duration "${elapsed}" \
      --argjson dry_run "$([[ "${DRY_RUN:-0}" == 1 ]] && echo true || echo false)" '
      def num: if . == "" then null else tonumber end;
      {release: $release, namespace: $namespace, result: $result, exit_code: $exit_code,
       reason: (if $reason == "" then null else $reason end), dry_run: $dry_run,
       previous_revision: ($previous | num), deployed_revision: ($deployed | num),
       serving_revision: ($serving | num),
       serving_images: ($images | split(" ") | map(select(. != ""))),
       duration_seconds: $duration,
       timeline: (split("\n") | map(select(. != "") | split("|") |
         {elapsed_seconds: (.[0] | tonumber), time: .[1], event: (.[2:] | join("|"))}))} + $extra'
    return 0
  fi
  printf '\n==== %s: %s/%s ====\n' "${title}" "${NAMESPACE}" "${RELEASE}"
  for e in "${TIMELINE[@]}"; do
    printf '  +%4ss  %s  %s\n' "${e%%|*}" "$(cut -d'|' -f2 <<<"${e}")" "$(cut -d'|' -f3- <<<"${e}")"
  done
  printf 'result:   %s (exit %s) after %ss\n' "${RESULT}" "${code}" "${elapsed}"
  [[ -z "${REASON}" ]] || printf 'why:      %s\n' "${REASON}"
  if [[ -n "${SERVING_REVISION}" ]]; then
    printf 'serving:  revision %s%s\n' "${SERVING_REVISION}" "${SERVING_IMAGES:+, image ${SERVING_IMAGES}}"
  else
    printf 'serving:  nothing (no release)\n'
  fi
}

# release::history: the release's revisions as JSON ([] when there is no release).
release::history() {
  "${H[@]}" history "${RELEASE}" --max 1000 -o json 2>/dev/null || echo '[]'
}

# release::last_good_revision HISTORY_JSON: the deployed revision, else the newest superseded one
# (after a failed upgrade Helm 3 leaves no revision "deployed"); "" when there is none.
release::last_good_revision() {
  jq -r '(map(select(.status == "deployed")) | last | .revision) //
         (map(select(.status == "superseded")) | last | .revision) // empty' <<<"$1"
}

# release::deployments: names of the release's Deployments (chart convention: instance label).
release::deployments() {
  "${K[@]}" get deployments -l "app.kubernetes.io/instance=${RELEASE}" -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}'
}

# release::service: the Service that selects every pod of the release (the one without a track
# label), and the name of its first port, as "name port".
release::service() {
  "${K[@]}" get services -l "app.kubernetes.io/instance=${RELEASE}" -o json |
    jq -r '[.items[] | select((.metadata.labels.track // "") == "")] | first // empty |
           "\(.metadata.name) \(.spec.ports[0].name // .spec.ports[0].port)"'
}

# release::svc_get SERVICE PORT PATH: GET through the API server's service proxy (works from any
# machine that reaches the API server; the proxy picks one ready endpoint per request).
release::svc_get() {
  "${K[@]}" get --raw "/api/v1/namespaces/${NAMESPACE}/services/http:$1:$2/proxy$3" 2>/dev/null
}

# release::serving_state: which revision and images serve now (for the summary).
release::serving_state() {
  local d images=""
  SERVING_REVISION="$("${H[@]}" status "${RELEASE}" -o json 2>/dev/null | jq -r '.version // empty')" || SERVING_REVISION=""
  while read -r d; do
    [[ -n "${d}" ]] || continue
    images+="$("${K[@]}" get deployment "${d}" -o jsonpath='{.spec.template.spec.containers[*].image}') "
  done < <(release::deployments 2>/dev/null)
  SERVING_IMAGES="$(tr ' ' '\n' <<<"${images}" | sed '/^$/d' | sort -u | tr '\n' ' ')"
  SERVING_IMAGES="${SERVING_IMAGES% }"
}

# release::verify WITH_PROMETHEUS (1|0): every check of a healthy release; sets REASON and returns 1 on
# the first failure. `release::verify 0` leaves out the Prometheus query (right after a rollback
# its window still holds the failed revision's errors).
release::verify() {
  local use_prometheus="${1:-1}"
  local deployments=() d status svc port i ok=0 fail=0 want ready updated unavailable path
  mapfile -t deployments < <(release::deployments)
  if ((${#deployments[@]} == 0)); then
    REASON="the release has no Deployment (label app.kubernetes.io/instance=${RELEASE})"
    return 1
  fi
  for d in "${deployments[@]}"; do
    if ! "${K[@]}" rollout status "deployment/${d}" --timeout="${TIMEOUT_S}s" >&2; then
      REASON="rollout of deployment/${d} did not complete within ${TIMEOUT_S}s ($("${K[@]}" get deployment "${d}" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}; {end}'))"
      return 1
    fi
    status="$("${K[@]}" get deployment "${d}" -o jsonpath='{.spec.replicas} {.status.readyReplicas} {.status.updatedReplicas} {.status.unavailableReplicas}')"
    read -r want ready updated unavailable <<<"${status}"
    if [[ "${ready:-0}" != "${want}" || "${updated:-0}" != "${want}" || -n "${unavailable:-}" ]]; then
      REASON="deployment/${d}: ${ready:-0}/${want} replicas Ready, ${updated:-0} updated, ${unavailable:-0} unavailable"
      return 1
    fi
    log::ok "deployment/${d}: ${ready}/${want} replicas Ready and updated"
  done
  read -r svc port <<<"$(release::service)"
  if [[ -z "${svc:-}" ]]; then
    REASON="the release has no Service to check /health and /ready through"
    return 1
  fi
  for path in /health /ready; do
    if ! util::wait_for "${path} through service/${svc}" 30 release::svc_get "${svc}" "${port}" "${path}"; then
      REASON="${path} through service/${svc} did not answer 2xx within 30s"
      return 1
    fi
  done
  log::ok "/health and /ready answer through service/${svc}"
  if ((SMOKE_REQUESTS > 0)); then
    for ((i = 0; i < SMOKE_REQUESTS; i++)); do
      if release::svc_get "${svc}" "${port}" / >/dev/null; then ok=$((ok + 1)); else fail=$((fail + 1)); fi
    done
    if awk -v f="${fail}" -v n="${SMOKE_REQUESTS}" -v max="${MAX_ERROR_RATIO}" 'BEGIN { exit !(f / n > max) }'; then
      REASON="${fail} of ${SMOKE_REQUESTS} GET / through service/${svc} failed (more than ${MAX_ERROR_RATIO})"
      return 1
    fi
    log::ok "smoke test: ${ok}/${SMOKE_REQUESTS} GET / answered 2xx"
  fi
  if [[ -n "${PROMETHEUS}" && "${use_prometheus}" == 1 ]]; then
    release::verify_prometheus "${svc}" || return 1
  fi
  return 0
}

# release::verify_prometheus SERVICE: the Service's 5xx ratio from Prometheus; skipped when
# Prometheus is unreachable or has no data yet.
release::verify_prometheus() {
  local svc="$1" q out ratio
  q="sum(rate(http_requests_total{namespace=\"${NAMESPACE}\",job=\"${svc}\",route!~\"/(health|ready|metrics)\",status=~\"5..\"}[${PROMETHEUS_WINDOW}])) / sum(rate(http_requests_total{namespace=\"${NAMESPACE}\",job=\"${svc}\",route!~\"/(health|ready|metrics)\"}[${PROMETHEUS_WINDOW}]))"
  if ! out="$(curl -fsS -m 10 -G --data-urlencode "query=${q}" "${PROMETHEUS%/}/api/v1/query" 2>/dev/null)"; then
    log::warn "Prometheus at ${PROMETHEUS} is not reachable: error-rate check skipped"
    timeline "Prometheus not reachable: error-rate check skipped"
    return 0
  fi
  ratio="$(jq -r '.data.result[0].value[1] // empty' <<<"${out}")"
  if [[ -z "${ratio}" || "${ratio}" == NaN ]]; then
    log::info "Prometheus has no request rate for ${svc} yet: error-rate check skipped"
    return 0
  fi
  if awk -v r="${ratio}" -v max="${MAX_ERROR_RATIO}" 'BEGIN { exit !(r > max) }'; then
    REASON="Prometheus: 5xx ratio of service/${svc} over ${PROMETHEUS_WINDOW} is ${ratio} (more than ${MAX_ERROR_RATIO})"
    return 1
  fi
  log::ok "Prometheus: 5xx ratio of service/${svc} is ${ratio}"
}
