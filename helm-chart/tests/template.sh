#!/usr/bin/env bash
# Chart tests without a cluster: `helm lint --strict` for every values file, then `helm template`
# renders checked with Python assertions (tests/expect.py) for the rules that matter — HPA on/off,
# PDB on/off, stable and canary tracks, canary Ingress annotations, restricted security context,
# ephemeral-storage on every container, who the NetworkPolicies let in and out (np_allows),
# schema rejections, render-time checks (chaos exposed without a token, a PDB that blocks every
# drain), NOTES.txt, the pull policy of each values file, selector/pod-template stability across a
# chart version bump, the packaged chart's contents, a README that lists every value, and the
# controller's own manifests (controller/deploy: ephemeral-storage, CPU limit or why not).
# Prerequisites: helm (3 or 4; hack/tools.sh install helm), python3 with PyYAML.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../hack/lib.sh"

usage() {
  cat <<EOF
Usage: helm-chart/tests/template.sh [-h|--help]

Lints and renders helm-chart/ with every values file and checks the output; prints
"chart-template: N passed, N failed". Exit status 0 only when every check passed.
Needs no cluster.

Environment:
  HELM   helm binary to use (default: helm on PATH, pinned one first)

Example:
  helm-chart/tests/template.sh
  HELM=/usr/local/bin/helm3 helm-chart/tests/template.sh   # the same checks with Helm 3
EOF
}

util::no_arguments "$@"

HELM="${HELM:-helm}"
util::require_tools "${HELM}" python3
python3 -c 'import yaml' 2>/dev/null || log::fatal "python3 needs PyYAML (apt-get install python3-yaml)"

CHART="${REPO_ROOT}/helm-chart"
HERE="${CHART}/tests"
RELEASE=rel
NS=chart-test
TMP="$(mktemp -d)"
util::trap_add "rm -rf '${TMP}'"



# render NAME [helm args...]: helm template into $TMP/NAME.yaml (an empty file when it fails, so
# every assertion on it fails too).
render() {
  local name="$1"
  shift
  if ! "${HELM}" template "${RELEASE}" "${CHART}" --namespace "${NS}" "$@" >"${TMP}/${name}.yaml" 2>"${TMP}/${name}.err"; then
    log::error "helm template ${*} failed: $(cat "${TMP}/${name}.err")"
    : >"${TMP}/${name}.yaml"
  fi
}

# expect NAME 'python expression': an assertion on a render (helpers: tests/expect.py --help).
expect() { python3 "${HERE}/expect.py" "${TMP}/$1.yaml" "$2"; }

# rejects "pattern" [helm args...]: helm template must fail, and its error must match pattern.
rejects() {
  local pattern="$1" out
  shift
  if out="$("${HELM}" template "${RELEASE}" "${CHART}" --namespace "${NS}" "$@" 2>&1)"; then
    log::error "helm template ${*} succeeded; expected an error matching '${pattern}'"
    return 1
  fi
  if ! grep -Eq -- "${pattern}" <<<"${out}"; then
    log::error "helm template ${*} failed without '${pattern}' in: ${out}"
    return 1
  fi
  log::info "rejected as expected: $(grep -E -m1 -- "${pattern}" <<<"${out}" | sed 's/^[[:space:]]*//' | cut -c1-160)"
}

lint() { "${HELM}" lint --strict "${CHART}" "$@" >"${TMP}/lint.out" 2>&1 || { cat "${TMP}/lint.out" >&2; return 1; }; }

log::step "chart template tests with $("${HELM}" version --short 2>/dev/null || echo "${HELM}")"

# -- lint: every values file ------------------------------------------------------------------
check::run "helm lint --strict (defaults)" lint
VALUES_FILES=(values-demo.yaml values-openshift.yaml)
for f in "${CHART}"/ci/*-values.yaml; do [[ -f "${f}" ]] && VALUES_FILES+=("ci/${f##*/}"); done
for f in "${VALUES_FILES[@]}"; do
  check::run "helm lint --strict -f ${f}" lint -f "${CHART}/${f}"
done
printf '%s\n' "${VALUES_FILES[@]}" >"${TMP}/ci-files"
check::run "ci/ has the default, demo, canary, openshift and hpa-off/pdb-off variants" \
  bash -c "for v in default demo canary openshift hpa-off-pdb-off; do grep -qx \"ci/\${v}-values.yaml\" '${TMP}/ci-files' || exit 1; done"

# -- renders used below -----------------------------------------------------------------------
render default
render demo -f "${CHART}/values-demo.yaml"
render openshift -f "${CHART}/values-openshift.yaml"
render canary -f "${CHART}/ci/canary-values.yaml"
render full -f "${CHART}/ci/full-values.yaml" --api-versions monitoring.coreos.com/v1
render single -f "${CHART}/ci/hpa-off-pdb-off-values.yaml"
render hpa-on --set autoscaling.enabled=true
render hpa-off --set autoscaling.enabled=false
render hpa-min1 --set autoscaling.enabled=true --set autoscaling.minReplicas=1
render hpa-min3 --set autoscaling.enabled=true --set autoscaling.minReplicas=3 --set replicaCount=1
render pdb-off --set podDisruptionBudget.enabled=false
render pdb-replicas1 --set autoscaling.enabled=false --set replicaCount=1
render pdb-max --set podDisruptionBudget.maxUnavailable=1
render canary-replicas -f "${CHART}/ci/canary-values.yaml" --set ingress.enabled=false --set canary.ingress.enabled=false
render ingress-only --set ingress.enabled=true
render route-canary -f "${CHART}/ci/canary-values.yaml" --set httpRoute.enabled=true --set 'httpRoute.parentRefs[0].name=gw' --set canary.httpRoute.weight=25
render route-only --set httpRoute.enabled=true --set 'httpRoute.parentRefs[0].name=gw' --set 'httpRoute.hostnames[0]=a.test'
render monitoring-no-crd --set serviceMonitor.enabled=true --set prometheusRule.enabled=true
render chaos-token --set chaos.enabled=true --set chaos.token=s3cret
render chaos-existing --set chaos.enabled=true --set chaos.existingSecret=my-token --set chaos.token=ignored
render netpol-none --set networkPolicy.allowSameNamespace=false --set 'networkPolicy.allowNamespaces=null' --set tests.enabled=false
render netpol-test-only --set networkPolicy.allowSameNamespace=false --set 'networkPolicy.allowNamespaces=null'
render netpol-off --set networkPolicy.enabled=false
render digest --set image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
render local --set image.repository=localhost/selfheal-app --set image.tag=dev --set image.pullPolicy=Never

