#!/usr/bin/env bash
# Unit tests of the pure parts of self-healing/lib/release.sh, no cluster: which `helm history`
# errors mean "no release" (only Helm's "Error: release: not found"), the age of a pending
# release (an unreadable time is young, never old), which history the script may uninstall (only
# the revision its own first install made), and the one retry of `helm rollback`. Helm is a stub
# here that prints what the real one prints (captured from Helm 4.3: e2e/auto-rollback.sh makes
# the real failures on a cluster). The deploy verification's Prometheus gate reads the recorded
# series (selfheal:http_errors:rate1m / selfheal:http_requests:rate1m), against a stub curl: a
# Prometheus without the recording rules, or unreachable, skips the gate visibly (timeline); a
# recorded ratio above the limit fails it; no recorded traffic skips it.
# Prerequisites: jq, GNU date.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../hack/lib.sh"
# shellcheck source=self-healing/lib/release.sh
source "${REPO_ROOT}/self-healing/lib/release.sh"

usage() {
  cat <<EOF
Usage: self-healing/tests/release-lib.sh [-h|--help]

Unit-tests self-healing/lib/release.sh without a cluster and prints
"release-lib: N passed, N failed". Exit status 0 only when every check passed.

Example:
  self-healing/tests/release-lib.sh
EOF
}

util::no_arguments "$@"
util::require_tools jq date
TMP="$(mktemp -d)"
util::trap_add "rm -rf '${TMP}'"

# The globals release::init needs; HELM is the stub below.
NAMESPACE=unit
RELEASE=shop
KUBE_CONTEXT=""
OUTPUT=text
DRY_RUN=0
TIMEOUT_S=5
ROLLBACK_RETRY_DELAY_S=0
HELM="${TMP}/helm"
release::init

# stub_helm EXIT STDOUT STDERR: the helm stub prints STDOUT and STDERR and exits with EXIT; each
# call appends its arguments to TMP/calls. With EXIT "1,0" the first call exits 1, later ones 0.
stub_helm() {
  printf '%s' "$2" >"${TMP}/stdout"
  printf '%s' "$3" >"${TMP}/stderr"
  printf '%s' "$1" >"${TMP}/exits"
  : >"${TMP}/calls"
  cat >"${HELM}" <<EOF
#!/usr/bin/env bash
echo "\$*" >>"${TMP}/calls"
IFS=, read -r -a exits <"${TMP}/exits"
n=\$(wc -l <"${TMP}/calls")
code="\${exits[n - 1]:-\${exits[-1]}}"
cat "${TMP}/stdout"
cat "${TMP}/stderr" >&2
exit "\${code}"
EOF
  chmod +x "${HELM}"
}
calls() { wc -l <"${TMP}/calls"; }

# -- which helm history errors mean "no release" ---------------------------------------------------
NOT_FOUND='Error: release: not found'
UNREACHABLE='Error: kubernetes cluster unreachable: Get "https://127.0.0.1:1/version": dial tcp 127.0.0.1:1: connect: connection refused'
FORBIDDEN='Error: query: failed to query with labels: secrets is forbidden: User "nobody" cannot list resource "secrets" in API group "" in the namespace "unit"'
TIMEOUT_ERR='Error: query: failed to query with labels: Get "https://10.0.0.1:6443/api/v1/namespaces/unit/secrets?labelSelector=name%3Dshop%2Cowner%3Dhelm": context deadline exceeded'

not_found_table() {
  local ok=0 text want got
  while IFS='|' read -r want text; do
    if release::history_not_found "$(printf '%b' "${text}")"; then got=yes; else got=no; fi
    [[ "${got}" == "${want}" ]] || { log::error "history_not_found '${text}': ${got}, want ${want}"; ok=1; }
  done <<EOF
yes|${NOT_FOUND}
yes|level=WARN msg="something"\n${NOT_FOUND}
no|${UNREACHABLE}
no|${FORBIDDEN}
no|${TIMEOUT_ERR}
no|
no|Error: UPGRADE FAILED: release: not found in the cache
no|Error: release: not found (but the API server timed out)
EOF
  return "${ok}"
}
check::run "only Helm's exact 'Error: release: not found' means no release (unreachable, forbidden, timeout, empty do not)" not_found_table

history_not_found_is_empty() {
  stub_helm 1 "" "${NOT_FOUND}"
  release::read_history && [[ "${HISTORY}" == '[]' && -z "${HISTORY_ERROR}" ]]
}
check::run "read_history: 'release: not found' gives HISTORY=[]" history_not_found_is_empty

