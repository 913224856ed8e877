# shellcheck shell=bash
# The shared part of canary/deploy.sh, promote.sh and rollback.sh: option parsing common to all
# three, the three traffic-split strategies (nginx canary Ingress weight, replica ratio behind one
# Service, Gateway API HTTPRoute backend weights), the analysis step (two scrapes of every pod's
# /metrics through the API server, or Prometheus, judged by selfheal-canary) and the record of a
# rollback or promotion (annotation + Event on the stable Deployment). Everything changes the
# release through `helm upgrade --reuse-values` on helm-chart/, so Helm stays the source of truth.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

CANARY_NAMESPACE=""
CANARY_RELEASE=selfheal-app
CANARY_STRATEGY=nginx
CANARY_CHART="${REPO_ROOT}/helm-chart"
CANARY_TIMEOUT=180s
CANARY_JSON=""
CANARY_SHIFT=1
DRY_RUN="${DRY_RUN:-0}"
HELM="${HELM:-helm}"

# The options every canary script takes (printed into each usage()).
# shellcheck disable=SC2034 # used by the scripts that source this file
CANARY_COMMON_USAGE="  -n, --namespace NS      namespace of the release (required)
  -r, --release NAME      Helm release of helm-chart/ (default: selfheal-app)
  -s, --strategy S        nginx (canary Ingress weight, default), replicas (replica ratio behind
                          the one Service) or gateway (Gateway API HTTPRoute backend weights)
      --chart PATH        chart to upgrade with (default: helm-chart/ of this repository)
      --timeout D         rollout wait per step (kubectl duration, default 180s)
      --json FILE         also write the JSON summary (always printed on stdout) to FILE
      --dry-run           change nothing: print what would be done (also DRY_RUN=1)
  -h, --help              this help"

# canary::common_option "$@": parse one common option; sets CANARY_SHIFT (read by the sourcing
# script's argument loop); 1 when not one of them.
# shellcheck disable=SC2034
canary::common_option() {
  CANARY_SHIFT=2
  case "$1" in
    -n | --namespace) canary::need_value "$@" && CANARY_NAMESPACE="$2" ;;
    -r | --release) canary::need_value "$@" && CANARY_RELEASE="$2" ;;
    -s | --strategy) canary::need_value "$@" && CANARY_STRATEGY="$2" ;;
    --chart) canary::need_value "$@" && CANARY_CHART="$2" ;;
    --timeout) canary::need_value "$@" && CANARY_TIMEOUT="$2" ;;
    --json) canary::need_value "$@" && CANARY_JSON="$2" ;;
    --dry-run) DRY_RUN=1 CANARY_SHIFT=1 ;;
    -h | --help) usage; exit 0 ;;
    *) return 1 ;;
  esac
}

# canary::need_value OPTION VALUE...: a usage error when the option has no value.
canary::need_value() {
  [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || util::usage_error "$1 needs a value"
}

# canary::check_weight W: an integer percentage 0-100, or a usage error.
canary::check_weight() {
  if ! [[ "$1" =~ ^[0-9]{1,3}$ ]] || ((10#$1 > 100)); then
    util::usage_error "weight $1 is out of range: give a percentage 0-100"
  fi
}

# canary::validate: the common options make sense, the tools exist, the release is there.
# Sets STABLE_DEPLOY (name of the stable Deployment) and VALUES (the release's computed values).
canary::validate() {
  [[ -n "${CANARY_NAMESPACE}" ]] || util::usage_error "--namespace is required"
  case "${CANARY_STRATEGY}" in
    nginx | replicas | gateway) ;;
    *) util::usage_error "unknown strategy '${CANARY_STRATEGY}': use nginx, replicas or gateway" ;;
  esac
  util::require_tools "${HELM}" kubectl jq
  K=(kubectl --namespace "${CANARY_NAMESPACE}")
  if ! VALUES="$("${HELM}" get values "${CANARY_RELEASE}" --namespace "${CANARY_NAMESPACE}" --all -o json 2>/dev/null)"; then
    log::fatal "release ${CANARY_RELEASE} not found in namespace ${CANARY_NAMESPACE} (install helm-chart/ first: helm install ${CANARY_RELEASE} helm-chart -n ${CANARY_NAMESPACE})"
  fi
  STABLE_DEPLOY="$("${K[@]}" get deployment -l "app.kubernetes.io/instance=${CANARY_RELEASE},track=stable" -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true)"
  [[ -n "${STABLE_DEPLOY}" ]] || log::fatal "release ${CANARY_RELEASE} has no stable Deployment (label track=stable) in ${CANARY_NAMESPACE}"
  case "${CANARY_STRATEGY}" in
    nginx) [[ "$(canary::value .ingress.enabled)" == true ]] ||
      log::fatal "strategy nginx needs the release's Ingress (ingress.enabled=true); use --strategy replicas without an ingress controller" ;;
    gateway) [[ "$(canary::value .httpRoute.enabled)" == true ]] ||
      log::fatal "strategy gateway needs the release's HTTPRoute (httpRoute.enabled=true, httpRoute.parentRefs)" ;;
    replicas) ;;
  esac
}

