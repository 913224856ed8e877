#!/usr/bin/env bash
# Layer 3 with the real image: the controller installed by its own manifests
# (kubectl apply -k controller/deploy) runs two replicas with one Lease holder, and recycles a
# crash-looping pod of a Deployment through the Eviction API — Event on the owner, metric bumped,
# a fresh pod in its place, the recycle saved in its history ConfigMap; a frozen leader thawed
# after the other replica took over writes nothing. The in-process cluster tests (controller/tests/cluster_*.rs) cover
# every decision; this script proves the shipped image, RBAC and manifests do the same.
# Prerequisites: a cluster in KUBECONFIG with localhost/selfheal-controller:dev and
# localhost/selfheal-toolbox:dev imported (make test does both). Removes what it installs.
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: e2e/controller.sh [-h|--help]

Installs controller/deploy, crashes a Deployment's pod until the controller recycles it, then
uninstalls. Prints "controller: N passed, N failed".
EOF
}

util::no_arguments "$@"

e2e::require_cluster
SYS="${E2E_CONTROLLER_NS}"
e2e::install_controller own
check::run "controller Deployment rolls out with 2 Ready replicas" \
  kubectl -n "${SYS}" rollout status deployment/selfheal-controller --timeout=180s
leader() { kubectl -n "${SYS}" get lease selfheal-controller -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
leader_is_a_replica() {
  local holder
  holder="$(leader)"
  [[ -n "${holder}" ]] && kubectl -n "${SYS}" get pod "${holder}" >/dev/null 2>&1
}
check::run "one replica holds the Lease" e2e::eventually 60 leader_is_a_replica

e2e::namespace controller
NS="${E2E_NS}"
log::step "a Deployment whose container exits 1 after 2 s, in ${NS}"
e2e::crasher crasher "${NS}" 2 | kubectl apply -f - >/dev/null
# The same crash loop on 2 replicas under a PodDisruptionBudget that allows no disruption: every
# eviction is a 429. The shipped binary must see it (RecycleBlocked), not retry it inside its
# HTTP client for minutes (kube's default retry layer did, before the binary used the tests'
# client), and must try again later with a growing delay, never force it.
log::step "the same crash loop on 2 replicas under a PodDisruptionBudget minAvailable: 2"
e2e::crasher guarded "${NS}" 2 2 | kubectl apply -f - >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: guarded, namespace: ${NS}}
spec:
  minAvailable: 2
  selector: {matchLabels: {app: guarded}}
YAML
first_uid=""
remember_first_pod() {
  first_uid="$(kubectl -n "${NS}" get pods -l app=crasher -o jsonpath='{.items[0].metadata.uid}' 2>/dev/null)"
  [[ -n "${first_uid}" ]]
}
e2e::eventually 60 remember_first_pod || log::warn "the crasher pod did not appear within 60 s"
guarded_uids() { kubectl -n "${NS}" get pods -l app=guarded -o jsonpath='{.items[*].metadata.uid}' | tr ' ' '\n' | sort; }
guarded_before=""
two_guarded() { guarded_before="$(guarded_uids)"; [[ "$(wc -w <<<"${guarded_before}")" -eq 2 ]]; }
e2e::eventually 60 two_guarded || log::warn "the 2 guarded pods did not appear within 60 s"

