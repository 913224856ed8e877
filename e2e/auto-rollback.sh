#!/usr/bin/env bash
# self-healing/auto-rollback.sh on a real cluster with real Helm: bad flags exit 2; a kube context
# that does not exist stops it before anything changes; a first install that fails leaves no
# release and no objects (exit 5); good deploys exit 0 with revision N serving; a bad release
# (readiness never passes) is rolled back: revision N+2 serves the good image, exit 3, the summary
# says why, and the rollback is pushed to a (stand-in) Pushgateway; a bad release that passes
# readiness but fails GET / is caught by the smoke check; --dry-run changes nothing (helm history
# and the Deployment compared before and after); a release left pending-upgrade by a killed helm
# is refused while young, planned by --dry-run without a change, and recovered with --pending-grace 0s; with --prometheus, a high 5xx ratio
# (from a stand-in Prometheus) fails verification and an unreachable one is skipped.
# Helm's own failures, made real through a helm wrapper that misdirects only `helm history` and
# a ResourceQuota that makes the API server refuse a rollback: an unreachable or forbidden
# `helm history` stops both scripts (exit 6) with the release untouched; a release that never
# deployed is refused, not uninstalled (exit 1); a release that appears after the script saw
# "not found" (an install that raced ours) is not uninstalled when "our" first install fails
# (exit 4); a `helm rollback` the API server refuses once is retried and heals (exit 3), refused
# twice it exits 4 with the release's history in the summary.
# Prerequisites: a cluster in KUBECONFIG (hack/cluster.sh up) with localhost/selfheal-app:$IMAGE_TAG
# imported (hack/image.sh --import app); helm 3 or 4; jq, python3.
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: e2e/auto-rollback.sh [-h|--help]

Tests self-healing/auto-rollback.sh in a fresh namespace (deleted at exit) and prints
"auto-rollback: N passed, N failed". Exit status 0 only when every check passed. About 5 minutes.

Environment:
  KUBECONFIG   cluster to test (default: hack/cluster.sh's, ${CLUSTER_KUBECONFIG})
  IMAGE_TAG    tag of the imported app image localhost/selfheal-app (default: dev)
  HELM         helm binary, 3 or 4 (default: helm on PATH, the pinned Helm 4 first)
EOF
}

util::no_arguments "$@"

HELM="${HELM:-helm}"
export HELM
util::require_tools "${HELM}" kubectl jq python3
e2e::require_cluster

SCRIPT="${REPO_ROOT}/self-healing/auto-rollback.sh"
REPO=localhost/selfheal-app
TAG="${IMAGE_TAG:-dev}"
REL=shop
FULL="${REL}-selfheal-app"
TMP="$(mktemp -d)"
util::trap_add "rm -rf '${TMP}'"
e2e::namespace auto-rollback
NS="${E2E_NS}"
K=(kubectl --namespace "${NS}")
log::step "auto-rollback e2e in namespace ${NS}, $("${HELM}" version --short), image ${REPO}:${TAG}"

# NB: the list is captured first; `ctr ... | grep -q` fails under pipefail when grep stops
# reading early and ctr gets SIGPIPE (it made this check report a present image as missing).
if [[ -S "${CONTAINERD_SOCK}" ]] && ! grep -qx "${REPO}:${TAG}" <<<"$(util::ctr images ls -q 2>/dev/null || true)"; then
  log::fatal "${REPO}:${TAG} is not imported into the local cluster: run hack/image.sh --import app"
fi
# Two more tags of the same image, so "which version serves" is visible in the pod spec.
GOOD_TAG="${TAG}"
BAD_TAG="${TAG}"
if [[ -S "${CONTAINERD_SOCK}" ]] &&
  util::ctr images tag --force "${REPO}:${TAG}" "${REPO}:e2e-ar-good" >/dev/null 2>&1 &&
  util::ctr images tag --force "${REPO}:${TAG}" "${REPO}:e2e-ar-bad" >/dev/null 2>&1; then
  GOOD_TAG=e2e-ar-good
  BAD_TAG=e2e-ar-bad
  util::trap_add "util::ctr images rm '${REPO}:e2e-ar-good' '${REPO}:e2e-ar-bad' >/dev/null 2>&1 || true"
else
  log::warn "cannot tag images in the node's containerd (not the local cluster?): good and bad releases share tag ${TAG}"
fi

