#!/usr/bin/env bash
# Tests of the alert and recording rules that need no cluster: the generated files are fresh (and
# the freshness check really catches a stale one), `promtool check rules` accepts every plain rule
# file, `promtool test rules` passes the unit tests of each timing profile (every alert fires when
# it should and stays silent when it should not; the recorded error ratio, request and error
# rates and p95 have the expected values, and a wrong route filter is caught), the structural
# checks of check_rules.py, and
# `amtool check-config` plus the routing of the Alertmanager example.
# Prerequisites: python3 with PyYAML; promtool and amtool (hack/tools.sh install promtool alertmanager,
# built on demand).
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../hack/lib.sh"

usage() {
  cat <<EOF
Usage: self-healing/tests/rules.sh [-h|--help]

Checks and unit-tests the alert rules in self-healing/ and prints "rules: N passed, N failed".
Exit status 0 only when every check passed. Builds the pinned promtool and amtool when missing.

Example:
  self-healing/tests/rules.sh
EOF
}

util::no_arguments "$@"

SH="${REPO_ROOT}/self-healing"


util::require_tools python3
command -v promtool >/dev/null 2>&1 || "${REPO_ROOT}/hack/tools.sh" install promtool
command -v amtool >/dev/null 2>&1 || "${REPO_ROOT}/hack/tools.sh" install alertmanager
util::require_tools promtool amtool
TMP="$(mktemp -d)"
util::trap_add "rm -rf '${TMP}'"

check::run "generated rule files are fresh (self-healing/generate.py --check)" "${SH}/generate.py" --check

# The freshness check must be able to fail: render into a copy, make one file stale, expect exit 1.
stale_is_caught() {
  "${SH}/generate.py" --out-dir "${TMP}/gen" >/dev/null || return 1
  "${SH}/generate.py" --check --out-dir "${TMP}/gen" >/dev/null || return 1
  sed -i 's/for: 15m/for: 14m/' "${TMP}/gen/rules/production.rules.yaml"
  ! "${SH}/generate.py" --check --out-dir "${TMP}/gen" 2>/dev/null
}
check::run "a hand-edited generated file is reported stale" stale_is_caught

mapfile -t RULE_FILES < <(find "${SH}/rules" -name '*.rules.yaml' | sort)
check::run "promtool check rules (${#RULE_FILES[@]} files)" promtool check rules "${RULE_FILES[@]}"

# promtool resolves rule_files relative to the test file.
for t in "${SH}"/tests/*.test.yaml; do
  check::run "promtool test rules $(basename "${t}")" promtool test rules "${t}"
done

# The unit tests must be able to fail: break one threshold in a copy, expect a failing test.
broken_rule_fails_tests() {
  mkdir -p "${TMP}/broken/rules" "${TMP}/broken/tests"
  sed 's/> 0.05$/> 0.5/' "${SH}/rules/production.rules.yaml" >"${TMP}/broken/rules/production.rules.yaml"
  cp "${SH}/tests/production.test.yaml" "${TMP}/broken/tests/"
  ! promtool test rules "${TMP}/broken/tests/production.test.yaml" >"${TMP}/broken.out" 2>&1 &&
    grep -q SelfhealHighErrorRatio "${TMP}/broken.out"
}
check::run "promtool test rules fails when a threshold is changed (the tests can fail)" broken_rule_fails_tests

# The recording rules' tests must catch a wrong route filter: count /crash as user traffic again.
broken_route_filter_fails_tests() {
  mkdir -p "${TMP}/route/rules" "${TMP}/route/tests"
  sed 's/|crash)"/)"/g' "${SH}/rules/workshop.rules.yaml" >"${TMP}/route/rules/workshop.rules.yaml"
  ! cmp -s "${SH}/rules/workshop.rules.yaml" "${TMP}/route/rules/workshop.rules.yaml" || return 1
  cp "${SH}/tests/workshop.test.yaml" "${TMP}/route/tests/"
  ! promtool test rules "${TMP}/route/tests/workshop.test.yaml" >"${TMP}/route.out" 2>&1 &&
    grep -q 'selfheal:http_errors:rate1m' "${TMP}/route.out"
}
check::run "promtool test rules fails when the recording rules count /crash as user traffic" broken_route_filter_fails_tests

check::run "structure: PrometheusRule = rule file, annotations, runbooks, fire+silent case per alert (check_rules.py)" \
  python3 "${SH}/tests/check_rules.py"

# The Alertmanager example, with the pinned amtool (same module version as the Alertmanager that
# self-healing/tests/alertmanager.sh runs it with).
AM_CONFIG="${SH}/alertmanager/alertmanager.yaml"
check::run "amtool check-config alertmanager/alertmanager.yaml" amtool check-config "${AM_CONFIG}"
# routes_to RECEIVER label=value...: the labels are routed to exactly RECEIVER.
routes_to() {
  local want="$1"
  shift
  [[ "$(amtool config routes test --config.file="${AM_CONFIG}" "$@")" == "${want}" ]]
}
routed_by_severity() {
  routes_to oncall-slack severity=critical alertname=SelfhealHighErrorRatio &&
    routes_to team-slack severity=warning alertname=SelfhealPodCrashLooping &&
    routes_to workshop-slack severity=critical profile=workshop &&
    routes_to null severity=info &&
    routes_to null severity=info profile=workshop alertname=SelfhealControllerRecycling
}
check::run "Alertmanager routes: critical -> oncall, warning -> team, workshop -> workshop, info -> null" routed_by_severity

check::summary rules
