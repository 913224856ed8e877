#!/usr/bin/env bash
# HealingPolicy (selfheal.io/v1alpha1) with the shipped controller image and manifests:
# `kubectl apply -k controller/deploy` installs the generated CRD with the controller; the API
# server refuses every example under controller/examples/healing-policies/rejected/ with its CEL
# message; the good examples apply; a policy evicts a crash-looping pod and its status says so;
# `kubectl get healingpolicies` shows the printer columns; a dry-run policy acts on nothing, and
# once it is deleted the default policy (the controller's flags) takes over.
# The in-process cluster tests (controller/tests/cluster_healingpolicy.rs) cover every action and
# trigger; this script proves the image, RBAC and manifests do the same.
# Prerequisites: a cluster in KUBECONFIG with localhost/selfheal-controller:dev and
# localhost/selfheal-toolbox:dev imported (make test does both). Removes what it installs
# (the CRD only when it was not installed before).
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: e2e/healingpolicy.sh [-h|--help]

Installs controller/deploy (controller + HealingPolicy CRD), checks CEL validation, printer
columns, status, dry-run and deletion on a real API server, then uninstalls.
Prints "healingpolicy: N passed, N failed".

Environment:
  KUBECONFIG   cluster to test (default: hack/cluster.sh's, ${CLUSTER_KUBECONFIG})
EOF
}

util::no_arguments "$@"

e2e::require_cluster
SYS="${E2E_CONTROLLER_NS}"
EXAMPLES="${REPO_ROOT}/controller/examples/healing-policies"
e2e::install_controller own
# A 20 s default cooldown (flags: 300 s) so the hand-back to the default policy at the end is
# seen within the test; set before the first rollout completes, so no history is lost.
kubectl -n "${SYS}" set env deployment/selfheal-controller CONTROLLER_COOLDOWN_SECS=20 >/dev/null
check::run "the generated CRD is Established" \
  kubectl wait --for=condition=Established crd/healingpolicies.selfheal.io --timeout=60s
check::run "controller Deployment rolls out with 2 Ready replicas" \
  kubectl -n "${SYS}" rollout status deployment/selfheal-controller --timeout=180s

e2e::namespace healingpolicy
NS="${E2E_NS}"

