#!/usr/bin/env bash
# Multi-architecture images, no cluster: builds app, controller and toolbox with hack/image.sh
# (linux/amd64 + linux/arm64) into a temporary images directory, reads each tarball's OCI index
# (both platforms, each config's architecture/os, arm64 layers hold aarch64 ELF files), then runs
# what the arm64 images hold under qemu-user: the app on 127.0.0.1 (/health, /ready after its
# warm-up, /metrics, POST /crash refused), the controller's --help and crdgen, the toolbox's sh.
# When run as root with containerd installed, a throw-away containerd (own root, state and
# socket under the temporary directory; no CRI plugin) imports the app tarball for this machine's
# platform the way `hack/image.sh --import` does. Stops everything it starts.
# Cost: the cargo build is shared with hack/image.sh (~/.cache/selfheal/cargo-target or
# CARGO_TARGET_DIR): warm, the whole test takes about a minute; cold, add the arm64 builds
# (app ≈ 2-3.5 min, controller ≈ 4-6 min on 2 cores).
# Prerequisites: cargo, rustup, python3, curl; the rest comes from hack/tools.sh (apt, rust-arm64,
# busybox-arm64).
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=hack/tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: hack/tests/images.sh [-h|--help]

Builds the multi-platform app, controller and toolbox images into a temporary directory,
checks their OCI index and runs the arm64 binaries under qemu-aarch64-static.
Prints "images: N passed, N failed". Needs no cluster and leaves ~/.cache/selfheal/images alone.

Environment:
  CARGO_TARGET_DIR  cargo's target directory, shared with hack/image.sh (warm = fast)
  KEEP_TMP=1        keep the temporary directory (tarballs, logs) for debugging
EOF
}

util::no_arguments "$@"

"${REPO_ROOT}/hack/tools.sh" install apt rust-arm64 busybox-arm64
util::require_tools python3 curl qemu-aarch64-static cargo

util::scratch_dir
export IMAGES_DIR="${TMP}/images" IMAGE_TAG=dev
MKIMAGE="${REPO_ROOT}/hack/mkimage.py"
HOST_ARCH="$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')"

# images::extract IMAGE ARCH DIR: unpack that platform's layer of IMAGE's tarball into DIR.
images::extract() {
  python3 - "${IMAGES_DIR}/$1.tar" "$2" "$3" <<'PY'
import io, json, sys, tarfile
tar, arch, dest = sys.argv[1:]
with tarfile.open(tar) as t:
    read = lambda d: t.extractfile("blobs/sha256/" + d.split(":", 1)[1]).read()
    (top,) = json.loads(t.extractfile("index.json").read())["manifests"]
    index = json.loads(read(top["digest"]))
    (m,) = [m for m in index["manifests"] if m["platform"] == {"architecture": arch, "os": "linux"}]
    (layer,) = json.loads(read(m["digest"]))["layers"]
    with tarfile.open(fileobj=io.BytesIO(read(layer["digest"]))) as lt:
        # The layer is ours (hack/mkimage.py): relative names, no device files.
        lt.extractall(dest)
PY
}

# --- the build ---------------------------------------------------------------------------------
dry_run_names_both_targets() {
  local out
  out="$("${REPO_ROOT}/hack/image.sh" --dry-run app controller toolbox 2>&1)" || return 1
  grep -q -- '--target x86_64-unknown-linux-gnu --target aarch64-unknown-linux-musl' <<<"${out}" &&
    grep -q 'CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc' <<<"${out}" &&
    grep -q -- '--root linux/arm64=' <<<"${out}" && grep -q -- '--root linux/amd64=' <<<"${out}" &&
    grep -q 'app: localhost/selfheal-app:dev for linux/amd64,linux/arm64' <<<"${out}" &&
    grep -q 'coredns: localhost/coredns:.* for linux/'"${HOST_ARCH}"' ->' < <("${REPO_ROOT}/hack/image.sh" --dry-run coredns 2>&1)
}

bad_platform_is_refused() {
  local rc=0
  "${REPO_ROOT}/hack/image.sh" --dry-run --platforms linux/riscv64 app >/dev/null 2>&1 || rc=$?
  ((rc == 2))
}

build_images() {
  local t0
  t0="$(date +%s)"
  nice -n 10 "${REPO_ROOT}/hack/image.sh" app controller toolbox || return 1
  log::info "hack/image.sh app controller toolbox took $(($(date +%s) - t0))s"
}

