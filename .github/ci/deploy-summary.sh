#!/usr/bin/env bash
# CI only: turns the JSON summary of self-healing/auto-rollback.sh --output json (or of
# self-healing/rollback-to.sh --output json) into a Markdown table plus the timeline, appends it to
# $GITHUB_STEP_SUMMARY (stdout when unset), and exits with the deploy's own exit code, so the
# run fails whenever the deploy was not verified (rolled back, broken or never started).
# Prerequisites: jq.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../hack/lib.sh"

usage() {
  cat <<USAGE
Usage: .github/ci/deploy-summary.sh SUMMARY.json

Environment:
  GITHUB_STEP_SUMMARY  file to append the Markdown to (default: stdout)

Exit status: the summary's exit_code (0 only for a verified deploy); 1 when the file is missing
or not JSON (the deploy died before printing its summary); 2 on bad usage.

Example:
  self-healing/auto-rollback.sh -n demo -t v1.2.3 --output json >out.json; .github/ci/deploy-summary.sh out.json
USAGE
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") util::usage_error "no summary file given" ;;
esac
(($# == 1)) || util::usage_error "one summary file expected"
util::require_tools jq
FILE="$1"
OUT="${GITHUB_STEP_SUMMARY:-/dev/stdout}"

if [[ ! -s "${FILE}" ]] || ! jq -e 'type == "object"' "${FILE}" >/dev/null 2>&1; then
  printf '### Deploy: no summary\n\nThe deploy script ended before printing its JSON summary (see the step log).\n' >>"${OUT}"
  log::fatal "no JSON summary in ${FILE}"
fi

jq -r '
  def icon: if .result == "deployed" or (.exit_code == 0) then "✅" elif .result == "rolled_back" then "↩️" else "❌" end;
  def v(k): (.[k] // "–") | if type == "array" then (map(tostring) | join(", ")) else tostring end;
  "### \(icon) \(if has("target_revision") then "Rollback to revision \(.target_revision) of" else "Deploy" end) \(v("namespace"))/\(v("release")): \(v("result")) (exit \(v("exit_code")))",
  "",
  (if .reason then "> \(.reason)\n" else empty end),
  "| field | value |",
  "|-------|-------|",
  (to_entries[] | select(.key != "timeline" and .key != "reason")
    | "| `\(.key)` | \(.value | if . == null then "–" elif type == "array" then (map(tostring) | join(", ")) else tostring end | gsub("\\|"; "\\|")) |"),
  "",
  (if (.timeline // []) | length > 0 then
     "<details><summary>timeline</summary>\n\n```",
     (.timeline[] | if type == "object" then "+\(.elapsed_seconds // "?")s \(.time // "") \(.event // "")" else tostring end),
     "```\n</details>"
   else empty end)
' "${FILE}" >>"${OUT}"

code="$(jq -r '.exit_code // 1' "${FILE}")"
[[ "${code}" =~ ^[0-9]+$ ]] || code=1
if ((code == 0)); then
  log::ok "deploy verified"
else
  log::error "deploy not verified: $(jq -r '.result // "unknown"' "${FILE}") (exit ${code}); see the job summary"
fi
exit "${code}"
