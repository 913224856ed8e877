#!/usr/bin/env bash
# Builds the container images the project runs, without Docker: static binaries go into a
# single-layer image per platform, packed as ONE OCI image index per image (hack/mkimage.py) in a
# tarball under ~/.cache/selfheal/images, which is then imported into the local cluster's
# containerd (its own platform), loaded into minikube (the platform of its Node, as a
# single-platform tarball), or left as a file.
# app, controller and toolbox are built for linux/amd64 and linux/arm64 by default (arm64 is
# cross-compiled: aarch64-unknown-linux-musl linked by Debian's gcc-aarch64-linux-gnu); the
# cluster add-ons (pause, coredns, metrics-server) for this machine's platform only.
# With --docker, `docker buildx build` makes app/controller from their Dockerfiles instead.
# Prerequisites: cargo + rustup (app, controller), python3, ctr (for --import); the arm64
# toolchain and busybox come from hack/tools.sh (installed here when missing).
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROJECT_IMAGES=(app controller)
TEST_IMAGES=(toolbox)
CLUSTER_IMAGES=(pause coredns metrics-server)
DEFAULT_PLATFORMS=linux/amd64,linux/arm64

usage() {
  cat <<EOF
Usage: hack/image.sh [options] IMAGE...

Images (one tarball each: ${IMAGES_DIR}/IMAGE.tar, an OCI image index):
  app             localhost/selfheal-app:\${IMAGE_TAG}          (static Rust binary, FROM scratch, uid 65532)
  controller      localhost/selfheal-controller:\${IMAGE_TAG}   (same layout)
  toolbox         localhost/selfheal-toolbox:dev       (static busybox: sh, nc, httpd, nslookup; for tests)
  pause           ${PAUSE_IMAGE}       (pod sandbox, from hack/images/pause.c; host platform only)
  coredns         localhost/coredns:${COREDNS_VERSION}              (host platform only)
  metrics-server  localhost/metrics-server:${METRICS_SERVER_VERSION}      (host platform only)
  traefik         localhost/traefik:${TRAEFIK_VERSION}             (e2e/canary.sh's router; host platform only)
  project         = ${PROJECT_IMAGES[*]};  cluster = ${CLUSTER_IMAGES[*]} ${TEST_IMAGES[*]}

Options:
  --platforms LIST  platforms of app, controller and toolbox, comma-separated
                    (default: ${DEFAULT_PLATFORMS}; with --docker: this machine's, linux/$(image::host_arch)).
                    Supported: linux/amd64 (x86_64-unknown-linux-gnu, +crt-static) and
                    linux/arm64 (aarch64-unknown-linux-musl). The first one is what 'docker load'
                    of the tarball takes (manifest.json); ctr reads the whole index.
  --import          import into the local cluster's containerd (hack/cluster.sh) after building,
                    this machine's platform (ctr images import --platform linux/$(image::host_arch))
  --minikube        load into the minikube of the current kube context after building, for the
                    architecture of its Node (--node-arch): that platform is copied out of the
                    index into IMAGE-linux-ARCH.tar (mkimage.py --export), which goes to
                    'minikube image load' (a containerd node imports it, a Docker node
                    'docker load's it: both get the node's platform). With --docker: the image
                    is built for the node's platform and loaded by reference (--daemon).
                    Exits 1 when the node's architecture is not amd64 or arm64.
  --node-arch ARCH  with --minikube: the node's architecture (amd64, arm64); default: read from
                    the Node objects (label kubernetes.io/arch, else .status.nodeInfo.architecture)
  --docker          build app/controller with 'docker buildx build --load' from their Dockerfile
                    instead (the image stays in docker); a multi-platform --load needs Docker's
                    containerd image store
  --tag TAG         tag for app and controller (default: \${IMAGE_TAG:-dev})
  --dry-run         print what would be built and imported, with the platforms, change nothing
  -h, --help        this help

Environment:
  IMAGE_TAG         default tag for app and controller (dev)
  MINIKUBE_PROFILE  with --minikube: the profile (default: the minikube.k8s.io/name label of the
                    Node, else minikube)
  SELFHEAL_HOME     cache root; tarballs go to \$SELFHEAL_HOME/images (${IMAGES_DIR})
  CARGO_TARGET_DIR  cargo's target directory (default: the workspace's target/)

Examples:
  hack/image.sh --import app controller
  hack/image.sh --platforms linux/arm64 --dry-run app
  hack/image.sh --minikube --node-arch arm64 --platforms linux/arm64 --dry-run app controller
EOF
}

# image::host_arch: this machine's architecture, as OCI platforms name it.
image::host_arch() {
  case "$(uname -m)" in
    x86_64 | amd64) echo amd64 ;;
    aarch64 | arm64) echo arm64 ;;
    *) log::fatal "unsupported machine $(uname -m): images are built for amd64 and arm64 only" ;;
  esac
}