# -- defaults ---------------------------------------------------------------------------------
check::run "default: one Deployment (stable), no replicas field (the HPA owns it), image ghcr.io/...:<appVersion>" expect default \
  "len(objs('Deployment')) == 1 and 'replicas' not in deploy('stable')['spec']
   and pod_spec(deploy('stable'))['containers'][0]['image'] == 'ghcr.io/selfheal-io/selfheal-app:0.1.0'"
check::run "default: selectors are name + instance + track=stable; Service selects name + instance (all tracks)" expect default \
  "deploy('stable')['spec']['selector']['matchLabels'] == {'app.kubernetes.io/name': 'selfheal-app', 'app.kubernetes.io/instance': '${RELEASE}', 'track': 'stable'}
   and one('Service')['spec']['selector'] == {'app.kubernetes.io/name': 'selfheal-app', 'app.kubernetes.io/instance': '${RELEASE}'}"
check::run "default: pod template carries no chart or version label" expect default \
  "not any(k in deploy('stable')['spec']['template']['metadata']['labels'] for k in ('helm.sh/chart', 'app.kubernetes.io/version'))
   and deploy('stable')['metadata']['labels']['helm.sh/chart'] == 'selfheal-app-0.1.0'"
check::run "default: probes (startup; liveness /health 5s x3; readiness /ready 3s x2)" expect default \
  "(lambda c: c['startupProbe']['httpGet']['path'] == '/health'
     and (c['livenessProbe']['httpGet']['path'], c['livenessProbe']['periodSeconds'], c['livenessProbe']['failureThreshold']) == ('/health', 5, 3)
     and (c['readinessProbe']['httpGet']['path'], c['readinessProbe']['periodSeconds'], c['readinessProbe']['failureThreshold']) == ('/ready', 3, 2)
   )(pod_spec(deploy('stable'))['containers'][0])"
probes_overridable() {
  render probes --set probes.liveness.periodSeconds=7 --set probes.liveness.path=/live \
    --set probes.startup.failureThreshold=60 --set probes.readiness.enabled=false
  expect probes "(lambda c: c['livenessProbe']['periodSeconds'] == 7 and c['livenessProbe']['httpGet']['path'] == '/live'
    and c['startupProbe']['failureThreshold'] == 60 and 'readinessProbe' not in c)(pod_spec(deploy('stable'))['containers'][0])"
}
check::run "probe settings are overridable (liveness period and path, startup threshold, readiness off)" probes_overridable
check::run "default: preStop is the native sleep action, grace period 30s, rollingUpdate maxUnavailable 0" expect default \
  "pod_spec(deploy('stable'))['containers'][0]['lifecycle']['preStop'] == {'sleep': {'seconds': 3}}
   and pod_spec(deploy('stable'))['terminationGracePeriodSeconds'] == 30
   and deploy('stable')['spec']['strategy']['rollingUpdate']['maxUnavailable'] == 0"
check::run "default: resource requests and limits set, ephemeral-storage included" expect default \
  "pod_spec(deploy('stable'))['containers'][0]['resources'] == {'requests': {'cpu': '50m', 'memory': '16Mi', 'ephemeral-storage': '16Mi'},
                                                               'limits': {'cpu': '500m', 'memory': '64Mi', 'ephemeral-storage': '128Mi'}}"
for r in default demo canary full openshift local; do
  check::run "${r}: every container (app on both tracks, helm test init + main) requests and limits ephemeral-storage" expect "${r}" \
    "all('ephemeral-storage' in c['resources'].get('requests', {}) and 'ephemeral-storage' in c['resources'].get('limits', {})
         for o in objs('Deployment') + objs('Pod') for c in containers(o))
     and len([c for o in objs('Deployment') + objs('Pod') for c in containers(o)]) >= 3"
done
check::run "default: topology spread across nodes, scoped to the track and the ReplicaSet" expect default \
  "(lambda t: t['topologyKey'] == 'kubernetes.io/hostname' and t['labelSelector']['matchLabels']['track'] == 'stable'
     and t['matchLabelKeys'] == ['pod-template-hash'])(pod_spec(deploy('stable'))['topologySpreadConstraints'][0])"
check::run "default: ServiceAccount and pods do not automount a token" expect default \
  "one('ServiceAccount')['automountServiceAccountToken'] is False and pod_spec(deploy('stable'))['automountServiceAccountToken'] is False
   and pod_spec(deploy('stable'))['serviceAccountName'] == one('ServiceAccount')['metadata']['name']"
check::run "default: chaos off, JSON logs, track stable, Downward API pod name/namespace" expect default \
  "(lambda e: e['CHAOS_ENABLED'] == 'false' and e['LOG_FORMAT'] == 'json' and e['APP_TRACK'] == 'stable'
     and e['APP_FAULT_PROFILE'] == 'none' and e['LISTEN_ADDR'] == '0.0.0.0:8080'
     and e['POD_NAME'] == {'fieldRef': {'fieldPath': 'metadata.name'}} and e['POD_NAMESPACE'] == {'fieldRef': {'fieldPath': 'metadata.namespace'}}
     and 'CHAOS_TOKEN' not in e and 'OTEL_EXPORTER_OTLP_ENDPOINT' not in e)(env(deploy('stable')))"
check::run "default: HPA, PDB and NetworkPolicy on; no Ingress, Secret, ServiceMonitor, PrometheusRule, canary" expect default \
  "all(len(objs(k)) == 1 for k in ('HorizontalPodAutoscaler', 'PodDisruptionBudget'))
   and len(objs('NetworkPolicy')) == 2
   and not any(objs(k) for k in ('Ingress', 'Secret', 'ServiceMonitor', 'PrometheusRule'))
   and len(objs('Service')) == 1"
