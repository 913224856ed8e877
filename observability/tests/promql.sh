#!/usr/bin/env bash
# Every PromQL expression of the dashboard and of the alert and recording rules
# (self-healing/rules/*.rules.yaml; the app chart ships no alerts of its own) evaluated by the real, pinned
# Prometheus against the real binaries: two selfheal-app processes (tracks stable and canary,
# with errors and latency injected on the canary) and, when a cluster is reachable, the real
# selfheal-controller (dry-run, watching one empty namespace, leader election off). Scrape
# labels are the ones the chart's ServiceMonitor gives on a cluster (namespace, job, pod, track).
# Each expression must parse; those whose metrics are all scraped must return data; the rest
# must be explained (observability/tests/promql.py lists which and why).
# Prerequisites: cargo, curl, jq, python3 + PyYAML, prometheus (hack/tools.sh install prometheus).
# shellcheck source=observability/tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: observability/tests/promql.sh [-h|--help]

Starts selfheal-app (x2), selfheal-controller (if a cluster answers at \$KUBECONFIG) and
Prometheus on loopback ports, sends traffic, then evaluates every expression with
observability/tests/promql.py. Ends with "promql: N passed, N failed". About 1 minute after the builds.

Environment:
  KUBECONFIG      cluster for selfheal-controller (default: the local cluster's)
  NO_CONTROLLER=1 do not start the controller (its expressions are then reported, not data-checked)
  CONTROLLER_NAMESPACE  namespace the controller watches (default: obs-promql-empty, which nobody
                  creates); it recycles pods there after 2 restarts
  CONTROLLER_ACT=1  let it evict (default: --dry-run, it only counts what it would do)
  PROMQL_REQUIRE  metric names that must be scraped (waited for up to 180 s), e.g.
                  "selfheal_controller_recycles_total" when a crash-looping pod is in CONTROLLER_NAMESPACE
  KEEP_TMP=1      keep the temporary directory (configs, logs, report.json)
EOF
}

util::no_arguments "$@"
export KUBECONFIG="${KUBECONFIG:-${CLUSTER_KUBECONFIG}}"
util::require_tools cargo curl jq python3
command -v prometheus >/dev/null 2>&1 || "${REPO_ROOT}/hack/tools.sh" install prometheus
util::require_tools prometheus
python3 -c 'import yaml' 2>/dev/null || log::fatal "PyYAML missing: hack/tools.sh install pyyaml"

util::scratch_dir

# targets_up: every scrape target (2 apps, and the controller when started) is up.
targets_up() {
  local want=2
  [[ -n "${CONTROLLER_BIN}" ]] && want=3
  [[ "$(curl -fsS -m 5 -G --data-urlencode 'query=sum(up)' "${PROM}/api/v1/query" | jq -r '.data.result[0].value[1] // 0')" == "${want}" ]]
}
# has_rates: the injected 5xx already show in a 1m rate.
has_rates() {
  [[ "$(curl -fsS -m 5 -G --data-urlencode 'query=count(rate(http_requests_total{status=~"5.."}[1m]) > 0)' "${PROM}/api/v1/query" | jq -r '.data.result[0].value[1] // 0')" != 0 ]]
}