# Defaults: more than 3 restarts and at least 60 s old -> recycled (about 80 s in all).
recycled_event() {
  kubectl -n "${NS}" get events --field-selector reason=Recycled -o jsonpath='{.items[*].involvedObject.kind}' | grep -q Deployment
}
check::run "the controller records a Recycled Event on the owning Deployment" e2e::eventually 240 recycled_event
fresh_pod() {
  local uids
  uids="$(kubectl -n "${NS}" get pods -l app=crasher -o jsonpath='{.items[*].metadata.uid}')"
  [[ -n "${first_uid}" && -n "${uids}" && "${uids}" != *"${first_uid}"* ]]
}
check::run "the crash-looping pod was replaced by a fresh one" e2e::eventually 60 fresh_pod
recycled_messages() { kubectl -n "${NS}" get events --field-selector reason=Recycled -o jsonpath='{.items[*].message}'; }
evidence_in_event() { recycled_messages | grep -q 'last terminated Error (exit 1)'; }
check::run "the Event carries the crashed container's exit as evidence" evidence_in_event
# Log evidence is opt-in (CONTROLLER_LOG_EVIDENCE, on in controller/deploy-demo only): Events are
# readable by more people than pod logs. The crasher logs "failing on purpose" before each exit.
no_log_in_event() { ! recycled_messages | grep -q 'failing on purpose'; }
check::run "the shipped defaults copy no log line into the Event" no_log_in_event
metric_counted() {
  kubectl get --raw "/api/v1/namespaces/${SYS}/pods/$(leader):8081/proxy/metrics" |
    grep -E "^selfheal_controller_recycles_total\{[^}]*namespace=\"${NS}\"" | grep -Eq ' [1-9][0-9]*$'
}
check::run "the leader's selfheal_controller_recycles_total counts it" e2e::eventually 30 metric_counted

# The PDB case: the refusal is reported on the pod and on its owner, counted, and retried with
# a doubling delay (the base delay is 1 s), and no new try before the delay is over.
blocked_event_on() {
  kubectl -n "${NS}" get events --field-selector "reason=RecycleBlocked,involvedObject.kind=$1" \
    -o jsonpath='{.items[*].message}' | grep -q "$2"
}
check::run "a refused eviction is a RecycleBlocked Event on the pod" \
  e2e::eventually 240 blocked_event_on Pod 'eviction refused'
check::run "... and on the owning Deployment" e2e::eventually 30 blocked_event_on Deployment 'eviction refused'
# NB: repeated Events with the same reason on the same object become one Event series (its note
# stays the first one's), so the retries are read from the leader's log: attempt 2 after 2 s.
second_try_logged() {
  kubectl -n "${SYS}" logs "$(leader)" | grep 'eviction blocked by disruption budget' |
    grep -E '"attempt":2[,}]' | grep -q '"delay":"2s"'
}
check::run "... retried with a doubling delay, never forced (attempt 2 after 2s)" \
  e2e::eventually 60 second_try_logged
leader_metric() {
  kubectl get --raw "/api/v1/namespaces/${SYS}/pods/$(leader):8081/proxy/metrics" | grep -E "$1" | grep -Eq ' [1-9][0-9]*$'
}
check::run "the leader's selfheal_controller_evictions_blocked_total counts it" \
  e2e::eventually 30 leader_metric '^selfheal_controller_evictions_blocked_total '
check::run "the leader exports selfheal_controller_api_requests_total (the tests' client)" \
  e2e::eventually 30 leader_metric '^selfheal_controller_api_requests_total\{verb="watch"\}'
# The ValidatingAdmissionPolicy shipped with the manifests, tried as the controller's
# ServiceAccount (impersonation, server-side dry run: admission runs, nothing is stored).
AS="--as=system:serviceaccount:${SYS}:selfheal-controller"
as_controller() { kubectl "${AS}" --dry-run=server "$@"; }
# refused ARGS...: the request fails, and it is the admission policy that refused it (not RBAC).
refused() {
  local out
  if out="$(as_controller "$@" 2>&1)"; then return 1; fi
  grep -q "ValidatingAdmissionPolicy 'selfheal-controller-writes'" <<<"${out}"
}
restart_patch='{"spec":{"template":{"metadata":{"annotations":{"selfheal.io/restarted-at":"e2e"}}}}}'
check::run "as the controller: the restart annotation patch is allowed" \
  as_controller -n "${NS}" patch deployment crasher --type=merge -p "${restart_patch}"
check::run "as the controller: scaling through the scale subresource is allowed" \
  as_controller -n "${NS}" scale deployment crasher --replicas=1
check::run "as the controller: an image change is refused by the admission policy" \
  refused -n "${NS}" patch deployment crasher --type=merge \
  -p '{"spec":{"template":{"spec":{"containers":[{"name":"main","image":"localhost/other:1"}]}}}}'