# Values every deploy passes (the CD pipeline would pass a values file); small and quick.
cat >"${TMP}/values.yaml" <<EOF
image: {repository: ${REPO}, pullPolicy: Never}
replicaCount: 2
# Fixed replicas: the checks count them (readyReplicas/spec.replicas 2/2) from the first install on.
autoscaling: {enabled: false}
app: {shutdownDelaySecs: 1}
termination: {preStopSleepSeconds: 1}
EOF
BASE=(--namespace "${NS}" --release "${REL}" --values "${TMP}/values.yaml" --output json)

# deploy NAME args...: run the script; keep its JSON summary in TMP/NAME.json, logs in NAME.log,
# exit code in NAME.rc. Never fails itself.
deploy() {
  local name="$1" rc=0
  shift
  "${SCRIPT}" "$@" >"${TMP}/${name}.json" 2>"${TMP}/${name}.log" || rc=$?
  echo "${rc}" >"${TMP}/${name}.rc"
  log::info "${name}: exit ${rc}: $(jq -c '{result, reason, deployed_revision, serving_revision, serving_images, duration_seconds}' "${TMP}/${name}.json" 2>/dev/null || echo 'no JSON summary')"
  return 0
}
rc_of() { cat "${TMP}/$1.rc"; }
# field NAME JQ: a value of NAME's JSON summary.
field() { jq -r "$2" "${TMP}/$1.json"; }
# show NAME: the run's log, for a failed check.
show() { tail -n 40 "${TMP}/$1.log" >&2; }
history_json() { "${HELM}" history "${REL}" --namespace "${NS}" -o json 2>/dev/null || echo '[]'; }
# serving_images: the images of the stable Deployment's running pods, sorted and unique.
serving_images() {
  "${K[@]}" get pods -l "app.kubernetes.io/instance=${REL}" --field-selector=status.phase=Running \
    -o jsonpath='{range .items[*]}{.spec.containers[0].image}{"\n"}{end}' | sort -u
}
# images_are IMAGE: the only image of the release's running pods is IMAGE.
images_are() { [[ "$(serving_images)" == "$1" ]]; }
get_root() { kubectl get --raw "/api/v1/namespaces/${NS}/services/http:${FULL}:http/proxy/"; }

# -- usage ----------------------------------------------------------------------------------------------
exits_2() {
  local rc=0
  "${SCRIPT}" "$@" >/dev/null 2>&1 || rc=$?
  [[ "${rc}" == 2 ]] || { log::error "exit ${rc} for: $*"; return 1; }
}
bad_flags_exit_2() {
  exits_2 --bogus && exits_2 --release "${REL}" && exits_2 --namespace "${NS}" --timeout 5x &&
    exits_2 --namespace "${NS}" --output yaml && exits_2 --namespace "${NS}" --set novalue &&
    exits_2 --namespace "${NS}" --max-error-ratio 2 && exits_2 --namespace "${NS}" --values /nonexistent.yaml &&
    exits_2 --namespace "${NS}" --timeout && exits_2 --namespace "${NS}" --rollback-retry-delay soon
}
check::run "bad flags (unknown, missing --namespace, bad duration/output/ratio/--set/retry delay, missing file or value) exit 2" bad_flags_exit_2
help_exits_0() { "${SCRIPT}" --help >"${TMP}/help" && grep -q -- '--pending-grace' "${TMP}/help" && grep -q -- '--dry-run' "${TMP}/help"; }
check::run "--help exits 0 and documents the options" help_exits_0

wrong_context() {
  deploy wrong-context "${BASE[@]}" --image-tag "${GOOD_TAG}" --kube-context no-such-context
  [[ "$(rc_of wrong-context)" == 1 && "$(field wrong-context .result)" == error ]] &&
    field wrong-context .reason | grep -q "kube context 'no-such-context' does not exist" &&
    [[ "$(history_json)" == '[]' ]]
}
check::run "a kube context that does not exist stops before any change (exit 1, no release)" wrong_context
missing_tool() {
  local rc=0
  HELM=no-such-helm "${SCRIPT}" "${BASE[@]}" >/dev/null 2>"${TMP}/missing.log" || rc=$?
  [[ "${rc}" == 1 ]] && grep -q 'missing tools: no-such-helm' "${TMP}/missing.log" && [[ "$(history_json)" == '[]' ]]
}
check::run "a missing tool (HELM=no-such-helm) is named, exit 1, nothing changed" missing_tool