NS=obs-test
# The dashboard's $namespace as a multi-select: the app's namespace and the controller's.
NS_VAR="${NS}${CONTROLLER_NAMESPACE:+|${CONTROLLER_NAMESPACE}}"
JOB=selfheal-app
DASHBOARD="${REPO_ROOT}/observability/dashboards/selfheal.json"
RULES=("${REPO_ROOT}"/self-healing/rules/*.rules.yaml)

APP_BIN="$(obs::cargo_bin selfheal-app selfheal-app)" || log::fatal "building selfheal-app failed"
CONTROLLER_BIN=""
if [[ "${NO_CONTROLLER:-0}" != 1 ]]; then
  if kubectl get --raw /readyz >/dev/null 2>&1; then
    CONTROLLER_BIN="$(obs::cargo_bin selfheal-controller selfheal-controller)" || log::fatal "building selfheal-controller failed"
  else
    log::warn "no cluster at KUBECONFIG=${KUBECONFIG}: selfheal-controller not started, its expressions are not data-checked"
  fi
fi

STABLE_PORT="$(util::free_port)"
CANARY_PORT="$(util::free_port)"
PROM_PORT="$(util::free_port)"
PROM="http://127.0.0.1:${PROM_PORT}"

for track in stable canary; do
  port="${STABLE_PORT}"
  [[ "${track}" == canary ]] && port="${CANARY_PORT}"
  log::step "starting selfheal-app --track ${track} on 127.0.0.1:${port}"
  obs::start "${TMP}/app-${track}.log" "${APP_BIN}" --listen "127.0.0.1:${port}" --track "${track}" \
    --enable-chaos --shutdown-delay-secs 0 --pod-name "${JOB}-${track}-0" --pod-namespace "${NS}"
  util::wait_for "selfheal-app ${track}" 30 curl -fsS -m 2 "http://127.0.0.1:${port}/health" ||
    { tail -20 "${TMP}/app-${track}.log" >&2; log::fatal "selfheal-app ${track} did not start"; }
done

CONTROLLER_SCRAPE=""
if [[ -n "${CONTROLLER_BIN}" ]]; then
  CTRL_PORT="$(util::free_port)"
  # By default a namespace nobody creates, in dry-run: the controller watches it and acts on nothing.
  ctrl_args=(--http-addr "127.0.0.1:${CTRL_PORT}" --namespaces "${CONTROLLER_NAMESPACE:-obs-promql-empty}"
    --leader-election false --healing-policies false --pod-name selfheal-controller-0
    --restart-threshold 1 --min-pod-age-secs 0)
  [[ "${CONTROLLER_ACT:-0}" == 1 ]] || ctrl_args+=(--dry-run)
  log::step "starting selfheal-controller ${ctrl_args[*]}"
  obs::start "${TMP}/controller.log" "${CONTROLLER_BIN}" "${ctrl_args[@]}"
  util::wait_for "selfheal-controller /metrics" 60 curl -fsS -m 2 "http://127.0.0.1:${CTRL_PORT}/metrics" ||
    { tail -20 "${TMP}/controller.log" >&2; log::fatal "selfheal-controller did not start"; }
  CONTROLLER_SCRAPE="  - job_name: selfheal-controller
    static_configs:
      - targets: ['127.0.0.1:${CTRL_PORT}']
        labels: {namespace: selfheal-system, pod: selfheal-controller-0}"
fi

# Labels as the ServiceMonitor gives them: job = Service name, namespace of the target, the pod,
# track from the pod label. The controller's own `namespace` label becomes exported_namespace.
cat >"${TMP}/prometheus.yml" <<EOF
global: {scrape_interval: 2s, scrape_timeout: 1s, evaluation_interval: 2s}
rule_files: ['${REPO_ROOT}/self-healing/rules/workshop.rules.yaml']
scrape_configs:
  - job_name: ${JOB}
    static_configs:
      - targets: ['127.0.0.1:${STABLE_PORT}']
        labels: {namespace: ${NS}, track: stable, pod: ${JOB}-stable-0}
      - targets: ['127.0.0.1:${CANARY_PORT}']
        labels: {namespace: ${NS}, track: canary, pod: ${JOB}-canary-0}
${CONTROLLER_SCRAPE}
EOF
log::step "starting Prometheus ${PROMETHEUS_VERSION} (module version) on ${PROM}"
obs::start "${TMP}/prometheus.log" prometheus --config.file="${TMP}/prometheus.yml" \
  --storage.tsdb.path="${TMP}/data" --web.listen-address="127.0.0.1:${PROM_PORT}" --log.level=warn
util::wait_for "Prometheus ready" 60 curl -fsS -m 2 "${PROM}/-/ready" ||
  { tail -20 "${TMP}/prometheus.log" >&2; log::fatal "Prometheus did not start"; }

log::step "injecting 30 % errors and 20 ms latency on the canary, then sending traffic to both tracks"
curl -fsS -m 5 -XPOST "http://127.0.0.1:${CANARY_PORT}/crash?mode=errors&percent=30" >/dev/null
curl -fsS -m 5 -XPOST "http://127.0.0.1:${CANARY_PORT}/crash?mode=latency&ms=20" >/dev/null
obs::load 600 "http://127.0.0.1:${STABLE_PORT}/" "http://127.0.0.1:${CANARY_PORT}/" \
  "http://127.0.0.1:${STABLE_PORT}/ready" "http://127.0.0.1:${STABLE_PORT}/nope"

util::wait_for "every target up" 30 targets_up || log::fatal "Prometheus does not scrape every target"
util::wait_for "5xx rates in Prometheus" 60 has_rates || log::fatal "no request rates in Prometheus"

# has_series NAME: Prometheus holds at least one series of the metric.
has_series() {
  [[ "$(curl -fsS -m 5 -G --data-urlencode "query=count({__name__=\"$1\"})" "${PROM}/api/v1/query" | jq -r '.data.result[0].value[1] // 0')" != 0 ]]
}
# The alerts read recorded series: wait until the workshop recording rules (10s evaluation) have
# recorded them from the scraped traffic, so they count as present like a scraped metric.
for m in selfheal:http_error_ratio:rate1m selfheal:http_error_ratio:rate5m selfheal:http_request_duration_seconds:p95_rate5m; do
  util::wait_for "recorded ${m}" 60 has_series "${m}" || log::fatal "the recording rules recorded no ${m}"
done
require_args=()
for m in ${PROMQL_REQUIRE:-}; do
  util::wait_for "a series of ${m}" 180 has_series "${m}" || true
  require_args+=(--require "${m}")
done

rule_args=()
for r in "${RULES[@]}"; do rule_args+=(--rules "${r}"); done
log::step "evaluating every expression (observability/tests/promql.py)"
rc=0
python3 "${REPO_ROOT}/observability/tests/promql.py" --prometheus "${PROM}" \
  --var "namespace=${NS_VAR}" --var "job=${JOB}" --dashboard "${DASHBOARD}" "${rule_args[@]}" "${require_args[@]}" \
  --json "${TMP}/report.json" || rc=$?
if ((rc)); then
  tail -5 "${TMP}/prometheus.log" >&2 || true
fi
((rc == 0))