env_mapping() {
  render env --set app.message=hi --set app.logFormat=text --set app.logLevel=debug --set app.warmupSecs=4 \
    --set app.shutdownDelaySecs=6 --set app.shutdownTimeoutSecs=7 --set app.requestTimeoutMs=1234 \
    --set app.bodyLimitBytes=999 --set app.faultProfile=latency --set app.faultErrorPercent=12 \
    --set app.faultLatencyMs=345 --set app.faultLeakMibPerSec=3 --set app.faultLeakCapMib=77 --set app.poolSize=7 \
    --set app.poolWaitMs=250 --set containerPort=9090 --set otel.endpoint=http://collector:4318 \
    --set otel.serviceName=svc --set chaos.enabled=true
  expect env "env(deploy('stable')).items() >= {'APP_MESSAGE': 'hi', 'LOG_FORMAT': 'text', 'RUST_LOG': 'debug',
    'APP_WARMUP_SECS': '4', 'APP_SHUTDOWN_DELAY_SECS': '6', 'APP_SHUTDOWN_TIMEOUT_SECS': '7',
    'APP_REQUEST_TIMEOUT_MS': '1234', 'APP_BODY_LIMIT_BYTES': '999', 'APP_FAULT_PROFILE': 'latency',
    'APP_FAULT_ERROR_PERCENT': '12', 'APP_FAULT_LATENCY_MS': '345', 'APP_FAULT_LEAK_MIB_PER_SEC': '3',
    'APP_FAULT_LEAK_CAP_MIB': '77', 'APP_POOL_SIZE': '7', 'APP_POOL_WAIT_MS': '250', 'LISTEN_ADDR': '0.0.0.0:9090',
    'OTEL_EXPORTER_OTLP_ENDPOINT': 'http://collector:4318', 'OTEL_SERVICE_NAME': 'svc', 'CHAOS_ENABLED': 'true'}.items()
    and pod_spec(deploy('stable'))['containers'][0]['ports'][0]['containerPort'] == 9090"
}
check::run "every app.* value reaches its environment variable" env_mapping
canary_pool() {
  render canary-pool -f "${CHART}/ci/canary-values.yaml" --set canary.poolSize=2 --set canary.poolWaitMs=50 \
    --set canary.faultProfile=pool-exhaust --set app.poolSize=30
  expect canary-pool "env(deploy('canary')).items() >= {'APP_POOL_SIZE': '2', 'APP_POOL_WAIT_MS': '50', 'APP_FAULT_PROFILE': 'pool-exhaust'}.items()
    and env(deploy('stable')).items() >= {'APP_POOL_SIZE': '30', 'APP_POOL_WAIT_MS': '1000'}.items()"
}
check::run "canary track: its own pool size, pool wait and the pool-exhaust profile; stable keeps app.*" canary_pool

# -- restricted Pod Security ------------------------------------------------------------------
for r in default demo canary full; do
  check::run "${r}: every pod (Deployments, helm test) meets the restricted Pod Security Standard with a numeric UID" expect "${r}" \
    "all(restricted(o) is None and pod_spec(o)['securityContext']['runAsUser'] == 65532 for o in objs('Deployment') + objs('Pod'))
     and len(objs('Deployment')) >= 1"
done
check::run "openshift: restricted settings kept, no fixed runAsUser/runAsGroup" expect openshift \
  "all(restricted(o) is None and not ({'runAsUser', 'runAsGroup'} & set(pod_spec(o)['securityContext'])) for o in objs('Deployment') + objs('Pod'))"

# -- HPA --------------------------------------------------------------------------------------
check::run "HPA on: Deployment has no replicas field" expect hpa-on "'replicas' not in deploy('stable')['spec']"
check::run "HPA on: autoscaling/v2, min 2, max 5, 70 % CPU, scaleUp and scaleDown behavior, targets the stable Deployment" expect hpa-on \
  "(lambda h: h['apiVersion'] == 'autoscaling/v2' and h['spec']['minReplicas'] == 2 and h['spec']['maxReplicas'] == 5
     and h['spec']['metrics'] == [{'type': 'Resource', 'resource': {'name': 'cpu', 'target': {'type': 'Utilization', 'averageUtilization': 70}}}]
     and h['spec']['behavior']['scaleUp']['policies'] and h['spec']['behavior']['scaleDown']['stabilizationWindowSeconds'] == 120
     and h['spec']['scaleTargetRef'] == {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'name': deploy('stable')['metadata']['name']}
   )(one('HorizontalPodAutoscaler'))"
check::run "default: HPA on (layer 5: min 2, max 5, 70 % CPU), targets the stable Deployment" expect default \
  "(lambda h: (h['spec']['minReplicas'], h['spec']['maxReplicas'], h['spec']['metrics'][0]['resource']['target']['averageUtilization']) == (2, 5, 70)
     and h['spec']['scaleTargetRef']['name'] == deploy('stable')['metadata']['name'])(one('HorizontalPodAutoscaler'))"
check::run "HPA off: no HPA object, replicas rendered" expect hpa-off \
  "not objs('HorizontalPodAutoscaler') and deploy('stable')['spec']['replicas'] == 2"
check::run "demo values: HPA on, chaos on, text logs" expect demo \
  "one('HorizontalPodAutoscaler') and 'replicas' not in deploy('stable')['spec']
   and env(deploy('stable'))['CHAOS_ENABLED'] == 'true' and env(deploy('stable'))['LOG_FORMAT'] == 'text'"
check::run "full values: memory target added to the HPA" expect full \
  "[m['resource']['name'] for m in one('HorizontalPodAutoscaler')['spec']['metrics']] == ['cpu', 'memory']"

# -- PDB --------------------------------------------------------------------------------------
check::run "PDB on (default): policy/v1, minAvailable 1, AlwaysAllow, selects the stable track exactly" expect default \
  "(lambda p: p['apiVersion'] == 'policy/v1' and p['spec']['minAvailable'] == 1 and 'maxUnavailable' not in p['spec']
     and p['spec']['unhealthyPodEvictionPolicy'] == 'AlwaysAllow'
     and p['spec']['selector']['matchLabels'] == deploy('stable')['spec']['selector']['matchLabels'])(one('PodDisruptionBudget'))"
