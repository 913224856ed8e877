#!/usr/bin/env bash
# CI only: installs the pinned minikube (checked against the release's published sha256), starts
# a single-node cluster with the docker driver and metrics-server, and writes its kubeconfig to
# $KUBECONFIG_OUT. No route to pod or Service IPs is added: the tests reach the cluster through
# the API server (its proxy), port-forwards and NodePorts (minikube service --url), as on a laptop.
# Prerequisites: Linux amd64, docker, curl, sha256sum, sudo (install).
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../hack/lib.sh"

usage() {
  cat <<USAGE
Usage: .github/ci/minikube-up.sh [--dry-run] [-h|--help]

Environment:
  MINIKUBE_VERSION     minikube release to install (default: ${MINIKUBE_VERSION:-v1.35.0})
  KUBERNETES_VERSION   Kubernetes version of the node (default: ${KUBERNETES_VERSION:-v1.32.0})
  KUBECONFIG_OUT       where the kubeconfig goes (default: \$RUNNER_TEMP/kubeconfig, else ~/.kube/minikube)
  GITHUB_ENV           when set (in Actions), KUBECONFIG is exported to the following steps
  DRY_RUN=1            same as --dry-run

Example (locally, on a Linux machine with docker):
  KUBECONFIG_OUT=/tmp/mk.kubeconfig .github/ci/minikube-up.sh && KUBECONFIG=/tmp/mk.kubeconfig e2e/smoke.sh
USAGE
}

while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dry-run) export DRY_RUN=1 ;;
    *) util::usage_error "unknown argument: $1" ;;
  esac
  shift
done

MINIKUBE_VERSION="${MINIKUBE_VERSION:-v1.35.0}"
KUBERNETES_VERSION="${KUBERNETES_VERSION:-v1.32.0}"
default_kubeconfig="${HOME}/.kube/minikube"
[[ -n "${RUNNER_TEMP:-}" ]] && default_kubeconfig="${RUNNER_TEMP}/kubeconfig"
KUBECONFIG_OUT="${KUBECONFIG_OUT:-${default_kubeconfig}}"
util::require_tools curl sha256sum docker

if [[ "$(minikube version --short 2>/dev/null || true)" != "${MINIKUBE_VERSION}" ]]; then
  log::step "installing minikube ${MINIKUBE_VERSION}"
  url="https://storage.googleapis.com/minikube/releases/${MINIKUBE_VERSION}/minikube-linux-amd64"
  tmp="$(mktemp -d)"
  util::trap_add "rm -rf '${tmp}'"
  util::run curl -fsSLo "${tmp}/minikube" "${url}"
  util::run curl -fsSLo "${tmp}/minikube.sha256" "${url}.sha256"
  if [[ "${DRY_RUN:-0}" != 1 ]]; then
    printf '%s  %s\n' "$(tr -d '[:space:]' <"${tmp}/minikube.sha256")" "${tmp}/minikube" | sha256sum --check --quiet ||
      log::fatal "minikube ${MINIKUBE_VERSION}: checksum mismatch"
  fi
  util::run sudo install -m 0755 "${tmp}/minikube" /usr/local/bin/minikube
fi

log::step "starting minikube (Kubernetes ${KUBERNETES_VERSION}, docker driver, metrics-server)"
mkdir -p "$(dirname "${KUBECONFIG_OUT}")"
export KUBECONFIG="${KUBECONFIG_OUT}"
util::run minikube start --driver=docker --kubernetes-version="${KUBERNETES_VERSION}" \
  --addons=metrics-server --wait=all
if [[ "${DRY_RUN:-0}" != 1 ]]; then
  util::wait_for "metrics-server available" 180 \
    kubectl -n kube-system wait --for=condition=Available deployment/metrics-server --timeout=5s
fi
[[ -n "${GITHUB_ENV:-}" ]] && printf 'KUBECONFIG=%s\n' "${KUBECONFIG_OUT}" >>"${GITHUB_ENV}"
log::ok "minikube ${MINIKUBE_VERSION} up, KUBECONFIG=${KUBECONFIG_OUT}"