image::ref() {
  case "$1" in
    app) echo "localhost/selfheal-app:${IMAGE_TAG}" ;;
    controller) echo "localhost/selfheal-controller:${IMAGE_TAG}" ;;
    toolbox) echo "localhost/selfheal-toolbox:dev" ;;
    pause) echo "${PAUSE_IMAGE}" ;;
    coredns) echo "localhost/coredns:${COREDNS_VERSION}" ;;
    metrics-server) echo "localhost/metrics-server:${METRICS_SERVER_VERSION}" ;;
    traefik) echo "localhost/traefik:${TRAEFIK_VERSION}" ;;
    *) util::usage_error "unknown image: $1" ;;
  esac
}

image::tarball() { echo "${IMAGES_DIR}/$1.tar"; }

# image::archs NAME: the architectures NAME is built for, one a line.
image::archs() {
  case "$1" in
    app | controller | toolbox) printf '%s\n' "${ARCHS[@]}" ;;
    *) image::host_arch ;;
  esac
}

# image::rust_target ARCH: the Rust target of the static binaries for that architecture.
# amd64 stays glibc with +crt-static (what the local cluster has always run and the bench
# measures); arm64 is musl, which rustup ships with its own libc and crt objects, so one Debian
# cross gcc is all it needs (no arm64 glibc).
image::rust_target() {
  case "$1" in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-musl ;;
    *) util::usage_error "no Rust target for linux/$1 (supported: amd64, arm64)" ;;
  esac
}

# image::rust_env ARCH: the environment (VAR=value, one a line) that builds that target statically.
# Per-target variables, so one cargo call builds every platform.
image::rust_env() {
  case "$1" in
    amd64)
      echo "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS=-C target-feature=+crt-static"
      if [[ "$(image::host_arch)" != amd64 ]]; then
        echo "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc"
        echo "CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc"
        echo "AR_x86_64_unknown_linux_gnu=x86_64-linux-gnu-ar"
      fi
      ;;
    arm64)
      echo "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS=-C link-self-contained=yes"
      echo "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc"
      echo "CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc"
      echo "AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar"
      ;;
  esac
}

# image::rust_toolchain ARCH: the Rust target and the C cross compiler for it are installed.
image::rust_toolchain() {
  local arch="$1"
  case "${arch}" in
    arm64) util::run "${REPO_ROOT}/hack/tools.sh" install rust-arm64 ;;
    amd64)
      [[ "$(image::host_arch)" == amd64 ]] ||
        util::require_tools x86_64-linux-gnu-gcc # apt: gcc-x86-64-linux-gnu libc6-dev-amd64-cross (not tested here)
      ;;
  esac
}

image::target_dir() {
  if [[ -n "${CARGO_TARGET_DIR:-}" ]]; then
    printf '%s\n' "${CARGO_TARGET_DIR}"
  else
    cargo metadata --format-version 1 --no-deps --manifest-path "${REPO_ROOT}/Cargo.toml" | jq -r .target_directory
  fi
}