# -- first install that fails: nothing to roll back to ------------------------------------------------
first_install_fails_clean() {
  deploy first-bad "${BASE[@]}" --image-tag "${BAD_TAG}" --set app.faultProfile=unready --timeout 30s
  [[ "$(rc_of first-bad)" == 5 && "$(field first-bad .result)" == install_failed ]] || { show first-bad; return 1; }
  field first-bad .timeline[].event | grep -q "release removed: nothing of ${REL} is left" || return 1
  ! "${HELM}" status "${REL}" --namespace "${NS}" >/dev/null 2>&1 &&
    [[ -z "$("${K[@]}" get deployments,services,pods,secrets -l "app.kubernetes.io/instance=${REL}" -o name)" ]] &&
    [[ -z "$("${K[@]}" get secrets -l "owner=helm,name=${REL}" -o name)" ]]
}
check::run "first install that fails: exit 5, no release, no objects, no Helm secrets left" first_install_fails_clean
# Helm is satisfied (pods Ready) but the smoke check is not: the script removes it itself.
first_install_fails_verification_clean() {
  deploy first-errors "${BASE[@]}" --image-tag "${BAD_TAG}" --set app.faultProfile=errors --timeout 60s
  [[ "$(rc_of first-errors)" == 5 && "$(field first-errors .result)" == install_failed ]] || { show first-errors; return 1; }
  field first-errors .reason | grep -q 'GET / through service/' &&
    ! "${HELM}" status "${REL}" --namespace "${NS}" >/dev/null 2>&1 &&
    [[ -z "$("${K[@]}" get deployments,services,pods -l "app.kubernetes.io/instance=${REL}" -o name)" ]] &&
    [[ -z "$("${K[@]}" get secrets -l "owner=helm,name=${REL}" -o name)" ]]
}
check::run "first install Helm accepts but verification rejects (faultProfile=errors): exit 5, uninstalled, nothing left" \
  first_install_fails_verification_clean

# -- good deploys ------------------------------------------------------------------------------------------
good_install() {
  deploy good-1 "${BASE[@]}" --image-tag "${TAG}" --set app.message=release-1 --timeout 120s
  [[ "$(rc_of good-1)" == 0 && "$(field good-1 .result)" == deployed && "$(field good-1 .serving_revision)" == 1 ]] || { show good-1; return 1; }
  get_root | grep -q '"message":"release-1"'
}
check::run "good first install: exit 0, revision 1 serving, the Service answers" good_install
good_upgrade() {
  deploy good-2 "${BASE[@]}" --image-tag "${GOOD_TAG}" --set app.message=release-2 --timeout 120s
  [[ "$(rc_of good-2)" == 0 && "$(field good-2 .result)" == deployed && "$(field good-2 .serving_revision)" == 2 &&
    "$(field good-2 '.serving_images | join(",")')" == "${REPO}:${GOOD_TAG}" ]] || { show good-2; return 1; }
  e2e::eventually 60 images_are "${REPO}:${GOOD_TAG}" && get_root | grep -q '"message":"release-2"'
}
check::run "good upgrade to ${GOOD_TAG}: exit 0, revision N=2 serving ${REPO}:${GOOD_TAG}" good_upgrade

# -- --dry-run changes nothing ---------------------------------------------------------------------------------
dry_run_changes_nothing() {
  local before after dep_before dep_after
  before="$(history_json)"
  dep_before="$("${K[@]}" get deployment "${FULL}" -o jsonpath='{.metadata.generation}/{.spec.template.spec.containers[0].image}')"
  deploy dry "${BASE[@]}" --image-tag "${BAD_TAG}" --set app.faultProfile=unready --dry-run
  after="$(history_json)"
  dep_after="$("${K[@]}" get deployment "${FULL}" -o jsonpath='{.metadata.generation}/{.spec.template.spec.containers[0].image}')"
  [[ "$(rc_of dry)" == 0 && "$(field dry .result)" == dry_run && "$(field dry .dry_run)" == true ]] || { show dry; return 1; }
  field dry .timeline[].event | grep -q 'plan: upgrade to revision 3; verify; on failure roll back to revision 2' || return 1
  [[ "${before}" == "${after}" && "${dep_before}" == "${dep_after}" ]] ||
    { log::error "history or Deployment changed: ${dep_before} -> ${dep_after}"; return 1; }
}
check::run "--dry-run: exit 0, prints the plan, helm history and the Deployment unchanged" dry_run_changes_nothing