check::run "PDB off: not rendered" expect pdb-off "not objs('PodDisruptionBudget')"
check::run "PDB: not rendered for replicaCount 1 without HPA" expect pdb-replicas1 "not objs('PodDisruptionBudget') and deploy('stable')['spec']['replicas'] == 1"
check::run "PDB: not rendered for HPA minReplicas 1" expect hpa-min1 "not objs('PodDisruptionBudget')"
check::run "PDB: rendered for HPA minReplicas 3 even with replicaCount 1" expect hpa-min3 "one('PodDisruptionBudget') and 'replicas' not in deploy('stable')['spec']"
check::run "PDB: maxUnavailable replaces minAvailable" expect pdb-max \
  "one('PodDisruptionBudget')['spec'].get('maxUnavailable') == 1 and 'minAvailable' not in one('PodDisruptionBudget')['spec']"
check::run "hpa-off/pdb-off variant: 1 replica, no HPA, no PDB, no spread, no test pod" expect single \
  "deploy('stable')['spec']['replicas'] == 1 and not objs('HorizontalPodAutoscaler') and not objs('PodDisruptionBudget')
   and 'topologySpreadConstraints' not in pod_spec(deploy('stable')) and not objs('Pod')"

# -- canary track -----------------------------------------------------------------------------
check::run "canary on: a second Deployment with track=canary in selector and pod labels" expect canary \
  "len(objs('Deployment')) == 2 and deploy('canary')['spec']['selector']['matchLabels']['track'] == 'canary'
   and deploy('canary')['spec']['template']['metadata']['labels']['track'] == 'canary'
   and deploy('canary')['metadata']['name'] == '${RELEASE}-selfheal-app-canary'
   and deploy('stable')['spec']['selector']['matchLabels'] != deploy('canary')['spec']['selector']['matchLabels']"
check::run "canary on: own image tag, replicas and fault profile; stable untouched" expect canary \
  "pod_spec(deploy('canary'))['containers'][0]['image'] == 'ghcr.io/selfheal-io/selfheal-app:0.2.0'
   and deploy('canary')['spec']['replicas'] == 1
   and env(deploy('canary'))['APP_FAULT_PROFILE'] == 'errors' and env(deploy('canary'))['APP_FAULT_ERROR_PERCENT'] == '20'
   and env(deploy('canary'))['APP_TRACK'] == 'canary'
   and pod_spec(deploy('stable'))['containers'][0]['image'] == 'ghcr.io/selfheal-io/selfheal-app:0.1.0'
   and deploy('stable')['spec']['replicas'] == 3 and env(deploy('stable'))['APP_FAULT_PROFILE'] == 'none'"
check::run "canary on: Service spans both tracks; -stable and -canary Services select one track each" expect canary \
  "'track' not in one('Service', 'selfheal-app')['spec']['selector']
   and one('Service', '-stable')['spec']['selector']['track'] == 'stable'
   and one('Service', '-canary')['spec']['selector']['track'] == 'canary'"
check::run "canary on: HPA and PDB (when rendered) never select canary pods" expect canary \
  "all(p['spec']['selector']['matchLabels']['track'] == 'stable' for p in objs('PodDisruptionBudget'))"
check::run "canary off: one Deployment, one Service" expect default "len(objs('Deployment')) == 1 and len(objs('Service')) == 1"
check::run "canary Ingress: canary, canary-weight, canary-weight-total, canary-by-header(-value) annotations" expect canary \
  "one('Ingress', '-canary')['metadata']['annotations'] == {
     'nginx.ingress.kubernetes.io/canary': 'true', 'nginx.ingress.kubernetes.io/canary-weight': '20',
     'nginx.ingress.kubernetes.io/canary-weight-total': '100', 'nginx.ingress.kubernetes.io/canary-by-header': 'X-Canary',
     'nginx.ingress.kubernetes.io/canary-by-header-value': 'yes'}"
check::run "canary Ingress: same class, host, path and TLS as the stable one; backends -canary and -stable" expect canary \
  "(lambda s, c: s['spec']['ingressClassName'] == c['spec']['ingressClassName'] == 'nginx'
     and s['spec']['rules'][0]['host'] == c['spec']['rules'][0]['host'] == 'selfheal.example.test'
     and s['spec']['tls'] == c['spec']['tls']
     and s['spec']['rules'][0]['http']['paths'][0]['path'] == c['spec']['rules'][0]['http']['paths'][0]['path']
     and s['spec']['rules'][0]['http']['paths'][0]['backend']['service']['name'] == '${RELEASE}-selfheal-app-stable'
     and c['spec']['rules'][0]['http']['paths'][0]['backend']['service']['name'] == '${RELEASE}-selfheal-app-canary'
   )(one('Ingress', 'selfheal-app'), one('Ingress', '-canary'))"
check::run "canary without its Ingress (replica ratio): no Ingress, both Deployments behind one Service" expect canary-replicas \
  "not objs('Ingress') and len(objs('Deployment')) == 2 and 'track' not in one('Service', 'selfheal-app')['spec']['selector']"
check::run "Ingress without canary: one Ingress to the all-tracks Service, class nginx" expect ingress-only \
  "one('Ingress')['spec']['rules'][0]['http']['paths'][0]['backend']['service']['name'] == '${RELEASE}-selfheal-app'
   and one('Ingress')['spec']['ingressClassName'] == 'nginx' and 'annotations' not in one('Ingress')['metadata']"
