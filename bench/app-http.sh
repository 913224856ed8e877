#!/usr/bin/env bash
# Benchmarks selfheal-app's HTTP path against a bare axum hello-world built in the same run, on
# the same machine with the same load generator (oha), and reports:
#   - req/s and p99 of GET / (full middleware stack vs bare)  → ratio, target ≥ 0.85
#   - RSS idle and peak RSS under N concurrent connections      → targets < 8 MiB, < 30 MiB
#   - time from exec to the first 200 on /ready (warm-up 0)     → target < 20 ms
#   - static binary and image size                              → target < 10 MiB
# Prerequisites: cargo, python3 (startup timing), curl. oha is installed into
# ~/.cache/selfheal/tools by this script if missing. Only loopback addresses are used.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

usage() {
  cat <<USAGE
Usage: bench/app-http.sh [options]

Options:
  --duration SECS       length of each load run (default: ${DURATION:-10})
  --connections N       concurrent connections for the throughput runs (default: ${CONNECTIONS:-50})
  --max-connections N   connections for the peak-RSS run (default: ${MAX_CONNECTIONS:-1000})
  --startups N          exec-to-ready samples (default: ${STARTUPS:-20})
  --port PORT           first of two loopback ports to use (default: ${PORT:-18480})
  --image               also build the image tarball (hack/image.sh, linux/amd64 only) and report its size
  --skip-build          use the binaries already in target/release
  -h, --help            this help

Environment:
  DURATION, CONNECTIONS, MAX_CONNECTIONS, STARTUPS, PORT   same as the options
  SELFHEAL_HOME        tool cache root (default ~/.cache/selfheal); oha goes to \$SELFHEAL_HOME/tools

Example:
  bench/app-http.sh --duration 5 --connections 32
USAGE
}

DURATION="${DURATION:-10}"
CONNECTIONS="${CONNECTIONS:-50}"
MAX_CONNECTIONS="${MAX_CONNECTIONS:-1000}"
STARTUPS="${STARTUPS:-20}"
PORT="${PORT:-18480}"
BUILD_IMAGE=0
SKIP_BUILD=0
while (($#)); do
  case "$1" in
    --duration) DURATION="${2:?}"; shift 2 ;;
    --connections) CONNECTIONS="${2:?}"; shift 2 ;;
    --max-connections) MAX_CONNECTIONS="${2:?}"; shift 2 ;;
    --startups) STARTUPS="${2:?}"; shift 2 ;;
    --port) PORT="${2:?}"; shift 2 ;;
    --image) BUILD_IMAGE=1; shift ;;
    --skip-build) SKIP_BUILD=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

util::require_tools cargo python3 curl
TOOLS_ROOT="${SELFHEAL_HOME}/tools"
RELEASE="${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/release"
APP="${RELEASE}/selfheal-app"
HELLO="${RELEASE}/examples/hello"
APP_ADDR="127.0.0.1:${PORT}"
HELLO_ADDR="127.0.0.1:$((PORT + 1))"
PIDS=()
# shellcheck disable=SC2016 # expanded when the trap runs, not now
util::trap_add 'for p in "${PIDS[@]}"; do kill "${p}" 2>/dev/null || true; done'

bench::oha() {
  if command -v oha >/dev/null; then command -v oha; return; fi
  if [[ ! -x "${TOOLS_ROOT}/bin/oha" ]]; then
    log::step "installing oha into ${TOOLS_ROOT}"
    cargo install --locked oha --root "${TOOLS_ROOT}" >&2
  fi
  echo "${TOOLS_ROOT}/bin/oha"
}

# bench::start BIN ADDR ARGS...: start a server in the background, wait for it, set SERVER_PID.
bench::start() {
  local bin="$1" addr="$2"
  shift 2
  "${bin}" "$@" >/dev/null 2>&1 &
  SERVER_PID=$!
  PIDS+=("${SERVER_PID}")
  util::wait_for "${bin##*/} on ${addr}" 10 curl -fsS -o /dev/null "http://${addr}/"
}

bench::rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
bench::hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# bench::load URL CONNECTIONS: prints "rps p99_ms" from oha's JSON summary.
bench::load() {
  "${OHA}" --no-tui --output-format json -z "${DURATION}s" -c "$2" "$1" 2>/dev/null |
    python3 -c "import json,sys; d=json.load(sys.stdin); s=d['summary']; p=d['latencyPercentiles']; print('%.0f %.3f %.4f' % (s['requestsPerSec'], p['p99'] * 1000, s['successRate']))"
}

if ((!SKIP_BUILD)); then
  log::step "building selfheal-app and the bare axum baseline (release)"
  cargo build --release --manifest-path "${REPO_ROOT}/Cargo.toml" -p selfheal-app --bin selfheal-app --example hello
fi
[[ -x "${APP}" && -x "${HELLO}" ]] || log::fatal "missing ${APP} or ${HELLO}; run without --skip-build"
OHA="$(bench::oha)"
log::info "load generator: $("${OHA}" --version)"