# --- the index ---------------------------------------------------------------------------------
# index_has_both_platforms IMAGE REF: index.json names REF, the image index has exactly
# linux/amd64 and linux/arm64, each manifest's config says the same os/architecture, and
# manifest.json (docker load, hack/cluster.sh) still names REF.
index_has_both_platforms() {
  local json
  json="$(python3 "${MKIMAGE}" --inspect "${IMAGES_DIR}/$1.tar")" || return 1
  printf '%s\n' "${json}" >&2
  INSPECT="${json}" python3 - "$2" "${IMAGES_DIR}/$1.tar" <<'PY'
import json, os, sys, tarfile
ref, tar = sys.argv[1:]
got = json.loads(os.environ["INSPECT"])
assert got["name"] == ref, f"name {got['name']} != {ref}"
plats = sorted(p["platform"] for p in got["platforms"])
assert plats == ["linux/amd64", "linux/arm64"], plats
for p in got["platforms"]:
    assert p["platform"] == f"{p['config_os']}/{p['config_architecture']}", p
with tarfile.open(tar) as t:
    assert json.load(t.extractfile("manifest.json"))[0]["RepoTags"] == [ref]
    assert json.load(t.extractfile("oci-layout"))["imageLayoutVersion"] == "1.0.0"
PY
}

# layer_is_arch IMAGE ARCH FILE: FILE in that platform's layer is an ELF for ARCH.
layer_is_arch() {
  local dir="${TMP}/$1-$2" machine
  rm -rf "${dir}"
  mkdir -p "${dir}"
  images::extract "$1" "$2" "${dir}" || return 1
  machine="$(python3 -c 'import struct,sys; h=open(sys.argv[1],"rb").read(20); print(struct.unpack("<H", h[18:20])[0] if h[:4]==b"\x7fELF" else "not-elf")' "${dir}/$3")"
  case "$2" in
    amd64) [[ "${machine}" == 62 ]] ;;
    arm64) [[ "${machine}" == 183 ]] ;;
  esac
}

same_inputs_same_digest() {
  local a b
  a="$(python3 "${MKIMAGE}" --inspect "${IMAGES_DIR}/toolbox.tar" | python3 -c 'import json,sys; print(json.load(sys.stdin)["index"])')"
  "${REPO_ROOT}/hack/image.sh" toolbox >/dev/null 2>&1 || return 1
  b="$(python3 "${MKIMAGE}" --inspect "${IMAGES_DIR}/toolbox.tar" | python3 -c 'import json,sys; print(json.load(sys.stdin)["index"])')"
  log::info "toolbox index ${a} then ${b}"
  [[ -n "${a}" && "${a}" == "${b}" ]]
}

# --- the arm64 binaries under qemu ---------------------------------------------------------------
APP_PID=""
APP_PORT=""
start_arm64_app() {
  APP_PORT="$(util::free_port)"
  qemu-aarch64-static "${TMP}/app-arm64/selfheal-app" --listen "127.0.0.1:${APP_PORT}" --warmup-secs 2 \
    >"${TMP}/app-arm64.log" 2>&1 &
  APP_PID=$!
  util::trap_add "kill ${APP_PID} 2>/dev/null || true"
  util::wait_for "arm64 selfheal-app /health on 127.0.0.1:${APP_PORT}" 60 \
    curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:${APP_PORT}/health" || { tail -n 20 "${TMP}/app-arm64.log" >&2; return 1; }
}

http_code() { curl -sS -o "${TMP}/body" -w '%{http_code}' --max-time 5 "$@"; }

