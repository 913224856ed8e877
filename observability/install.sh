#!/usr/bin/env bash
# Installs the observability stack for the selfheal platform into one namespace: kube-prometheus-stack
# (Prometheus Operator, Prometheus, Alertmanager, Grafana, kube-state-metrics) and Jaeger v2, from
# pinned chart versions, with the laptop-sized values in observability/values/. Prometheus picks up
# every ServiceMonitor and PrometheusRule in every namespace (the app chart's included); Alertmanager
# gets self-healing/alertmanager/alertmanager.yaml; Grafana loads observability/dashboards/*.json
# through its sidecar (ConfigMaps labelled grafana_dashboard=1); the self-healing alert rules are
# applied as a PrometheusRule. Prints the app chart's --set for traces and scraping, and the
# port-forward commands. Prerequisites: helm 3 or 4, kubectl, python3 + PyYAML, curl; a cluster in
# KUBECONFIG (minikube with 4 GiB is enough) and access to the two chart repositories.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

# The chart pins: the one place to bump them.
KPS_CHART_VERSION="${KPS_CHART_VERSION:-88.5.3}" # kube-prometheus-stack (Prometheus Operator v0.93.1)
JAEGER_CHART_VERSION="${JAEGER_CHART_VERSION:-4.11.1}" # jaegertracing/jaeger (Jaeger v2.19.0)
KPS_REPO_URL="${KPS_REPO_URL:-https://prometheus-community.github.io/helm-charts}"
JAEGER_REPO_URL="${JAEGER_REPO_URL:-https://jaegertracing.github.io/helm-charts}"

OBS="${REPO_ROOT}/observability"
NAMESPACE=observability
RULES_PROFILE=workshop
TIMEOUT_SECS=600
UNINSTALL=0
DRY_RUN="${DRY_RUN:-0}"

usage() {
  cat <<EOF
Usage: observability/install.sh [options]

Installs kube-prometheus-stack ${KPS_CHART_VERSION} and Jaeger chart ${JAEGER_CHART_VERSION} (Jaeger v2)
into one namespace, with the selfheal dashboard, alert rules and Alertmanager routing.

Options:
  -n, --namespace NS     namespace to install into (default: ${NAMESPACE})
  --rules PROFILE        self-healing alert rules to load: workshop (default; fires within a
                         minute, for demos), production, or none
  --timeout SECS         how long to wait for every pod to be Ready (default: ${TIMEOUT_SECS})
  --dry-run              print every helm/kubectl command and the rendered values; change nothing
  --uninstall            remove what this script installed (the CRDs stay, see the output)
  -h, --help             this help

Environment:
  KUBECONFIG                           the cluster (default: kubectl's)
  KPS_CHART_VERSION, JAEGER_CHART_VERSION   override the chart pins
  KPS_REPO_URL, JAEGER_REPO_URL        chart repositories (e.g. a mirror)
  DRY_RUN=1                            same as --dry-run

Example:
  observability/install.sh --dry-run | less
  observability/install.sh && helm upgrade --install selfheal-app helm-chart \\
    --set otel.endpoint=http://jaeger.observability:4318 --set serviceMonitor.enabled=true
EOF
}

while (($#)); do
  case "$1" in
    -n | --namespace)
      [[ -n "${2:-}" ]] || util::usage_error "$1 needs a value"
      NAMESPACE="$2"
      shift 2
      ;;
    --rules)
      [[ "${2:-}" =~ ^(workshop|production|none)$ ]] || util::usage_error "--rules wants workshop, production or none"
      RULES_PROFILE="$2"
      shift 2
      ;;
    --timeout)
      [[ "${2:-}" =~ ^[1-9][0-9]*$ ]] || util::usage_error "--timeout wants a number of seconds"
      TIMEOUT_SECS="$2"
      shift 2
      ;;
    --dry-run) DRY_RUN=1; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) util::usage_error "unknown argument: $1" ;;
  esac