# -- a bad release is rolled back -------------------------------------------------------------------------------
# A stand-in Pushgateway on loopback: records the path and body of every push.
PGW_PORT="$(util::free_port)"
python3 - "${PGW_PORT}" "${TMP}/pushes" >"${TMP}/pgw.log" 2>&1 <<'EOF' &
import sys, http.server
port, out = int(sys.argv[1]), sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        with open(out, "a") as f:
            f.write(f"PATH {self.path}\n{body}\n")
        self.send_response(200)
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
EOF
PGW_PID=$!
util::trap_add "kill ${PGW_PID} 2>/dev/null || true"

bad_release_rolled_back() {
  deploy bad "${BASE[@]}" --image-tag "${BAD_TAG}" --set app.faultProfile=unready --set app.message=release-bad \
    --timeout 40s --pushgateway "http://127.0.0.1:${PGW_PORT}"
  [[ "$(rc_of bad)" == 3 && "$(field bad .result)" == rolled_back ]] || { show bad; return 1; }
  [[ "$(field bad .previous_revision)" == 2 && "$(field bad .deployed_revision)" == 3 && "$(field bad .serving_revision)" == 4 ]] ||
    { log::error "revisions: $(jq -c '{previous_revision, deployed_revision, serving_revision}' "${TMP}/bad.json")"; return 1; }
  [[ "$(field bad '.serving_images | join(",")')" == "${REPO}:${GOOD_TAG}" ]]
}
check::run "bad release (faultProfile=unready): exit 3, revision 3 failed, revision 4 (the rollback) serves" bad_release_rolled_back
summary_says_why() {
  field bad .reason | grep -q 'helm upgrade --install failed after' &&
    field bad .reason | grep -qi 'not ready\|deadline\|timed out' &&
    field bad .timeline[].event | grep -q '^healthy again: revision 4 (rollback to 2)'
}
check::run "the summary says why (helm's not-ready error) and when it was healthy again" summary_says_why
cluster_serves_good() {
  local hist
  hist="$(history_json)"
  [[ "$(jq -r '.[] | select(.revision == 3) | .status' <<<"${hist}")" == failed &&
    "$(jq -r '.[] | select(.revision == 4) | .status' <<<"${hist}")" == deployed &&
    "$(jq -r '.[] | select(.revision == 4) | .description' <<<"${hist}")" == "Rollback to 2" ]] || return 1
  e2e::eventually 60 images_are "${REPO}:${GOOD_TAG}" && get_root | grep -q '"message":"release-2"' &&
    [[ "$("${K[@]}" get deployment "${FULL}" -o jsonpath='{.status.readyReplicas}/{.spec.replicas}')" == 2/2 ]]
}
check::run "helm history: 3 failed, 4 'Rollback to 2' deployed; only ${GOOD_TAG} pods run, 2/2 Ready, release-2 answers" cluster_serves_good
rollback_pushed() {
  grep -q "^PATH /metrics/job/selfheal-autorollback/namespace/${NS}/release/${REL}$" "${TMP}/pushes" &&
    grep -Eq '^selfheal_autorollback_last_rollback_timestamp_seconds [0-9]{10}$' "${TMP}/pushes" &&
    grep -q '^selfheal_autorollback_last_rollback_healthy 1$' "${TMP}/pushes" &&
    grep -q '^selfheal_autorollback_last_run_success 0$' "${TMP}/pushes"
}
check::run "the rollback was pushed to the Pushgateway (metrics of the SelfhealHelmRollback alert)" rollback_pushed
log::info "measured (bad release, --timeout 40s): $(jq -r '.timeline | map("+\(.elapsed_seconds)s \(.event)") | join("; ")' "${TMP}/bad.json" 2>/dev/null || true)"

errors_caught_by_smoke() {
  deploy errors "${BASE[@]}" --image-tag "${BAD_TAG}" --set app.faultProfile=errors --set app.faultErrorPercent=50 --timeout 60s
  [[ "$(rc_of errors)" == 3 && "$(field errors .result)" == rolled_back && "$(field errors .serving_revision)" == 6 ]] || { show errors; return 1; }
  field errors .reason | grep -Eq '^[0-9]+ of 20 GET / through service/'"${FULL}"' failed' &&
    e2e::eventually 60 images_are "${REPO}:${GOOD_TAG}"
}
check::run "bad release that passes readiness (faultProfile=errors): the GET / smoke check catches it, rollback (revision 6)" errors_caught_by_smoke

