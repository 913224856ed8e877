#!/usr/bin/env bash
# The controller's deploy step as the deploy workflow runs it: self-healing/deploy-controller.sh
# refuses bad input, changes nothing with --dry-run, installs the controller by image digest and
# verifies it (rollout, a Ready leader), then meets an image that cannot start, rolls the
# Deployment back to the revision that served and exits 3, and .github/ci/deploy-summary.sh turns
# its JSON into the job summary with that exit code.
# Prerequisites: a cluster in KUBECONFIG with localhost/selfheal-controller:dev imported and no
# controller installed in selfheal-system. Removes what it installs.
# shellcheck source=e2e/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: e2e/deploy-controller.sh [-h|--help]

Deploys selfheal-controller with self-healing/deploy-controller.sh (good image, then one that
cannot start), checks the rollback and the job summary, then uninstalls. Prints
"deploy-controller: N passed, N failed".
EOF
}

util::no_arguments "$@"
e2e::require_cluster
DEPLOY="${REPO_ROOT}/self-healing/deploy-controller.sh"
SYS="${E2E_CONTROLLER_NS}"
for obj in "namespace/${SYS}" crd/healingpolicies.selfheal.io; do
  e2e::eventually 180 e2e::not_terminating "${obj}" || log::fatal "${obj} is still being deleted after 180 s"
done
kubectl get namespace "${SYS}" >/dev/null 2>&1 &&
  log::fatal "namespace ${SYS} already exists: a controller is installed; this test installs and removes its own"
TMP="$(mktemp -d)"
util::trap_add "rm -rf '${TMP}'"
kubectl kustomize "${REPO_ROOT}/controller/deploy" >"${TMP}/manifest.yaml"
e2e::remove_at_exit "${TMP}/manifest.yaml"

# The imported image by digest, as the workflow passes it (the node lists its repo digests).
# An image pulled from a registry is known by its digest too; one imported from a tarball only by
# its tag. On the local cluster, give the imported image its digest name the way a pull would, so
# the Deployment can name it by digest as the workflow does. The kubelet reports it with its next
# node status (up to a minute).
WANT_DIGEST="sha256:"
if [[ -S "${CONTAINERD_SOCK}" ]]; then
  digest="$(util::ctr images ls | awk '$1 == "localhost/selfheal-controller:dev" {print $3}')"
  if [[ -n "${digest}" ]]; then
    util::ctr images tag --force localhost/selfheal-controller:dev "localhost/selfheal-controller@${digest}" >/dev/null 2>&1 || true
    WANT_DIGEST="${digest}"
  fi
fi
DIGEST_REF=""
node_digest() {
  DIGEST_REF="$(kubectl get nodes -o json | jq -r --arg want "localhost/selfheal-controller@${WANT_DIGEST}" \
    '[.items[].status.images[]?.names[]? | select(startswith($want))][0] // empty')"
  [[ -n "${DIGEST_REF}" ]]
}
e2e::eventually 90 node_digest || log::fatal "localhost/selfheal-controller is not on the node: hack/image.sh --import controller"
BAD_REF=localhost/selfheal-controller:does-not-exist

