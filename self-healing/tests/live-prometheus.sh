#!/usr/bin/env bash
# Live test of the alert rules, no cluster: a real Prometheus server (pinned, built from its Go
# module) on 127.0.0.1 scrapes the real selfheal-app binary every 2s with the WORKSHOP rules
# loaded exactly as shipped (10s evaluation, 1m rate window, 30s `for:`). A load generator sends
# GET / and GET /ready. With /ready failing on purpose (an unready pod) SelfhealHighErrorRatio
# stays silent; injecting errors through POST /crash?mode=errors makes it fire; mode=reset clears
# it. Prints how long firing and clearing took. Stops everything it starts.
# The recorded series (the sli group) are checked on the way: the error ratio exists and is 0
# while only /ready fails, and is the injected share while errors are injected; then the two
# other readers of that series ask this Prometheus: the deploy verification's gate
# (release::verify_prometheus in self-healing/lib/release.sh) fails on it, and selfheal-canary's
# Prometheus path reports it for the stable track.
# Prerequisites: cargo; prometheus (hack/tools.sh install prometheus, built on demand); curl, jq, python3.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../hack/lib.sh"

usage() {
  cat <<EOF
Usage: self-healing/tests/live-prometheus.sh [-h|--help]

Runs Prometheus against the selfheal-app binary on loopback ports, checks the error-rate alert
fires and clears, and prints "live-prometheus: N passed, N failed". Takes about 3 minutes.

Environment:
  ERROR_PERCENT   share of GET / answering 500 while errors are injected (default 50)
  KEEP_TMP=1      keep the temporary directory (Prometheus config, logs) for debugging
EOF
}

util::no_arguments "$@"

SH="${REPO_ROOT}/self-healing"
RULES="${SH}/rules/workshop.rules.yaml"
ERROR_PERCENT="${ERROR_PERCENT:-50}"
if ! [[ "${ERROR_PERCENT}" =~ ^[0-9]+$ ]] || ((ERROR_PERCENT < 10 || ERROR_PERCENT > 100)); then
  util::usage_error "ERROR_PERCENT must be 10-100"
fi


util::require_tools cargo curl jq python3
command -v prometheus >/dev/null 2>&1 || "${REPO_ROOT}/hack/tools.sh" install prometheus
util::require_tools prometheus

util::scratch_dir


log::step "building selfheal-app and selfheal-canary (cargo build -p selfheal-app -p selfheal-canary)"
cargo build --locked -p selfheal-app -p selfheal-canary --manifest-path "${REPO_ROOT}/Cargo.toml" >&2
TARGET_DIR="$(cargo metadata --format-version 1 --no-deps --manifest-path "${REPO_ROOT}/Cargo.toml" | jq -r .target_directory)"
APP_BIN="${TARGET_DIR}/debug/selfheal-app"
CANARY_BIN="${TARGET_DIR}/debug/selfheal-canary"
[[ -x "${APP_BIN}" && -x "${CANARY_BIN}" ]] || log::fatal "no binaries at ${APP_BIN} and ${CANARY_BIN}"

APP_PORT="$(util::free_port)"
PROM_PORT="$(util::free_port)"
APP="http://127.0.0.1:${APP_PORT}"
PROM="http://127.0.0.1:${PROM_PORT}"

log::step "starting selfheal-app on ${APP} (--enable-chaos)"
"${APP_BIN}" --listen "127.0.0.1:${APP_PORT}" --enable-chaos --shutdown-delay-secs 0 >"${TMP}/app.log" 2>&1 &
APP_PID=$!
util::trap_add "util::stop ${APP_PID}"
util::wait_for "selfheal-app /health" 30 curl -fsS -m 2 "${APP}/health" || { tail -20 "${TMP}/app.log" >&2; log::fatal "selfheal-app did not start"; }

# The labels kube-prometheus-stack would add (namespace from the target, track from the pod).
cat >"${TMP}/prometheus.yml" <<EOF
global:
  scrape_interval: 2s
  scrape_timeout: 1s
  evaluation_interval: 2s
rule_files:
  - ${RULES}
scrape_configs:
  - job_name: selfheal-app
    static_configs:
      - targets: ["127.0.0.1:${APP_PORT}"]
        labels: {namespace: live-test, track: stable}
EOF
log::step "starting Prometheus ${PROMETHEUS_VERSION} (module version) on ${PROM} with ${RULES#"${REPO_ROOT}/"}"
prometheus --config.file="${TMP}/prometheus.yml" --storage.tsdb.path="${TMP}/data" \
  --web.listen-address="127.0.0.1:${PROM_PORT}" --log.level=warn >"${TMP}/prometheus.log" 2>&1 &
PROM_PID=$!
util::trap_add "util::stop ${PROM_PID}"