# -- a release left pending-upgrade by an interrupted run ---------------------------------------------------------
interrupt_an_upgrade() {
  local pid i status=""
  "${HELM}" upgrade "${REL}" "${REPO_ROOT}/helm-chart" --namespace "${NS}" --values "${TMP}/values.yaml" \
    --set "image.tag=${BAD_TAG}" --set app.faultProfile=unready --wait --timeout 120s >"${TMP}/interrupted.log" 2>&1 &
  pid=$!
  for ((i = 0; i < 60; i++)); do
    status="$("${HELM}" status "${REL}" --namespace "${NS}" -o json 2>/dev/null | jq -r .info.status)"
    [[ "${status}" == pending-upgrade ]] && break
    sleep 0.5
  done
  kill -9 "${pid}" 2>/dev/null || true
  wait "${pid}" 2>/dev/null || true
  [[ "$("${HELM}" status "${REL}" --namespace "${NS}" -o json | jq -r .info.status)" == pending-upgrade ]]
}
check::run "helm killed mid-upgrade leaves revision 7 pending-upgrade" interrupt_an_upgrade
young_pending_refused() {
  local before
  before="$(history_json)"
  deploy pending-young "${BASE[@]}" --image-tag "${GOOD_TAG}" --timeout 60s
  [[ "$(rc_of pending-young)" == 1 ]] && field pending-young .reason | grep -q 'pending-upgrade since' &&
    [[ "$(history_json)" == "${before}" ]]
}
check::run "a young pending release is left alone (exit 1: another deploy may be running), history unchanged" young_pending_refused
pending_dry_run() {
  local before
  before="$(history_json)"
  deploy pending-dry "${BASE[@]}" --image-tag "${GOOD_TAG}" --pending-grace 0s --dry-run
  [[ "$(rc_of pending-dry)" == 0 ]] || { show pending-dry; return 1; }
  field pending-dry .timeline[].event | grep -q 'plan: upgrade to revision 9; verify; on failure roll back to revision 6' &&
    grep -q "\[dry-run\] .* rollback ${REL} 6 " "${TMP}/pending-dry.log" && [[ "$(history_json)" == "${before}" ]]
}
check::run "--dry-run on the pending release: plans rollback to 6 and upgrade to 9, history unchanged" pending_dry_run
pending_recovered() {
  deploy pending "${BASE[@]}" --image-tag "${GOOD_TAG}" --set app.message=release-3 --timeout 90s --pending-grace 0s
  [[ "$(rc_of pending)" == 0 && "$(field pending .result)" == deployed ]] || { show pending; return 1; }
  field pending .timeline[].event | grep -q 'left pending-upgrade by an interrupted run' &&
    field pending .timeline[].event | grep -q 'recovered: rolled back to revision 6' &&
    [[ "$("${HELM}" status "${REL}" --namespace "${NS}" -o json | jq -r '.info.status + "/" + (.version | tostring)')" == deployed/9 ]] &&
    e2e::eventually 60 images_are "${REPO}:${GOOD_TAG}" && get_root | grep -q '"message":"release-3"'
}
check::run "--pending-grace 0s: the interrupted release is rolled back (8), then deployed (9), release-3 answers" pending_recovered

# -- the optional Prometheus error-rate check ----------------------------------------------------------------------
# A stand-in Prometheus on loopback (e2e/stand_in_prometheus.py): it loads the recording rules
# the gate reads and answers every query with a 25 % 5xx ratio (the pods here are scraped by no
# Prometheus); it records the queries it got.
PROM_PORT="$(util::free_port)"
python3 "${REPO_ROOT}/e2e/stand_in_prometheus.py" "${PROM_PORT}" "${TMP}/queries" 0.25 >"${TMP}/prom.log" 2>&1 &
PROM_PID=$!
util::trap_add "kill ${PROM_PID} 2>/dev/null || true"
prometheus_ratio_rolls_back() {
  util::wait_for "stand-in Prometheus" 10 curl -fsS -m 2 "http://127.0.0.1:${PROM_PORT}/api/v1/query?query=up" || return 1
  deploy prom-bad "${BASE[@]}" --image-tag "${GOOD_TAG}" --timeout 60s --prometheus "http://127.0.0.1:${PROM_PORT}"
  [[ "$(rc_of prom-bad)" == 3 && "$(field prom-bad .serving_revision)" == 11 ]] || { show prom-bad; return 1; }
  field prom-bad .reason | grep -q "^Prometheus: 5xx ratio of service/${FULL} over 2m (.*) is 0.25 (more than 0.05)" &&
    grep -q "selfheal:http_error.*namespace=\"${NS}\",job=\"${FULL}\"" "${TMP}/queries"
}
check::run "--prometheus: a 5xx ratio of 0.25 for the release's Service fails verification, rollback (revision 11)" prometheus_ratio_rolls_back
unreachable_prometheus_skipped() {
  deploy prom-down "${BASE[@]}" --image-tag "${GOOD_TAG}" --timeout 60s --prometheus "http://127.0.0.1:9"
  [[ "$(rc_of prom-down)" == 0 && "$(field prom-down .serving_revision)" == 12 ]] || { show prom-down; return 1; }
  field prom-down .timeline[].event | grep -q 'Prometheus not reachable: error-rate check skipped'
}
check::run "--prometheus unreachable: the check is skipped and said so, deploy succeeds (revision 12)" unreachable_prometheus_skipped