# canary::value JQ_PATH: one of the release's values (as read by canary::validate).
canary::value() { jq -r "$1 // empty" <<<"${VALUES}"; }

# canary::refresh_values: re-read the values after an upgrade.
canary::refresh_values() {
  VALUES="$("${HELM}" get values "${CANARY_RELEASE}" --namespace "${CANARY_NAMESPACE}" --all -o json)"
}

# canary::enabled: true when the release runs a canary track.
canary::enabled() { [[ "$(canary::value .canary.enabled)" == true ]]; }

# canary::upgrade --set ...: helm upgrade of the release keeping its values. Where Helm has it
# (3.14+, 4), --reset-then-reuse-values: the chart's defaults for keys newer than the release's
# values (plain --reuse-values leaves them nil and the templates fail), the release's own on top.
canary::upgrade() {
  local reuse=--reuse-values
  # (help captured first: `helm ... | grep -q` can fail with SIGPIPE under pipefail)
  grep -q -- '--reset-then-reuse-values' <<<"$("${HELM}" upgrade --help 2>/dev/null || true)" && reuse=--reset-then-reuse-values
  util::run "${HELM}" upgrade "${CANARY_RELEASE}" "${CANARY_CHART}" --namespace "${CANARY_NAMESPACE}" \
    "${reuse}" "$@" >/dev/null || log::fatal "helm upgrade of ${CANARY_RELEASE} failed"
  [[ "${DRY_RUN}" == 1 ]] || canary::refresh_values
}

# canary::stable_replicas: the stable Deployment's desired replicas (the HPA may own it).
canary::stable_replicas() { "${K[@]}" get deployment "${STABLE_DEPLOY}" -o jsonpath='{.spec.replicas}'; }

# canary::replicas_for WEIGHT STABLE: canary pods giving about WEIGHT % of the one Service's
# requests next to STABLE stable pods (at least 1 while WEIGHT > 0).
canary::replicas_for() {
  local w="$1" s="$2"
  if ((w == 0)); then echo 0; return; fi
  if ((w >= 100)); then echo "${s}"; return; fi
  local n=$(((s * w * 2 + (100 - w)) / (2 * (100 - w))))
  ((n >= 1)) || n=1
  echo "${n}"
}

# canary::weight_sets WEIGHT: the --set flags putting the canary at WEIGHT % for the strategy.
# Sets EFFECTIVE_WEIGHT (what the data plane will really do, in %).
canary::weight_sets() {
  local w="$1"
  EFFECTIVE_WEIGHT="${w}"
  case "${CANARY_STRATEGY}" in
    nginx) WEIGHT_SETS=(--set canary.ingress.enabled=true --set "canary.ingress.weight=${w}" --set canary.ingress.weightTotal=100) ;;
    gateway) WEIGHT_SETS=(--set "canary.httpRoute.weight=${w}") ;;
    replicas)
      local s n
      s="$(canary::stable_replicas)"
      n="$(canary::replicas_for "${w}" "${s}")"
      WEIGHT_SETS=(--set "canary.replicaCount=${n}")
      EFFECTIVE_WEIGHT=$(((100 * n + (s + n) / 2) / (s + n)))
      log::info "replica ratio: ${n} canary pod(s) next to ${s} stable = ~${EFFECTIVE_WEIGHT} % of the Service's requests (asked ${w} %)"
      ;;
  esac
}

