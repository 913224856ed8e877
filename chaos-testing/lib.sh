# shellcheck shell=bash
# Helpers shared by the chaos scripts (kill-pods.sh, scenario.sh), on top of hack/lib.sh:
# duration parsing, the namespace guard, target pods and their Ready count, fault injection
# through the app's POST /crash, the Eviction API, the timeline, and the load generator.
# Source it from a script in chaos-testing/:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

# ---------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------

# chaos::whole_number FLAG VALUE [MIN]: VALUE is an integer >= MIN (default 0), else usage error.
chaos::whole_number() {
  if [[ ! "$2" =~ ^[0-9]+$ ]] || ((10#$2 < ${3:-0})); then
    util::usage_error "$1 must be a whole number >= ${3:-0}: '$2'"
  fi
}

# chaos::common_flag ARGS...: parse one flag that both scripts take (target, load, guards) from
# the front of ARGS into NS, SELECTOR, LOAD_URL, LOAD_CONC, CHAOS_LOAD_OUT, CHAOS_LOAD_KEEPALIVE,
# CHAOS_FORCE or DRY_RUN. Sets CHAOS_FLAG_WORDS to the words it used (1 or 2); returns 1 when $1
# is not a common flag. Usage inside a script's loop, after its own flags:
#   *) chaos::common_flag "$@" || util::usage_error "unknown argument: $1"; shift $((CHAOS_FLAG_WORDS - 1)) ;;
# shellcheck disable=SC2034 # the globals are the caller's
chaos::common_flag() {
  CHAOS_FLAG_WORDS=1
  case "$1" in
    -n | --namespace) util::need_value "$1" "$#"; NS="$2"; CHAOS_FLAG_WORDS=2 ;;
    -l | --selector) util::need_value "$1" "$#"; SELECTOR="$2"; CHAOS_FLAG_WORDS=2 ;;
    --load) util::need_value "$1" "$#"; LOAD_URL="$2"; CHAOS_FLAG_WORDS=2 ;;
    --load-concurrency) util::need_value "$1" "$#"; LOAD_CONC="$2"; CHAOS_FLAG_WORDS=2 ;;
    --load-json) util::need_value "$1" "$#"; CHAOS_LOAD_OUT="$2"; CHAOS_FLAG_WORDS=2 ;;
    --load-keepalive) export CHAOS_LOAD_KEEPALIVE=1 ;;
    --force) export CHAOS_FORCE=1 ;;
    --dry-run) export DRY_RUN=1 ;;
    *) return 1 ;;
  esac
}

# Namespaces chaos never touches: the cluster's own. Not even with --force: a broken kube-dns or
# metrics-server is not a demo of the app healing, and it can take the whole node down with it.
CHAOS_REFUSED_NAMESPACES=(kube-system kube-public kube-node-lease)
# Namespaces refused unless --force (CHAOS_FORCE=1): the self-healing machinery itself. Killing
# the controller is a legitimate experiment (leader election takes over), but never by accident.
CHAOS_GUARDED_NAMESPACES=(selfheal-system)

