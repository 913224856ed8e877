# shellcheck shell=bash
# Process helpers of the host tests in observability/tests/ (no cluster): building and starting
# the real selfheal-app binary and a load on it. Free ports, stopping and the scratch directory
# come from hack/lib.sh (util::free_port, util::stop, util::scratch_dir).
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../hack/lib.sh"

# obs::cargo_bin PACKAGE BINARY: build PACKAGE (debug) and print the path of BINARY.
obs::cargo_bin() {
  local pkg="$1" bin="$2" dir
  log::step "building ${pkg} (cargo build -p ${pkg})"
  cargo build --locked -p "${pkg}" --manifest-path "${REPO_ROOT}/Cargo.toml" >&2 || return 1
  dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "${REPO_ROOT}/Cargo.toml" | jq -r .target_directory)"
  [[ -x "${dir}/debug/${bin}" ]] || { log::error "no binary at ${dir}/debug/${bin}"; return 1; }
  printf '%s\n' "${dir}/debug/${bin}"
}

# obs::start LOG CMD...: start CMD in the background with output to LOG; stopped at exit.
# Sets OBS_PID.
obs::start() {
  local log="$1"
  shift
  "$@" >"${log}" 2>&1 &
  OBS_PID=$!
  util::trap_add "util::stop ${OBS_PID}"
}

# obs::load SECONDS URL...: GET each URL in turn, about 30 requests a second, in the background
# (errors are expected while faults are injected). Sets OBS_PID.
obs::load() {
  local secs="$1"
  shift
  python3 - "${secs}" "$@" >/dev/null 2>&1 <<'PY' &
import sys, time, urllib.request
deadline, urls = time.time() + float(sys.argv[1]), sys.argv[2:]
while time.time() < deadline:
    for u in urls:
        try:
            urllib.request.urlopen(u, timeout=2).read()
        except OSError:
            pass
    time.sleep(0.03)
PY
  OBS_PID=$!
  util::trap_add "util::stop ${OBS_PID}"
}