check::run "as the controller: another pod-template annotation is refused" \
  refused -n "${NS}" patch deployment crasher --type=merge -p '{"spec":{"template":{"metadata":{"annotations":{"x":"y"}}}}}'
check::run "as the controller: a scale in kube-system is refused" \
  refused -n kube-system scale deployment coredns --replicas=1
check::run "as the controller: the restart annotation in kube-system is refused" \
  refused -n kube-system patch deployment coredns --type=merge -p "${restart_patch}"

guarded_pods_kept() { [[ -n "${guarded_before}" && "$(guarded_uids)" == "${guarded_before}" ]]; }
check::run "no guarded pod was evicted: the same 2 pods as at the start" guarded_pods_kept

# Memory that survives a restart: the recycle above is in the history ConfigMap a new leader reads.
history_saved() {
  kubectl -n "${SYS}" get configmap selfheal-controller-history -o jsonpath='{.data.history\.json}' |
    grep -qF "\"Deployment/${NS}/crasher\""
}
check::run "the recycle is saved in the history ConfigMap (selfheal-controller-history)" \
  e2e::eventually 30 history_saved

# Leadership that cannot act twice: freeze the leader's container (the cgroup freezer, as a
# SIGSTOP or a paused VM would) until the other replica has taken the Lease, then thaw it. The
# thawed process still has the guarded pods' retries queued; its term ran out while frozen, so it
# must send no write: no Event from it after the thaw, and it reports itself a follower.
if [[ -S "${CONTAINERD_SOCK}" ]] && util::ctr version >/dev/null 2>&1; then
  frozen="$(leader)"
  frozen_id="$(kubectl -n "${SYS}" get pod "${frozen}" -o jsonpath='{.status.containerStatuses[0].containerID}')"
  frozen_id="${frozen_id#containerd://}"
  log::step "freezing the leader ${frozen} (container ${frozen_id:0:12})"
  util::ctr task pause "${frozen_id}"
  util::trap_add "ctr --address '${CONTAINERD_SOCK}' --namespace k8s.io task resume '${frozen_id}' >/dev/null 2>&1 || true"
  other_leads() { local h; h="$(leader)"; [[ -n "${h}" && "${h}" != "${frozen}" ]]; }
  check::run "the other replica takes the Lease from the frozen leader" e2e::eventually 40 other_leads
  thawed_at="$(date -u +%Y-%m-%dT%H:%M:%S.%6NZ)"
  util::ctr task resume "${frozen_id}"
  log::info "thawed ${frozen} at ${thawed_at}"
  follower_metric() {
    kubectl get --raw "/api/v1/namespaces/${SYS}/pods/${frozen}:8081/proxy/metrics" |
      grep -q '^selfheal_controller_leader 0$'
  }
  check::run "the thawed ex-leader reports it follows (selfheal_controller_leader 0)" \
    e2e::eventually 30 follower_metric
  sleep 5 # let it work off what it had queued
  writes_after_thaw() {
    kubectl get events.events.k8s.io -A -o json | jq --arg who "${frozen}" --arg t "${thawed_at}" \
      '[.items[] | select(.reportingInstance == $who)
        | select((.eventTime // "") >= $t or (.series.lastObservedTime // "") >= $t)] | length'
  }
  no_writes_after_thaw() { [[ "$(writes_after_thaw)" == 0 ]]; }
  check::run "the thawed ex-leader sent no write (no Event from it after the thaw)" no_writes_after_thaw
  still_other() { [[ "$(leader)" != "${frozen}" ]]; }
  check::run "the Lease stays with the replica that took it" still_other
else
  log::warn "not the local cluster (no containerd socket at ${CONTAINERD_SOCK}): the freeze check needs ctr; skipped"
fi

((CHECK_FAILED == 0)) || {
  e2e::dump "${NS}"
  kubectl -n "${SYS}" logs deployment/selfheal-controller --tail=40 >&2 || true
}
check::summary controller
