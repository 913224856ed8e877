# shellcheck shell=bash
# Shared by self-healing/auto-rollback.sh and self-healing/rollback-to.sh: the state of one run
# against one Helm release, its timeline, how a release is verified, and the summary both print.
# Source it after hack/lib.sh; parse arguments (release::common_flag), then call release::init.
#
# Globals the caller sets before release::init: NAMESPACE, RELEASE, KUBE_CONTEXT (may be empty),
# HELM, OUTPUT (text|json), DRY_RUN, ROLLBACK_RETRY_DELAY (a duration). For release::verify also:
# TIMEOUT_S, SMOKE_REQUESTS, MAX_ERROR_RATIO, PROMETHEUS (may be empty), PROMETHEUS_WINDOW; for
# release::rollback: TIMEOUT_S.
# Globals this file owns: START_EPOCH, TIMELINE, RESULT, REASON, PREVIOUS_REVISION,
# DEPLOYED_REVISION, SERVING_REVISION, SERVING_IMAGES, HISTORY, HISTORY_ERROR, STATE_HISTORY,
# ROLLBACK_RETRY_DELAY_S, ROLLBACK_ERROR, and the command arrays K (kubectl) and H (helm).

# release::common_flag ARGS...: parse one flag both scripts take from the front of ARGS into
# NAMESPACE, RELEASE, TIMEOUT, KUBE_CONTEXT, ROLLBACK_RETRY_DELAY, OUTPUT or DRY_RUN. Sets
# RELEASE_FLAG_WORDS to the words it used (1 or 2); returns 1 when $1 is not a common flag.
# Usage in a script's loop:
#   *) release::common_flag "$@" || util::usage_error "unknown argument: $1"; shift $((RELEASE_FLAG_WORDS - 1)) ;;
# shellcheck disable=SC2034 # the globals are the caller's
release::common_flag() {
  RELEASE_FLAG_WORDS=1
  case "$1" in
    -n | --namespace) util::need_value "$1" "$#"; NAMESPACE="$2"; RELEASE_FLAG_WORDS=2 ;;
    -r | --release) util::need_value "$1" "$#"; RELEASE="$2"; RELEASE_FLAG_WORDS=2 ;;
    --timeout) util::need_value "$1" "$#"; TIMEOUT="$2"; RELEASE_FLAG_WORDS=2 ;;
    --kube-context) util::need_value "$1" "$#"; KUBE_CONTEXT="$2"; RELEASE_FLAG_WORDS=2 ;;
    --rollback-retry-delay) util::need_value "$1" "$#"; ROLLBACK_RETRY_DELAY="$2"; RELEASE_FLAG_WORDS=2 ;;
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
  ROLLBACK_RETRY_DELAY_S="$(util::seconds "${ROLLBACK_RETRY_DELAY}")" ||
    util::usage_error "--rollback-retry-delay must be a duration like 10s or 1m: ${ROLLBACK_RETRY_DELAY}"
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
  HISTORY=""
  HISTORY_ERROR=""
  STATE_HISTORY="" # JSON array of the last revisions, shown in the summary when set (release::capture_state)
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
      --arg state "${STATE_HISTORY}" --argjson exit_code "${code}" --argjson duration "${elapsed}" \
      --argjson dry_run "$([[ "${DRY_RUN:-0}" == 1 ]] && echo true || echo false)" '
      def num: if . == "" then null else tonumber end;
      {release: $release, namespace: $namespace, result: $result, exit_code: $exit_code,
       reason: (if $reason == "" then null else $reason end), dry_run: $dry_run,
       previous_revision: ($previous | num), deployed_revision: ($deployed | num),
       serving_revision: ($serving | num),
       serving_images: ($images | split(" ") | map(select(. != ""))),
       duration_seconds: $duration,
       release_history: (if $state == "" then null else ($state | fromjson) end),
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
  if [[ -n "${STATE_HISTORY}" ]]; then
    printf 'history:  (last revisions of the release)\n'
    jq -r '.[] | "  \(.revision)\t\(.status)\t\(.updated)\t\(.description)"' <<<"${STATE_HISTORY}"
  fi
}

# release::history_not_found HELM_STDERR: true when Helm's error says the release does not exist.
# Helm 3 and 4 print exactly "Error: release: not found" (driver.ErrReleaseNotFound); anything
# else (API server unreachable, forbidden, timeout, no error text at all) is not "not found".
release::history_not_found() {
  grep -qx 'Error: release: not found' <<<"$1"
}

