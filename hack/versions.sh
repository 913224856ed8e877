# shellcheck shell=bash
# The one version table. Every pinned tool, cluster component and image the project builds or
# installs is named here; hack/tools.sh and hack/cluster.sh read it. Caches are keyed by these
# values, so bumping one rebuilds exactly that piece on the next run.
# Each value can be overridden from the environment (e.g. KUBE_VERSION=v1.35.4 make cluster-up).

# Kubernetes server components and kubectl, built from the k8s.io/kubernetes Go module.
# v1.37.2 is the newest verified here; Debian's containerd 1.6 is not supported past 1.37.
: "${KUBE_VERSION:=v1.37.2}"
# CoreDNS (cluster DNS) and metrics-server (HPA, kubectl top), built from their Go modules.
: "${COREDNS_VERSION:=v1.12.4}"
: "${METRICS_SERVER_VERSION:=v0.9.0}"
# Helm 4 (scripts accept Helm 3 too), actionlint, promtool (from the prometheus module, v0.MAJORMINOR.PATCH = 3.x).
: "${HELM_VERSION:=v4.3.1}"
: "${ACTIONLINT_VERSION:=v1.7.12}"
: "${PROMETHEUS_VERSION:=v0.316.0}"
# Alertmanager and amtool (self-healing/tests/alertmanager.sh, rules.sh), from the
# github.com/prometheus/alertmanager module (its tags are the release versions).
: "${ALERTMANAGER_VERSION:=v0.35.0}"
# CRD YAML shipped inside Go modules: the ServiceMonitor/PrometheusRule schemas (observability
# tests) and the Gateway API standard channel (canary HTTPRoute). v0.85.0 is the newest
# prometheus-operator version the module proxy serves with a checksum here.
: "${PROMETHEUS_OPERATOR_VERSION:=v0.85.0}"
: "${GATEWAY_API_VERSION:=v1.6.3}"
# Jaeger v2 (cmd/jaeger, built on the OpenTelemetry Collector) for the live trace test. Its Go
# module keeps the v1 tag line: module v1.76.0 is release v2.13.0 (JAEGER_RELEASE stamps it).
: "${JAEGER_VERSION:=v1.76.0}"
: "${JAEGER_RELEASE:=v2.13.0}"
# Traefik: the router that measures the nginx canary-weight and HTTPRoute weights (e2e/canary.sh).
: "${TRAEFIK_VERSION:=v3.7.13}"
# NetworkPolicy enforcement on the bridge CNI: SIG Network's kube-network-policies (nfqueue agent,
# CNI-agnostic), built with two local patches (hack/tools.sh says why). v0.7.0 and v0.8.0 are served.
: "${KUBE_NETWORK_POLICIES_VERSION:=v0.8.0}"
# Pause image tag: must match containerd's sandbox_image.
: "${PAUSE_IMAGE:=registry.k8s.io/pause:3.10.1}"
# Debian packages, in two sets. SELFHEAL_APT_TOOLS: what every entry point needs on any machine
# (lint, images, tests against the cluster in KUBECONFIG, a CI runner included): jq, shellcheck,
# curl, the static busybox the test toolbox image is made of, and the arm64 image build —
# gcc-aarch64-linux-gnu links the aarch64-unknown-linux-musl binaries and compiles ring's C (with
# the headers of libc6-dev-arm64-cross, a Recommends that --no-install-recommends leaves out),
# qemu-user-static runs them here (hack/tests/images.sh). SELFHEAL_APT_CLUSTER: what the local
# cluster of hack/cluster.sh runs on (containerd, runc, CNI plugins, etcd, the netfilter tools).
# shellcheck disable=SC2034 # read by hack/tools.sh
SELFHEAL_APT_TOOLS=(jq shellcheck curl bc make gcc libc6-dev busybox-static
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
# shellcheck disable=SC2034 # read by hack/tools.sh
SELFHEAL_APT_CLUSTER=(containerd runc containernetworking-plugins etcd-server etcd-client
  iptables conntrack socat iproute2 ethtool openssl nftables)
# shellcheck disable=SC2034 # read by hack/tools.sh
SELFHEAL_APT_PACKAGES=("${SELFHEAL_APT_TOOLS[@]}" "${SELFHEAL_APT_CLUSTER[@]}")
export KUBE_VERSION COREDNS_VERSION METRICS_SERVER_VERSION HELM_VERSION ACTIONLINT_VERSION \
  PROMETHEUS_VERSION ALERTMANAGER_VERSION PROMETHEUS_OPERATOR_VERSION GATEWAY_API_VERSION JAEGER_VERSION JAEGER_RELEASE TRAEFIK_VERSION PAUSE_IMAGE \
  KUBE_NETWORK_POLICIES_VERSION
