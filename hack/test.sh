#!/usr/bin/env bash
# The test entry point behind `make test`, `make test-unit` and `make test-cluster`. `all` runs
# the commands .github/ci/entry-points.txt lists for it — the same ones the CI jobs run — in
# order: `make lint` and `make test-unit`, then starts the local cluster and runs
# `make test-cluster` against it, then the lifecycle check, and stops what it started. Each mode
# installs the tools it needs itself. It ends with one summary line per step and a total
# "N passed, N failed".
# Prerequisites: cargo, go, root (for the local cluster); everything else is installed.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: hack/test.sh [all|unit|cluster|lint]

  all       make lint, make test-unit, then make test-cluster on the local cluster it starts, and
            the lifecycle check (default; what 'make test' runs; the list of commands is
            .github/ci/entry-points.txt, the one the CI jobs are checked against)
  unit      tests that need no cluster: Rust (everything but tests/cluster_*.rs), a live
            Prometheus scraping the app with the alert rules loaded, and the alert path through
            a real Alertmanager to a Slack-format receiver
  cluster   against the cluster in KUBECONFIG (the local one or minikube; it is not started or
            stopped): builds and loads the images for it, then the image checks, the Rust
            cluster tests, every e2e/ script and the demo (e2e/demo.sh)
  lint      hack/lint.sh

Environment:
  KUBECONFIG      for 'cluster': the cluster to test (default: the local cluster's)
  SELFHEAL_IMAGES for 'cluster': how the images reach it: import (the local cluster's containerd),
                  minikube (minikube image load), skip (already there); default: import for
                  the local cluster, minikube for a context named minikube
  KEEP_CLUSTER=1  'all' leaves the local cluster running at the end and skips the lifecycle
                  check (which stops it)
  CARGO_TEST_ARGS extra arguments for cargo test (e.g. -- --nocapture)

After 'make demo': 'all' finds the local cluster up and tests on it. It removes the demo's
controller from selfheal-system first (the tests install their own), runs the lifecycle check
(which stops the cluster) and then sets the demo up again (hack/demo.sh --setup-only).
EOF
}

SUMMARY=()
FAILED_STEPS=()
TOTAL_PASSED=0
TOTAL_FAILED=0
LOG_DIR="$(mktemp -d)"
util::trap_add "rm -rf '${LOG_DIR}'"

# test::record NAME LOGFILE RC [SECONDS]: pick the "N passed, N failed" figures out of a runner's output.
test::record() {
  local name="$1" log="$2" rc="$3" took="${4:+ in ${4}s}" passed failed line
  line="$(grep -E '^[a-z-]+: [0-9]+ passed, [0-9]+ failed' "${log}" | tail -n 1 || true)"
  passed="$(sed -E 's/^[^:]+: ([0-9]+) passed.*/\1/' <<<"${line}")"
  failed="$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"${line}")"
  [[ -n "${line}" ]] || { passed=0; failed=0; }
  # A runner that died before its summary still counts as a failure.
  ((rc != 0 && failed == 0)) && failed=1
  TOTAL_PASSED=$((TOTAL_PASSED + passed))
  TOTAL_FAILED=$((TOTAL_FAILED + failed))
  SUMMARY+=("${name}: ${passed} passed, ${failed} failed${took}")
  ((rc == 0)) || FAILED_STEPS+=("${name}")
}

# test::run NAME cmd...: run a step with its output shown and kept, then record it.
test::run() {
  local name="$1" log="${LOG_DIR}/$1.log" rc=0 t0
  shift
  t0="$(date +%s)"
  "$@" 2>&1 | tee "${log}" || rc="${PIPESTATUS[0]}"
  test::record "${name}" "${log}" "${rc}" "$(($(date +%s) - t0))"
}

# Cargo prints one "test result:" line per test binary; add them up into one summary line.
test::cargo() {
  local log="${LOG_DIR}/cargo.raw" rc=0
  # shellcheck disable=SC2086 # CARGO_TEST_ARGS is a word list on purpose
  cargo test --locked "$@" ${CARGO_TEST_ARGS:-} 2>&1 | tee "${log}" || rc="${PIPESTATUS[0]}"
  awk '/^test result:/ {
         for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
       } END { printf "cargo: %d passed, %d failed\n", p, f }' "${log}"
  return "${rc}"
}

