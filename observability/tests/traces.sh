#!/usr/bin/env bash
# Live trace test, no cluster: a real Jaeger v2 process (built from its Go module by
# hack/tools.sh, running the `userconfig` of observability/values/jaeger.yaml - the pipeline the
# cluster install uses - on free loopback ports, memory storage) receives OTLP/HTTP spans from the
# real selfheal-app binary. The test sends requests (one carrying a W3C traceparent, one failing
# with a 500, one unknown route) and finds the spans through Jaeger's query APIs: service name,
# span name, http.route, status code, error status, the caller's trace id and parent span, and the
# resource attributes (service.version, deployment.track, k8s.pod.name, k8s.namespace.name).
# Stops everything it started.
# Prerequisites: cargo, curl, jq, python3 + PyYAML, go (to build Jaeger once, ~12 min cold).
# shellcheck source=observability/tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: observability/tests/traces.sh [-h|--help]

Runs Jaeger v2 and selfheal-app on loopback ports and checks the app's traces arrive, through
Jaeger's HTTP query API (/api/traces) and its v3 API (/api/v3/traces). Ends with
"traces: N passed, N failed". About 30 s once Jaeger and the app are built.

Environment:
  JAEGER      Jaeger v2 binary to use (default: hack/tools.sh install jaeger, ${JAEGER_VERSION})
  KEEP_TMP=1  keep the temporary directory (Jaeger config and logs, app log, API answers)
EOF
}

util::no_arguments "$@"
util::require_tools cargo curl jq python3
python3 -c 'import yaml' 2>/dev/null || log::fatal "PyYAML missing: hack/tools.sh install pyyaml"
if [[ -z "${JAEGER:-}" ]]; then
  JAEGER="$("${REPO_ROOT}/hack/tools.sh" path jaeger)/jaeger"
  [[ -x "${JAEGER}" ]] || "${REPO_ROOT}/hack/tools.sh" install jaeger
fi
[[ -x "${JAEGER}" ]] || log::fatal "no Jaeger binary at ${JAEGER}"

util::scratch_dir

# -- Jaeger, with the chart's configuration -----------------------------------------------------------
python3 - "${REPO_ROOT}/observability/values/jaeger.yaml" "${TMP}/jaeger.yaml" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))["userconfig"]
yaml.safe_dump(cfg, open(sys.argv[2], "w"), sort_keys=False)
PY
OTLP_PORT="$(util::free_port)"
QUERY_PORT="$(util::free_port)"
HEALTH_PORT="$(util::free_port)"
GRPC_PORT="$(util::free_port)"
JAEGER_URL="http://127.0.0.1:${QUERY_PORT}"
log::step "starting Jaeger $("${JAEGER}" version 2>/dev/null | jq -r '.gitVersion // empty' 2>/dev/null || true) (OTLP/HTTP 127.0.0.1:${OTLP_PORT}, query ${JAEGER_URL})"
# Jaeger traces itself over OTLP gRPC (default localhost:4317): sample none of that, and point it at
# its own receiver, so it neither retries a foreign port nor waits on a flush when it stops.
obs::start "${TMP}/jaeger.log" env OTEL_TRACES_SAMPLER=always_off \
  JAEGER_OTLP_HTTP_ENDPOINT="127.0.0.1:${OTLP_PORT}" \
  JAEGER_OTLP_GRPC_ENDPOINT="127.0.0.1:${GRPC_PORT}" \
  OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:${GRPC_PORT}" \
  JAEGER_QUERY_HTTP_ENDPOINT="127.0.0.1:${QUERY_PORT}" \
  JAEGER_QUERY_GRPC_ENDPOINT="127.0.0.1:$(util::free_port)" \
  JAEGER_HEALTH_ENDPOINT="127.0.0.1:${HEALTH_PORT}" \
  JAEGER_METRICS_HOST=127.0.0.1 JAEGER_METRICS_PORT="$(util::free_port)" \
  "${JAEGER}" --config "${TMP}/jaeger.yaml"
JAEGER_PID="${OBS_PID}"
check::run "Jaeger starts with observability/values/jaeger.yaml's config and answers its query API" \
  util::wait_for "Jaeger query API" 60 curl -fsS -m 2 "${JAEGER_URL}/api/services"