# image::rust_build NAME...: the static release binaries of these images, for every platform, in
# one cargo call, so the serial tail of one (codegen, LTO, link) overlaps the others' instead of
# following it. A warm build (same sources, same target dir) compiles nothing.
image::rust_build() {
  local args=() envs=() name arch line
  for name in "$@"; do args+=(-p "selfheal-${name}"); done
  for arch in "${ARCHS[@]}"; do
    image::rust_toolchain "${arch}"
    args+=(--target "$(image::rust_target "${arch}")")
    while read -r line; do envs+=("${line}"); done < <(image::rust_env "${arch}")
  done
  util::require_tools cargo
  log::step "building ${*/#/selfheal-} for ${PLATFORMS} (static, release)"
  local t0
  t0="$(date +%s)"
  util::run env "${envs[@]}" cargo build --release --locked --manifest-path "${REPO_ROOT}/Cargo.toml" "${args[@]}"
  log::info "cargo build took $(($(date +%s) - t0))s"
  RUST_BUILT+=("$@")
}

# A Rust binary of the workspace, static so the image needs no libc: FROM scratch.
image::rust() {
  local name="$1" bin="selfheal-$1"
  util::require_tools cargo python3 jq
  [[ " ${RUST_BUILT[*]} " == *" ${name} "* ]] || image::rust_build "${name}"
  local target_dir="" arch root roots=()
  [[ "${DRY_RUN:-0}" == 1 ]] || target_dir="$(image::target_dir)"
  for arch in "${ARCHS[@]}"; do
    root="$(mktemp -d)"
    util::trap_add "rm -rf '${root}'"
    if [[ "${DRY_RUN:-0}" != 1 ]]; then
      install -m 0755 "${target_dir}/$(image::rust_target "${arch}")/release/${bin}" "${root}/${bin}"
    fi
    roots+=(--root "linux/${arch}=${root}")
  done
  local port=8080
  [[ "${name}" == controller ]] && port=8081
  image::pack "${name}" "${roots[@]}" --entrypoint "/${bin}" --user 65532:65532 --port "${port}" \
    --label "org.opencontainers.image.source=https://github.com/selfheal-io/selfheal" \
    --label "org.opencontainers.image.title=${bin}"
}

# image::pack NAME mkimage-args...: write the tarball atomically.
image::pack() {
  local name="$1"
  shift
  util::run python3 "${REPO_ROOT}/hack/mkimage.py" --tag "$(image::ref "${name}")" \
    --out "$(image::tarball "${name}")" "$@" >/dev/null
}

image::docker() {
  local name="$1"
  util::require_tools docker
  log::step "building $(image::ref "${name}") for ${PLATFORMS} with docker buildx"
  util::run docker buildx build --platform "${PLATFORMS}" --load -f "${REPO_ROOT}/${name}/Dockerfile" \
    -t "$(image::ref "${name}")" "${REPO_ROOT}"
}

# A Go-built cluster add-on from hack/tools.sh: one static binary at /NAME, this machine's platform.
image::addon() {
  local name="$1" bin
  bin="$(command -v "${name}" || true)"
  [[ -n "${bin}" ]] || "${REPO_ROOT}/hack/tools.sh" install "${name}"
  bin="$(readlink -f "$(command -v "${name}")")"
  local root
  root="$(mktemp -d)"
  util::trap_add "rm -rf '${root}'"
  cp "${bin}" "${root}/${name}"
  image::pack "${name}" --root "linux/$(image::host_arch)=${root}" --entrypoint "/${name}"
}

image::pause() {
  util::require_tools gcc strip
  local root
  root="$(mktemp -d)"
  util::trap_add "rm -rf '${root}'"
  util::run gcc -static -Os -o "${root}/pause" "${REPO_ROOT}/hack/images/pause.c"
  util::run strip "${root}/pause"
  image::pack pause --root "linux/$(image::host_arch)=${root}" --entrypoint /pause --user 65535:65535
}