# release::read_history: the release's revisions as a JSON array in HISTORY ("[]" only when Helm
# says the release does not exist). Any other failure of `helm history` (API server unreachable,
# auth, timeout, output that is not a JSON array) leaves HISTORY empty, puts Helm's error in
# HISTORY_ERROR and returns 1: the caller must stop, never read it as "no release" (that would
# make a flaky API server look like a first install). Call it directly, not in $(...).
release::read_history() {
  local err out rc=0
  HISTORY=""
  HISTORY_ERROR=""
  err="$(mktemp)"
  out="$("${H[@]}" history "${RELEASE}" --max 1000 -o json 2>"${err}")" || rc=$?
  if ((rc == 0)) && jq -e 'type == "array"' <<<"${out}" >/dev/null 2>&1; then
    HISTORY="$(jq -c . <<<"${out}")"
  elif ((rc != 0)) && release::history_not_found "$(cat "${err}")"; then
    HISTORY='[]'
  elif ((rc == 0)); then
    HISTORY_ERROR="helm history exited 0 but did not print a JSON array: $(head -c 200 <<<"${out}")"
  else
    HISTORY_ERROR="$(grep -m1 '^Error:' "${err}" || tail -n 1 "${err}")"
    HISTORY_ERROR="helm history failed (exit ${rc}): ${HISTORY_ERROR:-no error message}"
  fi
  rm -f "${err}"
  [[ -n "${HISTORY}" ]]
}

# release::age_seconds TIMESTAMP NOW_EPOCH: seconds from TIMESTAMP to NOW_EPOCH. TIMESTAMP must be
# an RFC 3339 time with a zone, as Helm prints "updated" ("2026-12-05T11:34:10.410530515Z",
# "...+01:00"); anything else fails with no output (GNU date would read "" or "1" as a time of today).
release::age_seconds() {
  local ts="$1" now="$2" epoch
  [[ "${ts}" =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}[T\ ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:?[0-9]{2})$ ]] || return 1
  [[ "${now}" =~ ^[0-9]+$ ]] || return 1
  epoch="$(date -d "${ts}" +%s 2>/dev/null)" || return 1
  [[ "${epoch}" =~ ^-?[0-9]+$ ]] || return 1
  printf '%s\n' "$((now - epoch))"
}

# release::pending_action UPDATED NOW_EPOCH GRACE_S: what to do with a release left pending-*:
# "recover AGE" when it is at least GRACE_S old, else "wait AGE" — and "wait unknown" when UPDATED
# cannot be read: an age we cannot tell is treated as young (another deploy may still be running),
# never as old (recovering would roll back or remove a release under a running deploy).
release::pending_action() {
  local age
  if ! age="$(release::age_seconds "$1" "$2")"; then
    echo "wait unknown"
  elif ((age >= $3)); then
    echo "recover ${age}"
  else
    echo "wait ${age}"
  fi
}

# release::only_this_install HISTORY_JSON: true when the history is exactly one revision, number 1:
# what a first install of this run leaves. Only such a release may be uninstalled by the script;
# any other history (revisions someone else made, or an install that raced ours) is never removed.
release::only_this_install() {
  jq -e 'type == "array" and length == 1 and .[0].revision == 1' <<<"$1" >/dev/null 2>&1
}

# release::rollback REVISION: `helm rollback RELEASE REVISION --wait`; when it fails, wait
# ROLLBACK_RETRY_DELAY_S and try exactly once more (an API-server blip, a webhook timeout or a
# concurrent operation should not leave the release broken). Returns 1 when both attempts failed,
# with Helm's last error in ROLLBACK_ERROR. Prints each command; DRY_RUN only prints it.
release::rollback() {
  local rev="$1" attempt err
  ROLLBACK_ERROR=""
  err="$(mktemp)"
  for attempt in 1 2; do
    if util::run "${H[@]}" rollback "${RELEASE}" "${rev}" --wait --timeout "${TIMEOUT_S}s" >&2 2>"${err}"; then
      cat "${err}" >&2
      rm -f "${err}"
      ((attempt == 1)) || timeline "helm rollback to revision ${rev} succeeded on the retry"
      return 0
    fi
    cat "${err}" >&2
    ROLLBACK_ERROR="$(grep -m1 '^Error:' "${err}" | cut -c1-400 || true)"
    ROLLBACK_ERROR="${ROLLBACK_ERROR:-helm rollback exited non-zero without an error message}"
    if ((attempt == 1)); then
      log::warn "helm rollback to revision ${rev} failed: ${ROLLBACK_ERROR}; retrying once in ${ROLLBACK_RETRY_DELAY_S}s"
      timeline "helm rollback to revision ${rev} failed (${ROLLBACK_ERROR}); retrying once in ${ROLLBACK_RETRY_DELAY_S}s"
      sleep "${ROLLBACK_RETRY_DELAY_S}"
    fi
  done
  rm -f "${err}"
  timeline "helm rollback to revision ${rev} failed again on the retry: ${ROLLBACK_ERROR}"
  return 1
}

