#!/usr/bin/env bash
# Installs the project's pinned tools into ~/.cache/selfheal, keyed by version, and links them
# into ~/.cache/selfheal/bin (which hack/lib.sh puts first on PATH). Versions: hack/versions.sh.
# Go-built tools come from the Go module proxy; system parts (containerd, etcd, ...) from apt.
# Prerequisites: go, and root for the apt step.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ALL_TOOLS=(apt pyyaml kubernetes coredns metrics-server kube-network-policies helm actionlint promtool prometheus
  alertmanager prometheus-operator-crds gateway-api-crds rust-arm64 busybox-arm64)
# Built only when asked for by name (install jaeger): the default install leaves them out.
EXTRA_TOOLS=(jaeger traefik)
# Not in the lists: busybox-amd64 (for an arm64 machine; same as busybox-arm64 the other way round).

usage() {
  cat <<EOF
Usage: hack/tools.sh <command> [tool...]

Commands:
  install [tool...]   build or install the tools (default: all), skipping cached ones
  list                print each tool, its pinned version and whether it is installed
  path [tool]         print the bin directory to put on PATH, or one tool's install directory

Tools: ${ALL_TOOLS[*]}
Only by name: ${EXTRA_TOOLS[*]}
  apt             Debian packages: ${SELFHEAL_APT_PACKAGES[*]}
  apt-tools       only the ones any machine needs (no local cluster): ${SELFHEAL_APT_TOOLS[*]}
  pyyaml          PyYAML for python3 (chart and workflow checks), from the package index
  kubernetes      kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
                  kubectl ${KUBE_VERSION} (from the k8s.io/kubernetes Go module, ~8 min cold)
  coredns         CoreDNS ${COREDNS_VERSION}
  metrics-server  metrics-server ${METRICS_SERVER_VERSION}
  kube-network-policies
                  NetworkPolicy agent ${KUBE_NETWORK_POLICIES_VERSION} (nfqueue; patched, see tools::kube_network_policies)
  helm            Helm ${HELM_VERSION}
  actionlint      actionlint ${ACTIONLINT_VERSION}
  promtool        promtool from Prometheus ${PROMETHEUS_VERSION}
  prometheus      Prometheus server ${PROMETHEUS_VERSION} (no web UI assets: API only; for self-healing/tests)
  alertmanager    Alertmanager and amtool ${ALERTMANAGER_VERSION} (web UI a placeholder page: API only; for self-healing/tests)
  prometheus-operator-crds
                  monitoring.coreos.com CRD YAML from the prometheus-operator ${PROMETHEUS_OPERATOR_VERSION} module
  gateway-api-crds
                  Gateway API standard-channel CRD YAML from sigs.k8s.io/gateway-api ${GATEWAY_API_VERSION}
  rust-arm64      the aarch64-unknown-linux-musl Rust target (rustup) and Debian's gcc-aarch64-linux-gnu
                  that links it: the arm64 app and controller images (hack/image.sh)
  busybox-arm64   Debian's busybox-static for arm64, the same version as the host's busybox-static,
                  fetched with a private apt state (the host's dpkg architectures are not changed):
                  the arm64 toolbox image
  jaeger          Jaeger ${JAEGER_RELEASE} (cmd/jaeger, module ${JAEGER_VERSION}; observability/tests/traces.sh),
                  about 12 min on 2 cores when cold
  traefik         Traefik ${TRAEFIK_VERSION}, a router that reads the nginx canary annotations and Gateway API
                  routes (canary/build-traefik.sh patches and builds it; ~15 min of one core cold)

Environment:
  SELFHEAL_HOME   cache root (default ~/.cache/selfheal); binaries land in \$SELFHEAL_HOME/bin
  *_VERSION       override a pin from hack/versions.sh

Example:
  hack/tools.sh install helm actionlint && export PATH="\$(hack/tools.sh path):\$PATH"
EOF
}

TOOLS_DIR="${SELFHEAL_HOME}/tools"

# tools::link DIR: link every executable in DIR into the bin directory.
tools::link() {
  local dir="$1" f
  mkdir -p "${SELFHEAL_BIN}"
  for f in "${dir}"/*; do
    [[ -x "${f}" && -f "${f}" ]] && ln -sfn "${f}" "${SELFHEAL_BIN}/$(basename "${f}")"
  done
  return 0
}

# tools::cached NAME VERSION: true (and the tool linked) when that version is already installed.
tools::cached() {
  local dest="${TOOLS_DIR}/$1-$2"
  [[ -d "${dest}" ]] || return 1
  tools::link "${dest}"
  log::info "$1 $2: cached"
}

# tools::module_files NAME VERSION MODULE SUBDIR: copy SUBDIR of a Go module (e.g. the CRD YAML
# that projects publish inside their module) into the tools directory. Data, not binaries:
# nothing is linked into bin; `hack/tools.sh path NAME` prints where the files are.
tools::module_files() {
  local name="$1" version="$2" module="$3" subdir="$4"
  local dest="${TOOLS_DIR}/${name}-${version}"
  if [[ -d "${dest}" ]]; then
    log::info "${name} ${version}: cached"
    return 0
  fi
  util::require_tools go jq
  log::step "fetching ${subdir}/ of ${module}@${version} from the Go module proxy"
  local dir tmp
  # Outside any module, so no go.mod around us is read or changed.
  dir="$(cd "${TOOLS_DIR}" && GOFLAGS=-mod=mod go mod download -json "${module}@${version}" | jq -r '.Dir // empty')"
  [[ -n "${dir}" && -d "${dir}/${subdir}" ]] || log::fatal "${module}@${version} has no ${subdir}/ (download failed?)"
  tmp="$(mktemp -d "${TOOLS_DIR}/.${name}.XXXXXX")"
  cp "${dir}/${subdir}"/*.yaml "${tmp}/"
  chmod -R u+w "${tmp}"
  mv "${tmp}" "${dest}"
  log::ok "${name} ${version}: $(find "${dest}" -name '*.yaml' | wc -l) files in ${dest}"
}

# tools::go_install NAME VERSION PACKAGE@VERSION [ldflags]: one binary from the module proxy,
# built into a temporary dir and moved into place, so an interrupted build leaves no half tool.
tools::go_install() {
  local name="$1" version="$2" pkg="$3" ldflags="${4:-}"
  local dest="${TOOLS_DIR}/${name}-${version}"
  tools::cached "${name}" "${version}" && return 0
  util::require_tools go
  log::step "building ${name} ${version} from the Go module proxy"
  local tmp start
  tmp="$(mktemp -d "${TOOLS_DIR}/.${name}.XXXXXX")"
  start="$(date +%s)"
  local log="${TOOLS_DIR}/${name}-${version}.build.log"
  if ! GOBIN="${tmp}" CGO_ENABLED=0 GOFLAGS=-trimpath go install -ldflags "-s -w ${ldflags}" "${pkg}" >"${log}" 2>&1; then
    tail -n 30 "${log}" >&2
    rm -rf "${tmp}"
    log::fatal "building ${name} ${version} failed (full log: ${log})"
  fi
  mv "${tmp}" "${dest}"
  tools::link "${dest}"
  log::ok "${name} ${version} built in $(($(date +%s) - start))s"
}

# tools::apt PACKAGE...: the Debian packages not installed yet, with apt-get (as root, or through
# sudo when it needs no password, as on a CI runner).
tools::apt() {
  local missing=() p sudo=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "${p}" 2>/dev/null | grep -q 'install ok installed' || missing+=("${p}")
  done
  if ((${#missing[@]} == 0)); then
    log::info "apt packages: installed"
    return 0
  fi
  if [[ "$(id -u)" != 0 ]]; then
    sudo -n true 2>/dev/null ||
      log::fatal "apt packages missing: ${missing[*]}; install them as root: sudo apt-get install ${missing[*]}"
    sudo=(sudo -n)
  fi
  log::step "installing apt packages: ${missing[*]}"
  # No init system here: keep package scripts from starting containerd/etcd as services.
  # The file is removed by a trap, so a failed apt step does not leave the host unable to start
  # any service later; one that was there before is not ours and stays.
  local policy=/usr/sbin/policy-rc.d created=0
  if [[ ! -e "${policy}" ]]; then
    util::trap_add "${sudo[*]} rm -f '${policy}'"
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "${policy}" >/dev/null
    "${sudo[@]}" chmod +x "${policy}"
    created=1
  fi
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  ((created == 0)) || "${sudo[@]}" rm -f "${policy}"
  log::ok "apt packages installed"
}

# Kubernetes' go.mod replaces every staging module with a local path, so it cannot be required
# as is: build from a wrapper module that pins each staging module to its published v0.X.Y.
tools::kubernetes() {
  local dest="${TOOLS_DIR}/kubernetes-${KUBE_VERSION}"
  tools::cached kubernetes "${KUBE_VERSION}" && return 0
  util::require_tools go
  local wrap="${SELFHEAL_HOME}/build/kubernetes-${KUBE_VERSION}" staging="v0.${KUBE_VERSION#v1.}"
  log::step "building Kubernetes ${KUBE_VERSION} server binaries and kubectl (about 8 min on 2 cores when cold)"
  local start
  start="$(date +%s)"
  mkdir -p "${wrap}"
  (
    cd "${wrap}" || exit 1
    go mod download "k8s.io/kubernetes@${KUBE_VERSION}" 2>/dev/null || go mod download "k8s.io/kubernetes@${KUBE_VERSION}"
    local moddir gover
    moddir="$(go env GOMODCACHE)/k8s.io/kubernetes@${KUBE_VERSION}"
    gover="$(awk '$1 == "go" {print $2}' "${moddir}/go.mod")"
    {
      printf 'module selfheal.local/kubernetes\n\ngo %s\n\nrequire k8s.io/kubernetes %s\n\n' "${gover}" "${KUBE_VERSION}"
      grep -E '=> \./staging/src/' "${moddir}/go.mod" | awk -v v="${staging}" '{print "replace " $1 " => " $1 " " v}'
    } >go.mod
    cat >tools.go <<'GO'
//go:build tools

// Package wrap only imports the commands so that go mod tidy keeps their dependencies.
package wrap

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
    printf 'package wrap\n' >doc.go
    # -e: a few staging modules (sample-*) are not served; the commands never import them.
    go mod tidy -e >/dev/null 2>&1 || go mod tidy -e
    local major minor ldflags="-s -w" pkg
    major="$(cut -d. -f1 <<<"${KUBE_VERSION#v}")"
    minor="$(cut -d. -f2 <<<"${KUBE_VERSION#v}")"
    # Without stamping, the binaries report v0.0.0-master and kubectl warns about skew.
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X ${pkg}.gitVersion=${KUBE_VERSION} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor}"
      ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.gitCommit=0000000000000000000000000000000000000000"
      ldflags+=" -X ${pkg}.buildDate=1970-01-01T00:00:00Z"
    done
    local tmp
    tmp="$(mktemp -d "${TOOLS_DIR}/.kubernetes.XXXXXX")"
    CGO_ENABLED=0 go build -trimpath -ldflags="${ldflags}" -o "${tmp}/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
      k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl
    mv "${tmp}" "${dest}"
  )
  tools::link "${dest}"
  log::ok "kubernetes ${KUBE_VERSION} built in $(($(date +%s) - start))s"
}

# Jaeger's go.mod has a replace directive, so `go install module@version` refuses it: build inside
# the downloaded module instead, whose go.mod and go.sum pin every dependency.
tools::jaeger() {
  local dest="${TOOLS_DIR}/jaeger-${JAEGER_VERSION}"
  tools::cached jaeger "${JAEGER_VERSION}" && return 0
  util::require_tools go jq
  log::step "building Jaeger ${JAEGER_RELEASE} (module ${JAEGER_VERSION}, about 12 min on 2 cores when cold)"
  local dir tmp start log="${TOOLS_DIR}/jaeger-${JAEGER_VERSION}.build.log"
  start="$(date +%s)"
  dir="$(cd "${TOOLS_DIR}" && GOFLAGS=-mod=mod go mod download -json "github.com/jaegertracing/jaeger@${JAEGER_VERSION}" | jq -r '.Dir // empty')"
  [[ -n "${dir}" && -d "${dir}/cmd/jaeger" ]] || log::fatal "github.com/jaegertracing/jaeger@${JAEGER_VERSION}: download failed"
  tmp="$(mktemp -d "${TOOLS_DIR}/.jaeger.XXXXXX")"
  if ! (cd "${dir}" && CGO_ENABLED=0 go build -trimpath -o "${tmp}/jaeger" \
    -ldflags "-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=${JAEGER_RELEASE}" \
    ./cmd/jaeger) >"${log}" 2>&1; then
    tail -n 30 "${log}" >&2
    rm -rf "${tmp}"
    log::fatal "building jaeger ${JAEGER_VERSION} failed (full log: ${log})"
  fi
  mv "${tmp}" "${dest}"
  tools::link "${dest}"
  log::ok "jaeger ${JAEGER_RELEASE} built in $(($(date +%s) - start))s"
}

# kube-network-policies needs two patches to run here, so it is built inside a copy of its module:
# 1. This kernel has no nft_queue (CONFIG_NFT_QUEUE unset: `nft ... queue` fails with ENOENT) but
#    has xt_NFQUEUE and nft_compat: the queue verdict is emitted as the xtables NFQUEUE target
#    (revision 3) inside the same nftables rules (`nft list` still shows "queue num 100").
# 2. Upstream reads only the in-cluster config and stops (removing its nftables table) only on
#    SIGINT: add --kubeconfig (empty = in-cluster, as before) and stop on SIGTERM too.
# Every edit is checked; a new version whose code moved fails here instead of building unpatched.
# Alertmanager and amtool, one module version. ui/web.go embeds ui/app/dist (the built web UI,
# made by npm in the release pipeline), which the module zip does not hold, so
# `go install github.com/prometheus/alertmanager/cmd/alertmanager@V` fails ("pattern app/dist: no
# matching files found") and there is no build tag to leave it out. The build runs in a copy of the
# module with a one-page placeholder in app/dist/{elm,mantine}: the API, /metrics, routing,
# inhibition and notifiers are the released code; the UI pages say the UI is not built.
tools::alertmanager() {
  local version="${ALERTMANAGER_VERSION}" module=github.com/prometheus/alertmanager
  local dest="${TOOLS_DIR}/alertmanager-${version}"
  tools::cached alertmanager "${version}" && return 0
  util::require_tools go jq
  log::step "building alertmanager and amtool ${version} from the Go module proxy (UI placeholder)"
  local src work tmp start log="${TOOLS_DIR}/alertmanager-${version}.build.log" d
  start="$(date +%s)"
  src="$(cd "${TOOLS_DIR}" && GOFLAGS=-mod=mod go mod download -json "${module}@${version}" | jq -r '.Dir // empty')"
  [[ -n "${src}" && -f "${src}/ui/web.go" ]] || log::fatal "${module}@${version}: download failed"
  grep -q '^//go:embed app/dist$' "${src}/ui/web.go" ||
    log::fatal "${module}@${version}: ui/web.go no longer embeds app/dist; see tools::alertmanager"
  work="${SELFHEAL_HOME}/build/alertmanager-${version}"
  rm -rf "${work}"
  mkdir -p "${work}"
  cp -r "${src}/." "${work}/"
  chmod -R u+w "${work}"
  for d in elm mantine; do
    mkdir -p "${work}/ui/app/dist/${d}"
    printf '<!doctype html><title>Alertmanager</title><p>Alertmanager %s built from its Go module without the web UI (hack/tools.sh): use the API (/api/v2) or amtool.</p>\n' \
      "${version}" >"${work}/ui/app/dist/${d}/index.html"
  done
  tmp="$(mktemp -d "${TOOLS_DIR}/.alertmanager.XXXXXX")"
  local ldflags="-s -w -X github.com/prometheus/common/version.Version=${version#v}"
  ldflags+=" -X github.com/prometheus/common/version.Branch=module -X github.com/prometheus/common/version.Revision=${version}"
  if ! (cd "${work}" && CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${tmp}/" ./cmd/alertmanager ./cmd/amtool) >"${log}" 2>&1; then
    tail -n 30 "${log}" >&2
    rm -rf "${tmp}"
    log::fatal "building alertmanager ${version} failed (full log: ${log})"
  fi
  rm -rf "${work}"
  mv "${tmp}" "${dest}"
  tools::link "${dest}"
  log::ok "alertmanager and amtool ${version} built in $(($(date +%s) - start))s"
}

tools::kube_network_policies() {
  local version="${KUBE_NETWORK_POLICIES_VERSION}"
  local dest="${TOOLS_DIR}/kube-network-policies-${version}"
  tools::cached kube-network-policies "${version}" && return 0
  util::require_tools go jq perl
  log::step "building kube-network-policies ${version} (patched, about 1.5 min on 2 cores when cold)"
  local src work tmp start log="${TOOLS_DIR}/kube-network-policies-${version}.build.log"
  start="$(date +%s)"
  src="$(cd "${TOOLS_DIR}" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/kube-network-policies@${version}" | jq -r '.Dir // empty')"
  [[ -n "${src}" && -f "${src}/cmd/main.go" ]] || log::fatal "sigs.k8s.io/kube-network-policies@${version}: download failed"
  work="${SELFHEAL_HOME}/build/kube-network-policies-${version}"
  rm -rf "${work}"
  mkdir -p "${work}"
  cp -r "${src}/." "${work}/"
  chmod -R u+w "${work}"
  cat >"${work}/pkg/networkpolicy/xtqueue.go" <<'GO'
package networkpolicy

import (
	"encoding/binary"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// nfQueueTarget is "queue num N [bypass]" as the xtables NFQUEUE target, revision 3
// (struct xt_NFQ_info_v3 {u16 queuenum; u16 queues_total; u16 flags;}, padded to 8 bytes),
// which runs through nft_compat on kernels built without nft_queue. (selfheal patch)
func nfQueueTarget(num int, bypass bool) *expr.Target {
	info := xt.Unknown(make([]byte, 8))
	binary.NativeEndian.PutUint16(info[0:], uint16(num))
	binary.NativeEndian.PutUint16(info[2:], 1) // queues_total
	if bypass {
		binary.NativeEndian.PutUint16(info[4:], 0x1) // NFQ_FLAG_BYPASS
	}
	return &expr.Target{Name: "NFQUEUE", Rev: 3, Info: &info}
}
GO
  (
    cd "${work}" || exit 1
    perl -0pi -e 's/queue := &expr\.Queue\{Num: uint16\(c\.config\.QueueID\)\}\n\tif c\.config\.FailOpen \{\n\t\tqueue\.Flag = expr\.QueueFlagBypass\n\t\}/queue := nfQueueTarget(c.config.QueueID, c.config.FailOpen)/g' pkg/networkpolicy/controller.go
    perl -pi -e 's/&expr\.Queue\{Num: uint16\(n\.nfQueueID\), Flag: expr\.QueueFlagBypass\}/nfQueueTarget(n.nfQueueID, true)/' pkg/networkpolicy/dnsagent.go
    perl -pi -e 's/^\tdisableNRI                 bool\n/\tdisableNRI                 bool\n\tkubeconfig                 string\n/;
      s/^(\tflag\.IntVar\(&queueID.*\n)/$1\tflag.StringVar(&kubeconfig, "kubeconfig", "", "Path to a kubeconfig; empty means the in-cluster configuration")\n/;
      s/config, err := rest\.InClusterConfig\(\)/config, err := clientcmd.BuildConfigFromFlags("", kubeconfig)/;
      s/^\t"k8s\.io\/client-go\/rest"\n/\t"k8s.io\/client-go\/tools\/clientcmd"\n/;
      s/os\.Interrupt, unix\.SIGINT\)/os.Interrupt, unix.SIGINT, unix.SIGTERM)/' cmd/main.go
    [[ "$(grep -c 'nfQueueTarget(' pkg/networkpolicy/controller.go)" == 2 ]] &&
      grep -q 'nfQueueTarget(n.nfQueueID, true)' pkg/networkpolicy/dnsagent.go &&
      ! grep -q 'expr\.Queue{' pkg/networkpolicy/controller.go pkg/networkpolicy/dnsagent.go &&
      grep -q 'clientcmd.BuildConfigFromFlags("", kubeconfig)' cmd/main.go &&
      grep -q '"kubeconfig", ""' cmd/main.go && grep -q 'unix.SIGTERM' cmd/main.go
  ) || log::fatal "kube-network-policies ${version}: the local patches no longer apply; see tools::kube_network_policies"
  tmp="$(mktemp -d "${TOOLS_DIR}/.kube-network-policies.XXXXXX")"
  if ! (cd "${work}" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "${tmp}/kube-network-policies" ./cmd) >"${log}" 2>&1; then
    tail -n 30 "${log}" >&2
    rm -rf "${tmp}"
    log::fatal "building kube-network-policies ${version} failed (full log: ${log})"
  fi
  mv "${tmp}" "${dest}"
  tools::link "${dest}"
  log::ok "kube-network-policies ${version} built in $(($(date +%s) - start))s"
}

# The Rust target of the arm64 images. rustup keeps it per toolchain, so a toolchain update
# fetches it again; the check is `rustup target list --installed`, which is quick.
tools::rust_arm64() {
  local target=aarch64-unknown-linux-musl
  # gcc-aarch64-linux-gnu and libc6-dev-arm64-cross (the headers ring's C needs) are in the apt list.
  tools::apt "${SELFHEAL_APT_TOOLS[@]}"
  util::require_tools rustup aarch64-linux-gnu-gcc
  if rustup target list --installed | grep -qx "${target}"; then
    log::info "rust-arm64: ${target} installed"
    return 0
  fi
  log::step "adding the Rust target ${target} (rustup)"
  rustup target add "${target}"
}

# tools::busybox_version: the installed busybox-static's Debian version without the epoch
# (1:1.35.0-4+deb12u1+b1 -> 1.35.0-4+deb12u1+b1); the other architecture's copy matches it.
tools::busybox_version() {
  local v
  v="$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || true)"
  [[ -n "${v}" ]] || v=missing
  printf '%s
' "${v#*:}"
}

# tools::busybox_foreign ARCH: Debian's busybox-static .deb for ARCH, the version the host has
# for its own architecture, unpacked to TOOLS_DIR/busybox-ARCH-VERSION/busybox. The package
# index comes from the host's apt sources (signatures checked as usual) into a private state
# directory with APT::Architecture=ARCH, so dpkg's architecture list and the host's own package
# lists stay as they were. Not linked into bin: it is not this machine's binary.
tools::busybox_foreign() {
  local arch="$1" version
  version="$(tools::busybox_version)"
  if [[ "${version}" == missing ]]; then
    tools::apt "${SELFHEAL_APT_TOOLS[@]}"
    version="$(tools::busybox_version)"
  fi
  local dest="${TOOLS_DIR}/busybox-${arch}-${version}"
  if [[ -x "${dest}/busybox" ]]; then
    log::info "busybox-${arch} ${version}: cached"
    return 0
  fi
  util::require_tools apt-get dpkg-deb
  log::step "fetching Debian's busybox-static ${version} for ${arch}"
  local state="${SELFHEAL_HOME}/build/apt-${arch}" tmp
  mkdir -p "${state}/lists/partial" "${state}/cache/archives/partial"
  local opts=(-o "Dir::State::Lists=${state}/lists" -o "Dir::Cache=${state}/cache"
    -o "APT::Architecture=${arch}" -o "APT::Architectures::=${arch}")
  # As root, apt drops to _apt for downloads, which cannot write our directories.
  [[ "$(id -u)" != 0 ]] || opts+=(-o APT::Sandbox::User=root)
  # A third-party source without ARCH makes update fail; the Debian one is what we need.
  apt-get "${opts[@]}" -qq update || log::warn "apt-get update for ${arch} reported errors; trying the download anyway"
  tmp="$(mktemp -d "${TOOLS_DIR}/.busybox-${arch}.XXXXXX")"
  if ! (cd "${tmp}" && apt-get "${opts[@]}" -qq download "busybox-static:${arch}=$(dpkg-query -W -f='${Version}' busybox-static)"); then
    rm -rf "${tmp}"
    log::fatal "busybox-static:${arch} ${version} not found in the apt sources"
  fi
  dpkg-deb -x "${tmp}"/busybox-static_*.deb "${tmp}/x"
  install -m 0755 "${tmp}/x/bin/busybox" "${tmp}/busybox"
  rm -rf "${tmp}/x" "${tmp}"/*.deb
  mv "${tmp}" "${dest}"
  log::ok "busybox-${arch} ${version}: ${dest}/busybox"
}

tools::pyyaml() {
  if python3 -c 'import yaml' 2>/dev/null; then
    log::info "pyyaml: installed"
    return 0
  fi
  log::step "installing PyYAML for $(command -v python3)"
  python3 -m pip install --quiet pyyaml
}

tools::install_one() {
  case "$1" in
    apt) tools::apt "${SELFHEAL_APT_PACKAGES[@]}" ;;
    apt-tools) tools::apt "${SELFHEAL_APT_TOOLS[@]}" ;;
    pyyaml) tools::pyyaml ;;
    kubernetes) tools::kubernetes ;;
    coredns)
      tools::go_install coredns "${COREDNS_VERSION}" "github.com/coredns/coredns@${COREDNS_VERSION}"
      ;;
    metrics-server)
      tools::go_install metrics-server "${METRICS_SERVER_VERSION}" \
        "sigs.k8s.io/metrics-server/cmd/metrics-server@${METRICS_SERVER_VERSION}" \
        "-X k8s.io/client-go/pkg/version.gitVersion=${METRICS_SERVER_VERSION} -X k8s.io/client-go/pkg/version.gitTreeState=clean"
      ;;
    helm)
      tools::go_install helm "${HELM_VERSION}" "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}" \
        "-X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}"
      ;;
    actionlint)
      tools::go_install actionlint "${ACTIONLINT_VERSION}" \
        "github.com/rhysd/actionlint/cmd/actionlint@${ACTIONLINT_VERSION}" \
        "-X github.com/rhysd/actionlint.version=${ACTIONLINT_VERSION}"
      ;;
    promtool)
      tools::go_install promtool "${PROMETHEUS_VERSION}" \
        "github.com/prometheus/prometheus/cmd/promtool@${PROMETHEUS_VERSION}"
      ;;
    prometheus)
      # The module zip has no built web UI, so no `builtinassets` tag (its embed would fail):
      # the binary serves the HTTP API and /metrics; UI pages answer 404.
      tools::go_install prometheus "${PROMETHEUS_VERSION}" \
        "github.com/prometheus/prometheus/cmd/prometheus@${PROMETHEUS_VERSION}"
      ;;
    alertmanager) tools::alertmanager ;;
    prometheus-operator-crds)
      tools::module_files prometheus-operator-crds "${PROMETHEUS_OPERATOR_VERSION}" \
        github.com/prometheus-operator/prometheus-operator example/prometheus-operator-crd
      ;;
    gateway-api-crds)
      tools::module_files gateway-api-crds "${GATEWAY_API_VERSION}" sigs.k8s.io/gateway-api config/crd/standard
      ;;
    kube-network-policies) tools::kube_network_policies ;;
    rust-arm64) tools::rust_arm64 ;;
    busybox-arm64 | busybox-amd64) tools::busybox_foreign "${1#busybox-}" ;;
    jaeger) tools::jaeger ;;
    # The module needs patches to build here; the script that applies them says why.
    traefik) TRAEFIK_VERSION="${TRAEFIK_VERSION}" "${REPO_ROOT}/canary/build-traefik.sh" ;;
    *) util::usage_error "unknown tool: $1" ;;
  esac
}

# tools::install_locked TOOL: install_one under a per-tool lock, so two runs that want the same
# tool (make test's background build of Jaeger and Traefik, and make test-cluster inside it)
# build it once: the second waits, then finds it cached.
tools::install_locked() {
  local lock="${TOOLS_DIR}/.install-$1.lock"
  (
    exec 9>"${lock}"
    flock -n 9 || { log::info "$1: another install is running; waiting for it"; flock 9; }
    tools::install_one "$1"
  )
}

tools::version_of() {
  case "$1" in
    apt | apt-tools) echo "debian" ;;
    pyyaml) echo "pip" ;;
    kubernetes) echo "${KUBE_VERSION}" ;;
    coredns) echo "${COREDNS_VERSION}" ;;
    metrics-server) echo "${METRICS_SERVER_VERSION}" ;;
    helm) echo "${HELM_VERSION}" ;;
    actionlint) echo "${ACTIONLINT_VERSION}" ;;
    promtool) echo "${PROMETHEUS_VERSION}" ;;
    prometheus) echo "${PROMETHEUS_VERSION}" ;;
    alertmanager) echo "${ALERTMANAGER_VERSION}" ;;
    prometheus-operator-crds) echo "${PROMETHEUS_OPERATOR_VERSION}" ;;
    gateway-api-crds) echo "${GATEWAY_API_VERSION}" ;;
    kube-network-policies) echo "${KUBE_NETWORK_POLICIES_VERSION}" ;;
    rust-arm64) echo "rustup" ;;
    busybox-arm64 | busybox-amd64) tools::busybox_version ;;
    jaeger) echo "${JAEGER_VERSION}" ;;
    traefik) echo "${TRAEFIK_VERSION}" ;;
    *) util::usage_error "unknown tool: $1" ;;
  esac
}

main() {
  local cmd="${1:-}"
  [[ -n "${cmd}" ]] || util::usage_error "no command given"
  shift
  case "${cmd}" in
    -h | --help | help)
      usage
      ;;
    install)
      local tools=("$@") t
      ((${#tools[@]})) || tools=("${ALL_TOOLS[@]}")
      mkdir -p "${TOOLS_DIR}" "${SELFHEAL_BIN}"
      for t in "${tools[@]}"; do tools::install_locked "${t}"; done
      ;;
    list)
      local t state
      for t in "${ALL_TOOLS[@]}" "${EXTRA_TOOLS[@]}"; do
        state="missing"
        if [[ "${t}" == apt* || "${t}" == pyyaml || "${t}" == rust-arm64 ]]; then
          state="(system)"
        elif [[ -d "${TOOLS_DIR}/${t}-$(tools::version_of "${t}")" ]]; then
          state="installed"
        fi
        printf '%-26s %-10s %s\n' "${t}" "$(tools::version_of "${t}")" "${state}"
      done
      ;;
    path)
      if (($#)); then
        printf '%s\n' "${TOOLS_DIR}/$1-$(tools::version_of "$1")"
      else
        printf '%s\n' "${SELFHEAL_BIN}"
      fi
      ;;
    *) util::usage_error "unknown command: ${cmd}" ;;
  esac
}

main "$@"