# run NAME ARGS...: the script's JSON summary in TMP/NAME.json, its exit code in TMP/NAME.rc.
run() {
  local name="$1" rc=0
  shift
  "${DEPLOY}" --output json "$@" >"${TMP}/${name}.json" 2>"${TMP}/${name}.log" || rc=$?
  echo "${rc}" >"${TMP}/${name}.rc"
  log::info "deploy-controller.sh $* -> exit ${rc}: $(jq -r '"\(.result // "?"): \(.reason // "")"' "${TMP}/${name}.json" 2>/dev/null)"
}
deployed_image() { kubectl -n "${SYS}" get deployment selfheal-controller -o jsonpath='{.spec.template.spec.containers[0].image}' 2>/dev/null; }

log::step "bad input is refused before anything changes"
usage_rc() { local rc=0; "${DEPLOY}" "$@" >/dev/null 2>&1 || rc=$?; ((rc == 2)); }
check::run "no --image: exit 2" usage_rc
check::run "an image reference with a space: exit 2" usage_rc --image 'localhost/selfheal-controller dev'
check::run "a digest that is not 64 hex digits: exit 2" usage_rc --image localhost/selfheal-controller@sha256:abc
check::run "--timeout 0s: exit 2" usage_rc --image "${DIGEST_REF}" --timeout 0s
check::run "--output yaml: exit 2" usage_rc --image "${DIGEST_REF}" --output yaml

log::step "--dry-run renders, validates against the API server and changes nothing"
run dry --image "${DIGEST_REF}" --dry-run
check::run "dry run: exit 0, result dry_run" bash -c "[[ \$(cat '${TMP}/dry.rc') == 0 ]] && jq -e '.result == \"dry_run\" and .dry_run' '${TMP}/dry.json' >/dev/null"
check::run "dry run: namespace ${SYS} was not created" bash -c "! kubectl get namespace '${SYS}' >/dev/null 2>&1"

log::step "first install by digest, verified"
run first --image "${DIGEST_REF}" --timeout 3m
check::run "first install: exit 0, result deployed" bash -c "[[ \$(cat '${TMP}/first.rc') == 0 ]] && jq -e '.result == \"deployed\"' '${TMP}/first.json' >/dev/null"
check::run "the Deployment runs the image by digest (${DIGEST_REF})" test "$(deployed_image)" == "${DIGEST_REF}"
leader_ready() {
  local holder
  holder="$(kubectl -n "${SYS}" get lease selfheal-controller -o jsonpath='{.spec.holderIdentity}')"
  [[ -n "${holder}" ]] && kubectl -n "${SYS}" get pod "${holder}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}
check::run "one Ready replica holds the Lease" leader_ready
REVISION_GOOD="$(jq -r '.serving_revision' "${TMP}/first.json")"

log::step "an image that cannot start: verification fails, the Deployment is rolled back"
run bad --image "${BAD_REF}" --timeout 45s
check::run "bad image: exit 3, result rolled_back" bash -c "[[ \$(cat '${TMP}/bad.rc') == 3 ]] && jq -e '.result == \"rolled_back\"' '${TMP}/bad.json' >/dev/null"
# shellcheck disable=SC2016 # jq variables
check::run "the summary names both images and the revision it came back from (${REVISION_GOOD})" \
  jq -e --arg good "${DIGEST_REF}" --arg bad "${BAD_REF}" --argjson rev "${REVISION_GOOD}" \
  '.image == $bad and .previous_image == $good and .previous_revision == $rev and (.serving_images == [$good])' "${TMP}/bad.json"
check::run "the Deployment runs the good image again" test "$(deployed_image)" == "${DIGEST_REF}"
all_ready() {
  [[ "$(kubectl -n "${SYS}" get deployment selfheal-controller -o jsonpath='{.status.readyReplicas}/{.spec.replicas}/{.status.updatedReplicas}')" == 2/2/2 ]]
}
check::run "2 of 2 replicas Ready and updated after the rollback" all_ready
check::run "a Ready replica of the good image holds the Lease" leader_ready

log::step "the job summary of the workflow step"
summary_exit() {
  local rc=0
  GITHUB_STEP_SUMMARY="${TMP}/summary.md" "${REPO_ROOT}/.github/ci/deploy-summary.sh" "${TMP}/bad.json" >/dev/null 2>&1 || rc=$?
  ((rc == 3)) && grep -q 'rolled_back' "${TMP}/summary.md" && grep -qF "${BAD_REF}" "${TMP}/summary.md"
}
check::run "deploy-summary.sh exits 3 and writes the rollback with both images" summary_exit

check::summary deploy-controller