# chaos::check_target NS SELECTOR: refuse protected namespaces and an empty selector (every pod
# of the namespace). Exits 1 with the reason.
chaos::check_target() {
  local ns="$1" selector="$2" n
  [[ "${ns}" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || util::usage_error "--namespace must be a namespace name: '${ns}'"
  for n in "${CHAOS_REFUSED_NAMESPACES[@]}"; do
    [[ "${ns}" != "${n}" ]] || log::fatal "refusing to break pods in ${ns}: it runs the cluster itself (not even with --force)"
  done
  for n in "${CHAOS_GUARDED_NAMESPACES[@]}"; do
    if [[ "${ns}" == "${n}" && "${CHAOS_FORCE:-0}" != 1 ]]; then
      log::fatal "refusing to break pods in ${ns}: it runs the self-healing controller; pass --force if that is the experiment"
    fi
  done
  [[ -n "${selector// /}" ]] || util::usage_error "--selector must not be empty: chaos needs a label selector naming its target"
}

# chaos::require_namespace NS: the namespace exists (a typo should not look like "no pods").
chaos::require_namespace() {
  kubectl get namespace "$1" >/dev/null 2>&1 || log::fatal "namespace $1 not found (kube context $(kubectl config current-context 2>/dev/null || echo '?'))"
}

# ---------------------------------------------------------------------------------------------
# Target pods
# ---------------------------------------------------------------------------------------------

# chaos::pods NS SELECTOR: one line per pod that is not terminating: "name ready node restarts",
# ready being true/false (the Ready condition). Terminating pods are left out: they are leaving
# the Service's endpoints already, so they count neither as victims nor as capacity.
chaos::pods() {
  kubectl get pods --namespace "$1" -l "$2" -o json | jq -r '
    .items[] | select(.metadata.deletionTimestamp == null)
    | [.metadata.name,
       ((.status.conditions // []) | map(select(.type == "Ready"))[0].status == "True"),
       (.spec.nodeName // "-"),
       ([.status.containerStatuses[]?.restartCount] | add // 0)]
    | @tsv' | tr '\t' ' '
}

# chaos::ready_count NS SELECTOR: Ready pods of the target that are not terminating.
chaos::ready_count() {
  local out
  out="$(chaos::pods "$1" "$2")" || return 1
  awk '$2 == "true"' <<<"${out}" | grep -c . || true
}

# chaos::pick_pod NS SELECTOR [ready]: a random pod of the target (only Ready ones with "ready");
# fails when there is none.
chaos::pick_pod() {
  local out
  local -a names
  out="$(chaos::pods "$1" "$2")" || return 1
  if [[ "${3:-}" == ready ]]; then
    mapfile -t names < <(awk '$2 == "true" {print $1}' <<<"${out}")
  else
    mapfile -t names < <(awk '{print $1}' <<<"${out}")
  fi
  ((${#names[@]})) || return 1
  printf '%s\n' "${names[RANDOM % ${#names[@]}]}"
}

# chaos::pod_field NS POD JSONPATH: one field of a pod (empty when the pod is gone).
chaos::pod_field() { kubectl get pod --namespace "$1" "$2" -o "jsonpath=$3" 2>/dev/null || true; }
chaos::restarts() { chaos::pod_field "$1" "$2" '{.status.containerStatuses[0].restartCount}'; }
chaos::pod_ready() { [[ "$(chaos::pod_field "$1" "$2" '{.status.conditions[?(@.type=="Ready")].status}')" == True ]]; }
chaos::pod_unready() { [[ "$(chaos::pod_field "$1" "$2" '{.status.conditions[?(@.type=="Ready")].status}')" == False ]]; }
chaos::pod_gone() { ! kubectl get pod --namespace "$1" "$2" >/dev/null 2>&1; }

# chaos::pod_in_endpoints NS POD: the pod is a ready endpoint of some Service's EndpointSlice.
chaos::pod_in_endpoints() {
  [[ "$(kubectl get endpointslices --namespace "$1" -o json | jq --arg pod "$2" '
    [.items[].endpoints[]? | select(.targetRef.name == $pod and .conditions.ready == true)] | length')" -gt 0 ]]
}

# ---------------------------------------------------------------------------------------------
# Fault injection: POST /crash of one pod through the API server's pods/proxy subresource.
# Why this way: the image is scratch (no shell, so no kubectl exec), a port-forward needs a free
# local port and a background process per pod, and `kubectl get --raw` can only GET. `kubectl
# create --raw PATH -f FILE` POSTs FILE to PATH with the kubeconfig's credentials, so the same
# call works wherever kubectl works: the local cluster, minikube, a remote cluster. It needs the
# `create` verb on pods/proxy (cluster-admin and the admin role have it). The app reads the fault
# parameters from a JSON body. The API server does not forward our Authorization header, so a
# /crash protected by chaos.token cannot be reached this way (the scripts say so on 401).
# ---------------------------------------------------------------------------------------------

# chaos::app_port NS POD: the container port named http of the pod (8080 when it has none).
chaos::app_port() {
  local p
  p="$(chaos::pod_field "$1" "$2" '{.spec.containers[0].ports[?(@.name=="http")].containerPort}')"
  printf '%s\n' "${p:-8080}"
}

# chaos::crash NS POD JSON: POST JSON (e.g. {"mode":"unready","seconds":20}) to the pod's /crash
# and print the app's answer. Honours DRY_RUN. mode=exit may drop the connection as the process
# exits; callers check the effect (restartCount), not this call's status.
chaos::crash() {
  local ns="$1" pod="$2" body="$3" port path out
  port="$(chaos::app_port "${ns}" "${pod}")"
  path="/api/v1/namespaces/${ns}/pods/http:${pod}:${port}/proxy/crash"
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%s [dry-run] POST %s %s\n' "$(log::_ts)" "${path}" "${body}" >&2
    return 0
  fi
  printf '%s     + POST %s %s\n' "$(log::_ts)" "${path}" "${body}" >&2
  if ! out="$(kubectl create --raw "${path}" -f - <<<"${body}" 2>&1)"; then
    case "${out}" in
      *Forbidden* | *forbidden*) log::error "POST /crash refused: ${out} (is chaos.enabled=true in the release's values, e.g. values-demo.yaml?)" ;;
      *Unauthorized* | *unauthorized*) log::error "POST /crash refused: ${out} (chaos.token is set: the API server proxy cannot pass a bearer token; use kubectl port-forward and curl -H 'Authorization: Bearer ...')" ;;
      *) log::error "POST /crash to ${pod} failed: ${out}" ;;
    esac
    return 1
  fi
  printf '%s\n' "${out}"
}

# chaos::crash_status NS POD: the app's GET /crash (whether chaos is enabled, active faults).
chaos::crash_status() {
  kubectl get --raw "/api/v1/namespaces/$1/pods/http:$2:$(chaos::app_port "$1" "$2")/proxy/crash"
}

# chaos::evict NS POD: ask the Eviction API to evict POD (the way `kubectl drain` and the
# selfheal controller do: PodDisruptionBudgets are honoured). Returns 0 when accepted, 2 when
# refused by a disruption budget (HTTP 429), 1 on any other error; the message goes to stderr.
chaos::evict() {
  local ns="$1" pod="$2" out
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%s [dry-run] evict %s/%s (POST pods/%s/eviction)\n' "$(log::_ts)" "${ns}" "${pod}" "${pod}" >&2
    return 0
  fi
  if out="$(kubectl create --raw "/api/v1/namespaces/${ns}/pods/${pod}/eviction" -f - 2>&1 <<EOF
{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "${pod}", "namespace": "${ns}"}}
EOF
  )"; then
    return 0
  fi
  printf '%s\n' "${out}" >&2
  if grep -qi 'disruption budget' <<<"${out}"; then return 2; fi
  return 1
}

# ---------------------------------------------------------------------------------------------
# Timeline: every event on stdout as it happens, with UTC wall-clock time and seconds since
# chaos::timeline_start (logs go to stderr, so `2>/dev/null` leaves the timeline alone).
# ---------------------------------------------------------------------------------------------
CHAOS_T0=""

chaos::_now_ms() { date +%s%3N; }
chaos::timeline_start() {
  CHAOS_T0="$(chaos::_now_ms)"
}

# chaos::elapsed: seconds since chaos::timeline_start, one decimal.
chaos::elapsed() {
  local ms=$(($(chaos::_now_ms) - ${CHAOS_T0:-$(chaos::_now_ms)}))
  printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}

# chaos::mark "event": print one timeline line.
chaos::mark() { printf '%s  %7ss  %s\n' "$(date -u +%H:%M:%S)" "+$(chaos::elapsed)" "$*"; }

# chaos::wait_mark TIMEOUT "what happened" cmd...: wait (bounded) for cmd, then mark the event.
# Returns 1 and marks the timeout when cmd never succeeded.
chaos::wait_mark() {
  local timeout="$1" what="$2"
  shift 2
  if util::wait_for "${what}" "${timeout}" "$@" 2>/dev/null; then
    chaos::mark "${what}"
  else
    chaos::mark "NOT within ${timeout}s: ${what}"
    return 1
  fi
}

# ---------------------------------------------------------------------------------------------
# Load: the load generator of selfheal-demo (demo/), run alongside a scenario.
# ---------------------------------------------------------------------------------------------
CHAOS_LOAD_PID=""
CHAOS_LOAD_JSON=""
CHAOS_LOAD_LOG=""
# Where chaos::load_report copies the load generator's JSON report (the scripts' --load-json).
CHAOS_LOAD_OUT="${CHAOS_LOAD_OUT:-}"

# chaos::demo_bin: the selfheal-demo binary: $SELFHEAL_DEMO, then PATH, then the shared cargo
# target directory's debug and release builds.
chaos::demo_bin() {
  local target="${CARGO_TARGET_DIR:-${SELFHEAL_HOME}/cargo-target}" c
  for c in "${SELFHEAL_DEMO:-}" "$(command -v selfheal-demo 2>/dev/null || true)" \
    "${target}/debug/selfheal-demo" "${target}/release/selfheal-demo"; do
    if [[ -n "${c}" && -x "${c}" ]]; then
      printf '%s\n' "${c}"
      return 0
    fi
  done
  return 1
}

# chaos::require_load: fail early (before breaking anything) when --load is asked for but the
# load generator is not built.
chaos::require_load() {
  chaos::demo_bin >/dev/null ||
    log::fatal "--load needs the selfheal-demo load generator: build it with 'cargo build -p selfheal-demo' (or set SELFHEAL_DEMO=/path/to/selfheal-demo)"
}

# chaos::load_start TARGET CONCURRENCY: start the load generator in the background until
# chaos::load_report stops it. TARGET is an http:// URL (e.g. the Service's ClusterIP, reachable
# from the local cluster's node) or NAMESPACE/SERVICE[:PORT] (through the API server's service
# proxy: works on minikube too, one hop more). Skipped with DRY_RUN=1. DEMO_LOAD_RATE (requests
# per second, default 50) and DEMO_LOAD_TIMEOUT (per request, default 2s) pass through.
# Every request opens a new connection unless CHAOS_LOAD_KEEPALIVE=1: new connections are what
# a stale kube-proxy rule sends to a pod that is gone, so only they show a missing preStop
# sleep or shutdown delay (kept-alive connections ride out the endpoint change and hide it).
chaos::load_start() {
  local target="$1" conc="$2" bin dir
  local -a how
  bin="$(chaos::demo_bin)" || chaos::require_load
  if [[ "${target}" == http://* ]]; then how=(--url "${target}"); else how=(--service "${target}"); fi
  [[ "${CHAOS_LOAD_KEEPALIVE:-0}" == 1 ]] || how+=(--no-keepalive)
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%s [dry-run] %s load %s --concurrency %s\n' "$(log::_ts)" "${bin}" "${how[*]}" "${conc}" >&2
    return 0
  fi
  dir="$(mktemp -d)"
  util::trap_add "rm -rf '${dir}'"
  CHAOS_LOAD_JSON="${dir}/load.json"
  CHAOS_LOAD_LOG="${dir}/load.log"
  # Stopped with SIGINT by chaos::load_report (it then reports what it measured); the hour is
  # only a bound in case this script dies without its EXIT trap.
  "${bin}" load "${how[@]}" --duration 1h --concurrency "${conc}" --json "${CHAOS_LOAD_JSON}" \
    >"${CHAOS_LOAD_LOG}" 2>&1 &
  CHAOS_LOAD_PID="$!"
  util::trap_add "kill ${CHAOS_LOAD_PID} 2>/dev/null || true"
  chaos::mark "load generator started: GET ${target}, ${conc} concurrent, ${DEMO_LOAD_RATE:-50} requests/s, $([[ "${CHAOS_LOAD_KEEPALIVE:-0}" == 1 ]] && echo 'kept-alive connections' || echo 'a new connection per request')"
}

# chaos::load_report: stop the load generator, print its report and the availability line.
# Returns 1 when it failed or wrote no report.
chaos::load_report() {
  [[ -n "${CHAOS_LOAD_PID}" ]] || return 0
  local rc=0
  kill -INT "${CHAOS_LOAD_PID}" 2>/dev/null || true
  wait "${CHAOS_LOAD_PID}" || rc=$?
  CHAOS_LOAD_PID=""
  chaos::mark "load generator stopped (exit ${rc})"
  printf '\n==== load ====\n'
  cat "${CHAOS_LOAD_LOG}"
  if [[ ! -s "${CHAOS_LOAD_JSON}" ]]; then
    log::error "the load generator wrote no report (exit ${rc})"
    return 1
  fi
  if [[ -n "${CHAOS_LOAD_OUT:-}" ]]; then
    cp "${CHAOS_LOAD_JSON}" "${CHAOS_LOAD_OUT}" || log::warn "cannot write the load report to ${CHAOS_LOAD_OUT}"
  fi
  chaos::load_summary "${CHAOS_LOAD_JSON}"
}

# chaos::load_summary FILE: one line from the load generator's JSON report (selfheal-demo load --json).
chaos::load_summary() {
  jq -r '.summary | "availability: \(.success_ratio * 100000 | round / 1000) % of \(.total) requests served (\(.failed) failed\(if .failed > 0 then ": " + (.failures | to_entries | map("\(.key) \(.value)") | join(", ")) else "" end)); latency p50 \(.latency.p50_ms // "-") ms, p99 \(.latency.p99_ms // "-") ms"' "$1"
}