# release::capture_state: for a person who has to look: the release's `helm status` and last
# revisions on stderr, and the last 5 revisions in STATE_HISTORY for the summary.
release::capture_state() {
  log::info "state of release ${RELEASE} in ${NAMESPACE} (helm history, helm status):"
  if release::read_history; then
    STATE_HISTORY="$(jq -c '.[-5:] | map({revision, status, updated, description})' <<<"${HISTORY}")"
    "${H[@]}" history "${RELEASE}" --max 5 >&2 2>/dev/null || true
    "${H[@]}" status "${RELEASE}" >&2 2>/dev/null || true
  else
    log::warn "could not read the release's history: ${HISTORY_ERROR}"
  fi
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

# The recorded series the deploy verification reads (self-healing/alerts.yaml, group sli): the
# platform's one definition of user traffic and 5xx, also read by the alerts and the canary
# analysis. Nothing here recomputes it from http_requests_total.
RELEASE_RECORDED_ERRORS=selfheal:http_errors:rate1m
RELEASE_RECORDED_REQUESTS=selfheal:http_requests:rate1m
RELEASE_RECORDED_RATIO=selfheal:http_error_ratio:rate1m

# release::prometheus_ratio_query NAMESPACE SERVICE WINDOW: the Service's 5xx ratio over WINDOW
# from the recorded 1m rates (every track of the release; empty without requests).
release::prometheus_ratio_query() {
  local sel="namespace=\"$1\",job=\"$2\""
  printf 'sum(avg_over_time(%s{%s}[%s])) / (sum(avg_over_time(%s{%s}[%s])) > 0)\n' \
    "${RELEASE_RECORDED_ERRORS}" "${sel}" "$3" "${RELEASE_RECORDED_REQUESTS}" "${sel}" "$3"
}

# release::recording_rules_loaded: the body of /api/v1/rules on stdin loads the recording rules
# the query reads.
release::recording_rules_loaded() {
  jq -e --arg e "${RELEASE_RECORDED_ERRORS}" --arg r "${RELEASE_RECORDED_REQUESTS}" \
    '[.data.groups[]?.rules[]? | select(.type == "recording") | .name] as $n | ($n | index($e)) != null and ($n | index($r)) != null' \
    >/dev/null 2>&1
}

# release::verify_prometheus SERVICE: the Service's 5xx ratio from Prometheus' recorded series.
# Skipped (warning + timeline) when Prometheus is unreachable or does not load the recording
# rules: a monitoring problem must not roll back a release that passed every other check, but
# the operator who asked for the gate must see that it did not run. Skipped (info) when the
# rules are loaded but recorded no request of the Service in the window (no traffic yet).
release::verify_prometheus() {
  local svc="$1" q out ratio
  if ! out="$(curl -fsS -m 10 "${PROMETHEUS%/}/api/v1/rules?type=record" 2>/dev/null)"; then
    log::warn "Prometheus at ${PROMETHEUS} is not reachable: error-rate check skipped"
    timeline "Prometheus not reachable: error-rate check skipped"
    return 0
  fi
  if ! release::recording_rules_loaded <<<"${out}"; then
    log::warn "Prometheus at ${PROMETHEUS} does not load the recording rules ${RELEASE_RECORDED_ERRORS} and ${RELEASE_RECORDED_REQUESTS} (self-healing/rules/*.rules.yaml, or self-healing/prometheusrules/*.yaml on kube-prometheus-stack): error-rate check skipped"
    timeline "Prometheus has no ${RELEASE_RECORDED_RATIO%%:rate*} recording rules: error-rate check skipped"
    return 0
  fi
  q="$(release::prometheus_ratio_query "${NAMESPACE}" "${svc}" "${PROMETHEUS_WINDOW}")"
  if ! out="$(curl -fsS -m 10 -G --data-urlencode "query=${q}" "${PROMETHEUS%/}/api/v1/query" 2>/dev/null)"; then
    log::warn "Prometheus at ${PROMETHEUS} did not answer the error-ratio query: error-rate check skipped"
    timeline "Prometheus query failed: error-rate check skipped"
    return 0
  fi
  ratio="$(jq -r '.data.result[0].value[1] // empty' <<<"${out}" 2>/dev/null)"
  if [[ -z "${ratio}" || "${ratio}" == NaN ]]; then
    log::info "Prometheus recorded no user request of service/${svc} in the last ${PROMETHEUS_WINDOW}: error-rate check skipped"
    return 0
  fi
  if awk -v r="${ratio}" -v max="${MAX_ERROR_RATIO}" 'BEGIN { exit !(r > max) }'; then
    REASON="Prometheus: 5xx ratio of service/${svc} over ${PROMETHEUS_WINDOW} (${RELEASE_RECORDED_ERRORS} / ${RELEASE_RECORDED_REQUESTS}) is ${ratio} (more than ${MAX_ERROR_RATIO})"
    return 1
  fi
  log::ok "Prometheus: 5xx ratio of service/${svc} is ${ratio}"
}