# canary::deployment: the canary Deployment's name ("" when there is none).
canary::deployment() {
  "${K[@]}" get deployment -l "app.kubernetes.io/instance=${CANARY_RELEASE},track=canary" -o jsonpath='{.items[0].metadata.name}' 2>/dev/null || true
}

# canary::wait_rollout DEPLOYMENT: the rollout finished and every replica is Ready.
canary::wait_rollout() {
  [[ "${DRY_RUN}" == 1 ]] && return 0
  util::run "${K[@]}" rollout status "deployment/$1" --timeout="${CANARY_TIMEOUT}" >&2 || {
    "${K[@]}" describe deployment "$1" >&2 || true
    "${K[@]}" get pods -l "app.kubernetes.io/instance=${CANARY_RELEASE}" -o wide >&2 || true
    return 1
  }
}

# canary::set_weight WEIGHT: move the canary to WEIGHT % and wait until its pods are Ready.
canary::set_weight() {
  canary::weight_sets "$1"
  log::step "canary at $1 % (${CANARY_STRATEGY})"
  canary::upgrade "${WEIGHT_SETS[@]}"
  local d
  d="$(canary::deployment)"
  [[ -z "${d}" ]] || canary::wait_rollout "${d}"
}

# -- analysis ---------------------------------------------------------------------------------

# canary::analyzer: path of selfheal-canary (CANARY_ANALYZER, PATH, the cargo target dir, or built).
canary::analyzer() {
  local c
  for c in "${CANARY_ANALYZER:-}" "$(command -v selfheal-canary 2>/dev/null || true)" \
    "${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/release/selfheal-canary" "${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/debug/selfheal-canary"; do
    [[ -n "${c}" && -x "${c}" ]] && { echo "${c}"; return; }
  done
  log::info "building selfheal-canary (cargo build -p selfheal-canary)"
  (cd "${REPO_ROOT}" && cargo build --quiet -p selfheal-canary) >&2 || log::fatal "cannot build selfheal-canary"
  echo "${CARGO_TARGET_DIR:-${REPO_ROOT}/target}/debug/selfheal-canary"
}