# -- self-healing/rollback-to.sh: a person's "roll back to revision N" (the CD workflow's dispatch) ----------
ROLLBACK_TO="${REPO_ROOT}/self-healing/rollback-to.sh"
revisions() { history_json | jq -c 'map(.revision)'; }
rollback_to_refuses() {
  local before rc=0
  before="$(revisions)"
  SCRIPT="${ROLLBACK_TO}" exits_2 --namespace "${NS}" --release "${REL}" || return 1
  SCRIPT="${ROLLBACK_TO}" exits_2 --namespace "${NS}" --release "${REL}" --revision 0 || return 1
  SCRIPT="${ROLLBACK_TO}" deploy rb-missing --namespace "${NS}" --release "${REL}" --revision 999 --output json
  [[ "$(rc_of rb-missing)" == 1 && "$(field rb-missing .result)" == error ]] || { show rb-missing; return 1; }
  field rb-missing .reason | grep -q '^revision 999 is not in the history' && [[ "$(revisions)" == "${before}" ]]
}
check::run "rollback-to: no/zero revision exit 2; a revision not in the history exit 1, history unchanged" rollback_to_refuses
rollback_to_dry_run() {
  local before
  before="$(revisions)"
  SCRIPT="${ROLLBACK_TO}" deploy rb-dry --namespace "${NS}" --release "${REL}" --revision 4 --output json --dry-run
  [[ "$(rc_of rb-dry)" == 0 && "$(field rb-dry .result)" == dry_run && "$(field rb-dry .dry_run)" == true ]] || { show rb-dry; return 1; }
  [[ "$(revisions)" == "${before}" ]] && images_are "${REPO}:${GOOD_TAG}"
}
check::run "rollback-to --dry-run: exit 0, the plan, history and pods unchanged" rollback_to_dry_run
# Helm keeps 10 revisions: 3..12 are left; 4 is "Rollback to 2" (message release-2).
rollback_to_four() {
  SCRIPT="${ROLLBACK_TO}" deploy rb-4 --namespace "${NS}" --release "${REL}" --revision 4 --timeout 2m --output json
  [[ "$(rc_of rb-4)" == 0 && "$(field rb-4 .result)" == rolled_back && "$(field rb-4 .target_revision)" == 4 &&
    "$(field rb-4 .serving_revision)" == 13 && "$(field rb-4 '.serving_images | join(",")')" == "${REPO}:${GOOD_TAG}" ]] || { show rb-4; return 1; }
  get_root | grep -q '"message":"release-2"' && [[ "$(history_json | jq -r 'last | .description')" == "Rollback to 4" ]]
}
check::run "rollback-to --revision 4: exit 0, revision 13 is 'Rollback to 4', serves its message, verified" rollback_to_four

# -- Helm's own failures ------------------------------------------------------------------------------------
# A helm wrapper for the scripts (HELM=...): the real helm for everything but `helm history`, which
# it sends where HISTORY_FAULT says, so that the real Helm fails for real:
#   unreachable      an API server address where nothing listens (connection refused)
#   forbidden        impersonating a user without RBAC ("secrets is forbidden")
#   first-not-found  only the first call looks in a namespace without the release: Helm's real
#                    "release: not found", as when another deploy installs it right after the
#                    script looked; later calls are untouched
REAL_HELM="$(command -v "${HELM}")"
FAULTY_HELM="${TMP}/bin/helm"
mkdir -p "${TMP}/bin"
cat >"${FAULTY_HELM}" <<EOF
#!/usr/bin/env bash
set -o errexit -o nounset -o pipefail
for a in "\$@"; do
  [[ "\${a}" == history ]] || continue
  case "\${HISTORY_FAULT:-}" in
    unreachable) exec "${REAL_HELM}" "\$@" --kube-apiserver https://127.0.0.1:1 ;;
    forbidden) exec "${REAL_HELM}" "\$@" --kube-as-user selfheal-e2e-nobody ;;
    first-not-found) mkdir "${TMP}/first-history-done" 2>/dev/null && exec "${REAL_HELM}" "\$@" --namespace "${NS}-no-release" ;;
  esac
  break