# -- CEL validation -------------------------------------------------------------------------------
# rejected FILE: the API server refuses it with the message on its `# expect:` line.
rejected() {
  local expect out
  expect="$(sed -n 's/^# expect: //p' "$1")"
  [[ -n "${expect}" ]] || return 1
  if out="$(kubectl -n "${NS}" apply --dry-run=server -f "$1" 2>&1)"; then
    log::error "accepted: $1"
    return 1
  fi
  grep -qF -- "${expect}" <<<"${out}" || {
    log::error "refused, but not with \"${expect}\": ${out}"
    return 1
  }
}
for f in "${EXAMPLES}"/rejected/*.yaml; do
  check::run "refused with its CEL message: rejected/$(basename "${f}")" rejected "${f}"
done
check::run "the good examples apply" kubectl -n "${NS}" apply -f "${EXAMPLES}/" >/dev/null

# -- a policy acting, and one in dry-run ----------------------------------------------------------
log::step "two crash-looping Deployments in ${NS}: crasher (policy evicts) and dry (policy in dry-run)"
policy() { # name dryRun
  cat <<EOF
apiVersion: selfheal.io/v1alpha1
kind: HealingPolicy
metadata: {name: $1, namespace: ${NS}}
spec:
  selector: {matchLabels: {app: $1}}
  triggers: {crashLoopBackOff: true, restartCount: {over: 1}}
  action: {type: evict}
  cooldown: 10s
  maxRetries: 5
  dryRun: $2
EOF
}
{ policy crasher false; echo ---; policy dry true; } | kubectl apply -f - >/dev/null
{ e2e::crasher crasher "${NS}"; echo ---; e2e::crasher dry "${NS}"; } | kubectl apply -f - >/dev/null

uid_of() { kubectl -n "${NS}" get pods -l "app=$1" -o jsonpath='{.items[0].metadata.uid}' 2>/dev/null; }
crasher_uid=""
dry_uid=""
first_pods() {
  crasher_uid="$(uid_of crasher)"
  dry_uid="$(uid_of dry)"
  [[ -n "${crasher_uid}" && -n "${dry_uid}" ]]
}
e2e::eventually 60 first_pods || log::warn "the pods did not appear within 60 s"

status_of() { kubectl -n "${NS}" get healingpolicy "$1" -o jsonpath="{.status.$2}"; }
# The image runs with the default minimum pod age (60 s): about 80 s in all.
evicted_by_policy() { [[ "$(status_of crasher lastAction.action)" == evict && "$(status_of crasher lastAction.dryRun)" == false ]]; }
check::run "the crasher policy's status reports the eviction (lastAction evict)" e2e::eventually 240 evicted_by_policy
replaced() {
  local uids
  uids="$(kubectl -n "${NS}" get pods -l app=crasher -o jsonpath='{.items[*].metadata.uid}')"
  [[ -n "${crasher_uid}" && -n "${uids}" && "${uids}" != *"${crasher_uid}"* ]]
}
check::run "the crash-looping pod was replaced" e2e::eventually 60 replaced
status_complete() {
  [[ "$(status_of crasher 'conditions[?(@.type=="Ready")].status')" == True ]] &&
    [[ "$(status_of crasher observedGeneration)" == "$(kubectl -n "${NS}" get healingpolicy crasher -o jsonpath='{.metadata.generation}')" ]] &&
    [[ "$(status_of crasher actionsInWindow)" -ge 1 ]] &&
    [[ "$(status_of crasher matchedPods)" == 1 ]]
}
check::run "status: Ready, observedGeneration, actionsInWindow >= 1, matchedPods 1" e2e::eventually 30 status_complete
event_names_policy() {
  kubectl -n "${NS}" get events --field-selector reason=Recycled -o jsonpath='{.items[*].message}' |
    grep -qF "HealingPolicy ${NS}/crasher"
}
check::run "the Recycled Event names the policy" event_names_policy

dry_run_reported() { [[ "$(status_of dry lastAction.summary)" == dry-run:* ]]; }
check::run "the dry-run policy reports what it would do (lastAction dry-run: ...)" e2e::eventually 120 dry_run_reported
check::run "the dry-run policy acted on nothing (same pod)" test "$(uid_of dry)" == "${dry_uid}"

columns() {
  local out
  out="$(kubectl -n "${NS}" get healingpolicies)"
  log::info "kubectl get healingpolicies:"$'\n'"${out}"
  grep -Eq '^NAME +SELECTOR +ACTION +DRY-RUN +MATCHED +LAST-ACTION +AGE' <<<"${out}" &&
    grep -Eq '^crasher +app=crasher +evict +false +1 +evict crasher-' <<<"${out}" &&
    grep -Eq '^dry +app=dry +evict +true +1 +dry-run: evict dry-' <<<"${out}"
}
check::run "kubectl get healingpolicies shows selector, action, dry-run, matched, last action, age" columns
check::run "kubectl get hp (short name) works" kubectl -n "${NS}" get hp crasher

leader() { kubectl -n "${SYS}" get lease selfheal-controller -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
metric_counted() {
  kubectl get --raw "/api/v1/namespaces/${SYS}/pods/$(leader):8081/proxy/metrics" |
    grep -E '^selfheal_controller_healing_actions_total\{action="evict",outcome="dry_run"\} [1-9]'
}
check::run "the leader counts the dry-run decision in selfheal_controller_healing_actions_total" e2e::eventually 30 metric_counted

log::step "deleting the dry-run policy: the default policy (the controller's flags) takes over"
kubectl -n "${NS}" delete healingpolicy dry >/dev/null
# The dry-run decisions count in the workload's history (so a dry-run shows the real cadence):
# the default policy evicts once its own cooldown (20 s here) has passed since the last one.
default_evicts() {
  kubectl -n "${NS}" get events --field-selector reason=Recycled \
    -o jsonpath='{range .items[*]}{.action}|{.involvedObject.kind}|{.message}{"\n"}{end}' |
    grep -E '^Evict\|Pod\|' | grep -F '(default policy)' | grep -q 'dry'
}
check::run "after the dry-run policy is deleted the default policy (flags) evicts its pod" e2e::eventually 120 default_evicts
dry_replaced() {
  local uids
  uids="$(kubectl -n "${NS}" get pods -l app=dry -o jsonpath='{.items[*].metadata.uid}')"
  [[ -n "${uids}" && "${uids}" != *"${dry_uid}"* ]]
}
check::run "the dry pod was replaced" e2e::eventually 60 dry_replaced

((CHECK_FAILED == 0)) || {
  e2e::dump "${NS}"
  kubectl -n "${NS}" get healingpolicies -o yaml >&2 || true
  kubectl -n "${SYS}" logs deployment/selfheal-controller --tail=60 >&2 || true
}
check::summary healingpolicy