history_errors_stop() {
  local err ok=0
  for err in "${UNREACHABLE}" "${FORBIDDEN}" "${TIMEOUT_ERR}" ""; do
    stub_helm 1 "" "${err}"
    if release::read_history; then
      log::error "read_history succeeded (HISTORY=${HISTORY}) on: ${err:-<no stderr>}"
      ok=1
    elif [[ -n "${HISTORY}" || "${HISTORY_ERROR}" != "helm history failed (exit 1): ${err:-no error message}" ]]; then
      log::error "HISTORY='${HISTORY}' HISTORY_ERROR='${HISTORY_ERROR}' on: ${err}"
      ok=1
    fi
  done
  stub_helm 0 "not json" ""
  if release::read_history || [[ "${HISTORY_ERROR}" != *"did not print a JSON array"* ]]; then
    log::error "exit 0 with non-JSON output was accepted: HISTORY='${HISTORY}'"
    ok=1
  fi
  return "${ok}"
}
check::run "read_history: unreachable, forbidden, timeout, no message, non-JSON output fail with Helm's error" history_errors_stop

history_ok() {
  stub_helm 0 '[{"revision":1,"status":"superseded"},{"revision":2,"status":"deployed"}]' ""
  release::read_history && [[ "$(jq -c 'map(.revision)' <<<"${HISTORY}")" == '[1,2]' ]] &&
    [[ "$(release::last_good_revision "${HISTORY}")" == 2 ]]
}
check::run "read_history: a history is read as it is" history_ok

# -- the age of a pending release -------------------------------------------------------------------
NOW="$(date -d 2026-12-05T12:00:00Z +%s)"
pending_table() {
  local ok=0 updated grace want got
  while IFS='|' read -r want grace updated; do
    got="$(release::pending_action "${updated}" "${NOW}" "${grace}")"
    [[ "${got}" == "${want}" ]] || { log::error "pending_action '${updated}' grace ${grace}: '${got}', want '${want}'"; ok=1; }
  done <<'EOF'
recover 600|300|2026-12-05T11:50:00.410530515Z
wait 600|900|2026-12-05T11:50:00.410530515Z
recover 300|300|2026-12-05T11:55:00Z
wait 299|300|2026-12-05T11:55:01Z
recover 600|300|2026-12-05T12:50:00+01:00
wait -60|0|2026-12-05T12:01:00Z
wait unknown|300|
wait unknown|300|null
wait unknown|300|garbage
wait unknown|300|1
wait unknown|300|2026-12-05T11:50:00
wait unknown|300|2026-13-45T11:50:00Z
wait unknown|0|Sat Dec  5 11:34:10 2026
EOF
  return "${ok}"
}
check::run "pending age: old enough recovers, young waits, an unreadable time waits (never 'old')" pending_table

# -- what the script may uninstall --------------------------------------------------------------------
only_this_install_table() {
  local ok=0 want hist got
  while IFS='|' read -r want hist; do
    if release::only_this_install "${hist}"; then got=yes; else got=no; fi
    [[ "${got}" == "${want}" ]] || { log::error "only_this_install ${hist}: ${got}, want ${want}"; ok=1; }
  done <<'EOF'
yes|[{"revision":1,"status":"failed"}]
yes|[{"revision":1,"status":"deployed"}]
no|[]
no|[{"revision":2,"status":"failed"}]
no|[{"revision":1,"status":"superseded"},{"revision":2,"status":"failed"}]
no|[{"revision":13,"status":"superseded"},{"revision":14,"status":"failed"},{"revision":15,"status":"deployed"}]
no|not json
EOF
  return "${ok}"
}
check::run "uninstall only the lone revision 1 of this run's install, never a release with other history" only_this_install_table

# -- helm rollback: one retry ------------------------------------------------------------------------
rollback_retried_once() {
  stub_helm "1,0" "" ""
  printf 'Error: etcdserver: request timed out' >"${TMP}/stderr"
  release::rollback 2 2>/dev/null && [[ "$(calls)" == 2 ]] &&
    grep -qx -- '--namespace unit rollback shop 2 --wait --timeout 5s' "${TMP}/calls"
}
check::run "helm rollback that fails once is retried and succeeds (2 calls)" rollback_retried_once
rollback_fails_twice() {
  stub_helm 1 "" 'Error: failed to create resource: poddisruptionbudgets.policy "x" is forbidden: exceeded quota'
  ! release::rollback 2 2>/dev/null && [[ "$(calls)" == 2 ]] &&
    [[ "${ROLLBACK_ERROR}" == 'Error: failed to create resource: poddisruptionbudgets.policy "x" is forbidden: exceeded quota' ]]
}
check::run "helm rollback that fails twice returns 1 after exactly 2 calls, with Helm's error" rollback_fails_twice

