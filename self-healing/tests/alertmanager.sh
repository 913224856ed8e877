#!/usr/bin/env bash
# Live test of the alert path, no cluster: real Prometheus -> real Alertmanager -> a Slack
# receiver, all on free 127.0.0.1 ports.
#   - a series source (a small Python HTTP server) exports selfheal-controller's metric names
#     (controller/src/metrics.rs) and kube-state-metrics' crash-loop series; what it exports is
#     switched by the test (a JSON state file it reads at every scrape, counters rise per scrape);
#   - Prometheus (hack/tools.sh install prometheus) scrapes it every 2s and evaluates
#     self-healing/rules/workshop.rules.yaml as shipped (10s evaluation, `for:` <= 30s);
#   - Alertmanager (hack/tools.sh install alertmanager) runs self-healing/alertmanager/alertmanager.yaml
#     with two kinds of change only, both checked with a diff: the slack_api_url_file line points at
#     a file holding the receiver's URL, and group_wait / group_interval are 1s / 5s;
#   - the receiver (Python) records every POST body and answers "ok" like a Slack incoming webhook.
# Checks: the alerts fire in Prometheus; Alertmanager routes them (workshop -> workshop-slack, info
# -> null); one Slack message carries both alerts of one group; the crash-loop alert of a
# namespace the healer is recycling in is inhibited (and another namespace's is delivered); after
# the condition clears a [RESOLVED] message arrives. Stops everything it starts.
# Prerequisites: prometheus, alertmanager/amtool (built on demand); curl, jq, python3.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../hack/lib.sh"

usage() {
  cat <<EOF
Usage: self-healing/tests/alertmanager.sh [-h|--help]

Runs Prometheus with the workshop rules, Alertmanager with the example configuration and a
Slack-compatible receiver on loopback ports; checks firing, routing, grouping, inhibition and
resolve messages; prints "alertmanager: N passed, N failed". Takes about 2 minutes.

Environment:
  KEEP_TMP=1      keep the temporary directory (configs, logs, received messages) for debugging

Example:
  self-healing/tests/alertmanager.sh
EOF
}

util::no_arguments "$@"

SH="${REPO_ROOT}/self-healing"
RULES="${SH}/rules/workshop.rules.yaml"
AM_EXAMPLE="${SH}/alertmanager/alertmanager.yaml"

util::require_tools curl jq python3
command -v prometheus >/dev/null 2>&1 || "${REPO_ROOT}/hack/tools.sh" install prometheus
if ! command -v alertmanager >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; then
  "${REPO_ROOT}/hack/tools.sh" install alertmanager
fi
util::require_tools prometheus alertmanager amtool

util::scratch_dir


SRC_PORT="$(util::free_port)"
RCV_PORT="$(util::free_port)"
PROM_PORT="$(util::free_port)"
AM_PORT="$(util::free_port)"
PROM="http://127.0.0.1:${PROM_PORT}"
AM="http://127.0.0.1:${AM_PORT}"

# -- the series source and the receiver: one helper, two modes ---------------------------------------
cat >"${TMP}/helper.py" <<'EOF'
"""series PORT STATE: /controller and /ksm from STATE (JSON: {"gauges": {series: value},
"rising": [series], "flat": [series]}, read at every request; a rising counter gains 1 per
scrape of its path). receiver PORT OUT: append every POST as a JSON line {path, body}; answer ok."""
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

mode, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
counters, lock = {}, threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, body, ctype):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if mode != "series":
            return self.send_error(404)
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        job = self.path.strip("/")
        lines = []
        with lock:
            for s, v in state.get(job, {}).get("gauges", {}).items():
                lines.append(f"{s} {v}")
            for s in state.get(job, {}).get("rising", []):
                counters[s] = counters.get(s, 0) + 1
                lines.append(f"{s} {counters[s]}")
            for s in state.get(job, {}).get("flat", []):
                lines.append(f"{s} {counters.get(s, 0)}")
        self.reply(("\n".join(lines) + "\n").encode(), "text/plain; version=0.0.4; charset=utf-8")

    def do_POST(self):
        if mode != "receiver":
            return self.send_error(404)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        with lock, open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"path": self.path, "body": json.loads(body)}) + "\n")
        self.reply(b"ok", "text/plain")


ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
EOF