check::run "HTTPRoute with canary: header rule to -canary, then weighted backendRefs stable 75 / canary 25" expect route-canary \
  "(lambda r: r['spec']['parentRefs'] == [{'name': 'gw'}] and r['spec']['hostnames'] == ['selfheal.example.test']
     and r['spec']['rules'][0]['matches'][0]['headers'] == [{'name': 'X-Canary', 'value': 'always'}]
     and r['spec']['rules'][0]['backendRefs'] == [{'name': '${RELEASE}-selfheal-app-canary', 'port': 80}]
     and r['spec']['rules'][1]['backendRefs'] == [{'name': '${RELEASE}-selfheal-app-stable', 'port': 80, 'weight': 75},
                                                  {'name': '${RELEASE}-selfheal-app-canary', 'port': 80, 'weight': 25}]
   )(one('HTTPRoute'))"
check::run "HTTPRoute without canary: one rule to the all-tracks Service, hostnames from values" expect route-only \
  "(lambda r: r['spec']['hostnames'] == ['a.test'] and len(r['spec']['rules']) == 1
     and r['spec']['rules'][0]['backendRefs'] == [{'name': '${RELEASE}-selfheal-app', 'port': 80}])(one('HTTPRoute'))"

# -- optional objects -------------------------------------------------------------------------
check::run "ServiceMonitor/PrometheusRule enabled but no monitoring.coreos.com/v1: not rendered" expect monitoring-no-crd \
  "not objs('ServiceMonitor') and not objs('PrometheusRule')"
check::run "ServiceMonitor/PrometheusRule with the CRDs: rendered; scrapes only the main Service; the rule group holds only additionalRules" expect full \
  "one('ServiceMonitor')['spec']['selector']['matchLabels']['selfheal.io/scrape'] == 'true'
   and [s['metadata']['name'] for s in objs('Service') if s['metadata']['labels'].get('selfheal.io/scrape') == 'true'] == ['${RELEASE}-selfheal-app']
   and one('ServiceMonitor')['spec']['podTargetLabels'] == ['track']
   and [r.get('record') for r in one('PrometheusRule')['spec']['groups'][0]['rules']] == ['selfheal_app:http_error_ratio:max_rate5m']"
# The app's alerts are platform-wide (self-healing/alerts.yaml), never duplicated per release.
render rule-no-extra --set prometheusRule.enabled=true --api-versions monitoring.coreos.com/v1
check::run "prometheusRule.enabled without additionalRules: no PrometheusRule (the app's alerts live in self-healing/), NOTES say where" \
  bash -c "python3 '${HERE}/expect.py' '${TMP}/rule-no-extra.yaml' \"not objs('PrometheusRule')\" &&
    '${HELM}' install ${RELEASE} '${CHART}' --namespace ${NS} --dry-run=client --set prometheusRule.enabled=true 2>/dev/null | grep -q 'self-healing/prometheusrules'"
check::run "the removed per-release alert settings are refused (prometheusRule.for)" rejects "for" --set prometheusRule.for=5m
# promtool_rules: the PrometheusRule's groups as a plain rules file pass `promtool check rules`.
promtool_rules() {
  python3 -c 'import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "PrometheusRule"]
assert len(docs) == 1, "no PrometheusRule rendered"
print(yaml.safe_dump({"groups": docs[0]["spec"]["groups"]}))' "${TMP}/full.yaml" >"${TMP}/rules.yaml" &&
    promtool check rules "${TMP}/rules.yaml" >&2
}
if command -v promtool >/dev/null 2>&1; then
  check::run "PrometheusRule expressions and templates pass promtool check rules" promtool_rules
else
  log::warn "promtool not installed (hack/tools.sh install promtool): PrometheusRule expressions not checked, not counted"
fi
# Pods for np_allows (tests/expect.py): the stable app pod, the helm test pod, and pods elsewhere.
APP_POD="{'labels': deploy('stable')['spec']['template']['metadata']['labels'], 'ports': {'http': 8080}}"
TEST_POD="{'labels': one('Pod')['metadata']['labels']}"
DNS_POD="{'ns': 'kube-system', 'labels': {'k8s-app': 'kube-dns'}}"
nspod() { echo "{'ns': '$1', 'labels': {'app': 'client'}}"; }
check::run "default: NetworkPolicy on, policyTypes Ingress and Egress, selects every track of the release" expect default \
  "(lambda n: n['spec']['policyTypes'] == ['Ingress', 'Egress']
     and n['spec']['podSelector'] == {'matchLabels': {'app.kubernetes.io/name': 'selfheal-app', 'app.kubernetes.io/instance': '${RELEASE}'}}
     and n['spec']['ingress'][0]['ports'] == [{'port': 'http', 'protocol': 'TCP'}])(one('NetworkPolicy', 'selfheal-app'))"
check::run "default NetworkPolicy, ingress: the app port from the same namespace, ingress-nginx and observability; nothing else" expect default \
  "np_allows($(nspod "${NS}"), ${APP_POD}, 8080) and np_allows($(nspod ingress-nginx), ${APP_POD}, 8080)
   and np_allows($(nspod observability), ${APP_POD}, 8080)
   and not np_allows($(nspod other), ${APP_POD}, 8080) and not np_allows($(nspod kube-system), ${APP_POD}, 8080)
   and not np_allows($(nspod "${NS}"), ${APP_POD}, 9090)"
check::run "default NetworkPolicy, egress: DNS (kube-system kube-dns, UDP and TCP 53) only; no OTLP rule without otel.endpoint" expect default \
  "np_allows(${APP_POD}, ${DNS_POD}, 53, 'UDP') and np_allows(${APP_POD}, ${DNS_POD}, 53, 'TCP')
   and not np_allows(${APP_POD}, {'ns': 'kube-system', 'labels': {'k8s-app': 'other'}}, 53, 'UDP')
   and not np_allows(${APP_POD}, $(nspod observability), 4318) and not np_allows(${APP_POD}, $(nspod other), 443)
   and len(one('NetworkPolicy', 'selfheal-app')['spec']['egress']) == 1"
check::run "default NetworkPolicy: helm test pod reaches the app pods' port and DNS; app pods cannot reach each other" expect default \
  "np_allows(${TEST_POD}, ${APP_POD}, 8080) and np_allows(${TEST_POD}, ${DNS_POD}, 53, 'UDP')
   and not np_allows(${APP_POD}, ${APP_POD}, 8080) and not np_allows(${TEST_POD}, $(nspod other), 8080)"