# Integration-test targets that do not need a cluster (tests/cluster_*.rs do).
test::unit_targets() {
  cargo metadata --no-deps --format-version 1 |
    jq -r '.packages[].targets[] | select(.kind == ["test"]) | .name | select(startswith("cluster") | not)'
}

test::unit() {
  local args=(--workspace --lib --bins) t
  "${REPO_ROOT}/hack/tools.sh" install apt-tools
  while read -r t; do [[ -n "${t}" ]] && args+=(--test "${t}"); done < <(test::unit_targets)
  test::run cargo test::cargo "${args[@]}"
  # A real Prometheus scraping the real app with the alert rules loaded (installs Prometheus).
  test::run live-prometheus "${REPO_ROOT}/self-healing/tests/live-prometheus.sh"
  # Prometheus -> Alertmanager (the example config) -> a Slack receiver, on loopback (installs both).
  test::run alertmanager "${REPO_ROOT}/self-healing/tests/alertmanager.sh"
}

# Every e2e script but the lifecycle one (it stops the cluster): smoke first, then by name.
test::e2e_scripts() {
  printf '%s\n' "${REPO_ROOT}/e2e/smoke.sh"
  find "${REPO_ROOT}/e2e" -maxdepth 1 -name '*.sh' ! -name lib.sh ! -name smoke.sh ! -name cluster-lifecycle.sh | sort
}

# test::needs_tools SCRIPT: the tools outside the default install an e2e script names on a
# "# needs-tools: NAME..." line (built by hack/tools.sh install NAME...).
test::needs_tools() { sed -n 's/^# needs-tools: *//p' "$1" | head -n 1; }

# test::extra_tools: every tool some e2e script needs, once each.
test::extra_tools() {
  local script
  while read -r script; do test::needs_tools "${script}"; done < <(test::e2e_scripts) | tr ' ' '\n' | sed '/^$/d' | sort -u
}