# state STAGE: what the series source exports. The controller's series get the target labels
# (namespace=selfheal-system, pod=...); its recycles_total's own `namespace` becomes
# exported_namespace, as under the Prometheus Operator. kube-state-metrics' are honoured.
state() {
  local open=1 closed=0
  [[ "$1" == cleared ]] && open=0 closed=1
  cat >"${TMP}/state.json.new" <<EOF
{"controller": {
   "gauges": {"selfheal_controller_leader": 1,
              "selfheal_controller_circuit_breakers{state=\"Open\"}": ${open},
              "selfheal_controller_circuit_breakers{state=\"HalfOpen\"}": 0,
              "selfheal_controller_circuit_breakers{state=\"Closed\"}": ${closed}},
   "rising": ["selfheal_controller_healing_actions_total{action=\"evict\",outcome=\"failed\"}",
              "selfheal_controller_healing_actions_total{action=\"rollout_restart\",outcome=\"failed\"}",
              "selfheal_controller_recycles_total{namespace=\"demo\",reason=\"crash_loop_back_off\"}"],
   "flat": ["selfheal_controller_giveups_total", "selfheal_controller_evictions_blocked_total",
            "selfheal_controller_circuit_scale_failures_total"]},
 "ksm": {
   "gauges": {"kube_pod_container_status_waiting_reason{namespace=\"demo\",pod=\"web-1\",container=\"app\",reason=\"CrashLoopBackOff\"}": 1,
              "kube_pod_container_status_waiting_reason{namespace=\"shop\",pod=\"cart-1\",container=\"app\",reason=\"CrashLoopBackOff\"}": 1}}}
EOF
  mv "${TMP}/state.json.new" "${TMP}/state.json"
}
state firing

log::step "starting the series source on 127.0.0.1:${SRC_PORT} and the Slack receiver on 127.0.0.1:${RCV_PORT}"
python3 "${TMP}/helper.py" series "${SRC_PORT}" "${TMP}/state.json" >"${TMP}/series.log" 2>&1 &
util::trap_add "util::stop $!"
: >"${TMP}/received.jsonl"
python3 "${TMP}/helper.py" receiver "${RCV_PORT}" "${TMP}/received.jsonl" >"${TMP}/receiver.log" 2>&1 &
util::trap_add "util::stop $!"
util::wait_for "series source" 20 curl -fsS -m 2 "http://127.0.0.1:${SRC_PORT}/controller" ||
  log::fatal "the series source did not start: $(cat "${TMP}/series.log")"

# -- Alertmanager on the example, with only the receiver URL file and the timings changed ---------------
printf 'http://127.0.0.1:%s/slack\n' "${RCV_PORT}" >"${TMP}/slack-url"
mkdir -p "${TMP}/am"
sed -e "s|^\(  slack_api_url_file: \).*|\1${TMP}/slack-url|" \
  -e 's|^\( *group_wait: \).*|\11s|' -e 's|^\( *group_interval: \).*|\15s|' \
  "${AM_EXAMPLE}" >"${TMP}/am/alertmanager.yaml"
# changed_only: the copy differs from the example in those lines and in nothing else.
changed_only() {
  local re='^ *(slack_api_url_file|group_wait|group_interval):'
  diff <(grep -vE "${re}" "${AM_EXAMPLE}") <(grep -vE "${re}" "${TMP}/am/alertmanager.yaml") >&2 &&
    [[ "$(grep -cE "${re}" "${AM_EXAMPLE}")" == "$(grep -cE "${re}" "${TMP}/am/alertmanager.yaml")" ]] &&
    grep -q "slack_api_url_file: ${TMP}/slack-url" "${TMP}/am/alertmanager.yaml"
}
check::run "the test's Alertmanager config is the example with only the URL file and group timings changed" changed_only
check::run "amtool check-config of the example and of the test copy" \
  amtool check-config "${AM_EXAMPLE}" "${TMP}/am/alertmanager.yaml"

log::step "starting Alertmanager ${ALERTMANAGER_VERSION} on ${AM} (clustering off)"
alertmanager --config.file="${TMP}/am/alertmanager.yaml" --storage.path="${TMP}/am/data" \
  --web.listen-address="127.0.0.1:${AM_PORT}" --cluster.listen-address= --log.level=info \
  >"${TMP}/alertmanager.log" 2>&1 &
util::trap_add "util::stop $!"

