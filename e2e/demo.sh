#!/usr/bin/env bash
# The demo as a test: `selfheal-demo run` in a fresh namespace (it installs the chart there with
# the workshop values), the seven layers and the four ops scenarios, then assertions on the JSON
# report — healed, plus each layer's own evidence (restartCount grew, endpoint removed then
# restored, pod evicted and replaced, release rolled back to a later good revision, replicas above
# min, an eviction refused by the PDB; a leak recycled before the OOM kill, an exhausted pool
# recycled with the healthy pod spared, the breaker's open → half-open → closed cycle with the
# replicas restored, a zombie force-deleted) — and on the SVG timeline (well-formed, every healed
# layer's fault/detected/healed marks present). Timings are reported, never asserted.
# The controller is installed from controller/deploy-demo (demo timings), and the pool and
# breaker scenarios ask the Prometheus hack/demo-prometheus.sh starts (stopped at exit).
# Prerequisites: a cluster in KUBECONFIG with localhost/selfheal-app:dev and
# localhost/selfheal-controller:dev imported, metrics-server running; helm, jq, python3, cargo.
# Installs selfheal-controller when absent and removes only what it installed.
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: e2e/demo.sh [-h|--help]

Runs every layer of 'selfheal-demo run' in a fresh namespace and checks the report and the
timeline. Takes about fifteen minutes. Prints "demo: N passed, N failed".

Environment:
  KUBECONFIG   cluster to test (default: hack/cluster.sh's, ${CLUSTER_KUBECONFIG})
  DEMO_LAYERS  layers to run (default 1,2,3,4,5,6,7,ops; e.g. DEMO_LAYERS=1,2 or leak for a look)
  DEMO_REPORT_DIR  where report.json and timeline.svg are kept (default ${SELFHEAL_HOME}/demo/e2e-latest;
               CI's recovery-time gate reads it there)
EOF
}

util::no_arguments "$@"

e2e::require_cluster
util::require_tools kubectl helm jq python3 cargo
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${SELFHEAL_HOME}/cargo-target}"
TMP="$(mktemp -d)"
util::trap_add "rm -rf '${TMP}'"

SYS="${E2E_CONTROLLER_NS}"
e2e::install_controller reuse controller/deploy-demo
check::run "selfheal-controller is rolled out" kubectl -n "${SYS}" rollout status deployment/selfheal-controller --timeout=180s

e2e::namespace demo
NS="${E2E_NS}"
LAYERS="${DEMO_LAYERS:-1,2,3,4,5,6,7,ops}"
exits_2() { local rc=0; "$@" >/dev/null 2>&1 || rc=$?; ((rc == 2)); }
check::run "hack/demo.sh refuses an unknown layer name (exit 2)" exits_2 "${REPO_ROOT}/hack/demo.sh" --layer leek
check::run "hack/demo-prometheus.sh refuses a bad port (exit 2)" exits_2 "${REPO_ROOT}/hack/demo-prometheus.sh" start --port 70000
dry_run_changes_nothing() {
  local out
  out="$("${REPO_ROOT}/hack/demo-prometheus.sh" start --dry-run --namespace "${NS}" 2>&1)" || return 1
  grep -q "\[dry-run\] kubectl -n selfheal-system set env deployment/selfheal-controller CONTROLLER_PROMETHEUS_URL=http://" <<<"${out}" &&
    [[ ! -e "${SELFHEAL_HOME}/demo-prometheus" ]] &&
    ! kubectl -n "${SYS}" get deployment selfheal-controller -o jsonpath='{.spec.template.spec.containers[0].env[*].name}' | grep -q CONTROLLER_PROMETHEUS_URL
}
check::run "hack/demo-prometheus.sh --dry-run prints the controller change and makes none" dry_run_changes_nothing
if [[ ",${LAYERS}," =~ ,(9|10|pool|breaker|ops), ]]; then
  util::trap_add "'${REPO_ROOT}/hack/demo-prometheus.sh' stop --namespace '${NS}' >/dev/null 2>&1 || true"
  check::run "hack/demo-prometheus.sh starts Prometheus for ${NS} and points the controller at it" \
    "${REPO_ROOT}/hack/demo-prometheus.sh" start --namespace "${NS}"
fi
log::step "building the runner (cargo build -p selfheal-demo)"
cargo build -q -p selfheal-demo --manifest-path "${REPO_ROOT}/Cargo.toml" || log::fatal "cargo build -p selfheal-demo failed"
DEMO="${CARGO_TARGET_DIR}/debug/selfheal-demo"

ARGS=(run --namespace "${NS}" --repo-root "${REPO_ROOT}" --json "${TMP}/report.json" --svg "${TMP}/timeline.svg")
ARGS+=(--layer "${LAYERS}")
log::step "selfheal-demo ${ARGS[*]}"
rc=0
"${DEMO}" "${ARGS[@]}" || rc=$?
[[ -s "${TMP}/report.json" ]] || { e2e::dump "${NS}"; log::fatal "the runner wrote no report (exit ${rc})"; }
# Kept for a look after the run (the SVG is meant to be looked at, not only parsed) and, on CI,
# for the recovery-time gate and the job's artifact.
REPORT_DIR="${DEMO_REPORT_DIR:-${SELFHEAL_HOME}/demo/e2e-latest}"
mkdir -p "${REPORT_DIR}"
cp "${TMP}/report.json" "${TMP}/timeline.svg" "${REPORT_DIR}/" 2>/dev/null || true
log::info "report and timeline copied to ${REPORT_DIR}/"

