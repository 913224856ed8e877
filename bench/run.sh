#!/usr/bin/env bash
# Runs every benchmark script in bench/ (each measures its own baseline in the same run and
# reports ratios). Benchmarks are never part of `make test`: timings do not pass or fail.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

usage() {
  cat <<USAGE
Usage: bench/run.sh [NAME...]

Runs bench/NAME.sh for each NAME (default: every bench/*.sh but this one), one after the other.
Results go to stdout and to bench/results/ (not tracked).
USAGE
}

case "${1:-}" in -h | --help) usage; exit 0 ;; esac
mapfile -t scripts < <(
  if (($#)); then printf "${REPO_ROOT}/bench/%s.sh\n" "$@"; else ls "${REPO_ROOT}"/bench/*.sh; fi | grep -v '/run\.sh$'
)
((${#scripts[@]})) || log::fatal "no benchmark scripts in bench/"
mkdir -p "${REPO_ROOT}/bench/results"
for s in "${scripts[@]}"; do
  [[ -x "${s}" ]] || log::fatal "${s}: not found or not executable"
  log::step "benchmark $(basename "${s}" .sh)"
  "${s}" | tee "${REPO_ROOT}/bench/results/$(basename "${s}" .sh).txt"
done