# -- the Prometheus gate reads the recorded series ---------------------------------------------
PROMETHEUS=http://prom.test:9090
PROMETHEUS_WINDOW=2m
MAX_ERROR_RATIO=0.05
RULES_LOADED='{"status":"success","data":{"groups":[{"name":"selfheal-workshop-sli","rules":[
  {"type":"recording","name":"selfheal:http_requests:rate1m"},{"type":"recording","name":"selfheal:http_errors:rate1m"}]}]}}'
RULES_NONE='{"status":"success","data":{"groups":[{"name":"other","rules":[{"type":"recording","name":"job:up:sum"}]}]}}'
# curl (stub): /api/v1/rules answers STUB_RULES; /api/v1/query answers STUB_QUERY and records the
# query in TMP/query; STUB_CURL_FAIL=1 fails like an unreachable server.
curl() {
  [[ "${STUB_CURL_FAIL:-0}" == 0 ]] || return 7
  local a
  for a in "$@"; do
    case "${a}" in
      query=*) printf '%s' "${a#query=}" >"${TMP}/query" ;;
      */api/v1/rules*) printf '%s' "${STUB_RULES}"; return 0 ;;
    esac
  done
  printf '%s' "${STUB_QUERY}"
}
vector() { # vector [VALUE]: a query answer with one sample of VALUE, or none
  local sample=""
  [[ -z "${1:-}" ]] || sample="$(printf '{"metric":{},"value":[1.7e9,"%s"]}' "$1")"
  printf '{"status":"success","data":{"resultType":"vector","result":[%s]}}' "${sample}"
}
gate() { # gate RULES QUERY_ANSWER: run the gate, leave its status in GATE_RC
  STUB_RULES="$1" STUB_QUERY="$2" REASON="" TIMELINE=() GATE_RC=0
  : >"${TMP}/query"
  release::verify_prometheus web 2>/dev/null || GATE_RC=$?
}
prometheus_gate_table() {
  gate "${RULES_LOADED}" "$(vector 0.25)"
  [[ "${GATE_RC}" == 1 && "${REASON}" == *"is 0.25 (more than 0.05)"* ]] || { echo "ratio 0.25: rc ${GATE_RC}, ${REASON}" >&2; return 1; }
  if ! grep -qF 'selfheal:http_errors:rate1m{namespace="unit",job="web"}[2m]' "${TMP}/query" ||
    ! grep -qF 'selfheal:http_requests:rate1m{namespace="unit",job="web"}[2m]' "${TMP}/query" ||
    grep -q 'http_requests_total' "${TMP}/query"; then
    echo "query: $(cat "${TMP}/query")" >&2
    return 1
  fi
  gate "${RULES_LOADED}" "$(vector 0.01)"
  [[ "${GATE_RC}" == 0 ]] || { echo "ratio 0.01 failed" >&2; return 1; }
  gate "${RULES_LOADED}" "$(vector '')"
  [[ "${GATE_RC}" == 0 && ${#TIMELINE[@]} == 0 ]] || { echo "no traffic: rc ${GATE_RC}" >&2; return 1; }
  gate "${RULES_NONE}" "$(vector 0.9)"
  [[ "${GATE_RC}" == 0 && "${TIMELINE[-1]}" == *"no selfheal:http_error_ratio recording rules: error-rate check skipped"* && ! -s "${TMP}/query" ]] ||
    { echo "rules not loaded: rc ${GATE_RC}, timeline ${TIMELINE[*]}" >&2; return 1; }
  STUB_CURL_FAIL=1 gate "${RULES_LOADED}" "$(vector 0.9)"
  [[ "${GATE_RC}" == 0 && "${TIMELINE[-1]}" == *"not reachable"* ]] || { echo "unreachable: rc ${GATE_RC}" >&2; return 1; }
}
check::run "Prometheus gate: reads the recorded series; 0.25 fails, 0.01 passes, no traffic skips; no recording rules or no server skips with a timeline entry" prometheus_gate_table

check::summary release-lib
