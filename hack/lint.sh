#!/usr/bin/env bash
# Every static check, each with the real tool: rustfmt, clippy (-D warnings), shellcheck,
# actionlint (workflows), helm lint (chart), promtool (alert rules), python byte-compile.
# A check whose subject does not exist yet (no chart, no workflow) says so and is not counted.
# Prerequisites: cargo; the other tools come from hack/tools.sh when needed.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: hack/lint.sh [-h|--help]

Runs every linter over the repository and prints "lint: N passed, N failed".
Exit status 0 only when every check passed. Installs missing pinned tools first.
EOF
}

util::no_arguments "$@"
# jq, shellcheck (apt) and PyYAML: installed when missing, as on a fresh CI runner.
"${REPO_ROOT}/hack/tools.sh" install apt-tools pyyaml

cd "${REPO_ROOT}"
mapfile -t SHELL_FILES < <({ git ls-files '*.sh'; printf '.ci/run\n'; } | sort -u | while read -r f; do [[ -f "${f}" ]] && echo "${f}"; done)
mapfile -t WORKFLOWS < <(git ls-files '.github/workflows/*.yml' '.github/workflows/*.yaml')
mapfile -t RULES < <(git ls-files 'self-healing/*.rules.yml' 'self-healing/*.rules.yaml' 'self-healing/rules/*.yml' 'self-healing/rules/*.yaml')
mapfile -t PYTHON < <(git ls-files '*.py')

if [[ -n "$(cargo metadata --no-deps --format-version 1 2>/dev/null | jq -r '.packages[].name' 2>/dev/null)" ]]; then
  check::run "cargo fmt --check" cargo fmt --all -- --check
  check::run "cargo clippy -D warnings" cargo clippy --workspace --all-targets --locked -- -D warnings
else
  log::info "no Rust crates yet: fmt and clippy not run"
fi

util::require_tools shellcheck
check::run "shellcheck (${#SHELL_FILES[@]} scripts)" shellcheck -x "${SHELL_FILES[@]}"

if ((${#PYTHON[@]})); then
  check::run "python byte-compile (${#PYTHON[@]} files)" python3 -m py_compile "${PYTHON[@]}"
fi

if ((${#WORKFLOWS[@]})); then
  "${REPO_ROOT}/hack/tools.sh" install actionlint pyyaml
  check::run "actionlint (${#WORKFLOWS[@]} workflows)" actionlint "${WORKFLOWS[@]}"
  check::run "workflow rules fire on a bad workflow (check-workflows.py --self-test)" \
    python3 .github/ci/check-workflows.py --self-test
  check::run "workflow rules, run: steps call only entry points (.github/ci/check-workflows.py)" \
    python3 .github/ci/check-workflows.py
  check::run "recovery-time gate unit tests and committed baseline (.github/ci/recovery-gate.py)" \
    python3 .github/ci/recovery-gate.py --self-test
else
  log::info "no workflows yet: actionlint not run"
fi

if [[ -f helm-chart/Chart.yaml ]]; then
  "${REPO_ROOT}/hack/tools.sh" install helm pyyaml
  check::run "helm lint --strict helm-chart" helm lint --strict helm-chart
  if [[ -x helm-chart/tests/template.sh ]]; then
    check::run "chart template tests (helm-chart/tests/template.sh)" helm-chart/tests/template.sh
  fi
else
  log::info "no chart yet: helm lint not run"
fi

if ((${#RULES[@]})); then
  "${REPO_ROOT}/hack/tools.sh" install promtool
  check::run "promtool check rules (${#RULES[@]} files)" promtool check rules "${RULES[@]}"
  if [[ -x self-healing/tests/rules.sh ]]; then
    check::run "alert rule tests (self-healing/tests/rules.sh)" self-healing/tests/rules.sh
  fi
else
  log::info "no alert rules yet: promtool not run"
fi
if [[ -x self-healing/tests/release-lib.sh ]]; then
  check::run "auto-rollback library unit tests (self-healing/tests/release-lib.sh)" self-healing/tests/release-lib.sh
fi

# Every Makefile target documents itself in `make help`.
help_lists_every_target() {
  local out target unlisted=0
  out="$(make --no-print-directory -C "${REPO_ROOT}" help)"
  while read -r target; do
    grep -qE "^ *${target} " <<<"${out}" || { log::error "make help does not list '${target}'"; unlisted=1; }
  done < <(grep -E '^[a-z][a-z0-9-]*:' "${REPO_ROOT}/Makefile" | cut -d: -f1)
  return "${unlisted}"
}
check::run "make help lists every target" help_lists_every_target

check::summary lint