prom_query() { curl -fsS -m 5 -G --data-urlencode "query=$1" "${PROM}/api/v1/query"; }
# alert_state NAME: pending | firing | "" (absent) of the alert in /api/v1/alerts.
alert_state() { curl -fsS -m 5 "${PROM}/api/v1/alerts" | jq -r --arg n "$1" '[.data.alerts[] | select(.labels.alertname == $n) | .state] | first // ""'; }
alert_is() { [[ "$(alert_state "$1")" == "$2" ]]; }

check::run "Prometheus is ready" util::wait_for "Prometheus /-/ready" 60 curl -fsS -m 2 "${PROM}/-/ready"
target_up() { [[ "$(prom_query 'up{job="selfheal-app"}' | jq -r '.data.result[0].value[1] // ""')" == 1 ]]; }
check::run "Prometheus scrapes selfheal-app (up == 1)" util::wait_for "target up" 30 target_up
rules_loaded() {
  local n
  n="$(curl -fsS -m 5 "${PROM}/api/v1/rules?type=alert" | jq '[.data.groups[].rules[] | select(.name | startswith("Selfheal"))] | length')"
  [[ "${n}" == "$(grep -c -- '- alert:' "${RULES}")" ]]
}
check::run "every workshop alert rule is loaded" util::wait_for "rules loaded" 30 rules_loaded
records_loaded() {
  local n
  n="$(curl -fsS -m 5 "${PROM}/api/v1/rules?type=record" | jq '[.data.groups[].rules[] | select(.name | startswith("selfheal:"))] | length')"
  [[ "${n}" == "$(grep -c -- '- record:' "${RULES}")" ]]
}
check::run "every workshop recording rule is loaded" util::wait_for "recording rules loaded" 30 records_loaded
# recorded_ratio: the recorded 1m error ratio of this app's stable track ("" when absent).
SERIES='selfheal:http_error_ratio:rate1m{namespace="live-test", job="selfheal-app", track="stable"}'
recorded_ratio() { prom_query "${SERIES}" | jq -r '.data.result[0].value[1] // ""'; }

# -- traffic: GET / and GET /ready, about 20 requests a second, for at most 10 minutes --------------
python3 - "${APP}" >"${TMP}/load.log" 2>&1 <<'EOF' &
import sys, time, urllib.request, urllib.error
base, deadline, n = sys.argv[1], time.time() + 600, 0
while time.time() < deadline:
    for path in ("/", "/", "/ready"):
        try:
            urllib.request.urlopen(base + path, timeout=2).read()
        except urllib.error.HTTPError:
            pass
        except OSError:
            pass
        n += 1
    time.sleep(0.1)
EOF
LOAD_PID=$!
util::trap_add "util::stop ${LOAD_PID}"

crash() { curl -fsS -m 5 -XPOST "${APP}/crash?$1" >/dev/null; }
check::run "inject unready (/ready answers 503, like an unready pod)" crash "mode=unready"
ready_503s_seen() {
  [[ "$(prom_query 'sum(rate(http_requests_total{job="selfheal-app", route="/ready", status="503"}[1m])) > 0 and sum(rate(http_requests_total{job="selfheal-app", route="/"}[1m])) > 0' | jq '.data.result | length')" == 1 ]]
}
check::run "Prometheus sees the traffic and the 503s of /ready" util::wait_for "/ready 503s in Prometheus" 60 ready_503s_seen
# Let the app group evaluate twice more (20 s) with the 503s in its window: no pending, no firing.
group_evaluated_after() {
  local since="$1"
  curl -fsS -m 5 "${PROM}/api/v1/rules" | jq -e --argjson s "${since}" \
    '[.data.groups[] | select(.name == "selfheal-workshop-app") | .lastEvaluation | sub("\\.[0-9]+"; "") | fromdateiso8601] | first > $s' >/dev/null
}
T_SILENT="$(($(date +%s) + 20))"
util::wait_for "two evaluations of the app group" 60 group_evaluated_after "${T_SILENT}" || true
silent_despite_503s() { [[ -z "$(alert_state SelfhealHighErrorRatio)" ]]; }
check::run "503s of /ready do not count: SelfhealHighErrorRatio stays silent" silent_despite_503s
ratio_is_zero() { [[ "$(recorded_ratio)" == 0 ]]; }
check::run "the recorded ${SERIES} exists and is 0 while only /ready answers 503" util::wait_for "recorded ratio 0" 30 ratio_is_zero