if [[ ",${LAYERS}," =~ ,(9|10|pool|breaker|ops), ]]; then
  prometheus_gone() {
    "${REPO_ROOT}/hack/demo-prometheus.sh" stop >/dev/null 2>&1 || return 1
    ! "${REPO_ROOT}/hack/demo-prometheus.sh" status >/dev/null 2>&1 && ! util::port_in_use 19090
  }
  check::run "hack/demo-prometheus.sh stop leaves no Prometheus running" prometheus_gone
fi

runner_exit_zero() { ((rc == 0)); }
check::run "the runner exits 0 (no layer failed its deadline)" runner_exit_zero

# layer N JQ: the layer's report satisfies the jq condition.
layer() { jq -e --argjson n "$1" ".layers[] | select(.layer == \$n) | $2" "${TMP}/report.json" >/dev/null; }
ran() { jq -e --argjson n "$1" '.layers | any(.layer == $n)' "${TMP}/report.json" >/dev/null; }

# layer_check N "what" JQ: when the run included layer N, its report entry must satisfy JQ.
layer_check() {
  ran "$1" || return 0
  check::run "layer $1: $2" layer "$1" "$3"
}
layer_check 1 "container restarted by liveness (restartCount grew) and Ready again" \
  '.healed and .evidence.restart_count_grew and (.evidence.restarts_after > .evidence.restarts_before) and (.evidence.killing_event | test("liveness"))'
layer_check 2 "endpoint removed then restored, no restart" \
  '.healed and .evidence.endpoint_removed and .evidence.endpoint_restored and (.evidence.restarts_after == .evidence.restarts_before)'
layer_check 3 "pod evicted by selfheal-controller (Recycled Event) and replaced" \
  '.healed and .evidence.pod_evicted_and_replaced and (.evidence.recycled_event | test("evicted")) and (.evidence.replacement_pod != .evidence.evicted_pod)'
layer_check 4 "bad revision failed, rolled back to a later revision of the good release (exit 3)" \
  '.healed and .evidence.rolled_back_to_good and .evidence.auto_rollback_exit_code == 3 and (.evidence.serving_revision > .evidence.good_revision + 1)'
layer_check 5 "HPA scaled out, replicas above min" \
  '.healed and .evidence.replicas_above_min and (.evidence.ready_after > .evidence.min_replicas)'
layer_check 6 "every pod evicted and replaced, at least one eviction refused by the PDB (429)" \
  '.healed and (.evidence.evictions == (.evidence.pods_before | length)) and .evidence.evictions_refused >= 1'
# Never a fake pass: healed needs the evidence, otherwise it must say it is not available.
layer_check 7 "healed with the canary removed, or reported not available (never a silent pass)" \
  '(.healed and .evidence.canary_removed) or (.status == "not_available" and (.reason | length > 0))'
layer_check 8 "leaking pod recycled by the memoryTrend policy before the OOM kill, and replaced" \
  '.healed and .evidence.recycled_before_oom and (.evidence.recycled_event | test("memory_leak")) and (.evidence.replacement_pod != .evidence.pod)'
layer_check 9 "exhausted pod recycled (pool_exhausted), the healthy pod spared" \
  '.healed and (.evidence.recycled_event | test("pool_exhausted")) and .evidence.healthy_pod_spared and (.evidence.replacement_pod != .evidence.pod)'
layer_check 10 "breaker opened (scaled to 0), half-opened and closed with the replicas restored" \
  '.healed and (.evidence.opened_event | test("scaled from 2 to 0")) and (.evidence.closed_event | length > 0) and .evidence.replicas_restored >= 2 and ([.marks[] | select(.source | test("CircuitHalfOpened"))] | length == 1)'
layer_check 11 "zombie pod on the lost node force-deleted, and gone" \
  '.healed and (.evidence.force_deleted_event | length > 0) and .evidence.zombie_gone'
layer_gone() { ! kubectl get deployments,services,pods -n "${NS}" -l selfheal.io/demo-scenario -o name | grep -q .; }
check::run "the scenarios removed their Deployments, Services and pods" e2e::eventually 90 layer_gone
nodes_gone() { ! kubectl get nodes -l selfheal.io/demo-scenario -o name | grep -q .; }
check::run "the zombie scenario removed its lost Node" e2e::eventually 60 nodes_gone

svg_ok() {
  python3 - "${TMP}/timeline.svg" "${TMP}/report.json" <<'EOF'
import json, sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
report = json.load(open(sys.argv[2]))
marks = {(g.get("data-layer"), g.get("data-kind")) for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "mark"}
missing = [f"L{l['layer']} {k}" for l in report["layers"] if l["healed"] for k in ("fault", "detected", "healed") if (str(l["layer"]), k) not in marks]
rows = {g.get("data-layer") for g in root.iter("{http://www.w3.org/2000/svg}g") if g.get("class") == "layer"}
missing += [f"row L{l['layer']}" for l in report["layers"] if str(l["layer"]) not in rows]
if missing:
    sys.exit("missing in the SVG: " + ", ".join(missing))
EOF
}
check::run "the SVG timeline is well-formed and has every layer's row and fault/detected/healed marks" svg_ok

log::info "the table:"
jq -r '.layers[] | "  layer \(.layer) \(.name): \(.status), detect \(.time_to_detect_secs // "-") s, heal \(.time_to_heal_secs // "-") s, failed \(.load.failed // "-")/\(.load.total // "-")"' "${TMP}/report.json" >&2
((rc == 0)) || e2e::dump "${NS}"
check::summary demo