# test::start_extra_tools: build those tools in the background at the lowest CPU priority. Cold,
# they are long Go builds (Jaeger, Traefik: 10-15 min each); this way they use the CPU the
# cargo builds and the cluster tests leave idle (the e2e checks mostly wait on the cluster), and
# the scripts that need them run last, after test::wait_extra_tools.
EXTRA_TOOLS_PID=""
test::start_extra_tools() {
  local tools=()
  mapfile -t tools < <(test::extra_tools)
  ((${#tools[@]})) || return 0
  log::step "building in the background (nice 19): ${tools[*]}; log ${LOG_DIR}/extra-tools.log"
  nice -n 19 "${REPO_ROOT}/hack/tools.sh" install "${tools[@]}" >"${LOG_DIR}/extra-tools.log" 2>&1 &
  EXTRA_TOOLS_PID=$!
  util::trap_add "kill ${EXTRA_TOOLS_PID} 2>/dev/null || true"
}

# test::wait_extra_tools: the background build finished (or, without one, build them now).
test::wait_extra_tools() {
  local tools=() rc=0 t0
  mapfile -t tools < <(test::extra_tools)
  ((${#tools[@]})) || return 0
  t0="$(date +%s)"
  if [[ -n "${EXTRA_TOOLS_PID}" ]]; then
    log::step "waiting for the background build of ${tools[*]}"
    wait "${EXTRA_TOOLS_PID}" || rc=$?
    EXTRA_TOOLS_PID=""
    ((rc == 0)) || tail -n 30 "${LOG_DIR}/extra-tools.log" >&2
  else
    "${REPO_ROOT}/hack/tools.sh" install "${tools[@]}" || rc=$?
  fi
  log::info "extra tools ready after waiting $(($(date +%s) - t0))s (exit ${rc})"
  ((rc == 0)) || FAILED_STEPS+=("extra-tools")
}

# test::images: build the project's images and put them where the cluster in KUBECONFIG runs them.
test::images() {
  local how="${SELFHEAL_IMAGES:-}"
  if [[ -z "${how}" ]]; then
    if [[ "${KUBECONFIG}" == "${CLUSTER_KUBECONFIG}" ]]; then
      how=import
    elif [[ -n "$(minikube::profile)" ]]; then
      how=minikube
    else
      log::fatal "KUBECONFIG=${KUBECONFIG} is neither the local cluster nor a minikube profile's: load localhost/selfheal-{app,controller,toolbox}:dev into it yourself and set SELFHEAL_IMAGES=skip"
    fi
  fi
  case "${how}" in
    import) util::run "${REPO_ROOT}/hack/image.sh" --import project ;;
    minikube) util::run "${REPO_ROOT}/hack/image.sh" --minikube app controller toolbox ;;
    skip) log::info "SELFHEAL_IMAGES=skip: the images are expected on the cluster already" ;;
    *) util::usage_error "SELFHEAL_IMAGES must be import, minikube or skip, not '${how}'" ;;
  esac
}

test::cluster() {
  test::kubeconfig
  local e2e_tools=(apt-tools pyyaml helm prometheus prometheus-operator-crds gateway-api-crds)
  # kubectl: the runner's own (CI images have one), else the pinned build.
  command -v kubectl >/dev/null 2>&1 || e2e_tools+=(kubernetes)
  log::step "installing tools (cached after the first run): ${e2e_tools[*]}"
  "${REPO_ROOT}/hack/tools.sh" install "${e2e_tools[@]}"
  test::start_extra_tools
  test::images
  # Multi-architecture images (no cluster): both platforms in each index, the arm64 binaries
  # run under qemu-user (the amd64/arm64 builds above are reused).
  test::run images "${REPO_ROOT}/hack/tests/images.sh"
  # The minikube path's decisions (node architecture -> image platform, addons, load URL) and
  # its --dry-run, read against this cluster's Node.
  test::run minikube "${REPO_ROOT}/hack/tests/minikube.sh"
  # The Rust tests that need a cluster run their own controller: before any e2e script installs one.
  test::run cargo test::cargo --workspace --test 'cluster*'
  local script later=()
  while read -r script; do
    if [[ -n "$(test::needs_tools "${script}")" ]]; then
      later+=("${script}")
      continue
    fi
    test::run "e2e-$(basename "${script}" .sh)" "${script}"
  done < <(test::e2e_scripts)
  ((${#later[@]})) || return 0
  test::wait_extra_tools
  for script in "${later[@]}"; do
    test::run "e2e-$(basename "${script}" .sh)" "${script}"
  done
}

test::kubeconfig() {
  export KUBECONFIG="${KUBECONFIG:-${CLUSTER_KUBECONFIG}}"
  log::info "testing the cluster in KUBECONFIG=${KUBECONFIG}"
}

# test::print_summary MODE: one line per step, then the total; for a mode that `all` runs as a
# step ('unit', 'cluster'), the total also as "MODE: N passed, N failed" for test::record.
test::print_summary() {
  local s
  printf '\n==== test summary (%s) ====\n' "$1"
  for s in "${SUMMARY[@]}"; do printf '%s\n' "${s}"; done
  for s in "${FAILED_STEPS[@]}"; do printf 'FAILED step: %s\n' "${s}"; done
  [[ "$1" == all ]] || printf '%s: %d passed, %d failed\n' "$1" "${TOTAL_PASSED}" "${TOTAL_FAILED}"
  printf '%d passed, %d failed\n' "${TOTAL_PASSED}" "${TOTAL_FAILED}"
  ((TOTAL_FAILED == 0 && ${#FAILED_STEPS[@]} == 0))
}

# -- a demo left on the cluster (`make demo`, then `make test`) --------------------------------------
# The e2e scripts install their own controller in selfheal-system, and the lifecycle check stops
# the cluster. So when the cluster was already up, what a demo left there is set aside first and
# put back at the end (the same setup `make demo` does, fresh), and both steps say so.
DEMO_NS=selfheal-demo
DEMO_FOUND=0
test::set_aside_demo() {
  local dir
  export KUBECONFIG="${CLUSTER_KUBECONFIG}"
  kubectl get namespace "${DEMO_NS}" >/dev/null 2>&1 && DEMO_FOUND=1
  if kubectl get namespace selfheal-system >/dev/null 2>&1; then
    DEMO_FOUND=1
    dir="$(kubectl -n selfheal-system get deployment selfheal-controller \
      -o jsonpath='{.metadata.annotations.selfheal\.io/installed-from}' 2>/dev/null || true)"
    [[ -n "${dir}" && -f "${REPO_ROOT}/${dir}/kustomization.yaml" ]] || dir=controller/deploy
    log::warn "a controller runs in selfheal-system (from ${dir}, e.g. left by 'make demo'): removing it, the tests install their own; the demo's setup is put back at the end"
    kubectl delete -k "${REPO_ROOT}/${dir}" --ignore-not-found --wait=true --timeout=180s >/dev/null ||
      log::warn "removing the controller did not finish within 180 s; the e2e scripts wait for it"
  fi
  unset KUBECONFIG
}

# test::restore_demo: after the lifecycle check stopped the cluster, set the demo up again.
test::restore_demo() {
  ((DEMO_FOUND)) || return 0
  log::step "putting the demo back: hack/demo.sh --setup-only (cluster, images, release selfheal-app in ${DEMO_NS}, controller)"
  test::run demo-restore "${REPO_ROOT}/hack/demo.sh" --setup-only --namespace "${DEMO_NS}"
}

# test::entry_points KIND: the commands of that kind in .github/ci/entry-points.txt, in order.
ENTRY_POINTS="${REPO_ROOT}/.github/ci/entry-points.txt"
test::entry_points() {
  awk -v kind="$1" '$1 == kind { $1 = ""; sub(/^ +/, ""); print }' "${ENTRY_POINTS}"
}

# test::run_entry_points KIND: run each listed command as a step, exactly as CI runs it.
test::run_entry_points() {
  local cmd words
  while read -r cmd; do
    read -r -a words <<<"${cmd}"
    # The step is named after the make target (make test-unit -> unit).
    test::run "${words[-1]#test-}" "${words[@]}"
  done < <(test::entry_points "$1")
}

test::all() {
  local t0
  t0="$(date +%s)"
  [[ -s "${ENTRY_POINTS}" ]] || log::fatal "${ENTRY_POINTS} is missing: it lists what make test runs"
  log::step "installing tools (cached after the first run)"
  "${REPO_ROOT}/hack/tools.sh" install apt pyyaml kubernetes coredns metrics-server helm \
    prometheus-operator-crds gateway-api-crds
  # Jaeger and Traefik (long cold builds) start building now, beside lint and the unit tests.
  test::start_extra_tools
  log::step "the commands CI runs without a cluster: $(test::entry_points test | paste -sd, -)"
  test::run_entry_points test
  local started=0
  if ! "${REPO_ROOT}/hack/cluster.sh" status >/dev/null 2>&1; then
    started=1
    # Whatever happens from here on, do not leave the cluster running.
    [[ "${KEEP_CLUSTER:-0}" == 1 ]] || util::trap_add "'${REPO_ROOT}/hack/cluster.sh' down >/dev/null 2>&1 || true"
  fi
  "${REPO_ROOT}/hack/cluster.sh" up
  unset KUBECONFIG
  if ((!started)); then
    log::warn "the local cluster was already up: the tests run on it$([[ "${KEEP_CLUSTER:-0}" == 1 ]] || echo ", and the lifecycle check at the end stops it (everything on it is deleted) and a demo found on it is set up again")"
    test::set_aside_demo
  fi
  log::step "the commands CI runs against its cluster, here against the local one: $(test::entry_points test-cluster | paste -sd, -)"
  export KUBECONFIG="${CLUSTER_KUBECONFIG}"
  test::run_entry_points test-cluster
  unset KUBECONFIG
  if [[ "${KEEP_CLUSTER:-0}" != 1 ]]; then
    test::run lifecycle "${REPO_ROOT}/e2e/cluster-lifecycle.sh"
  else
    log::info "lifecycle test not run: KEEP_CLUSTER=1 keeps the cluster up"
  fi
  ((started)) || test::restore_demo
  log::info "all tests took $(($(date +%s) - t0))s"
}

main() {
  local mode="${1:-all}"
  case "${mode}" in
    -h | --help) usage; exit 0 ;;
    all) test::all ;;
    unit) test::unit ;;
    cluster) test::cluster ;;
    lint) test::run lint "${REPO_ROOT}/hack/lint.sh" ;;
    *) util::usage_error "unknown mode: ${mode}" ;;
  esac
  test::print_summary "${mode}"
}

main "$@"