# canary::scrape DIR: every pod of the release (both tracks) writes its /metrics to DIR/POD.prom,
# fetched through the API server's pod proxy (works on the local cluster and minikube alike).
canary::scrape() {
  mkdir -p "$1"
  local pod port
  while read -r pod port; do
    [[ -n "${pod}" ]] || continue
    kubectl get --raw "/api/v1/namespaces/${CANARY_NAMESPACE}/pods/${pod}:${port:-8080}/proxy/metrics" \
      --request-timeout=5s >"$1/${pod}.prom" 2>/dev/null ||
      { log::warn "could not scrape ${pod} (terminating?): left out"; rm -f "$1/${pod}.prom"; }
  # Pods being deleted (an HPA scaling in, a rollout) are left out: their scrape can hang.
  done < <("${K[@]}" get pods -l "app.kubernetes.io/instance=${CANARY_RELEASE},track" --field-selector=status.phase=Running -o json |
    jq -r '.items[] | select(.metadata.deletionTimestamp == null) |
      "\(.metadata.name) \([.spec.containers[0].ports[]? | select(.name == "http") | .containerPort][0] // "")"')
}

# canary::analyze WINDOW_SECONDS: measure a window and judge it; ANALYSIS holds the analyzer's
# JSON summary; returns its exit status (0 promote, 1 rollback, 2 inconclusive, 3 error).
canary::analyze() {
  local window="$1" dir rc=0 analyzer
  analyzer="$(canary::analyzer)"
  if [[ -n "${CANARY_PROMETHEUS:-}" ]]; then
    log::info "analysis window ${window}s, then Prometheus ${CANARY_PROMETHEUS}"
    sleep "${window}"
    ANALYSIS="$("${analyzer}" analyze --prometheus "${CANARY_PROMETHEUS}" --window "${window}s" \
      --selector "${CANARY_SELECTOR:-namespace=\"${CANARY_NAMESPACE}\"}" "${ANALYZER_ARGS[@]}")" || rc=$?
  else
    dir="$(mktemp -d)"
    canary::scrape "${dir}/before"
    log::info "analysis window ${window}s (scraping every pod's /metrics before and after)"
    sleep "${window}"
    canary::scrape "${dir}/after"
    ANALYSIS="$("${analyzer}" analyze --scrapes "${dir}" "${ANALYZER_ARGS[@]}")" || rc=$?
    rm -rf "${dir}"
  fi
  [[ -n "${ANALYSIS}" ]] || ANALYSIS='{"verdict":"error"}'
  return "${rc}"
}

# -- records ------------------------------------------------------------------------------------

# canary::record REASON_CODE TYPE MESSAGE: annotation selfheal.io/canary-<last> on the stable
# Deployment and a Kubernetes Event on it, so `kubectl describe` and the event log say why.
canary::record() {
  local reason="$1" type="$2" message="$3" key uid now
  case "${reason}" in
    CanaryRolledBack) key=selfheal.io/canary-rollback ;;
    *) key=selfheal.io/canary-promotion ;;
  esac
  now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  util::run "${K[@]}" annotate deployment "${STABLE_DEPLOY}" --overwrite "${key}=${now} ${message}" >/dev/null || return 1
  [[ "${DRY_RUN}" == 1 ]] && return 0
  uid="$("${K[@]}" get deployment "${STABLE_DEPLOY}" -o jsonpath='{.metadata.uid}')"
  jq -n --arg ns "${CANARY_NAMESPACE}" --arg name "${STABLE_DEPLOY}" --arg uid "${uid}" --arg reason "${reason}" \
    --arg type "${type}" --arg msg "${message}" --arg now "${now}" '{
      apiVersion: "v1", kind: "Event",
      metadata: {generateName: ($name + ".canary-"), namespace: $ns},
      involvedObject: {apiVersion: "apps/v1", kind: "Deployment", name: $name, namespace: $ns, uid: $uid},
      reason: $reason, message: $msg, type: $type, count: 1,
      firstTimestamp: $now, lastTimestamp: $now,
      source: {component: "selfheal-canary"}, reportingComponent: "selfheal.io/canary", reportingInstance: "canary-scripts"
    }' | util::run "${K[@]}" create -f - >/dev/null
}

# canary::remove: take the canary out of the data plane (weight 0), then out of the release.
canary::remove() {
  case "${CANARY_STRATEGY}" in
    nginx) [[ "$(canary::value .canary.ingress.enabled)" == true ]] && canary::upgrade --set canary.ingress.weight=0 ;;
    gateway) canary::upgrade --set canary.httpRoute.weight=0 ;;
    replicas) ;; # the canary pods leave the Service when their Deployment goes, next
  esac
  log::step "removing the canary track"
  canary::upgrade --set canary.enabled=false --set canary.ingress.enabled=false --set canary.httpRoute.weight=0 \
    --set canary.image.tag= --set canary.image.repository= --set canary.image.digest= --set canary.faultProfile=none
  [[ "${DRY_RUN}" == 1 ]] && return 0
  util::wait_for "canary Deployment gone" 120 bash -c "[[ -z \"\$(kubectl -n '${CANARY_NAMESPACE}' get deployment -l 'app.kubernetes.io/instance=${CANARY_RELEASE},track=canary' -o name)\" ]]"
}

# canary::canary_image: the canary's image as repository:tag (empty fields fall back to stable).
canary::canary_image() {
  local repo tag
  repo="$(canary::value .canary.image.repository)"
  tag="$(canary::value .canary.image.tag)"
  printf '%s:%s\n' "${repo:-$(canary::value .image.repository)}" "${tag:-$(canary::value .image.tag)}"
}

# canary::emit JSON: the summary on stdout and, with --json, in the file.
canary::emit() {
  local line
  line="$(jq -c . <<<"$1")"
  printf '%s\n' "${line}"
  [[ -z "${CANARY_JSON}" ]] || printf '%s\n' "${line}" >"${CANARY_JSON}"
}