# image::busybox ARCH: path of a static busybox for ARCH: Debian's busybox-static, the host's
# own package or the same version for the other architecture (hack/tools.sh busybox-ARCH).
image::busybox() {
  local arch="$1"
  if [[ "${arch}" == "$(image::host_arch)" ]]; then
    [[ -x /bin/busybox ]] || log::fatal "/bin/busybox not found: install it with hack/tools.sh install apt (package busybox-static)"
    echo /bin/busybox
    return 0
  fi
  local dir
  dir="$("${REPO_ROOT}/hack/tools.sh" path "busybox-${arch}")"
  [[ -x "${dir}/busybox" ]] || util::run "${REPO_ROOT}/hack/tools.sh" install "busybox-${arch}" >&2
  echo "${dir}/busybox"
}

# busybox-static from Debian: one binary, applets as symlinks.
image::toolbox() {
  local arch root applet roots=() busybox
  for arch in "${ARCHS[@]}"; do
    busybox="$(image::busybox "${arch}")"
    root="$(mktemp -d)"
    util::trap_add "rm -rf '${root}'"
    mkdir -p "${root}/bin"
    [[ "${DRY_RUN:-0}" == 1 ]] || cp "${busybox}" "${root}/bin/busybox"
    for applet in sh sleep httpd nslookup nc cat echo ls kill date true false env hostname; do
      ln -s busybox "${root}/bin/${applet}"
    done
    roots+=(--root "linux/${arch}=${root}")
  done
  image::pack toolbox "${roots[@]}" --entrypoint /bin/sh --user 65532:65532
}

# -- traefik: e2e/canary.sh's in-cluster router ---------------------------------------------------
# The binary hack/tools.sh builds (canary/build-traefik.sh), this machine's platform. That build
# links glibc dynamically (cgo), so the loader and the libraries ldd names go in at their paths.
image::traefik() {
  local bin root lib
  bin="$("${REPO_ROOT}/hack/tools.sh" path traefik)/traefik"
  [[ -x "${bin}" ]] || util::run "${REPO_ROOT}/hack/tools.sh" install traefik
  root="$(mktemp -d)"
  util::trap_add "rm -rf '${root}'"
  if [[ "${DRY_RUN:-0}" != 1 ]]; then
    cp "${bin}" "${root}/traefik"
    for lib in $(ldd "${bin}" 2>/dev/null | grep -o '/[^ ]*' || true); do
      mkdir -p "${root}$(dirname "${lib}")"
      cp -L "${lib}" "${root}${lib}"
    done
  fi
  image::pack traefik --root "linux/$(image::host_arch)=${root}" --entrypoint /traefik --user 65532:65532
}

image::build() {
  local name="$1"
  case "${name}" in
    app | controller)
      if ((USE_DOCKER)); then image::docker "${name}"; else image::rust "${name}"; fi
      ;;
    coredns | metrics-server) image::addon "${name}" ;;
    pause) image::pause ;;
    toolbox) image::toolbox ;;
    traefik) image::traefik ;;
    *) util::usage_error "unknown image: ${name}" ;;
  esac
  ((USE_DOCKER)) && [[ "${name}" == app || "${name}" == controller ]] && return 0
  local archs
  archs="$(image::archs "${name}" | sed 's|^|linux/|' | paste -sd, -)"
  log::ok "$(image::ref "${name}") [${archs}] -> $(image::tarball "${name}")"
}

# image::import NAME: this machine's platform of the index, into the local cluster's containerd.
# The kubelet sees it at once.
image::import() {
  local name="$1" platform
  platform="linux/$(image::host_arch)"
  image::archs "${name}" | grep -qx "${platform#linux/}" ||
    log::fatal "$(image::tarball "${name}") has no ${platform} image (built for ${PLATFORMS}); the local cluster runs ${platform}"
  [[ "${DRY_RUN:-0}" == 1 || -S "${CONTAINERD_SOCK}" ]] ||
    log::fatal "the local cluster's containerd is not running (${CONTAINERD_SOCK}); start it with: hack/cluster.sh up"
  util::run util::ctr images import --platform "${platform}" "$(image::tarball "${name}")" >/dev/null
  log::ok "imported $(image::ref "${name}") (${platform}) into the local cluster"
}