check::run "NetworkPolicy with allowSameNamespace=false still lets the helm test pod in, nobody else" expect netpol-test-only \
  "np_allows(${TEST_POD}, ${APP_POD}, 8080) and not np_allows($(nspod "${NS}"), ${APP_POD}, 8080)"
check::run "NetworkPolicy without sources (and no helm test) denies everything (ingress: [])" expect netpol-none \
  "one('NetworkPolicy')['spec']['ingress'] == [] and len(objs('NetworkPolicy')) == 1"
check::run "networkPolicy.enabled=false: no NetworkPolicy" expect netpol-off "not objs('NetworkPolicy')"
check::run "full values: OTLP egress derived from otel.endpoint (namespace observability, TCP 4318)" expect full \
  "np_allows(${APP_POD}, $(nspod observability), 4318) and not np_allows(${APP_POD}, $(nspod observability), 4317)
   and not np_allows(${APP_POD}, $(nspod other), 4318)"
# otlp_rule NAME ENDPOINT 'python expression on the rule' [helm args...]: the OTLP egress rule rendered for ENDPOINT.
otlp_rule() {
  local name="$1" endpoint="$2" expr="$3"
  shift 3
  render "otlp-${name}" --set "otel.endpoint=${endpoint}" "$@"
  expect "otlp-${name}" "(lambda r: ${expr})(one('NetworkPolicy', 'selfheal-app')['spec']['egress'][1])"
}
otlp_derived() {
  otlp_rule svc http://jaeger "r == {'to': [{'namespaceSelector': {'matchLabels': {'kubernetes.io/metadata.name': '${NS}'}}}], 'ports': [{'port': 80, 'protocol': 'TCP'}]}" &&
    otlp_rule fqdn https://otel.obs.svc.cluster.local "r['to'][0]['namespaceSelector']['matchLabels']['kubernetes.io/metadata.name'] == 'obs' and r['ports'][0]['port'] == 443" &&
    otlp_rule ip http://10.1.2.3:4317 "r['to'] == [{'ipBlock': {'cidr': '10.1.2.3/32'}}] and r['ports'][0]['port'] == 4317" &&
    otlp_rule override http://jaeger.observability:4318 "r['to'] == [{'namespaceSelector': {'matchLabels': {'kubernetes.io/metadata.name': 'tracing'}}}] and r['ports'][0]['port'] == 14318" \
      --set networkPolicy.egress.otlp.namespace=tracing --set networkPolicy.egress.otlp.port=14318 &&
    otlp_rule cidr http://otel.example.com:4318 "r['to'] == [{'ipBlock': {'cidr': '203.0.113.0/24'}}] and r['ports'][0]['port'] == 4318" \
      --set networkPolicy.egress.otlp.cidr=203.0.113.0/24
}
check::run "OTLP egress: bare service (own namespace, port 80), FQDN (https: 443), IP (/32), namespace/port/cidr overrides" otlp_derived
check::run "render fails when otel.endpoint's host names no namespace and no networkPolicy.egress.otlp.cidr/namespace is set" \
  rejects 'networkPolicy.egress.otlp.cidr' --set otel.endpoint=http://otel.example.com:4318
check::run "schema rejects an OTLP CIDR without a prefix length" rejects 'cidr' --set networkPolicy.egress.otlp.cidr=10.0.0.1
check::run "chaos token: Secret created, CHAOS_TOKEN from it, checksum rolls pods" expect chaos-token \
  "one('Secret')['metadata']['name'] == '${RELEASE}-selfheal-app-chaos'
   and env(deploy('stable'))['CHAOS_TOKEN'] == {'secretKeyRef': {'name': '${RELEASE}-selfheal-app-chaos', 'key': 'token'}}
   and 'checksum/chaos-token' in deploy('stable')['spec']['template']['metadata']['annotations']"
check::run "chaos existingSecret: no Secret, CHAOS_TOKEN from the named one" expect chaos-existing \
  "not objs('Secret') and env(deploy('stable'))['CHAOS_TOKEN']['secretKeyRef']['name'] == 'my-token'"
check::run "image digest wins over the tag" expect digest \
  "pod_spec(deploy('stable'))['containers'][0]['image'] == 'ghcr.io/selfheal-io/selfheal-app@sha256:' + '0123456789abcdef' * 4"
check::run "helm test pod: test hook, app image's probe subcommand against the Service's /health and /ready" expect local \
  "(lambda p: p['metadata']['annotations']['helm.sh/hook'] == 'test' and p['metadata']['name'] == '${RELEASE}-selfheal-app-test'
     and p['spec']['restartPolicy'] == 'Never'
     and [c['image'] for c in containers(p)] == ['localhost/selfheal-app:dev'] * 2
     and [c['args'][:2] for c in containers(p)] == [['probe', 'http://${RELEASE}-selfheal-app.${NS}.svc:80/health'], ['probe', 'http://${RELEASE}-selfheal-app.${NS}.svc:80/ready']]
     and restricted(p) is None)(one('Pod'))"

