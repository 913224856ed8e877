#!/usr/bin/env bash
# `make demo`: sets up a cluster (the local one, or the current minikube), builds and loads the
# app and controller images, installs the Helm chart with the workshop values and the
# selfheal-controller, then runs `selfheal-demo run`: every layer breaks the app on purpose and
# the runner watches Kubernetes heal it, printing a recovery table (JSON report + SVG timeline
# are written under the --out directory). LAYER=leak|pool|breaker|zombie (or ops, all four) runs
# the ops healers (layers 8-11) instead; pool and breaker get a Prometheus (hack/demo-prometheus.sh
# on the local cluster, the observability stack's on minikube).
# On minikube it reads the Node's architecture, loads that platform of the images (refusing
# anything but amd64/arm64), enables the addons the layers need (hack/lib.sh minikube::*) and
# sends the load to the address `minikube service --url` prints.
# Prerequisites: root for the local cluster (Linux), or a running minikube; cargo.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: hack/demo.sh [options]

Options:
  --target T      local | minikube | auto (default auto: minikube when the minikube command
                  is there and the current kube context's Nodes are a minikube profile's,
                  else the local cluster)
  --namespace NS  namespace for the demo (default selfheal-demo)
  --layer N       run only layer N (repeatable, or comma-separated: --layer 1,2); default the
                  seven recovery layers; 8-11 or leak, pool, breaker, zombie (ops = all four)
                  are the ops healers
  --keep          leave the faulted state in place for inspection (passed to the runner)
  --setup-only    set up the cluster, images, chart and controller, run no layer (what
                  'make test' uses to put a demo back after its cluster lifecycle check)
  --out DIR       where the JSON report and the SVG timeline go
                  (default ${SELFHEAL_HOME}/demo/<date-time>)
  --dry-run       print every command it would run, change nothing (on minikube it still
                  reads the Nodes, and needs no minikube command)
  -h, --help      this help