# image::minikube_tarball NAME: the single-platform tarball --minikube loads.
image::minikube_tarball() { echo "${IMAGES_DIR}/$1-${MINIKUBE_PLATFORM//\//-}.tar"; }

# image::minikube_load NAME: the node's platform only. `minikube image load FILE` copies the file
# to the node and runs the runtime's loader on it: `ctr -n=k8s.io images import FILE` (the
# node's platform of an index) on containerd, `docker load` (manifest.json: ONE platform, the
# first built) on Docker. The multi-platform tarball would give an arm64 Docker node the amd64
# image (exec format error), so the node's platform is copied out first. When docker built it,
# the image (built for the node's platform) goes by reference from the local docker daemon.
image::minikube_load() {
  local name="$1"
  if ((USE_DOCKER)) && [[ "${name}" == app || "${name}" == controller ]]; then
    util::run minikube --profile "${MINIKUBE_PROFILE_NAME}" image load --daemon "$(image::ref "${name}")"
    return 0
  fi
  util::run python3 "${REPO_ROOT}/hack/mkimage.py" --export "${MINIKUBE_PLATFORM}" \
    --from "$(image::tarball "${name}")" --out "$(image::minikube_tarball "${name}")" >/dev/null
  util::run minikube --profile "${MINIKUBE_PROFILE_NAME}" image load "$(image::minikube_tarball "${name}")"
  [[ "${DRY_RUN:-0}" == 1 ]] || log::ok "loaded $(image::ref "${name}") (${MINIKUBE_PLATFORM}) into minikube profile ${MINIKUBE_PROFILE_NAME}"
}

# image::minikube_target [ARCH]: MINIKUBE_PLATFORM (the node's, from ARCH or the Node objects)
# and MINIKUBE_PROFILE_NAME. The minikube command itself is needed only to load (not in dry-run).
image::minikube_target() {
  local arch="${1:-}"
  if [[ -z "${arch}" ]]; then
    util::require_tools kubectl
    arch="$(minikube::node_arch)" || log::fatal "cannot tell the minikube node's architecture (is minikube running? or pass --node-arch)"
  fi
  MINIKUBE_PLATFORM="$(minikube::platform "${arch}")" || exit 1
  MINIKUBE_PROFILE_NAME="$(minikube::profile)"
  MINIKUBE_PROFILE_NAME="${MINIKUBE_PROFILE_NAME:-minikube}"
  if [[ "${DRY_RUN:-0}" != 1 ]]; then
    util::require_tools minikube
  elif ! command -v minikube >/dev/null; then
    log::info "no minikube command here: the minikube commands below are what would run"
  fi
  log::info "minikube profile ${MINIKUBE_PROFILE_NAME}, node platform ${MINIKUBE_PLATFORM}$([[ -n "${1:-}" ]] && echo " (--node-arch)")"
}