done
exec "${REAL_HELM}" "\$@"
EOF
chmod +x "${FAULTY_HELM}"
# release_ok: the release is deployed and only GOOD_TAG pods serve.
release_ok() {
  [[ "$("${HELM}" status "${REL}" --namespace "${NS}" -o json | jq -r .info.status)" == deployed ]] &&
    e2e::eventually 60 images_are "${REPO}:${GOOD_TAG}"
}

history_error_stops() {
  local before fault want
  before="$(history_json)"
  [[ "$(jq length <<<"${before}")" -gt 0 ]] || { log::error "no release to protect"; return 1; }
  for fault in unreachable forbidden; do
    case "${fault}" in
      unreachable) want='Error: kubernetes cluster unreachable' ;;
      forbidden) want='secrets is forbidden' ;;
    esac
    # A bad release on purpose: read as "no release" it would be installed with
    # --rollback-on-failure, fail, and be uninstalled by the first-install cleanup.
    HISTORY_FAULT="${fault}" HELM="${FAULTY_HELM}" deploy "history-${fault}" "${BASE[@]}" \
      --image-tag "${BAD_TAG}" --set app.faultProfile=unready --timeout 30s
    [[ "$(rc_of "history-${fault}")" == 6 && "$(field "history-${fault}" .result)" == history_error ]] ||
      { show "history-${fault}"; return 1; }
    field "history-${fault}" .reason | grep -q "^could not read the history of release ${REL} in ${NS}: helm history failed (exit 1): .*${want}" ||
      { log::error "reason: $(field "history-${fault}" .reason)"; return 1; }
    ! grep -qE ' \+ .*(upgrade|rollback|uninstall) ' "${TMP}/history-${fault}.log" ||
      { log::error "a changing helm command ran"; show "history-${fault}"; return 1; }
  done
  HISTORY_FAULT=unreachable HELM="${FAULTY_HELM}" SCRIPT="${REPO_ROOT}/self-healing/rollback-to.sh" \
    deploy rb-history --namespace "${NS}" --release "${REL}" --revision 4 --output json
  [[ "$(rc_of rb-history)" == 6 && "$(field rb-history .result)" == history_error ]] || { show rb-history; return 1; }
  [[ "$(history_json)" == "${before}" ]] || { log::error "history changed"; return 1; }
  release_ok
}
check::run "helm history unreachable or forbidden: auto-rollback and rollback-to exit 6, the release untouched (same history, deployed, ${GOOD_TAG})" \
  history_error_stops

# A release whose only revision failed (an install without --rollback-on-failure): not uninstalled.
never_deployed_refused() {
  local before
  if "${HELM}" install fresh "${REPO_ROOT}/helm-chart" --namespace "${NS}" --values "${TMP}/values.yaml" \
    --set "image.tag=${BAD_TAG}" --set app.faultProfile=unready --wait --timeout 15s >"${TMP}/fresh-install.log" 2>&1; then
    log::error "the unready install should have failed"
    return 1
  fi
  before="$("${HELM}" history fresh --namespace "${NS}" -o json)"
  [[ "$(jq -r 'map(.status) | join(",")' <<<"${before}")" == failed ]] || { log::error "history of fresh: ${before}"; return 1; }
  deploy never "${BASE[@]}" --release fresh --image-tag "${GOOD_TAG}" --timeout 60s
  [[ "$(rc_of never)" == 1 && "$(field never .result)" == error ]] || { show never; return 1; }
  field never .reason | grep -q '^release fresh has 1 revision(s) but none ever deployed successfully .*never uninstalls a release with history' &&
    [[ "$("${HELM}" history fresh --namespace "${NS}" -o json)" == "${before}" ]]
}
check::run "a release that never deployed (revision 1 failed): refused with exit 1, not uninstalled, history unchanged" never_deployed_refused
"${HELM}" uninstall fresh --namespace "${NS}" --wait --timeout 60s >/dev/null 2>&1 || true