On minikube (--target minikube):
  - images: the Node's architecture (label kubernetes.io/arch, else nodeInfo) picks the
    platform, linux/amd64 or linux/arm64; any other exits 1. hack/image.sh --minikube builds it
    (without Docker on Linux; with docker buildx elsewhere) and loads that platform only.
  - addons: metrics-server when the layers include 5 (HPA) or 8/leak (memory trend); no
    ingress (layer 7's canary shifts replicas, not Ingress weights).
  - load: the runner gets --load-url, the first URL of 'minikube service --url' (kept running
    until the end where the driver needs a tunnel), unless DEMO_LOAD_URL or --load-url is given.

Environment:
  LAYER           same as --layer (make demo LAYER=3, LAYER=1,2, LAYER=leak, LAYER=ops)
  DEMO_ARGS       extra arguments for 'selfheal-demo run' (e.g. DEMO_ARGS='--unready-secs 20')
  IMAGE_TAG       tag of the app and controller images (default dev)
  IMAGE_BUILD     minikube: tarball (hack/image.sh, no Docker; default on Linux) or docker
                  (docker buildx; default elsewhere)
  MINIKUBE_PROFILE  minikube profile (default: the Node's minikube.k8s.io/name label, else minikube)
  DEMO_LOAD_URL   load target for the runner (skips 'minikube service --url')

Clean up:  helm -n selfheal-demo uninstall selfheal-app; kubectl delete namespace selfheal-demo;
           kubectl delete -k controller/deploy-demo   (and 'make cluster-down' for the local cluster)
EOF
}

TARGET=auto
NS=selfheal-demo
LAYERS="${LAYER:-}"
KEEP=0
SETUP_ONLY=0
OUT=""
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --target) [[ $# -ge 2 ]] || util::usage_error "--target needs a value"; TARGET="$2"; shift ;;
    --namespace) [[ $# -ge 2 ]] || util::usage_error "--namespace needs a value"; NS="$2"; shift ;;
    --layer) [[ $# -ge 2 ]] || util::usage_error "--layer needs a value"; LAYERS="${LAYERS:+${LAYERS},}$2"; shift ;;
    --keep) KEEP=1 ;;
    --setup-only) SETUP_ONLY=1 ;;
    --out) [[ $# -ge 2 ]] || util::usage_error "--out needs a value"; OUT="$2"; shift ;;
    --dry-run) export DRY_RUN=1 ;;
    *) util::usage_error "unknown argument: $1" ;;
  esac
  shift
done
[[ "${TARGET}" =~ ^(auto|local|minikube)$ ]] || util::usage_error "--target must be local, minikube or auto"
LAYER_RE='([1-9]|1[01]|leak|pool|breaker|zombie|ops)'
[[ -z "${LAYERS}" || "${LAYERS}" =~ ^${LAYER_RE}(,${LAYER_RE})*$ ]] ||
  util::usage_error "--layer/LAYER must be 1-11 or leak, pool, breaker, zombie, ops; e.g. 3, 1,2 or leak"
# Layers 9 and 10 ask Prometheus.
NEEDS_PROMETHEUS=0
[[ ",${LAYERS}," =~ ,(9|10|pool|breaker|ops), ]] && NEEDS_PROMETHEUS=1
OUT="${OUT:-${SELFHEAL_HOME}/demo/$(date -u +%Y%m%d-%H%M%S)}"

if [[ "${TARGET}" == auto ]]; then
  have_minikube=no
  profile=""
  if command -v minikube >/dev/null; then
    have_minikube=yes
    profile="$(minikube::profile)"
  fi
  TARGET="$(minikube::target "${have_minikube}" "${profile}")"
fi

# demo::load_url_given: the load target is chosen already (DEMO_LOAD_URL, --load-url in DEMO_ARGS).
demo::load_url_given() {
  [[ -n "${DEMO_LOAD_URL:-}" || " ${DEMO_ARGS:-} " == *" --load-url"* ]]
}

# demo::url_or_exit FILE PID: FILE has an http:// line, or PID (which writes it) is gone.
# shellcheck disable=SC2317 # called through util::wait_for
demo::url_or_exit() { grep -q '^http://' "$1" || ! kill -0 "$2" 2>/dev/null; }

# demo::minikube_service_url: LOAD_URL = the first URL `minikube service --url` prints for the
# app's Service (its NodePort at the node's address, or, with a Docker Desktop driver, a local
# tunnel that lives as long as the command: it runs in the background and gets SIGINT at exit,
# which makes minikube close its ssh tunnel).
demo::minikube_service_url() {
  local cmd=(minikube --profile "${MK_PROFILE}" service --namespace "${NS}" selfheal-app --url)
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    util::run "${cmd[@]}"
    LOAD_URL="<first URL printed by minikube service --url>"
    return 0
  fi
  local out
  out="$(mktemp -d)"
  util::trap_add "rm -rf '${out}'"
  log::info "+ ${cmd[*]} &"
  "${cmd[@]}" >"${out}/stdout" 2>"${out}/stderr" &
  local pid=$!
  util::trap_add "kill -INT ${pid} 2>/dev/null || true"
  util::wait_for "minikube service --url to print the Service's address" 120 \
    demo::url_or_exit "${out}/stdout" "${pid}" || true
  LOAD_URL="$(grep -m1 '^http://' "${out}/stdout" || true)"
  if [[ -z "${LOAD_URL}" ]]; then
    cat "${out}/stdout" "${out}/stderr" >&2
    log::fatal "minikube service --url printed no http:// address for ${NS}/selfheal-app (kubectl -n ${NS} get service selfheal-app; minikube --profile ${MK_PROFILE} service list)"
  fi
  LOAD_URL="${LOAD_URL%/}/"
  log::info "load target: ${LOAD_URL}"
}

log::step "demo on the ${TARGET} cluster, namespace ${NS}"
if [[ "${TARGET}" == local ]]; then
  util::run "${REPO_ROOT}/hack/cluster.sh" up
  export KUBECONFIG="${CLUSTER_KUBECONFIG}"
  util::run "${REPO_ROOT}/hack/image.sh" --import app controller
else
  util::require_tools kubectl
  if command -v minikube >/dev/null; then
    mk_version="$(minikube version --short 2>/dev/null || minikube version | head -1)"
  elif [[ "${DRY_RUN:-0}" == 1 ]]; then
    mk_version="(no minikube command here: the minikube commands below are what would run)"
  else
    util::require_tools minikube
  fi
  MK_PROFILE="$(minikube::profile)"
  MK_PROFILE="${MK_PROFILE:-minikube}"
  NODE_ARCH="$(minikube::node_arch)" ||
    log::fatal "cannot read the minikube node's architecture: is minikube running and the current kube context its (minikube start; kubectl config use-context ${MK_PROFILE})?"
  NODE_PLATFORM="$(minikube::platform "${NODE_ARCH}")" || exit 1
  IMAGE_BUILD="$(minikube::image_build "$(uname -s)")" || exit 2
  # docker vs containerd defaults changed across minikube releases: say what this one runs.
  mk_runtime="$(kubectl get nodes -o jsonpath='{.items[0].status.nodeInfo.containerRuntimeVersion}' 2>/dev/null || echo unknown)"
  log::info "minikube ${mk_version}, profile ${MK_PROFILE}, node ${NODE_PLATFORM}, container runtime ${mk_runtime}"
  ADDONS="$(minikube::addons "${LAYERS}")"
  for addon in ${ADDONS}; do
    util::run minikube --profile "${MK_PROFILE}" addons enable "${addon}"
  done
  if [[ " ${ADDONS} " == *" metrics-server "* ]]; then
    util::run kubectl --namespace kube-system rollout status deployment/metrics-server --timeout=180s
  fi
  image_args=(--minikube --node-arch "${NODE_ARCH}")
  if [[ "${IMAGE_BUILD}" == docker ]]; then
    image_args+=(--docker)
  else
    image_args+=(--platforms "${NODE_PLATFORM}")
  fi
  log::step "images for ${NODE_PLATFORM} (${IMAGE_BUILD} build): hack/image.sh ${image_args[*]} app controller"
  # Not through util::run: image.sh honours DRY_RUN itself and prints each command it would run.
  MINIKUBE_PROFILE="${MK_PROFILE}" "${REPO_ROOT}/hack/image.sh" "${image_args[@]}" app controller
fi
util::require_tools kubectl cargo

log::step "installing the chart: release selfheal-app (2+ replicas, probes, HPA, PDB, /crash on)"
command -v helm >/dev/null || util::run "${REPO_ROOT}/hack/tools.sh" install helm
util::run kubectl create namespace "${NS}" --dry-run=client -o yaml | util::run kubectl apply -f - >/dev/null
util::run kubectl label namespace "${NS}" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
# A rebuilt image keeps its tag: the restartedAt annotation rolls the pods onto it.
util::run helm upgrade --install selfheal-app "${REPO_ROOT}/helm-chart" --namespace "${NS}" \
  -f "${REPO_ROOT}/helm-chart/values-demo.yaml" \
  --set image.repository=localhost/selfheal-app --set "image.tag=${IMAGE_TAG:-dev}" \
  --set-string "podAnnotations.selfheal\.io/restartedAt=$(date +%s)" \
  --wait --timeout 3m
util::run kubectl -n "${NS}" rollout status deployment/selfheal-app --timeout=120s

log::step "installing selfheal-controller (kubectl apply -k controller/deploy-demo: demo timings, image localhost/selfheal-controller:${IMAGE_TAG:-dev})"
util::run kubectl apply -k "${REPO_ROOT}/controller/deploy-demo" >/dev/null
if [[ "${IMAGE_TAG:-dev}" != dev ]]; then
  # The manifests name the :dev image; another tag is set on the Deployment after applying.
  util::run kubectl -n selfheal-system set image deployment/selfheal-controller "controller=localhost/selfheal-controller:${IMAGE_TAG}"
fi
util::run kubectl -n selfheal-system rollout status deployment/selfheal-controller --timeout=180s
if ((SETUP_ONLY)); then
  log::ok "demo set up: release selfheal-app in ${NS}, selfheal-controller in selfheal-system (no layer run: --setup-only)"
  exit 0
fi

if ((NEEDS_PROMETHEUS)); then
  if [[ "${TARGET}" == local ]]; then
    log::step "layers 9/10 ask Prometheus: starting one for namespace ${NS} (stopped at the end)"
    [[ "${DRY_RUN:-0}" == 1 ]] || util::trap_add "'${REPO_ROOT}/hack/demo-prometheus.sh' stop || true"
    util::run "${REPO_ROOT}/hack/demo-prometheus.sh" start --namespace "${NS}"
  elif kubectl -n observability get service kube-prometheus-stack-prometheus >/dev/null 2>&1; then
    log::step "layers 9/10 ask Prometheus: the observability stack's (the runner adds a PodMonitor per scenario)"
    util::run kubectl -n selfheal-system set env deployment/selfheal-controller \
      CONTROLLER_PROMETHEUS_URL=http://kube-prometheus-stack-prometheus.observability:9090 >/dev/null
    util::run kubectl -n selfheal-system rollout status deployment/selfheal-controller --timeout=180s
  else
    log::warn "layers 9/10 need Prometheus: run observability/install.sh first (they report 'not available' without it)"
  fi
fi

log::step "building the runner: cargo build -p selfheal-demo (debug; shared cache ${CARGO_TARGET_DIR:-${SELFHEAL_HOME}/cargo-target})"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${SELFHEAL_HOME}/cargo-target}"
util::run cargo build -p selfheal-demo --manifest-path "${REPO_ROOT}/Cargo.toml"
DEMO_BIN="${CARGO_TARGET_DIR}/debug/selfheal-demo"