log::step "exec → first 200 on /ready, ${STARTUPS} samples (warm-up 0)"
STARTUP_MS="$(python3 - "${APP}" "${APP_ADDR}" "${STARTUPS}" <<'PY'
import socket, statistics, subprocess, sys, time
app, addr, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
host, port = addr.rsplit(":", 1)
req = f"GET /ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n".encode()
samples = []
for _ in range(n):
    t0 = time.perf_counter()
    p = subprocess.Popen([app, "--listen", addr, "--shutdown-delay-secs", "0"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = t0 + 5
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=1) as s:
                s.sendall(req)
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    break
        except OSError:
            pass
        if time.perf_counter() > deadline:
            p.kill(); sys.exit("no 200 on /ready within 5 s")
        time.sleep(0.0005)
    samples.append((time.perf_counter() - t0) * 1000)
    p.terminate(); p.wait()
samples.sort()
print(f"{statistics.median(samples):.1f} {samples[-1]:.1f}")
PY
)"
read -r STARTUP_P50 STARTUP_MAX <<<"${STARTUP_MS}"

log::step "RSS idle and throughput: selfheal-app (JSON logs to /dev/null, full middleware)"
bench::start "${APP}" "${APP_ADDR}" --listen "${APP_ADDR}" --log-format json --shutdown-delay-secs 0
APP_PID="${SERVER_PID}"
sleep 1 # settle before reading idle RSS
APP_IDLE_KIB="$(bench::rss_kib "${APP_PID}")"
read -r APP_RPS APP_P99 APP_OK <<<"$(bench::load "http://${APP_ADDR}/" "${CONNECTIONS}")"

log::step "throughput: bare axum hello-world"
bench::start "${HELLO}" "${HELLO_ADDR}" "${HELLO_ADDR}"
HELLO_PID="${SERVER_PID}"
HELLO_IDLE_KIB="$(bench::rss_kib "${HELLO_PID}")"
read -r HELLO_RPS HELLO_P99 HELLO_OK <<<"$(bench::load "http://${HELLO_ADDR}/" "${CONNECTIONS}")"
bench::load "http://${HELLO_ADDR}/" "${MAX_CONNECTIONS}" >/dev/null
HELLO_PEAK_KIB="$(bench::hwm_kib "${HELLO_PID}")"
kill "${HELLO_PID}"

log::step "peak RSS of selfheal-app at ${MAX_CONNECTIONS} connections"
read -r APP_MAX_RPS APP_MAX_P99 APP_MAX_OK <<<"$(bench::load "http://${APP_ADDR}/" "${MAX_CONNECTIONS}")"
APP_PEAK_KIB="$(bench::hwm_kib "${APP_PID}")"
kill "${APP_PID}"

STATIC="${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/x86_64-unknown-linux-gnu/release/selfheal-app"
STATIC_BYTES="n/a"
[[ -f "${STATIC}" ]] && STATIC_BYTES="$(stat -c %s "${STATIC}")"
if ((BUILD_IMAGE)); then
  # One platform, so the size is one image's (the default tarball holds amd64 and arm64).
  log::step "building the image tarball (hack/image.sh --platforms linux/amd64 app)"
  "${REPO_ROOT}/hack/image.sh" --platforms linux/amd64 app >&2
  STATIC_BYTES="$(stat -c %s "${STATIC}")"
fi
IMAGE_TAR="${SELFHEAL_HOME}/images/app.tar"
IMAGE_BYTES="n/a"
[[ -f "${IMAGE_TAR}" ]] && IMAGE_BYTES="$(stat -c %s "${IMAGE_TAR}")"

python3 - <<PY
def mib(x):
    return "n/a" if x in ("n/a", "") else f"{int(x) / 1048576:.2f} MiB"
def kib(x):
    return f"{int(x) / 1024:.2f} MiB"
app_rps, hello_rps = float("${APP_RPS}"), float("${HELLO_RPS}")
app_p99, hello_p99 = float("${APP_P99}"), float("${HELLO_P99}")
rows = [
    ("GET / req/s, ${CONNECTIONS} conns", f"{app_rps:.0f}", f"{hello_rps:.0f}", f"ratio {app_rps / hello_rps:.3f} (target >= 0.85)"),
    ("GET / p99", f"{app_p99:.2f} ms", f"{hello_p99:.2f} ms", f"ratio {app_p99 / hello_p99:.2f}"),
    ("success rate", "${APP_OK}", "${HELLO_OK}", ""),
    ("RSS idle", kib("${APP_IDLE_KIB}"), kib("${HELLO_IDLE_KIB}"), "target < 8 MiB"),
    ("peak RSS, ${MAX_CONNECTIONS} conns", kib("${APP_PEAK_KIB}"), kib("${HELLO_PEAK_KIB}"), f"target < 30 MiB; {float('${APP_MAX_RPS}'):.0f} req/s, p99 ${APP_MAX_P99} ms, success ${APP_MAX_OK}"),
    ("exec -> 200 on /ready", "p50 ${STARTUP_P50} ms, max ${STARTUP_MAX} ms", "", "target < 20 ms"),
    ("static binary", mib("${STATIC_BYTES}"), "", ""),
    ("image tarball", mib("${IMAGE_BYTES}"), "", "target < 10 MiB"),
]
print(f"{'measure':32} {'selfheal-app':28} {'bare axum':14} note")
for r in rows:
    print(f"{r[0]:32} {r[1]:28} {r[2]:14} {r[3]}")
PY
log::ok "app-http benchmark done (duration ${DURATION}s, ${CONNECTIONS} connections, $(nproc) CPUs)"