# "Not found", then the release is there (an install raced ours): Helm upgrades it with
# --rollback-on-failure, the bad upgrade fails and Helm rolls it back; the script must not
# uninstall it as its own failed first install.
raced_release_kept() {
  local before
  before="$(history_json | jq length)"
  rm -rf "${TMP}/first-history-done"
  HISTORY_FAULT=first-not-found HELM="${FAULTY_HELM}" deploy raced "${BASE[@]}" \
    --image-tag "${BAD_TAG}" --set app.faultProfile=unready --timeout 30s
  [[ "$(rc_of raced)" == 4 && "$(field raced .result)" == install_cleanup_failed ]] || { show raced; return 1; }
  field raced .timeline[].event | grep -q 'first install' || { log::error "not read as a first install"; return 1; }
  field raced .reason | grep -q 'the release was not removed: its history (.*) is not just the revision 1 this run installed' &&
    [[ "$(field raced '.release_history | length')" -gt 0 ]] && ! grep -qE ' \+ .* uninstall ' "${TMP}/raced.log" &&
    [[ "$(history_json | jq length)" -ge "${before}" ]] && release_ok
}
check::run "an install that raced ours ('not found', then there): not uninstalled, exit 4 with its history, still deployed" raced_release_kept

# The API server refuses the rollback for real: the last good revision has a PodDisruptionBudget,
# the bad one drops it, and a ResourceQuota of 0 PDBs (existing ones may stay) refuses its re-creation.
no_new_pdbs() { "${K[@]}" create quota no-new-pdbs --hard=count/poddisruptionbudgets.policy=0 >/dev/null; }
BAD_NO_PDB=(--image-tag "${BAD_TAG}" --set app.faultProfile=errors --set podDisruptionBudget.enabled=false --timeout 60s)
rollback_retry_heals() {
  local watcher rc=0
  "${K[@]}" get pdb "${FULL}" >/dev/null || { log::error "the serving revision has no PDB"; return 1; }
  no_new_pdbs || return 1
  # Lift the quota while the script waits to retry (as when a blip passes).
  (e2e::eventually 180 grep -q 'retrying once in' "${TMP}/retry.log" &&
    "${K[@]}" delete quota no-new-pdbs >/dev/null) &
  watcher=$!
  deploy retry "${BASE[@]}" "${BAD_NO_PDB[@]}" --rollback-retry-delay 15s
  wait "${watcher}" || rc=$?
  "${K[@]}" delete quota no-new-pdbs --ignore-not-found >/dev/null
  ((rc == 0)) || { log::error "the script never said it would retry"; show retry; return 1; }
  [[ "$(rc_of retry)" == 3 && "$(field retry .result)" == rolled_back ]] || { show retry; return 1; }
  field retry .timeline[].event | grep -q 'failed (Error: .*exceeded quota: no-new-pdbs.*); retrying once in 15s' &&
    field retry .timeline[].event | grep -q 'succeeded on the retry' &&
    [[ "$(grep -cE " \+ .* rollback ${REL} [0-9]+ " "${TMP}/retry.log")" == 2 ]] &&
    "${K[@]}" get pdb "${FULL}" >/dev/null && release_ok
}
check::run "helm rollback refused once (quota), retried after --rollback-retry-delay: exit 3, healthy, PDB back" rollback_retry_heals
rollback_refused_exits_4() {
  no_new_pdbs || return 1
  deploy refused "${BASE[@]}" "${BAD_NO_PDB[@]}" --rollback-retry-delay 2s
  "${K[@]}" delete quota no-new-pdbs --ignore-not-found >/dev/null
  [[ "$(rc_of refused)" == 4 && "$(field refused .result)" == rollback_failed ]] || { show refused; return 1; }
  field refused .reason | grep -q 'then helm rollback to revision [0-9]* failed twice (retried after 2s): Error: .*exceeded quota: no-new-pdbs' &&
    [[ "$(grep -cE " \+ .* rollback ${REL} [0-9]+ " "${TMP}/refused.log")" == 2 ]] &&
    [[ "$(field refused '.release_history | last | .status')" == failed ]] &&
    field refused '.release_history | last | .description' | grep -q 'exceeded quota' &&
    grep -q "STATUS: failed" "${TMP}/refused.log" &&
    "${HELM}" status "${REL}" --namespace "${NS}" >/dev/null
}
check::run "helm rollback refused twice (quota): exit 4 after 2 attempts, the summary holds the release's history, release kept" rollback_refused_exits_4

((CHECK_FAILED == 0)) || { e2e::dump "${NS}"; "${HELM}" history "${REL}" --namespace "${NS}" >&2 || true; }
check::summary auto-rollback