# image::parse_platforms LIST: set PLATFORMS and ARCHS (linux only, amd64/arm64, no repeats).
image::parse_platforms() {
  local p seen=" " list=()
  ARCHS=()
  IFS=, read -ra list <<<"$1"
  ((${#list[@]})) || util::usage_error "--platforms needs at least one platform"
  for p in "${list[@]}"; do
    [[ "${p}" =~ ^linux/(amd64|arm64)$ ]] || util::usage_error "unsupported platform '${p}' (supported: linux/amd64, linux/arm64)"
    [[ "${seen}" != *" ${p} "* ]] || util::usage_error "platform ${p} given twice"
    seen+="${p} "
    ARCHS+=("${p#linux/}")
  done
  PLATFORMS="$1"
}

main() {
  IMAGE_TAG="${IMAGE_TAG:-dev}"
  USE_DOCKER=0
  RUST_BUILT=()
  local do_import=0 do_minikube=0 names=() platforms="" node_arch=""
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --import) do_import=1 ;;
      --minikube) do_minikube=1 ;;
      --node-arch) util::need_value "$1" "$#"; node_arch="$2"; shift ;;
      --docker) USE_DOCKER=1 ;;
      --tag) util::need_value "$1" "$#"; IMAGE_TAG="$2"; shift ;;
      --platforms) util::need_value "$1" "$#"; platforms="$2"; shift ;;
      --platforms=*) platforms="${1#*=}" ;;
      --dry-run) export DRY_RUN=1 ;;
      project) names+=("${PROJECT_IMAGES[@]}") ;;
      cluster) names+=("${CLUSTER_IMAGES[@]}" "${TEST_IMAGES[@]}") ;;
      -*) util::usage_error "unknown option: $1" ;;
      *) image::ref "$1" >/dev/null; names+=("$1") ;;
    esac
    shift
  done
  ((${#names[@]})) || util::usage_error "no image named"
  ((do_import && USE_DOCKER)) && util::usage_error "--import takes the tarball build; with --docker the image is already in docker"
  [[ -z "${node_arch}" ]] || ((do_minikube)) || util::usage_error "--node-arch goes with --minikube"
  ((do_minikube)) && image::minikube_target "${node_arch}"
  if [[ -z "${platforms}" ]]; then
    platforms="${DEFAULT_PLATFORMS}"
    ((USE_DOCKER)) && platforms="linux/$(image::host_arch)"
    # Docker keeps one platform per tag without its containerd image store, and `minikube image
    # load --daemon` takes what the tag resolves to: build exactly the node's.
    ((USE_DOCKER && do_minikube)) && platforms="${MINIKUBE_PLATFORM}"
  fi
  if ((USE_DOCKER && do_minikube)) && [[ "${platforms}" != "${MINIKUBE_PLATFORM}" ]]; then
    util::usage_error "--docker --minikube builds the node's platform only (${MINIKUBE_PLATFORM}), not --platforms ${platforms}"
  fi
  image::parse_platforms "${platforms}"
  local n rust=()
  for n in "${names[@]}"; do
    # The tarballs --minikube loads must hold the node's platform (docker builds only that one).
    if ((do_minikube)) && ! { ((USE_DOCKER)) && [[ "${n}" == app || "${n}" == controller ]]; } &&
      ! image::archs "${n}" | grep -qx "${MINIKUBE_PLATFORM#linux/}"; then
      log::fatal "${n} would be built for $(image::archs "${n}" | sed 's|^|linux/|' | paste -sd, -), and the minikube node runs ${MINIKUBE_PLATFORM}$([[ "${n}" =~ ^(app|controller|toolbox)$ ]] && echo ": add it to --platforms")"
    fi
    [[ "${n}" == app || "${n}" == controller ]] && rust+=("${n}")
    if ((USE_DOCKER)) && [[ "${n}" == app || "${n}" == controller ]]; then
      log::info "${n}: $(image::ref "${n}") for ${PLATFORMS} -> docker"
    else
      log::info "${n}: $(image::ref "${n}") for $(image::archs "${n}" | sed 's|^|linux/|' | paste -sd, -) -> $(image::tarball "${n}")"
    fi
  done
  [[ "${DRY_RUN:-0}" == 1 ]] || mkdir -p "${IMAGES_DIR}"
  ((USE_DOCKER || ${#rust[@]} < 2)) || image::rust_build "${rust[@]}"
  for n in "${names[@]}"; do
    image::build "${n}"
    ((do_import)) && image::import "${n}"
    ((do_minikube)) && image::minikube_load "${n}"
  done
  return 0
}

main "$@"