cat >"${TMP}/prometheus.yml" <<EOF
global: {scrape_interval: 2s, scrape_timeout: 1s, evaluation_interval: 2s}
rule_files: ['${RULES}']
alerting:
  alertmanagers:
    - static_configs: [{targets: ['127.0.0.1:${AM_PORT}']}]
scrape_configs:
  - job_name: selfheal-controller
    metrics_path: /controller
    static_configs:
      - targets: ['127.0.0.1:${SRC_PORT}']
        labels: {namespace: selfheal-system, pod: selfheal-controller-0}
  - job_name: kube-state-metrics
    honor_labels: true
    metrics_path: /ksm
    static_configs:
      - targets: ['127.0.0.1:${SRC_PORT}']
EOF
log::step "starting Prometheus ${PROMETHEUS_VERSION} (module version) on ${PROM} with ${RULES#"${REPO_ROOT}/"}"
prometheus --config.file="${TMP}/prometheus.yml" --storage.tsdb.path="${TMP}/prom" \
  --web.listen-address="127.0.0.1:${PROM_PORT}" --log.level=warn >"${TMP}/prometheus.log" 2>&1 &
util::trap_add "util::stop $!"

check::run "Alertmanager is ready" util::wait_for "Alertmanager /-/ready" 60 curl -fsS -m 2 "${AM}/-/ready"
check::run "Prometheus is ready" util::wait_for "Prometheus /-/ready" 60 curl -fsS -m 2 "${PROM}/-/ready"
T0="$(date +%s)"
am_discovered() { curl -fsS -m 5 "${PROM}/api/v1/alertmanagers" | jq -e --arg u "${AM}/api/v2/alerts" '[.data.activeAlertmanagers[].url] | index($u) != null' >/dev/null; }
check::run "Prometheus sends to this Alertmanager" util::wait_for "Alertmanager in /api/v1/alertmanagers" 30 am_discovered
targets_up() { [[ "$(curl -fsS -m 5 -G --data-urlencode 'query=sum(up)' "${PROM}/api/v1/query" | jq -r '.data.result[0].value[1] // 0')" == 2 ]]; }
check::run "Prometheus scrapes the controller and kube-state-metrics series" util::wait_for "both targets up" 30 targets_up

# -- firing in Prometheus ---------------------------------------------------------------------------
# firing NAME N: exactly N instances of the alert fire in Prometheus.
firing() {
  [[ "$(curl -fsS -m 5 "${PROM}/api/v1/alerts" | jq --arg n "$1" '[.data.alerts[] | select(.labels.alertname == $n and .state == "firing")] | length')" == "$2" ]]
}
check::run "Prometheus fires SelfhealHealingActionsFailing for two actions (evict, rollout_restart)" \
  util::wait_for "SelfhealHealingActionsFailing x2 firing" 120 firing SelfhealHealingActionsFailing 2
check::run "Prometheus fires SelfhealCircuitBreakerOpen" util::wait_for "SelfhealCircuitBreakerOpen firing" 60 firing SelfhealCircuitBreakerOpen 1
check::run "Prometheus fires SelfhealControllerRecycling (info) for namespace demo" \
  util::wait_for "SelfhealControllerRecycling firing" 60 firing SelfhealControllerRecycling 1
check::run "Prometheus fires SelfhealPodCrashLooping for demo and shop" util::wait_for "SelfhealPodCrashLooping x2 firing" 60 firing SelfhealPodCrashLooping 2
log::info "all alerts firing in Prometheus $(($(date +%s) - T0))s after it started"

# -- routing in Alertmanager -------------------------------------------------------------------------
# am_alert NAME JQ-FILTER: some alert of that name in Alertmanager passes the filter.
am_alert() { curl -fsS -m 5 "${AM}/api/v2/alerts" | jq -e --arg n "$1" "[.[] | select(.labels.alertname == \$n) | select($2)] | length > 0" >/dev/null; }
routed() {
  am_alert SelfhealHealingActionsFailing '.receivers | map(.name) == ["workshop-slack"]' &&
    am_alert SelfhealCircuitBreakerOpen '.receivers | map(.name) == ["workshop-slack"]' &&
    am_alert SelfhealControllerRecycling '.receivers | map(.name) == ["null"]'
}
check::run "Alertmanager routes workshop alerts to workshop-slack and the info alert to null" util::wait_for "routing" 30 routed
inhibited() {
  am_alert SelfhealPodCrashLooping '.labels.namespace == "demo" and .status.state == "suppressed" and (.status.inhibitedBy | length) > 0' &&
    am_alert SelfhealPodCrashLooping '.labels.namespace == "shop" and .status.state == "active"'
}
check::run "Alertmanager inhibits demo's SelfhealPodCrashLooping (the healer recycles there), not shop's" util::wait_for "inhibition" 30 inhibited