ARGS=(run --namespace "${NS}" --repo-root "${REPO_ROOT}" --json "${OUT}/report.json" --svg "${OUT}/timeline.svg")
if [[ -n "${LAYERS}" ]]; then ARGS+=(--layer "${LAYERS}"); fi
((KEEP)) && ARGS+=(--keep)
# DEMO_ARGS is split on spaces on purpose: it carries several flags.
# shellcheck disable=SC2206
[[ -n "${DEMO_ARGS:-}" ]] && ARGS+=(${DEMO_ARGS})
if [[ "${TARGET}" == minikube ]] && ! demo::load_url_given; then
  log::step "load target: the address 'minikube service --url' prints for ${NS}/selfheal-app"
  demo::minikube_service_url
  ARGS+=(--load-url "${LOAD_URL}")
fi

log::step "running the layers: ${DEMO_BIN} ${ARGS[*]}"
util::run mkdir -p "${OUT}"
rc=0
util::run "${DEMO_BIN}" "${ARGS[@]}" || rc=$?
[[ "${DRY_RUN:-0}" == 1 ]] && exit 0

cat <<EOF

JSON report:   ${OUT}/report.json
SVG timeline:  ${OUT}/timeline.svg   (open it in a browser)

The app keeps running in namespace ${NS}. Try it yourself:
  export KUBECONFIG=${KUBECONFIG:-~/.kube/config}
  kubectl -n ${NS} port-forward svc/selfheal-app 8080:80 &
  curl -X POST 'localhost:8080/crash?mode=unhealthy'      # liveness fails -> restart
  kubectl -n ${NS} get pods -w
Clean up: helm -n ${NS} uninstall selfheal-app; kubectl delete namespace ${NS}; kubectl delete -k controller/deploy-demo$([[ "${TARGET}" == local ]] && echo "; make cluster-down")
EOF
exit "${rc}"