# -- schema and render-time checks --------------------------------------------------------------
check::run "schema rejects a wrong type (replicaCount=two)" rejects 'replicaCount' --set replicaCount=two
check::run "schema rejects an unknown top-level key (replicas=3)" rejects "replicas" --set replicas=3
# The app refuses these at start (app/src/config.rs ranges); the schema refuses them at render.
check::run "schema rejects app.warmupSecs above the app's 3600" rejects 'warmupSecs' --set app.warmupSecs=3601
check::run "schema rejects app.requestTimeoutMs above the app's 300000" rejects 'requestTimeoutMs' --set app.requestTimeoutMs=300001
check::run "schema rejects an unknown nested key (canary.tag=x)" rejects "tag" --set canary.tag=x
check::run "schema rejects a bad enum (image.pullPolicy=Sometimes)" rejects 'pullPolicy' --set image.pullPolicy=Sometimes
check::run "schema rejects a bad fault profile (app.faultProfile=explode)" rejects 'faultProfile' --set app.faultProfile=explode
check::run "schema rejects a value below its minimum (autoscaling.maxReplicas=0)" rejects 'maxReplicas' --set autoscaling.maxReplicas=0
check::run "schema rejects an error percent above 100" rejects 'faultErrorPercent' --set canary.faultErrorPercent=101
pool_size_bounds() { rejects 'poolSize' --set app.poolSize=0 && rejects 'poolSize' --set canary.poolSize=1001; }
check::run "schema rejects a pool size of 0 or above 1000" pool_size_bounds
check::run "render fails when the grace period cannot hold preStop + drain" rejects 'gracePeriodSeconds.*must be at least' --set termination.gracePeriodSeconds=10
check::run "render fails for HPA minReplicas > maxReplicas" rejects 'minReplicas.*above' --set autoscaling.enabled=true --set autoscaling.minReplicas=6
check::run "render fails for an HTTPRoute without parentRefs" rejects 'needs httpRoute.parentRefs' --set httpRoute.enabled=true
check::run "schema rejects a canary HTTPRoute weight above 100" rejects 'weight' --set canary.httpRoute.weight=101
check::run "render fails for a canary Ingress without the stable Ingress" rejects 'needs ingress.enabled' --set canary.enabled=true --set canary.ingress.enabled=true
# renders [helm args...]: helm template succeeds (the control for the rejections).
renders() { "${HELM}" template "${RELEASE}" "${CHART}" --namespace "${NS}" "$@" >/dev/null; }
chaos_exposed_refused() {
  rejects 'chaos.enabled with ingress.enabled and no chaos.token.*Set chaos.token=' --set chaos.enabled=true --set ingress.enabled=true &&
    rejects 'chaos.enabled with httpRoute.enabled and no chaos.token' --set chaos.enabled=true --set httpRoute.enabled=true --set 'httpRoute.parentRefs[0].name=gw' &&
    rejects 'chaos.enabled with service.type=LoadBalancer and no chaos.token' --set chaos.enabled=true --set service.type=LoadBalancer
}
check::run "render fails for chaos on + Ingress, HTTPRoute or LoadBalancer without chaos.token (the message says how to fix it)" chaos_exposed_refused
chaos_exposed_allowed() {
  renders --set chaos.enabled=true --set ingress.enabled=true --set chaos.token=s3cret &&
    renders --set chaos.enabled=true --set httpRoute.enabled=true --set 'httpRoute.parentRefs[0].name=gw' --set chaos.existingSecret=tok &&
    renders --set chaos.enabled=true --set service.type=NodePort &&
    renders --set chaos.enabled=false --set ingress.enabled=true
}
check::run "chaos + Ingress/HTTPRoute renders with chaos.token or chaos.existingSecret; chaos without outside exposure renders" chaos_exposed_allowed
pdb_blocking_refused() {
  rejects 'minAvailable \(2\) is not below the 2 pods .*autoscaling.minReplicas.*every node drain' --set podDisruptionBudget.minAvailable=2 &&
    rejects 'minAvailable \(3\) is not below the 3 pods .*replicaCount' --set autoscaling.enabled=false --set replicaCount=3 --set podDisruptionBudget.minAvailable=3 &&
    rejects 'minAvailable \(4\) is not below the 3 pods .*autoscaling.minReplicas' --set autoscaling.minReplicas=3 --set podDisruptionBudget.minAvailable=4 &&
    rejects 'minAvailable 100% .*rounds a percentage up' --set podDisruptionBudget.minAvailable=100% &&
    rejects 'minAvailable 60% of 2 pods' --set podDisruptionBudget.minAvailable=60% &&
    rejects 'maxUnavailable 0 lets no pod be evicted' --set podDisruptionBudget.maxUnavailable=0 &&
    rejects 'maxUnavailable 0% lets no pod be evicted' --set podDisruptionBudget.maxUnavailable=0%
}
check::run "render fails for a PDB that blocks every drain: minAvailable >= HPA minReplicas or replicaCount, 100% (or rounding up to all), maxUnavailable 0/0%" pdb_blocking_refused
pdb_draining_allowed() {
  renders --set podDisruptionBudget.minAvailable=1 &&
    renders --set autoscaling.enabled=false --set replicaCount=3 --set podDisruptionBudget.minAvailable=2 &&
    renders --set autoscaling.minReplicas=3 --set podDisruptionBudget.minAvailable=2 --set replicaCount=1 &&
    renders --set podDisruptionBudget.minAvailable=50% &&
    renders --set podDisruptionBudget.maxUnavailable=10% &&
    renders --set autoscaling.enabled=false --set replicaCount=1 --set podDisruptionBudget.minAvailable=1
}
check::run "a PDB that lets one pod go renders (minAvailable 1 of 2, 2 of 3, 50%, maxUnavailable 10%; no PDB for 1 pod)" pdb_draining_allowed
check::run "kubeVersion constraint rejects Kubernetes 1.29" rejects 'kubeVersion|incompatible|compatible' --kube-version 1.29.0

# -- NOTES.txt ----------------------------------------------------------------------------------
# notes NAME [helm args...]: NOTES.txt of a client-side dry-run install (no cluster: no metrics API).
notes() {
  local name="$1"
  shift
  KUBECONFIG=/dev/null "${HELM}" install "${RELEASE}" "${CHART}" --namespace "${NS}" --dry-run=client "$@" \
    >"${TMP}/notes-${name}.out" 2>&1 || { cat "${TMP}/notes-${name}.out" >&2; return 1; }
  sed -n '/^NOTES:/,$p' "${TMP}/notes-${name}.out" >"${TMP}/notes-${name}.txt"
  [[ -s "${TMP}/notes-${name}.txt" ]]
}
notes_hpa() {
  notes hpa && notes nohpa --set autoscaling.enabled=false &&
    grep -q "the HPA keeps deployment/${RELEASE}-selfheal-app between 2 and 5 pods" "${TMP}/notes-hpa.txt" &&
    grep -q 'Without metrics-server the HPA waits' "${TMP}/notes-hpa.txt" &&
    grep -q 'nothing else breaks' "${TMP}/notes-hpa.txt" &&
    grep -q 'NOTE: this cluster serves no metrics.k8s.io/v1beta1' "${TMP}/notes-hpa.txt" &&
    ! grep -q 'metrics-server' "${TMP}/notes-nohpa.txt"
}
check::run "NOTES.txt (HPA on): what the HPA does, that without metrics-server it waits and nothing breaks, and that this cluster has none" notes_hpa