done
[[ "${NAMESPACE}" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || util::usage_error "not a namespace name: ${NAMESPACE}"
export DRY_RUN

util::require_tools helm kubectl python3 curl
python3 -c 'import yaml' 2>/dev/null || log::fatal "PyYAML missing: hack/tools.sh install pyyaml (or pip install pyyaml)"

TMP="$(mktemp -d)"
util::trap_add "rm -rf '${TMP}'"

KPS_RELEASE=kube-prometheus-stack
JAEGER_RELEASE=jaeger
DASHBOARD_CM=selfheal-dashboards

# print_file TITLE FILE: show a rendered file in a dry run.
print_file() {
  printf '%s ---- %s (%s) ----\n' "$(log::_ts)" "$1" "${2#"${REPO_ROOT}/"}" >&2
  cat "$2" >&2
}

# check_repo NAME URL CHART VERSION: fail fast, before anything changes, when the repository is
# unreachable or does not serve the pinned version.
check_repo() {
  local name="$1" url="$2" chart="$3" version="$4"
  if [[ "${DRY_RUN}" == 1 ]]; then
    util::run helm show chart "${chart}" --repo "${url}" --version "${version}"
    return 0
  fi
  log::step "checking the ${name} chart repository ${url} (${chart} ${version})"
  if ! curl -fsS -m 15 -o /dev/null "${url%/}/index.yaml" 2>"${TMP}/curl.err"; then
    log::fatal "chart repository ${url} is unreachable ($(tr -d '\n' <"${TMP}/curl.err")): nothing was installed. Check the network or proxy, or point ${name}_REPO_URL at a mirror."
  fi
  if ! timeout 120 helm show chart "${chart}" --repo "${url}" --version "${version}" >/dev/null 2>"${TMP}/helm.err"; then
    log::fatal "${url} does not serve ${chart} ${version}: $(tr '\n' ' ' <"${TMP}/helm.err")- nothing was installed"
  fi
  log::ok "${chart} ${version} is available"
}

# render_values: the generated values and manifests, in ${TMP}.
render_values() {
  # Alertmanager's routing from self-healing/, under the chart's alertmanager.config key.
  python3 - "${REPO_ROOT}/self-healing/alertmanager/alertmanager.yaml" "${TMP}/alertmanager-values.yaml" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
with open(sys.argv[2], "w") as f:
    f.write("# Generated by observability/install.sh from self-healing/alertmanager/alertmanager.yaml\n")
    yaml.safe_dump({"alertmanager": {"config": cfg}}, f, sort_keys=False)
PY
  # The dashboards as one ConfigMap the Grafana sidecar loads (label grafana_dashboard=1).
  python3 - "${NAMESPACE}" "${DASHBOARD_CM}" "${TMP}/dashboards.yaml" "${OBS}"/dashboards/*.json <<'PY'
import json, os, sys, yaml
ns, name, out, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
data = {}
for f in files:
    json.load(open(f))  # refuse to ship broken JSON
    data[os.path.basename(f)] = open(f).read()
cm = {"apiVersion": "v1", "kind": "ConfigMap",
      "metadata": {"name": name, "namespace": ns,
                   "labels": {"grafana_dashboard": "1", "app.kubernetes.io/part-of": "selfheal"}},
      "data": data}
yaml.safe_dump(cm, open(out, "w"), sort_keys=False)
PY
  if [[ "${RULES_PROFILE}" != none ]]; then
    python3 - "${REPO_ROOT}/self-healing/prometheusrules/${RULES_PROFILE}.yaml" "${NAMESPACE}" "${TMP}/rules.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
for d in docs:
    d["metadata"]["namespace"] = sys.argv[2]
yaml.safe_dump_all(docs, open(sys.argv[3], "w"), sort_keys=False)
PY
  fi
}

# wait_ready: every pod of the namespace Ready, with a progress line every 10 s.
wait_ready() {
  local deadline=$(($(date +%s) + TIMEOUT_SECS)) next=0 now total ready
  while :; do
    now="$(date +%s)"
    total="$(kubectl -n "${NAMESPACE}" get pods --no-headers 2>/dev/null | grep -vc Completed || true)"
    ready="$(kubectl -n "${NAMESPACE}" get pods -o jsonpath='{range .items[*]}{.status.phase}{" "}{range .status.conditions[?(@.type=="Ready")]}{.status}{end}{"\n"}{end}' 2>/dev/null | grep -c '^Running True' || true)"
    if ((total > 0 && ready == total)); then
      log::ok "all ${total} pods in ${NAMESPACE} are Ready"
      return 0
    fi
    if ((now >= deadline)); then
      log::error "timed out after ${TIMEOUT_SECS}s: ${ready}/${total} pods Ready in ${NAMESPACE}"
      kubectl -n "${NAMESPACE}" get pods -o wide >&2 || true
      kubectl -n "${NAMESPACE}" get events --sort-by=.lastTimestamp 2>/dev/null | tail -20 >&2 || true
      return 1
    fi
    if ((now >= next)); then
      log::info "waiting for pods in ${NAMESPACE}: ${ready}/${total} Ready ($((TIMEOUT_SECS - (deadline - now)))s/${TIMEOUT_SECS}s)"
      next=$((now + 10))
    fi
    sleep 2
  done
}

uninstall() {
  log::step "removing the observability stack from namespace ${NAMESPACE}"
  util::run kubectl -n "${NAMESPACE}" delete configmap "${DASHBOARD_CM}" --ignore-not-found
  util::run kubectl -n "${NAMESPACE}" delete prometheusrule -l app.kubernetes.io/part-of=selfheal --ignore-not-found
  local rel
  for rel in "${JAEGER_RELEASE}" "${KPS_RELEASE}"; do
    if [[ "${DRY_RUN}" == 1 ]] || helm -n "${NAMESPACE}" status "${rel}" >/dev/null 2>&1; then
      util::run helm uninstall "${rel}" --namespace "${NAMESPACE}" --wait --timeout "${TIMEOUT_SECS}s"
    else
      log::info "release ${rel} not installed in ${NAMESPACE}"
    fi
  done
  util::run kubectl delete namespace "${NAMESPACE}" --ignore-not-found --timeout "${TIMEOUT_SECS}s"
  log::info "the monitoring.coreos.com CRDs stay (other releases may use them); remove them with:"
  log::info "  kubectl get crd -o name | grep monitoring.coreos.com | xargs kubectl delete"
  log::ok "uninstalled"
}

install() {
  render_values
  if [[ "${DRY_RUN}" == 1 ]]; then
    log::step "dry run: nothing is changed; the values and manifests that would be used follow"
    print_file "kube-prometheus-stack values" "${OBS}/values/kube-prometheus-stack.yaml"
    print_file "kube-prometheus-stack values: Alertmanager config" "${TMP}/alertmanager-values.yaml"
    print_file "jaeger values" "${OBS}/values/jaeger.yaml"
    [[ "${RULES_PROFILE}" == none ]] || print_file "self-healing rules (${RULES_PROFILE})" "${TMP}/rules.yaml"
    log::info "dashboards ConfigMap ${NAMESPACE}/${DASHBOARD_CM}: $(grep -c '' "${TMP}/dashboards.yaml") lines from $(find "${OBS}/dashboards" -name '*.json' | wc -l) dashboard(s)"
  fi
  check_repo KPS "${KPS_REPO_URL}" kube-prometheus-stack "${KPS_CHART_VERSION}"
  check_repo JAEGER "${JAEGER_REPO_URL}" jaeger "${JAEGER_CHART_VERSION}"
  if [[ "${DRY_RUN}" != 1 ]]; then
    kubectl get --raw /readyz >/dev/null 2>&1 || log::fatal "no cluster reachable (KUBECONFIG=${KUBECONFIG:-default}): start minikube or set KUBECONFIG"
  fi

  log::step "namespace ${NAMESPACE}"
  # baseline, not restricted: the third-party charts' pods are not all verified against restricted;
  # warn/audit still report every restricted violation.
  if [[ "${DRY_RUN}" == 1 ]] || ! kubectl get namespace "${NAMESPACE}" >/dev/null 2>&1; then
    util::run kubectl create namespace "${NAMESPACE}"
  fi
  util::run kubectl label namespace "${NAMESPACE}" --overwrite pod-security.kubernetes.io/enforce=baseline \
    pod-security.kubernetes.io/warn=restricted pod-security.kubernetes.io/audit=restricted

  log::step "kube-prometheus-stack ${KPS_CHART_VERSION}"
  util::run helm upgrade --install "${KPS_RELEASE}" kube-prometheus-stack --repo "${KPS_REPO_URL}" \
    --version "${KPS_CHART_VERSION}" --namespace "${NAMESPACE}" \
    --values "${OBS}/values/kube-prometheus-stack.yaml" --values "${TMP}/alertmanager-values.yaml" \
    --timeout "${TIMEOUT_SECS}s"
  log::step "Jaeger chart ${JAEGER_CHART_VERSION}"
  util::run helm upgrade --install "${JAEGER_RELEASE}" jaeger --repo "${JAEGER_REPO_URL}" \
    --version "${JAEGER_CHART_VERSION}" --namespace "${NAMESPACE}" --values "${OBS}/values/jaeger.yaml" \
    --timeout "${TIMEOUT_SECS}s"

  log::step "Grafana dashboards and alert rules"
  util::run kubectl apply --server-side --field-manager selfheal-observability -f "${TMP}/dashboards.yaml"
  if [[ "${RULES_PROFILE}" != none ]]; then
    util::run kubectl apply --server-side --field-manager selfheal-observability -f "${TMP}/rules.yaml"
  fi

  if [[ "${DRY_RUN}" == 1 ]]; then
    log::info "[dry-run] would wait up to ${TIMEOUT_SECS}s for every pod in ${NAMESPACE} to be Ready"
  else
    wait_ready || log::fatal "the stack did not become Ready; see the pods and events above"
  fi
  next_steps
}

next_steps() {
  cat <<EOF

Observability stack in namespace ${NAMESPACE}:
  Grafana       kubectl -n ${NAMESPACE} port-forward svc/${KPS_RELEASE}-grafana 3000:80
                http://localhost:3000  (user admin; password:
                kubectl -n ${NAMESPACE} get secret ${KPS_RELEASE}-grafana -o jsonpath='{.data.admin-password}' | base64 -d)
                dashboard "selfheal platform"
  Prometheus    kubectl -n ${NAMESPACE} port-forward svc/${KPS_RELEASE}-prometheus 9090:9090   http://localhost:9090
  Alertmanager  kubectl -n ${NAMESPACE} port-forward svc/${KPS_RELEASE}-alertmanager 9093:9093 http://localhost:9093
  Jaeger        kubectl -n ${NAMESPACE} port-forward svc/${JAEGER_RELEASE} 16686:16686           http://localhost:16686

Point the app at it (its ServiceMonitor and trace exporter; its alerts are the self-healing rules above):
  helm upgrade --install selfheal-app helm-chart --namespace selfheal-demo --create-namespace \\
    --set otel.endpoint=http://${JAEGER_RELEASE}.${NAMESPACE}:4318 \\
    --set serviceMonitor.enabled=true \\
    --set 'networkPolicy.allowNamespaces={ingress-nginx,${NAMESPACE}}'
Finding the trace of a failed request: docs/tracing.md
EOF
}

if ((UNINSTALL)); then
  uninstall
else
  install
fi
