#!/usr/bin/env bash
# Builds the container images the project runs, without Docker: a static binary goes into a
# single-layer docker-archive tarball (hack/mkimage.py) under ~/.cache/selfheal/images, which is
# then imported into the local cluster's containerd, loaded into minikube, or left as a file.
# With --docker, `docker build` makes the same image from the Dockerfile instead.
# Prerequisites: cargo (app, controller), python3, ctr (for --import), go tools from hack/tools.sh.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PROJECT_IMAGES=(app controller)
TEST_IMAGES=(toolbox)
CLUSTER_IMAGES=(pause coredns metrics-server)

usage() {
  cat <<EOF
Usage: hack/image.sh [options] IMAGE...

Images:
  app             localhost/selfheal-app:\${IMAGE_TAG}          (static Rust binary, FROM scratch, uid 65532)
  controller      localhost/selfheal-controller:\${IMAGE_TAG}   (same layout)
  toolbox         localhost/selfheal-toolbox:dev       (static busybox: sh, nc, httpd, nslookup; for tests)
  pause           ${PAUSE_IMAGE}       (pod sandbox, from hack/images/pause.c)
  coredns         localhost/coredns:${COREDNS_VERSION}
  metrics-server  localhost/metrics-server:${METRICS_SERVER_VERSION}
  project         = ${PROJECT_IMAGES[*]};  cluster = ${CLUSTER_IMAGES[*]} ${TEST_IMAGES[*]}

Options:
  --import        import into the local cluster's containerd (hack/cluster.sh) after building
  --minikube      load into the current minikube after building (minikube image load)
  --docker        build app/controller with 'docker build' from their Dockerfile instead
  --tag TAG       tag for app and controller (default: \${IMAGE_TAG:-dev})
  --dry-run       print what would be built and imported, change nothing
  -h, --help      this help

Environment:
  IMAGE_TAG       default tag for app and controller (dev)
  SELFHEAL_HOME   cache root; tarballs go to \$SELFHEAL_HOME/images (${IMAGES_DIR})

Example:
  hack/image.sh --import app controller
EOF
}

TARGET=x86_64-unknown-linux-gnu

image::ref() {
  case "$1" in
    app) echo "localhost/selfheal-app:${IMAGE_TAG}" ;;
    controller) echo "localhost/selfheal-controller:${IMAGE_TAG}" ;;
    toolbox) echo "localhost/selfheal-toolbox:dev" ;;
    pause) echo "${PAUSE_IMAGE}" ;;
    coredns) echo "localhost/coredns:${COREDNS_VERSION}" ;;
    metrics-server) echo "localhost/metrics-server:${METRICS_SERVER_VERSION}" ;;
    *) util::usage_error "unknown image: $1" ;;
  esac
}

image::tarball() { echo "${IMAGES_DIR}/$1.tar"; }

# image::pack NAME ROOTDIR mkimage-args...: write the tarball atomically.
image::pack() {
  local name="$1" root="$2"
  shift 2
  util::run python3 "${REPO_ROOT}/hack/mkimage.py" --root "${root}" --tag "$(image::ref "${name}")" \
    --out "$(image::tarball "${name}")" "$@" >/dev/null
}

# image::rust_build NAME...: the static release binaries of these images in one cargo call, so
# the serial tail of one (codegen, LTO, link) overlaps the other's instead of following it.
image::rust_build() {
  local args=() name
  for name in "$@"; do args+=(-p "selfheal-${name}"); done
  util::require_tools cargo
  log::step "building ${args[*]} (static, release)"
  RUSTFLAGS='-C target-feature=+crt-static' util::run cargo build --release --locked \
    --manifest-path "${REPO_ROOT}/Cargo.toml" "${args[@]}" --target "${TARGET}"
}

# A Rust binary of the workspace, static so the image needs no libc: FROM scratch.
image::rust() {
  local name="$1" bin="selfheal-$1"
  util::require_tools cargo python3 jq
  log::step "building ${bin} (static, release)"
  RUSTFLAGS='-C target-feature=+crt-static' util::run cargo build --release --locked \
    --manifest-path "${REPO_ROOT}/Cargo.toml" -p "${bin}" --target "${TARGET}"
  local root
  root="$(mktemp -d)"
  util::trap_add "rm -rf '${root}'"
  if [[ "${DRY_RUN:-0}" != 1 ]]; then
    local target_dir
    target_dir="$(cargo metadata --format-version 1 --no-deps --manifest-path "${REPO_ROOT}/Cargo.toml" | jq -r .target_directory)"
    install -m 0755 "${target_dir}/${TARGET}/release/${bin}" "${root}/${bin}"
  fi
  local port=8080
  [[ "${name}" == controller ]] && port=8081
  image::pack "${name}" "${root}" --entrypoint "/${bin}" --user 65532:65532 --port "${port}" \
    --label "org.opencontainers.image.source=https://github.com/selfheal-io/selfheal" \
    --label "org.opencontainers.image.title=${bin}"
}