if ! kill -0 "${JAEGER_PID}" 2>/dev/null; then
  tail -20 "${TMP}/jaeger.log" >&2
  log::fatal "Jaeger exited"
fi

# -- the app, exporting to Jaeger -------------------------------------------------------------------
APP_BIN="$(obs::cargo_bin selfheal-app selfheal-app)" || log::fatal "building selfheal-app failed"
APP_PORT="$(util::free_port)"
APP="http://127.0.0.1:${APP_PORT}"
SERVICE="selfheal-app-trace-test-${RANDOM}"
log::step "starting selfheal-app on ${APP}: OTEL_SERVICE_NAME=${SERVICE}, OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:${OTLP_PORT}"
obs::start "${TMP}/app.log" env OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:${OTLP_PORT}" \
  OTEL_SERVICE_NAME="${SERVICE}" OTEL_BSP_SCHEDULE_DELAY=200 \
  "${APP_BIN}" --listen "127.0.0.1:${APP_PORT}" --enable-chaos --shutdown-delay-secs 0 \
  --track canary --pod-name trace-test-pod-0 --pod-namespace obs-trace-test
APP_PID="${OBS_PID}"
util::wait_for "selfheal-app /health" 30 curl -fsS -m 2 "${APP}/health" ||
  { tail -20 "${TMP}/app.log" >&2; log::fatal "selfheal-app did not start"; }

hex() { python3 -c "import secrets; print(secrets.token_hex($1))"; }
TRACE_OK="$(hex 16)"
PARENT_OK="$(hex 8)"
TRACE_FAIL="$(hex 16)"

check::run "GET / with traceparent ${TRACE_OK} answers 200" \
  curl -fsS -m 5 -o /dev/null -H "traceparent: 00-${TRACE_OK}-${PARENT_OK}-01" "${APP}/"
check::run "GET /no-such-route answers 404" test "$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "${APP}/no-such-route")" = 404
curl -fsS -m 5 -o /dev/null -XPOST "${APP}/crash?mode=errors&percent=100"
check::run "with 100 % errors injected, GET / (traceparent ${TRACE_FAIL}) answers 500" \
  test "$(curl -sS -m 5 -o /dev/null -w '%{http_code}' -H "traceparent: 00-${TRACE_FAIL}-$(hex 8)-01" "${APP}/")" = 500
curl -fsS -m 5 -o /dev/null -XPOST "${APP}/crash?mode=reset"
for _ in 1 2 3; do curl -fsS -m 5 -o /dev/null "${APP}/health" "${APP}/ready" "${APP}/metrics"; done

# -- find them through the query API ----------------------------------------------------------------
q() { curl -fsS -m 5 "$@"; }
service_listed() { q "${JAEGER_URL}/api/services" | jq -e --arg s "${SERVICE}" '.data | index($s)' >/dev/null; }
check::run "Jaeger lists the service ${SERVICE} (/api/services)" util::wait_for "service in Jaeger" 30 service_listed

trace_ok() { q "${JAEGER_URL}/api/traces/${TRACE_OK}" >"${TMP}/trace-ok.json"; }
check::run "the trace id from the caller's traceparent is found (/api/traces/${TRACE_OK})" \
  util::wait_for "trace ${TRACE_OK}" 30 trace_ok
span_ok() {
  jq -e --arg s "${SERVICE}" --arg p "${PARENT_OK}" --arg t "${TRACE_OK}" '
    .data[0] as $tr | $tr.spans[] | select(.operationName == "GET /") |
    ($tr.processes[.processID]) as $proc |
    select(.traceID == $t and $proc.serviceName == $s) |
    select([.tags[] | select(.key == "http.route" and .value == "/")] | length == 1) |
    select([.tags[] | select(.key == "http.response.status_code" and (.value | tostring) == "200")] | length == 1) |
    select([.tags[] | select(.key == "span.kind" and .value == "server")] | length == 1) |
    select([.references[] | select(.refType == "CHILD_OF" and .spanID == $p and .traceID == $t)] | length == 1)
  ' "${TMP}/trace-ok.json" >/dev/null
}
check::run "its span: GET /, service ${SERVICE}, server kind, http.route=/, status 200, child of the caller's span ${PARENT_OK}" span_ok
resource_ok() {
  jq -e '.data[0] as $tr | $tr.processes[] | (.tags | map({(.key): (.value | tostring)}) | add) as $t |
    select($t["deployment.track"] == "canary" and $t["k8s.pod.name"] == "trace-test-pod-0"
      and $t["k8s.namespace.name"] == "obs-trace-test" and ($t["service.version"] | length) > 0)' \
    "${TMP}/trace-ok.json" >/dev/null
}
check::run "resource attributes: deployment.track=canary, k8s.pod.name, k8s.namespace.name, service.version" resource_ok

