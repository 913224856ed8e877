#!/usr/bin/env bash
# CI only: writes the kubeconfig held in $KUBE_CONFIG (an environment secret: the file's content,
# or the same base64-encoded) to $RUNNER_TEMP/kubeconfig with mode 0600, checks that it parses and
# names a current context, and exports KUBECONFIG to the following steps. Never prints it.
# --remove deletes it again (the last step of a deploy job, run always).
# Prerequisites: kubectl, base64.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../hack/lib.sh"

usage() {
  cat <<USAGE
Usage: KUBE_CONFIG=... .github/ci/write-kubeconfig.sh [-h|--help]
       .github/ci/write-kubeconfig.sh --remove     delete OUT (nothing to do when it is absent)

Environment:
  KUBE_CONFIG   kubeconfig content (YAML) or its base64 encoding (required)
  OUT           file to write (default: \$RUNNER_TEMP/kubeconfig)
  GITHUB_ENV    when set (in Actions), KUBECONFIG=OUT is exported to the following steps
USAGE
}

REMOVE=0
case "${1:-}" in
  "") ;;
  --remove) REMOVE=1; shift ;;
  -h | --help) usage; exit 0 ;;
  *) util::usage_error "unknown argument: $1" ;;
esac
util::no_arguments "$@"
OUT="${OUT:-${RUNNER_TEMP:?RUNNER_TEMP or OUT must be set}/kubeconfig}"
if ((REMOVE)); then
  rm -f "${OUT}"
  log::ok "kubeconfig ${OUT} removed"
  exit 0
fi

[[ -n "${KUBE_CONFIG:-}" ]] ||
  log::fatal "KUBE_CONFIG is empty: add the secret KUBE_CONFIG to this environment (see .github/README.md)"
util::require_tools kubectl base64
umask 077
if grep -q '^apiVersion:' <<<"${KUBE_CONFIG}"; then
  printf '%s\n' "${KUBE_CONFIG}" >"${OUT}"
else
  base64 -d <<<"${KUBE_CONFIG}" >"${OUT}" 2>/dev/null || log::fatal "KUBE_CONFIG is neither a kubeconfig nor base64 of one"
fi
context="$(KUBECONFIG="${OUT}" kubectl config current-context 2>/dev/null)" ||
  log::fatal "the kubeconfig in KUBE_CONFIG has no current-context"
[[ -z "${GITHUB_ENV:-}" ]] || printf 'KUBECONFIG=%s\n' "${OUT}" >>"${GITHUB_ENV}"
log::ok "kubeconfig written (context ${context})"