# -- inject errors: the alert goes pending, then fires -----------------------------------------------
check::run "inject errors (POST /crash?mode=errors&percent=${ERROR_PERCENT})" crash "mode=errors&percent=${ERROR_PERCENT}"
T_INJECT="$(date +%s)"
check::run "SelfhealHighErrorRatio goes pending" util::wait_for "SelfhealHighErrorRatio pending" 60 alert_is SelfhealHighErrorRatio pending
check::run "SelfhealHighErrorRatio fires (workshop for: 30s)" util::wait_for "SelfhealHighErrorRatio firing" 120 alert_is SelfhealHighErrorRatio firing
FIRE_S=$(($(date +%s) - T_INJECT))
log::info "SelfhealHighErrorRatio fired ${FIRE_S}s after the errors were injected"
firing_alert_is_complete() {
  curl -fsS -m 5 "${PROM}/api/v1/alerts" | jq -e '
    .data.alerts[] | select(.labels.alertname == "SelfhealHighErrorRatio" and .state == "firing") |
    select(.labels.severity == "critical" and .labels.profile == "workshop" and .labels.namespace == "live-test"
           and .labels.job == "selfheal-app" and .labels.track == "stable") |
    select(.annotations.summary | test("^live-test/selfheal-app answers [0-9.]+% 5xx\\.$")) |
    select(.annotations.description | test("of the requests to selfheal-app in namespace live-test")) |
    select(.annotations.runbook_url | endswith("/docs/runbooks/SelfhealHighErrorRatio.md"))' >/dev/null
}
check::run "the firing alert has severity, profile, namespace/job/track labels and rendered annotations" firing_alert_is_complete
check::run "it fired within 90s of the injection (workshop promise: about a minute; took ${FIRE_S}s)" test "${FIRE_S}" -le 90
# Injected on GET / only, and /ready does not count: the ratio climbs to the injected share as
# the 1m window fills with the errors (a minute after the injection).
ratio_near_injected() {
  local r
  r="$(recorded_ratio)"
  [[ -n "${r}" ]] && awk -v r="${r}" -v p="${ERROR_PERCENT}" 'BEGIN { exit !(r > p / 100 - 0.1 && r < p / 100 + 0.1) }'
}
check::run "the recorded error ratio reaches the injected share (${ERROR_PERCENT} % of user requests, +- 10 points)" \
  util::wait_for "recorded ratio near ${ERROR_PERCENT} %" 60 ratio_near_injected
log::info "recorded ${SERIES}: $(recorded_ratio)"
deploy_gate_fails() (
  # shellcheck source=self-healing/lib/release.sh
  source "${SH}/lib/release.sh"
  PROMETHEUS="${PROM}" NAMESPACE=live-test PROMETHEUS_WINDOW=10s MAX_ERROR_RATIO=0.05
  START_EPOCH="$(date +%s)" TIMELINE=() REASON=""
  ! release::verify_prometheus selfheal-app && [[ "${REASON}" == *"5xx ratio of service/selfheal-app"* ]] &&
    log::info "deploy gate: ${REASON}"
)
check::run "the deploy verification's Prometheus gate (release::verify_prometheus) reads the recorded series and fails" deploy_gate_fails
canary_reads_recorded() {
  local out rc=0
  out="$("${CANARY_BIN}" analyze --prometheus "${PROM}" --selector 'namespace="live-test",job="selfheal-app"' --window 10s 2>"${TMP}/canary.err")" || rc=$?
  log::info "selfheal-canary (exit ${rc}): $(jq -c '{verdict, stable}' <<<"${out}")"
  # Only a stable track here: no canary requests, so the verdict is inconclusive (2).
  [[ "${rc}" == 2 ]] && jq -e '.source | startswith("prometheus:")' <<<"${out}" >/dev/null &&
    jq -e --argjson p "${ERROR_PERCENT}" '.stable.requests > 0 and (.stable.error_ratio - $p / 100 | fabs) < 0.15 and .stable.p95_seconds != null' <<<"${out}" >/dev/null
}
check::run "selfheal-canary's Prometheus path reads the recorded series: the stable track's error ratio is the injected share" canary_reads_recorded

# -- reset: the alert clears -------------------------------------------------------------------------
check::run "reset faults (POST /crash?mode=reset)" crash "mode=reset"
T_RESET="$(date +%s)"
absent() { [[ -z "$(alert_state "$1")" ]]; }
check::run "SelfhealHighErrorRatio clears after reset" util::wait_for "SelfhealHighErrorRatio gone" 150 absent SelfhealHighErrorRatio
CLEAR_S=$(($(date +%s) - T_RESET))
log::info "SelfhealHighErrorRatio cleared ${CLEAR_S}s after the reset"
no_rule_errors() {
  curl -fsS -m 5 "${PROM}/api/v1/rules" | jq -e '[.data.groups[].rules[] | select(.health != "ok")] | length == 0' >/dev/null
}
check::run "no rule evaluation errors (every rule health ok)" no_rule_errors

if ((CHECK_FAILED)); then
  log::info "Prometheus log:"
  tail -20 "${TMP}/prometheus.log" >&2 || true
  curl -fsS -m 5 "${PROM}/api/v1/alerts" >&2 || true
fi
log::info "measured: fired ${FIRE_S}s after injecting errors, cleared ${CLEAR_S}s after reset"
check::summary live-prometheus
