#!/usr/bin/env bash
# The observability pieces, checked for real (observability/README.md):
#  - the dashboard's structure (observability/tests/dashboard.py, with broken copies rejected);
#  - observability/install.sh: --dry-run prints every command and the rendered values and changes
#    nothing; an unreachable chart repository fails fast before anything changes; bad input exits 2;
#  - the prometheus-operator CRDs (from hack/tools.sh prometheus-operator-crds, applied server-side
#    when the cluster has none, removed again at the end) validate the chart's ServiceMonitor and
#    PrometheusRule and the self-healing PrometheusRules server-side; a broken one is refused; with
#    the CRDs served, `helm install --dry-run=server` renders the monitoring objects;
#  - every PromQL expression of the dashboard and the rules against real Prometheus, app and
#    controller (observability/tests/promql.sh);
#  - the live trace test (observability/tests/traces.sh) against a real Jaeger v2 (hack/tools.sh
#    install jaeger: about 12 min cold, so hack/test.sh builds it in the background, see below).
# Prerequisites: a cluster in KUBECONFIG, kubectl, helm, jq, python3 + PyYAML, cargo, go.
# needs-tools: jaeger
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: e2e/observability.sh [-h|--help]

Checks observability/ against the cluster in KUBECONFIG and real Prometheus/Jaeger processes.
Ends with "observability: N passed, N failed".

Environment:
  OBS_TRACES=0     skip the live Jaeger trace test (it builds Jaeger first when it is not cached)
EOF
}

util::no_arguments "$@"
e2e::require_cluster
util::require_tools kubectl helm jq python3
python3 -c 'import yaml' 2>/dev/null || "${REPO_ROOT}/hack/tools.sh" install pyyaml

OBS="${REPO_ROOT}/observability"
TMP="$(mktemp -d)"
util::trap_add "rm -rf '${TMP}'"

# -- dashboard structure ----------------------------------------------------------------------------
check::run "dashboard structure (unique ids, datasource variable, a query per panel; broken copies rejected)" \
  python3 "${OBS}/tests/dashboard.py" --self-test

# -- install.sh without changing anything -----------------------------------------------------------
ns_absent_before=0
kubectl get namespace observability >/dev/null 2>&1 || ns_absent_before=1
dry_run() { "${OBS}/install.sh" --dry-run >"${TMP}/dry.out" 2>&1; }
check::run "install.sh --dry-run exits 0" dry_run
out_has() { grep -qF -- "$1" "${TMP}/dry.out" || { log::error "dry-run output lacks: $1"; return 1; }; }
dry_run_complete() {
  local kps jaeger
  # shellcheck disable=SC2016 # matches the literal ${...} default in install.sh
  kps="$(sed -n 's/^KPS_CHART_VERSION="${KPS_CHART_VERSION:-\([^}]*\)}".*/\1/p' "${OBS}/install.sh")"
  # shellcheck disable=SC2016
  jaeger="$(sed -n 's/^JAEGER_CHART_VERSION="${JAEGER_CHART_VERSION:-\([^}]*\)}".*/\1/p' "${OBS}/install.sh")"
  [[ -n "${kps}" && -n "${jaeger}" ]] || { log::error "chart pins not found in install.sh"; return 1; }
  out_has "[dry-run] helm upgrade --install kube-prometheus-stack kube-prometheus-stack --repo" &&
    out_has "--version ${kps} --namespace observability --values ${OBS}/values/kube-prometheus-stack.yaml" &&
    out_has "[dry-run] helm upgrade --install jaeger jaeger --repo" &&
    out_has "--version ${jaeger} --namespace observability --values ${OBS}/values/jaeger.yaml" &&
    out_has "[dry-run] helm show chart kube-prometheus-stack" &&
    out_has "[dry-run] kubectl create namespace observability" &&
    out_has "[dry-run] kubectl apply --server-side" &&
    out_has "serviceMonitorSelectorNilUsesHelmValues: false" &&
    out_has "receiver: workshop-slack" &&
    out_has "name: selfheal-alerts-workshop" &&
    out_has "exporters: [jaeger_storage_exporter]" &&
    out_has "dashboards ConfigMap observability/selfheal-dashboards" &&
    out_has "--set otel.endpoint=http://jaeger.observability:4318" &&
    out_has "port-forward svc/jaeger 16686:16686"
}
check::run "the dry run prints both pinned helm installs, the namespace, the applies and the rendered values (Alertmanager routing, rules, Jaeger pipeline)" dry_run_complete
no_real_command() { ! grep -E '^[0-9:]{8}     \+ ' "${TMP}/dry.out"; }
check::run "the dry run ran no command (every command line is [dry-run])" no_real_command
ns_unchanged() { ((ns_absent_before == 0)) || ! kubectl get namespace observability >/dev/null 2>&1; }
check::run "the dry run created no namespace" ns_unchanged
uninstall_dry() {
  "${OBS}/install.sh" --uninstall --dry-run >"${TMP}/un.out" 2>&1 &&
    grep -qF "[dry-run] helm uninstall kube-prometheus-stack --namespace observability" "${TMP}/un.out" &&
    grep -qF "[dry-run] kubectl delete namespace observability" "${TMP}/un.out"
}
check::run "install.sh --uninstall --dry-run prints the helm uninstalls and the namespace delete" uninstall_dry
unreachable_fails_fast() {
  local rc=0 start
  start="$(date +%s)"
  KPS_REPO_URL=http://127.0.0.1:9 timeout 60 "${OBS}/install.sh" >"${TMP}/unreach.out" 2>&1 || rc=$?
  ((rc == 1)) || { log::error "exit ${rc}, want 1"; return 1; }
  (($(date +%s) - start < 30)) || { log::error "took more than 30s"; return 1; }
  grep -q "chart repository http://127.0.0.1:9 is unreachable.*nothing was installed" "${TMP}/unreach.out" &&
    ! grep -q 'helm upgrade' "${TMP}/unreach.out" && ns_unchanged
}
check::run "an unreachable chart repository fails fast (exit 1, clear message) before anything changes" unreachable_fails_fast
bad_input() {
  local rc=0
  "${OBS}/install.sh" --rules sometimes >/dev/null 2>&1 || rc=$?
  ((rc == 2)) || return 1
  rc=0
  "${OBS}/install.sh" --namespace 'Bad_NS' >/dev/null 2>&1 || rc=$?
  ((rc == 2))
}
check::run "bad input (--rules sometimes, --namespace Bad_NS) exits 2" bad_input