failed_found() {
  q -G "${JAEGER_URL}/api/traces" --data-urlencode "service=${SERVICE}" \
    --data-urlencode 'tags={"http.response.status_code":"500"}' --data-urlencode limit=20 >"${TMP}/failed.json" &&
    jq -e --arg t "${TRACE_FAIL}" '[.data[] | select(.traceID == $t)] | length == 1' "${TMP}/failed.json" >/dev/null
}
check::run "the failed request is found by searching status 500 (docs/tracing.md's search), with its caller's trace id" \
  util::wait_for "500 trace" 30 failed_found
failed_is_error() {
  jq -e --arg t "${TRACE_FAIL}" '.data[] | select(.traceID == $t) | .spans[] |
    select([.tags[] | select(.key == "otel.status_code" and .value == "ERROR")] | length == 1) |
    select([.tags[] | select(.key == "error" and .value == true)] | length == 1)' "${TMP}/failed.json" >/dev/null
}
check::run "the failed request's span carries error=true and otel.status_code=ERROR" failed_is_error

by_resource_found() {
  local none
  q -G "${JAEGER_URL}/api/traces" --data-urlencode "service=${SERVICE}" \
    --data-urlencode 'tags={"http.response.status_code":"500","k8s.pod.name":"trace-test-pod-0"}' >"${TMP}/by-pod.json" &&
    none="$(q -G "${JAEGER_URL}/api/traces" --data-urlencode "service=${SERVICE}" \
      --data-urlencode 'tags={"http.response.status_code":"500","k8s.pod.name":"some-other-pod"}' | jq '.data | length')" &&
    jq -e --arg t "${TRACE_FAIL}" '[.data[].traceID] == [$t]' "${TMP}/by-pod.json" >/dev/null && [[ "${none}" == 0 ]]
}
check::run "searching by a resource attribute narrows it down (k8s.pod.name of this pod: found; another pod: none)" by_resource_found

unmatched_found() {
  q "${JAEGER_URL}/api/services/${SERVICE}/operations" >"${TMP}/ops.json" &&
    jq -e '.data | index("GET unmatched")' "${TMP}/ops.json" >/dev/null
}
check::run "the unknown route is one bounded operation (GET unmatched), not the raw path" util::wait_for "GET unmatched" 30 unmatched_found
no_probe_spans() {
  jq -e '(.data | length) > 0 and (.data | map(select(test("/(health|ready|metrics)"))) | length == 0)' "${TMP}/ops.json" >/dev/null
}
check::run "/health, /ready and /metrics produce no spans" no_probe_spans

v3_ok() {
  q "${JAEGER_URL}/api/v3/traces/${TRACE_OK}" >"${TMP}/v3.json" &&
    jq -e --arg s "${SERVICE}" '.result.resourceSpans[0] |
      (.resource.attributes | map({(.key): (.value.stringValue // (.value | tostring))}) | add) as $r |
      select($r["service.name"] == $s and $r["deployment.track"] == "canary") |
      .scopeSpans[0].spans[0] | select(.name == "GET /" and .parentSpanId != null)' "${TMP}/v3.json" >/dev/null
}
check::run "the v3 API (/api/v3/traces/ID, OTLP JSON) returns the same trace with its resource" v3_ok

unknown_trace_404() { [[ "$(curl -sS -m 5 -o /dev/null -w '%{http_code}' "${JAEGER_URL}/api/traces/$(hex 16)")" == 404 ]]; }
check::run "an unknown trace id answers 404 (the lookups above can fail)" unknown_trace_404

util::stop "${APP_PID}"
util::stop "${JAEGER_PID}"
if ((CHECK_FAILED)); then
  log::info "Jaeger log:"
  tail -20 "${TMP}/jaeger.log" >&2 || true
  log::info "app log:"
  tail -20 "${TMP}/app.log" >&2 || true
fi
check::summary traces