image::docker() {
  local name="$1"
  util::require_tools docker
  log::step "building $(image::ref "${name}") with docker"
  util::run docker build -f "${REPO_ROOT}/${name}/Dockerfile" -t "$(image::ref "${name}")" "${REPO_ROOT}"
}

# A Go-built cluster add-on from hack/tools.sh: one static binary at /NAME.
image::addon() {
  local name="$1" bin
  bin="$(command -v "${name}" || true)"
  [[ -n "${bin}" ]] || "${REPO_ROOT}/hack/tools.sh" install "${name}"
  bin="$(readlink -f "$(command -v "${name}")")"
  local root
  root="$(mktemp -d)"
  util::trap_add "rm -rf '${root}'"
  cp "${bin}" "${root}/${name}"
  image::pack "${name}" "${root}" --entrypoint "/${name}"
}

image::pause() {
  util::require_tools gcc strip
  local root
  root="$(mktemp -d)"
  util::trap_add "rm -rf '${root}'"
  util::run gcc -static -Os -o "${root}/pause" "${REPO_ROOT}/hack/images/pause.c"
  util::run strip "${root}/pause"
  image::pack pause "${root}" --entrypoint /pause --user 65535:65535
}

# busybox-static from Debian: one binary, applets as symlinks.
image::toolbox() {
  local busybox=/bin/busybox
  [[ -x "${busybox}" ]] || log::fatal "${busybox} not found: install it with hack/tools.sh install apt (package busybox-static)"
  local root applet
  root="$(mktemp -d)"
  util::trap_add "rm -rf '${root}'"
  mkdir -p "${root}/bin"
  cp "${busybox}" "${root}/bin/busybox"
  for applet in sh sleep httpd nslookup nc cat echo ls kill date true false env hostname; do
    ln -s busybox "${root}/bin/${applet}"
  done
  image::pack toolbox "${root}" --entrypoint /bin/sh --user 65532:65532
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
    *) util::usage_error "unknown image: ${name}" ;;
  esac
  ((USE_DOCKER)) && [[ "${name}" == app || "${name}" == controller ]] && return 0
  log::ok "$(image::ref "${name}") -> $(image::tarball "${name}")"
}

# image::import NAME: into the local cluster's containerd. The kubelet sees it at once.
image::import() {
  local name="$1"
  [[ -S "${CONTAINERD_SOCK}" ]] || log::fatal "the local cluster's containerd is not running (${CONTAINERD_SOCK}); start it with: hack/cluster.sh up"
  util::run util::ctr images import --no-unpack=false "$(image::tarball "${name}")" >/dev/null
  log::ok "imported $(image::ref "${name}") into the local cluster"
}

image::minikube_load() {
  util::require_tools minikube
  util::run minikube image load "$(image::tarball "$1")"
}

main() {
  IMAGE_TAG="${IMAGE_TAG:-dev}"
  USE_DOCKER=0
  local do_import=0 do_minikube=0 names=()
  while (($#)); do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --import) do_import=1 ;;
      --minikube) do_minikube=1 ;;
      --docker) USE_DOCKER=1 ;;
      --tag) [[ $# -ge 2 ]] || util::usage_error "--tag needs a value"; IMAGE_TAG="$2"; shift ;;
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
  mkdir -p "${IMAGES_DIR}"
  local n rust=()
  for n in "${names[@]}"; do [[ "${n}" == app || "${n}" == controller ]] && rust+=("${n}"); done
  ((USE_DOCKER || ${#rust[@]} < 2)) || image::rust_build "${rust[@]}"
  for n in "${names[@]}"; do
    image::build "${n}"
    ((do_import)) && image::import "${n}"
    ((do_minikube)) && image::minikube_load "${n}"
  done
  return 0
}

main "$@"