# -- monitoring objects validated by the real API server ---------------------------------------------
CRDS=(servicemonitors prometheusrules)
installed_crds=()
for c in "${CRDS[@]}"; do
  if ! kubectl get crd "${c}.monitoring.coreos.com" >/dev/null 2>&1; then
    installed_crds+=("${c}.monitoring.coreos.com")
  fi
done
if ((${#installed_crds[@]})); then
  "${REPO_ROOT}/hack/tools.sh" install prometheus-operator-crds
  CRD_DIR="$("${REPO_ROOT}/hack/tools.sh" path prometheus-operator-crds)"
  # Removed again only because this test added them; pre-existing CRDs are left alone.
  util::trap_add "kubectl delete crd ${installed_crds[*]} --ignore-not-found --wait=false >/dev/null 2>&1 || true"
  apply_crds() {
    local c
    for c in "${installed_crds[@]}"; do
      kubectl apply --server-side --field-manager e2e-observability -f "${CRD_DIR}/monitoring.coreos.com_${c%%.*}.yaml" >/dev/null || return 1
    done
    kubectl wait --for=condition=Established --timeout=60s "${installed_crds[@]/#/crd/}" >/dev/null
  }
  check::run "prometheus-operator ${PROMETHEUS_OPERATOR_VERSION} CRDs applied server-side and Established (${installed_crds[*]})" apply_crds
else
  log::info "ServiceMonitor and PrometheusRule CRDs already installed: using them, leaving them in place"
fi

e2e::namespace obs
# The chart's PrometheusRule holds only a release's additionalRules (the app's alerts are the
# self-healing rules below): one recording rule on the platform's recorded series.
CHART_RULE='[{"record":"selfheal_app:http_error_ratio:max_rate5m","expr":"max by (namespace, job) (selfheal:http_error_ratio:rate5m)"}]'
helm template selfheal-app "${REPO_ROOT}/helm-chart" --namespace "${E2E_NS}" --api-versions monitoring.coreos.com/v1 \
  --set serviceMonitor.enabled=true --set prometheusRule.enabled=true --set-json "prometheusRule.additionalRules=${CHART_RULE}" --set autoscaling.enabled=true \
  --set canary.enabled=true --set 'serviceMonitor.labels.release=kube-prometheus-stack' \
  --show-only templates/servicemonitor.yaml --show-only templates/prometheusrule.yaml >"${TMP}/monitoring.yaml"
apply_chart_objects() {
  kubectl apply --server-side --field-manager e2e-observability -n "${E2E_NS}" -f "${TMP}/monitoring.yaml" &&
    kubectl -n "${E2E_NS}" get servicemonitor selfheal-app >/dev/null &&
    kubectl -n "${E2E_NS}" get prometheusrule selfheal-app -o json |
    jq -e '[.spec.groups[].rules[].record] == ["selfheal_app:http_error_ratio:max_rate5m"]' >/dev/null
}
check::run "the chart's ServiceMonitor and PrometheusRule (additionalRules) pass server-side schema validation" apply_chart_objects
apply_selfheal_rules() {
  local f
  for f in "${REPO_ROOT}"/self-healing/prometheusrules/*.yaml; do
    python3 - "${f}" "${E2E_NS}" >"${TMP}/rules-$(basename "${f}")" <<'PY' || return 1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    d["metadata"]["namespace"] = sys.argv[2]
print(yaml.safe_dump_all(docs, sort_keys=False))
PY
    kubectl apply --server-side --field-manager e2e-observability -f "${TMP}/rules-$(basename "${f}")" >/dev/null || return 1
  done
  [[ "$(kubectl -n "${E2E_NS}" get prometheusrule -l app.kubernetes.io/part-of=selfheal -o name | wc -l)" -ge 2 ]]
}
check::run "self-healing/prometheusrules/*.yaml (as install.sh applies them) pass server-side schema validation" apply_selfheal_rules
broken_refused() {
  # A scrape interval that is not a Prometheus duration: the CRD's pattern must refuse it.
  sed 's/^\(\s*interval:\).*/\1 fifteen-seconds/' "${TMP}/monitoring.yaml" >"${TMP}/broken.yaml"
  grep -q 'interval: fifteen-seconds' "${TMP}/broken.yaml" || return 1
  ! kubectl apply --server-side --field-manager e2e-observability -n "${E2E_NS}" -f "${TMP}/broken.yaml" \
    >"${TMP}/broken.out" 2>&1 && grep -q 'interval' "${TMP}/broken.out"
}
check::run "a ServiceMonitor with a malformed interval is refused by the API server (the schema is enforced)" broken_refused
server_render() {
  # Another release name: the objects applied above belong to no release and would clash.
  if ! helm install render-check "${REPO_ROOT}/helm-chart" --namespace "${E2E_NS}" --dry-run=server \
    --set serviceMonitor.enabled=true --set prometheusRule.enabled=true --set-json "prometheusRule.additionalRules=${CHART_RULE}" >"${TMP}/server.out" 2>&1; then
    tail -5 "${TMP}/server.out" >&2
    return 1
  fi
  grep -q '^kind: ServiceMonitor' "${TMP}/server.out" && grep -q '^kind: PrometheusRule' "${TMP}/server.out"
}
check::run "with the CRDs served, helm install --dry-run=server renders the ServiceMonitor and PrometheusRule" server_render

# -- PromQL and traces against real processes --------------------------------------------------------
# A crash-looping Deployment for the controller that promql.sh starts: its recycle puts
# selfheal_controller_recycles_total and healing_actions_total behind the dashboard's recycle panels.
e2e::crasher crasher "${E2E_NS}" 1 | kubectl apply -f - >/dev/null
promql() {
  CONTROLLER_NAMESPACE="${E2E_NS}" CONTROLLER_ACT=1 \
    PROMQL_REQUIRE="selfheal_controller_recycles_total selfheal_controller_healing_actions_total" \
    "${OBS}/tests/promql.sh" 2>&1 | tee "${TMP}/promql.out" >&2
}
check::run "every dashboard and rule expression parses, app and controller ones return data, a real recycle included (observability/tests/promql.sh)" promql
grep -E '^expressions: ' "${TMP}/promql.out" >&2 || true

if [[ "${OBS_TRACES:-1}" != 0 ]]; then
  check::run "live traces: the app's spans found through Jaeger v2's query API (observability/tests/traces.sh)" \
    "${OBS}/tests/traces.sh"
else
  log::warn "live trace test NOT run (OBS_TRACES=0): nothing checked the trace path"
fi

check::summary observability