health_is_200() { [[ "$(http_code "http://127.0.0.1:${APP_PORT}/health")" == 200 ]]; }

ready_is_200() { [[ "$(http_code "http://127.0.0.1:${APP_PORT}/ready")" == 200 ]]; }

ready_is_200_after_warmup() {
  local first
  first="$(http_code "http://127.0.0.1:${APP_PORT}/ready")"
  log::info "/ready during the warm-up: ${first}"
  util::wait_for "arm64 selfheal-app /ready 200 (2 s warm-up)" 30 ready_is_200
}

metrics_is_prometheus_text() {
  local code type
  code="$(curl -sS -o "${TMP}/metrics" -w '%{http_code} %{content_type}' --max-time 5 "http://127.0.0.1:${APP_PORT}/metrics")" || return 1
  type="${code#* }"
  log::info "/metrics: ${code}; $(grep -c '^# TYPE ' "${TMP}/metrics") metric families"
  [[ "${code%% *}" == 200 && "${type}" == text/plain* ]] && grep -q '^# TYPE ' "${TMP}/metrics" &&
    grep -Eq '^[a-z_]+(\{[^}]*\})? [0-9.e+-]+$' "${TMP}/metrics"
}

crash_is_refused() {
  local code
  code="$(http_code -X POST "http://127.0.0.1:${APP_PORT}/crash")" || return 1
  log::info "POST /crash (chaos disabled): ${code} $(head -c 200 "${TMP}/body")"
  [[ "${code}" == 403 ]] && kill -0 "${APP_PID}" && health_is_200
}

controller_help() {
  local out
  out="$(qemu-aarch64-static "${TMP}/controller-arm64/selfheal-controller" --help)" || return 1
  grep -q '^Usage: selfheal-controller' <<<"${out}" && grep -q 'crdgen' <<<"${out}"
}

controller_crdgen() {
  local out kind
  for kind in healing-policy circuit-breaker; do
    out="$(qemu-aarch64-static "${TMP}/controller-arm64/selfheal-controller" crdgen "${kind}")" || return 1
    grep -q '^kind: CustomResourceDefinition' <<<"${out}" || return 1
    log::info "crdgen ${kind}: $(grep -m1 '^  name: ' <<<"${out}" | sed 's/^ *//')"
  done
}

toolbox_sh() {
  [[ "$(qemu-aarch64-static "${TMP}/toolbox-arm64/bin/busybox" sh -c 'echo ok; uname -m')" == $'ok\naarch64' ]]
}

amd64_app_help() { "${TMP}/app-amd64/selfheal-app" --help >/dev/null; }

# --- containerd import (root only) ----------------------------------------------------------------
containerd_imports_host_platform() {
  local out
  tests::containerd "${TMP}/containerd" || return 1
  local c=("${SCRATCH_CTR[@]}")
  "${c[@]}" images import --platform "linux/${HOST_ARCH}" "${IMAGES_DIR}/app.tar" >&2 || return 1
  out="$("${c[@]}" images check)"
  printf '%s\n' "${out}" >&2
  grep -Eq '^localhost/selfheal-app:dev +application/vnd.oci.image.index.v1\+json .* complete .* true$' <<<"${out}" || return 1
  # Only this platform's layer is unpacked into a snapshot.
  [[ "$("${c[@]}" snapshots ls | tail -n +2 | wc -l)" == 1 ]] || return 1
  "${c[@]}" images rm --sync localhost/selfheal-app:dev >/dev/null
  util::stop "${SCRATCH_CTD_PID}"
  # Snapshots are overlay directories, not mounts, when nothing runs: the directory can go.
}

check::run "hack/image.sh --dry-run: one cargo call for both Rust targets, add-ons host-only" dry_run_names_both_targets
check::run "hack/image.sh --platforms linux/riscv64 is refused (exit 2)" bad_platform_is_refused
check::run "hack/image.sh app controller toolbox (both platforms)" build_images
for spec in app:localhost/selfheal-app:dev controller:localhost/selfheal-controller:dev toolbox:localhost/selfheal-toolbox:dev; do
  check::run "${spec%%:*}.tar: OCI index with linux/amd64 and linux/arm64, configs match" index_has_both_platforms "${spec%%:*}" "${spec#*:}"
done
check::run "app arm64 layer holds an aarch64 /selfheal-app" layer_is_arch app arm64 selfheal-app
check::run "app amd64 layer holds an x86-64 /selfheal-app" layer_is_arch app amd64 selfheal-app
check::run "controller arm64 layer holds an aarch64 /selfheal-controller" layer_is_arch controller arm64 selfheal-controller
check::run "toolbox arm64 layer holds an aarch64 /bin/busybox" layer_is_arch toolbox arm64 bin/busybox
check::run "the same inputs give the same index digest (toolbox)" same_inputs_same_digest
check::run "amd64 selfheal-app from the image runs here (--help)" amd64_app_help
if check::run "arm64 selfheal-app from the image starts under qemu-aarch64-static" start_arm64_app && [[ -n "${APP_PID}" ]] && kill -0 "${APP_PID}" 2>/dev/null; then
  check::run "arm64 app: GET /health 200" health_is_200
  check::run "arm64 app: GET /ready 200 after the warm-up" ready_is_200_after_warmup
  check::run "arm64 app: GET /metrics 200, Prometheus text" metrics_is_prometheus_text
  check::run "arm64 app: POST /crash refused with 403 (chaos disabled), still healthy" crash_is_refused
  util::stop "${APP_PID}"
fi
check::run "arm64 selfheal-controller --help under qemu" controller_help
check::run "arm64 selfheal-controller crdgen (both CRDs) under qemu" controller_crdgen
check::run "arm64 toolbox busybox sh under qemu" toolbox_sh
if [[ "$(id -u)" == 0 ]] && command -v containerd >/dev/null && command -v ctr >/dev/null; then
  check::run "a throw-away containerd imports app.tar for linux/${HOST_ARCH} only" containerd_imports_host_platform
else
  log::info "containerd import check not run: needs root and containerd (hack/tools.sh install apt)"
fi
check::summary images