# -- what the receiver got ---------------------------------------------------------------------------
# messages JQ-FILTER: the received Slack payloads (bodies) passing the filter, one JSON per line.
messages() { jq -c ".body | select($1)" "${TMP}/received.jsonl"; }
title_is() { printf '(.attachments[0].title | startswith("%s"))' "$1"; }
got() { [[ -n "$(messages "$1")" ]]; }
slack_format() {
  got "$(title_is '[FIRING:1] SelfhealCircuitBreakerOpen (warning, selfheal-system)') and .channel == \"#selfheal-workshop\" and .attachments[0].color == \"danger\" and (.attachments[0].text | contains(\"Runbook: https://github.com/selfheal-io/selfheal/blob/main/docs/runbooks/SelfhealCircuitBreakerOpen.md\")) and (.attachments[0].fallback | length) > 0"
}
check::run "the receiver gets a Slack payload (channel, attachment title/color/text with the runbook)" util::wait_for "Slack message" 60 slack_format
grouped() {
  got "$(title_is '[FIRING:2] SelfhealHealingActionsFailing') and (.attachments[0].text | contains(\"rollout_restart actions keep failing\") and contains(\"evict actions keep failing\"))"
}
check::run "grouping: both SelfhealHealingActionsFailing alerts arrive in one message" util::wait_for "grouped message" 60 grouped
ungrouped_never() { [[ -z "$(messages "$(title_is '[FIRING:1] SelfhealHealingActionsFailing')")" ]]; }
check::run "grouping: no message carries one of them alone" ungrouped_never
shop_delivered() { got "$(title_is '[FIRING:1] SelfhealPodCrashLooping (warning, shop)')"; }
check::run "SelfhealPodCrashLooping of shop is delivered" util::wait_for "shop's crash loop message" 60 shop_delivered
# Give Alertmanager two more group intervals (5s each) to send anything it would send.
sleep 12
demo_held() { [[ -z "$(messages '.attachments[0].title | contains("SelfhealPodCrashLooping") and contains("demo")')" ]]; }
check::run "inhibition: no message for SelfhealPodCrashLooping of demo" demo_held
null_silent() { [[ -z "$(messages '.attachments[0].title | contains("SelfhealControllerRecycling")')" ]]; }
check::run "the info alert (SelfhealControllerRecycling) is sent nowhere" null_silent

# -- resolve -----------------------------------------------------------------------------------------
log::step "clearing the condition: every CircuitBreaker Closed"
state cleared
T_CLEAR="$(date +%s)"
check::run "SelfhealCircuitBreakerOpen clears in Prometheus" util::wait_for "SelfhealCircuitBreakerOpen gone" 60 firing SelfhealCircuitBreakerOpen 0
resolved() {
  got "$(title_is '[RESOLVED] SelfhealCircuitBreakerOpen (warning, selfheal-system)') and .channel == \"#selfheal-workshop\" and .attachments[0].color == \"good\""
}
check::run "a [RESOLVED] Slack message arrives (send_resolved)" util::wait_for "resolved message" 60 resolved
log::info "resolved message $(($(date +%s) - T_CLEAR))s after the condition cleared"

no_notify_errors() { ! grep -iE 'level=(error|warn).*(notify|slack)' "${TMP}/alertmanager.log" >&2; }
check::run "Alertmanager logged no notification error" no_notify_errors

if ((CHECK_FAILED)); then
  log::info "received messages:"
  jq -c '.body | {channel, title: .attachments[0].title}' "${TMP}/received.jsonl" >&2 || true
  log::info "Alertmanager log:"
  tail -20 "${TMP}/alertmanager.log" >&2 || true
  curl -fsS -m 5 "${AM}/api/v2/alerts" | jq -c '.[] | {labels: .labels.alertname, ns: .labels.namespace, status, receivers}' >&2 || true
fi
log::info "received $(wc -l <"${TMP}/received.jsonl") Slack messages"
check::summary alertmanager