# -- image pull policy per values file ----------------------------------------------------------
# pull_policy_reasoned FILE POLICY: FILE sets image.pullPolicy to POLICY with a comment of at least
# two lines right above it (the reason), and every rendered container uses it.
pull_policy_reasoned() {
  python3 - "${CHART}/$1" "$2" <<'EOF' || return 1
import sys
lines = open(sys.argv[1]).read().splitlines()
start = next(n for n, l in enumerate(lines) if l.startswith("image:"))
i = next(n for n in range(start + 1, len(lines)) if lines[n].strip().startswith("pullPolicy:"))
assert lines[i].split(":", 1)[1].strip() == sys.argv[2], f"{lines[i].strip()!r}, want {sys.argv[2]}"
comment = []
for l in reversed(lines[:i]):
    if not l.strip().startswith("#"):
        break
    comment.append(l)
assert len(comment) >= 2, f"{sys.argv[1]}: no reason above image.pullPolicy"
EOF
  local args=()
  [[ "$1" == values.yaml ]] || args=(-f "${CHART}/$1")
  render "pull-$1" "${args[@]}"
  expect "pull-$1" "{c['imagePullPolicy'] for o in objs('Deployment') + objs('Pod') for c in containers(o)} == {'$2'}"
}
check::run "values.yaml: image.pullPolicy IfNotPresent with its reason above it, used by every container" pull_policy_reasoned values.yaml IfNotPresent
check::run "values-demo.yaml: image.pullPolicy IfNotPresent with its reason above it, used by every container" pull_policy_reasoned values-demo.yaml IfNotPresent
check::run "values-openshift.yaml: image.pullPolicy IfNotPresent with its reason above it, used by every container" pull_policy_reasoned values-openshift.yaml IfNotPresent

# -- the controller's manifests (controller/deploy): the same resource rules ----------------------
controller_resources() {
  python3 - "${REPO_ROOT}/controller/deploy/deployment.yaml" <<'EOF'
import sys, yaml
text = open(sys.argv[1]).read()
spec = yaml.safe_load(text)["spec"]["template"]["spec"]
cs = spec.get("initContainers", []) + spec["containers"]
for c in cs:
    r = c.get("resources", {})
    for k in ("requests", "limits"):
        assert "ephemeral-storage" in r.get(k, {}), f"{c['name']}: no ephemeral-storage in {k}"
    assert "cpu" in r.get("limits", {}) or "No CPU limit, on purpose" in text, f"{c['name']}: no CPU limit and no comment saying why"
print(f"    {len(cs)} container(s): ephemeral-storage requested and limited; CPU limit or the reason for none", file=sys.stderr)
EOF
}
check::run "controller/deploy: every container requests and limits ephemeral-storage; a CPU limit or a comment why not" controller_resources

# -- stability across a chart version bump ------------------------------------------------------
stable_across_bump() {
  local bumped="${TMP}/bumped"
  rm -rf "${bumped}" && mkdir -p "${bumped}" && cp -R "${CHART}/." "${bumped}/"
  sed -i -E 's/^version: .*/version: 9.9.9/' "${bumped}/Chart.yaml"
  "${HELM}" template "${RELEASE}" "${bumped}" --namespace "${NS}" -f "${CHART}/ci/canary-values.yaml" >"${TMP}/bumped.yaml" || return 1
  render before-bump -f "${CHART}/ci/canary-values.yaml"
  python3 - "${TMP}/before-bump.yaml" "${TMP}/bumped.yaml" <<'EOF'
import sys, yaml
def load(p):
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(p)) if d}
a, b = load(sys.argv[1]), load(sys.argv[2])
assert a.keys() == b.keys(), "different objects"
for key, d in a.items():
    assert d["metadata"]["labels"].get("helm.sh/chart") != b[key]["metadata"]["labels"].get("helm.sh/chart"), f"{key}: chart label did not change"
    if d["kind"] == "Deployment":
        assert d["spec"]["selector"] == b[key]["spec"]["selector"], f"{key}: selector changed"
        assert d["spec"]["template"] == b[key]["spec"]["template"], f"{key}: pod template changed (pods would roll)"
    if d["kind"] in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        assert d["spec"] == b[key]["spec"], f"{key}: spec changed"
print("    selectors, pod templates and specs identical for", len(a), "objects", file=sys.stderr)
EOF
}
check::run "a chart version bump changes the chart label but no selector or pod template" stable_across_bump

# -- package and docs ---------------------------------------------------------------------------
packaged() {
  "${HELM}" package "${CHART}" --destination "${TMP}/pkg" >/dev/null || return 1
  tar -tzf "${TMP}"/pkg/selfheal-app-*.tgz >"${TMP}/pkg.list"
  grep -q 'selfheal-app/templates/tests/test-connection.yaml$' "${TMP}/pkg.list" &&
    grep -q 'selfheal-app/values.schema.json$' "${TMP}/pkg.list" &&
    grep -q 'selfheal-app/README.md$' "${TMP}/pkg.list" &&
    ! grep -Eq 'selfheal-app/(tests|ci)/' "${TMP}/pkg.list"
}
check::run "helm package keeps templates/tests/, drops tests/ and ci/ (.helmignore)" packaged
check::run "every values.yaml key is commented, in the schema, and in README.md (tests/values-doc.py --check)" \
  python3 "${HERE}/values-doc.py" --check
check::run "appVersion equals the app crate's version" \
  bash -c "[[ \"\$(sed -nE 's/^appVersion: \"?([^\"]+)\"?/\\1/p' '${CHART}/Chart.yaml')\" == \"\$(sed -nE '/^\\[workspace.package\\]/,/^\\[/ s/^version = \"([^\"]+)\"/\\1/p' '${REPO_ROOT}/Cargo.toml')\" ]]"

check::summary chart-template
