#!/usr/bin/env bash
# The minikube path, as far as it can be tested without minikube (there is none on this
# machine, and no stand-in is put on PATH): the decisions hack/demo.sh and hack/image.sh make
# (hack/lib.sh minikube::*: the Node's architecture, read from the real local cluster through
# the same function the demo uses; architecture -> image platform and the refusal of others;
# the addons per layer; auto target; how images are built), the commands
# `hack/demo.sh --target minikube --dry-run` and `hack/image.sh --minikube --dry-run` print
# (addons, the platform loaded, `minikube service --url` for the load) and that they change
# nothing on the cluster; then, for real, the single-platform tarball --minikube hands to
# `minikube image load`: only the node's platform, for `docker load` too, and (root, with
# containerd) what minikube's containerd runtime runs on it, `ctr -n=k8s.io images import FILE`,
# accepts it for this machine's platform and refuses the other.
# What is never run here (minikube start, minikube image load, addons, minikube service):
# docs/walkthrough-minikube.md, "What is tested where".
# Prerequisites: a cluster in KUBECONFIG (default the local one: hack/cluster.sh up), kubectl,
# python3, cargo (hack/demo.sh checks for it; nothing is built).
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source=hack/tests/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<EOF
Usage: hack/tests/minikube.sh [-h|--help]

Checks the minikube decisions (hack/lib.sh minikube::*) and the commands hack/demo.sh
--target minikube --dry-run and hack/image.sh --minikube --dry-run print, against the cluster
in KUBECONFIG (default: the local cluster's), and the single-platform tarballs --minikube loads.
Builds nothing with cargo, changes nothing on the cluster. Prints "minikube: N passed, N failed".

Environment:
  KUBECONFIG  the cluster whose Node architecture is read (default ${CLUSTER_KUBECONFIG})
  KEEP_TMP=1  keep the temporary directory (tarballs, outputs) for debugging
EOF
}

util::no_arguments "$@"

export KUBECONFIG="${KUBECONFIG:-${CLUSTER_KUBECONFIG}}"
util::require_tools kubectl python3
kubectl get --raw /readyz >/dev/null 2>&1 ||
  log::fatal "no cluster reachable with KUBECONFIG=${KUBECONFIG}: start one with 'make cluster-up' (these checks read its Node)"
# The profile comes from the Node (the local cluster has none), not from the caller's shell.
unset MINIKUBE_PROFILE IMAGE_BUILD DEMO_LOAD_URL DEMO_ARGS LAYER

util::scratch_dir
# Dry runs name tarballs here; they must not create it.
export IMAGES_DIR="${TMP}/images"
MKIMAGE="${REPO_ROOT}/hack/mkimage.py"
HOST_ARCH="$(uname -m | sed 's/x86_64/amd64/; s/aarch64/arm64/')"
OTHER_ARCH=arm64
[[ "${HOST_ARCH}" == arm64 ]] && OTHER_ARCH=amd64

# The Node's architecture, read here without the function under test.
LABEL_ARCH="$(kubectl get nodes -o jsonpath='{.items[0].metadata.labels.kubernetes\.io/arch}')"
INFO_ARCH="$(kubectl get nodes -o jsonpath='{.items[0].status.nodeInfo.architecture}')"
# minikube's label on its Nodes: empty on the local cluster, the profile on a minikube.
LABEL_PROFILE="$(kubectl get nodes -o jsonpath='{.items[0].metadata.labels.minikube\.k8s\.io/name}')"
PROFILE="${LABEL_PROFILE:-minikube}"
log::info "first Node: label kubernetes.io/arch=${LABEL_ARCH}, nodeInfo.architecture=${INFO_ARCH}, minikube profile label '${LABEL_PROFILE}'; this machine ${HOST_ARCH}"

# --- decisions ---------------------------------------------------------------------------------
node_arch_is_the_nodes() {
  local got
  got="$(minikube::node_arch)" || return 1
  log::info "minikube::node_arch: ${got}"
  [[ -n "${got}" && "${got}" == "${LABEL_ARCH}" && "${got}" == "${INFO_ARCH}" ]] || return 1
  # The local cluster's Node is this machine.
  [[ "${KUBECONFIG}" != "${CLUSTER_KUBECONFIG}" || "${got}" == "${HOST_ARCH}" ]]
}

# maps ARCH PLATFORM: minikube::platform ARCH prints PLATFORM.
maps() { [[ "$(minikube::platform "$1")" == "$2" ]]; }

# refused ARCH: minikube::platform fails, prints nothing on stdout, names the supported ones.
refused() {
  local out rc=0
  out="$(minikube::platform "$1" 2>"${TMP}/refusal")" || rc=$?
  cat "${TMP}/refusal" >&2
  ((rc == 1)) && [[ -z "${out}" ]] && grep -q "not supported.*linux/amd64 and linux/arm64" "${TMP}/refusal"
}

# addons LAYERS EXPECTED: minikube::addons LAYERS prints EXPECTED (space-separated, may be empty).
addons() { [[ "$(minikube::addons "$1" | paste -sd' ' -)" == "$2" ]]; }

target_is() { [[ "$(minikube::target "$1" "$2")" == "$3" ]]; }

profile_is_the_nodes_label() {
  local p want=local
  p="$(minikube::profile)"
  log::info "minikube::profile on this cluster: '${p}'"
  [[ -z "${LABEL_PROFILE}" ]] || want=minikube
  [[ "${p}" == "${LABEL_PROFILE}" && "$(minikube::target yes "${p}")" == "${want}" ]]
}

image_build_is() { [[ "$(IMAGE_BUILD="${3:-}" minikube::image_build "$1")" == "$2" ]]; }
bad_image_build_is_refused() { ! IMAGE_BUILD=podman minikube::image_build Linux >/dev/null 2>&1; }

# --- hack/demo.sh --target minikube --dry-run ---------------------------------------------------
NS="selfheal-mk-dryrun-$$"
DEMO_OUT="${TMP}/demo-out"
# snapshot: what a demo run would change, in a form that changes only when one of those objects
# does (not with status updates, nor with other tests' namespaces coming and going): the demo's
# namespace, every object of controller/deploy-demo, kube-system/metrics-server (the addon),
# the Nodes' labels. Objects with a generation show it (it moves with the spec, not the status)
# plus their labels and annotations (kubectl apply writes one); the others their resourceVersion.
snapshot() {
  {
    kubectl get namespace "${NS}" --ignore-not-found -o json
    kubectl get -k "${REPO_ROOT}/controller/deploy-demo" --ignore-not-found -o json
    kubectl -n kube-system get deployment metrics-server --ignore-not-found -o json
    kubectl get nodes -o json
  } | python3 -c '
import hashlib, json, sys
dec, text, at = json.JSONDecoder(), sys.stdin.read(), 0
while True:
    while at < len(text) and text[at].isspace():
        at += 1
    if at >= len(text):
        break
    obj, at = dec.raw_decode(text, at)
    for o in obj.get("items", [obj]):
        m = o["metadata"]
        ident = o["kind"] + "/" + m.get("namespace", "") + "/" + m["name"]
        if o["kind"] == "Node":
            print(ident, json.dumps(m.get("labels", {}), sort_keys=True))
        elif "generation" in m:
            meta = json.dumps([m.get("labels"), m.get("annotations")], sort_keys=True).encode()
            print(ident, "generation", m["generation"], "metadata", hashlib.sha256(meta).hexdigest()[:12])
        else:
            print(ident, m["resourceVersion"])
'
}

demo_dry_run() {
  snapshot >"${TMP}/before"
  local rc=0
  "${REPO_ROOT}/hack/demo.sh" --target minikube --dry-run --namespace "${NS}" --out "${DEMO_OUT}" \
    >"${TMP}/demo.out" 2>&1 || rc=$?
  snapshot >"${TMP}/after"
  log::info "hack/demo.sh --target minikube --dry-run: exit ${rc}, $(wc -l <"${TMP}/demo.out") lines"
  ((rc == 0)) || { tail -n 20 "${TMP}/demo.out" >&2; return 1; }
}

# printed REGEX...: every extended regex matches a line of the demo's dry-run output.
printed() {
  local re
  for re in "$@"; do
    grep -Eq -- "${re}" "${TMP}/demo.out" || { log::error "no line matches: ${re}"; return 1; }
  done
}
not_printed() { ! grep -Eq -- "$1" "${TMP}/demo.out"; }

DRY='\[dry-run\] '
MK="${DRY}minikube --profile ${PROFILE}"
demo_prints_addons() {
  printed "${MK} addons enable metrics-server\$" \
    "${DRY}kubectl --namespace kube-system rollout status deployment/metrics-server --timeout=180s" &&
    not_printed 'addons enable ingress'
}

demo_prints_node_platform_images() {
  local a="${LABEL_ARCH}" name
  printed "node linux/${a}," "hack/image.sh --minikube --node-arch ${a} --platforms linux/${a} app controller\$" \
    "cargo build --release .* --target $(image_target "${a}")\$" || return 1
  for name in app controller; do
    printed "${DRY}python3 .*/hack/mkimage.py --export linux/${a} --from ${IMAGES_DIR}/${name}.tar --out ${IMAGES_DIR}/${name}-linux-${a}.tar\$" \
      "${MK} image load ${IMAGES_DIR}/${name}-linux-${a}.tar\$" || return 1
  done
  # Only the node's platform is built and loaded.
  not_printed "linux/$([[ "${a}" == amd64 ]] && echo arm64 || echo amd64)"
}

image_target() { case "$1" in amd64) echo x86_64-unknown-linux-gnu ;; arm64) echo aarch64-unknown-linux-musl ;; esac; }

demo_prints_chart_and_controller() {
  printed "${DRY}helm upgrade --install selfheal-app ${REPO_ROOT}/helm-chart --namespace ${NS} " \
    "${DRY}kubectl -n ${NS} rollout status deployment/selfheal-app" \
    "${DRY}kubectl apply -k ${REPO_ROOT}/controller/deploy-demo\$"
}

demo_prints_service_url_load() {
  printed "${MK} service --namespace ${NS} selfheal-app --url\$" \
    "${DRY}.*/selfheal-demo run --namespace ${NS} .*--load-url <first URL printed by minikube service --url>\$" || return 1
  # The service URL is asked for before the runner starts.
  [[ "$(grep -En -- "service --namespace ${NS} selfheal-app --url" "${TMP}/demo.out" | cut -d: -f1 | head -1)" -lt \
    "$(grep -En -- "${DRY}.*/selfheal-demo run" "${TMP}/demo.out" | cut -d: -f1 | head -1)" ]]
}

demo_changed_nothing() {
  if ! diff "${TMP}/before" "${TMP}/after" >&2; then
    log::error "the cluster changed during the dry run (diff above)"
    return 1
  fi
  ! kubectl get namespace "${NS}" >/dev/null 2>&1 && [[ ! -e "${DEMO_OUT}" && ! -e "${IMAGES_DIR}" ]] &&
    ! grep -Eq '^[0-9:]+ +\+ ' "${TMP}/demo.out" # util::run's "+ cmd" is a command that ran
}

load_url_given_skips_service() {
  local out
  out="$(DEMO_LOAD_URL=http://127.0.0.1:1/ "${REPO_ROOT}/hack/demo.sh" --target minikube --dry-run \
    --namespace "${NS}" --out "${DEMO_OUT}" 2>&1)" || return 1
  ! grep -q 'selfheal-app --url' <<<"${out}" && ! grep -q -- '--load-url' <<<"${out}"
}

layers_without_metrics_need_no_addon() {
  local out
  out="$("${REPO_ROOT}/hack/demo.sh" --target minikube --dry-run --layer 1,2 --namespace "${NS}" \
    --out "${DEMO_OUT}" 2>&1)" || return 1
  ! grep -q 'addons enable' <<<"${out}" && grep -q -- '--layer 1,2' <<<"${out}"
}

# --- hack/image.sh --minikube --dry-run ---------------------------------------------------------
# image_dry ARGS...: IMAGE_OUT = output, IMAGE_RC = exit code.
image_dry() {
  IMAGE_RC=0
  IMAGE_OUT="$("${REPO_ROOT}/hack/image.sh" --minikube --dry-run "$@" 2>&1)" || IMAGE_RC=$?
}

image_arm64_node() {
  image_dry --node-arch arm64 --platforms linux/arm64 app controller
  ((IMAGE_RC == 0)) &&
    grep -q -- '--target aarch64-unknown-linux-musl$' <<<"${IMAGE_OUT}" &&
    ! grep -q 'x86_64-unknown-linux-gnu' <<<"${IMAGE_OUT}" &&
    grep -q "mkimage.py --export linux/arm64 --from ${IMAGES_DIR}/app.tar --out ${IMAGES_DIR}/app-linux-arm64.tar" <<<"${IMAGE_OUT}" &&
    grep -q "\[dry-run\] minikube --profile ${PROFILE} image load ${IMAGES_DIR}/app-linux-arm64.tar$" <<<"${IMAGE_OUT}" &&
    grep -q "\[dry-run\] minikube --profile ${PROFILE} image load ${IMAGES_DIR}/controller-linux-arm64.tar$" <<<"${IMAGE_OUT}"
}

image_reads_the_node() {
  image_dry app
  ((IMAGE_RC == 0)) && grep -q "node platform linux/${LABEL_ARCH}\$" <<<"${IMAGE_OUT}" &&
    grep -q "\[dry-run\] minikube --profile ${PROFILE} image load ${IMAGES_DIR}/app-linux-${LABEL_ARCH}.tar$" <<<"${IMAGE_OUT}"
}

image_refuses_s390x() {
  image_dry --node-arch s390x app
  printf '%s\n' "${IMAGE_OUT}" | tail -n 2 >&2
  ((IMAGE_RC == 1)) && grep -q "node architecture 's390x' is not supported" <<<"${IMAGE_OUT}" &&
    ! grep -q 'cargo build\|image load' <<<"${IMAGE_OUT}"
}

image_refuses_missing_platform() {
  image_dry --node-arch arm64 --platforms linux/amd64 app
  ((IMAGE_RC == 1)) && grep -q 'the minikube node runs linux/arm64' <<<"${IMAGE_OUT}" && ! grep -q 'image load' <<<"${IMAGE_OUT}"
}

image_docker_builds_node_platform() {
  image_dry --docker --node-arch arm64 app
  ((IMAGE_RC == 0)) &&
    grep -q "\[dry-run\] docker buildx build --platform linux/arm64 --load -f ${REPO_ROOT}/app/Dockerfile -t localhost/selfheal-app:dev" <<<"${IMAGE_OUT}" &&
    grep -q "\[dry-run\] minikube --profile ${PROFILE} image load --daemon localhost/selfheal-app:dev$" <<<"${IMAGE_OUT}" &&
    ! grep -q "${IMAGES_DIR}" <<<"${IMAGE_OUT}"
}

image_docker_refuses_other_platforms() {
  image_dry --docker --node-arch arm64 --platforms linux/amd64,linux/arm64 app
  ((IMAGE_RC == 2))
}

image_dry_run_wrote_nothing() { [[ ! -e "${IMAGES_DIR}" ]]; }

# --- the single-platform tarball, for real ----------------------------------------------------
# A two-platform image like hack/image.sh's: each platform's layer holds /platform naming it
# (and the host's busybox in the host's layer, so mkimage.py's ELF check has work to do).
build_index() {
  local arch
  for arch in "${HOST_ARCH}" "${OTHER_ARCH}"; do
    mkdir -p "${TMP}/root-${arch}"
    echo "linux/${arch}" >"${TMP}/root-${arch}/platform"
  done
  [[ ! -x /bin/busybox ]] || cp /bin/busybox "${TMP}/root-${HOST_ARCH}/busybox"
  python3 "${MKIMAGE}" --tag localhost/selfheal-mk-test:dev --out "${TMP}/index.tar" --entrypoint /busybox \
    --root "linux/amd64=${TMP}/root-amd64" --root "linux/arm64=${TMP}/root-arm64" >&2
}

# exported ARCH: the --export tarball holds linux/ARCH only, by name, for ctr and docker load
# alike, and its layer is that platform's.
exported() {
  local arch="$1" tar="${TMP}/one-$1.tar" json
  python3 "${MKIMAGE}" --export "linux/${arch}" --from "${TMP}/index.tar" --out "${tar}" >&2 || return 1
  json="$(python3 "${MKIMAGE}" --inspect "${tar}")" || return 1
  INSPECT="${json}" python3 - "${arch}" "${tar}" <<'PY'
import io, json, os, sys, tarfile
arch, tar = sys.argv[1:]
got = json.loads(os.environ["INSPECT"])
want = f"linux/{arch}"
assert got["name"] == "localhost/selfheal-mk-test:dev", got["name"]
assert [p["platform"] for p in got["platforms"]] == [want], got["platforms"]
assert got["platforms"][0]["config_architecture"] == arch, got["platforms"][0]
assert got["docker_load"] == want, f"docker load would take {got['docker_load']}"
with tarfile.open(tar) as t:
    (layer,) = got["platforms"][0]["layers"]
    blob = t.extractfile("blobs/sha256/" + layer.split(":", 1)[1]).read()
    with tarfile.open(fileobj=io.BytesIO(blob)) as lt:
        assert lt.extractfile("platform").read().decode().strip() == want
    assert json.load(t.extractfile("manifest.json"))[0]["RepoTags"] == ["localhost/selfheal-mk-test:dev"]
print(f"{tar}: {want} only, docker load takes {got['docker_load']}", file=sys.stderr)
PY
}

export_refuses_missing_platform() {
  local rc=0
  python3 "${MKIMAGE}" --export linux/s390x --from "${TMP}/index.tar" --out "${TMP}/s390x.tar" 2>"${TMP}/err" || rc=$?
  cat "${TMP}/err" >&2
  ((rc != 0)) && [[ ! -e "${TMP}/s390x.tar" ]] && grep -q 'has no linux/s390x image' "${TMP}/err"
}

# A throw-away containerd (own root, state, socket; no CRI) running what minikube's containerd
# runtime runs on the file `minikube image load` copies to the node (pkg/minikube/cruntime/
# containerd.go, LoadImage): `ctr -n=k8s.io images import FILE`, no --platform.
start_containerd() {
  tests::containerd "${TMP}/containerd" || return 1
  CTR=("${SCRATCH_CTR[@]}")
}

ctr_imports_node_platform() {
  local out
  "${CTR[@]}" images import "${TMP}/one-${HOST_ARCH}.tar" >&2 || return 1
  out="$("${CTR[@]}" images check)"
  printf '%s\n' "${out}" >&2
  grep -Eq '^localhost/selfheal-mk-test:dev +application/vnd.oci.image.manifest.v1\+json .* complete .* true$' <<<"${out}" || return 1
  "${CTR[@]}" images rm --sync localhost/selfheal-mk-test:dev >/dev/null
}

ctr_refuses_other_platform() {
  local rc=0
  "${CTR[@]}" images import "${TMP}/one-${OTHER_ARCH}.tar" 2>"${TMP}/err" >&2 || rc=$?
  cat "${TMP}/err" >&2
  # minikube turns this error into "does not match arch of the container runtime".
  ((rc != 0)) && grep -q 'image might be filtered out' "${TMP}/err" &&
    [[ -z "$("${CTR[@]}" images ls -q)" ]]
}

check::run "minikube::node_arch reads the Node's architecture (${LABEL_ARCH}) from the cluster" node_arch_is_the_nodes
check::run "node arch arm64 -> image platform linux/arm64" maps arm64 linux/arm64
check::run "node arch amd64 -> image platform linux/amd64" maps amd64 linux/amd64
for arch in s390x riscv64 ppc64le arm ""; do
  check::run "node arch '${arch}' is refused (exit 1, names the supported platforms)" refused "${arch}"
done
check::run "addons for the seven layers: metrics-server, no ingress" addons "" metrics-server
check::run "addons for layer 5 (HPA): metrics-server" addons 5 metrics-server
check::run "addons for leak / ops (memory trend): metrics-server" addons leak,ops metrics-server
check::run "addons for layers 1,2,3,4,6,7,9,10,11: none" addons 1,2,3,4,6,7,9,10,11 ""
check::run "auto target: minikube command + minikube profile -> minikube" target_is yes minikube minikube
check::run "auto target: no minikube command -> local" target_is no minikube local
check::run "auto target: a context that is no minikube profile -> local" target_is yes "" local
check::run "minikube::profile is the Nodes' minikube label ('${LABEL_PROFILE}'): auto picks $([[ -n "${LABEL_PROFILE}" ]] && echo minikube || echo local)" profile_is_the_nodes_label
check::run "image build on Linux: tarball (no Docker)" image_build_is Linux tarball
check::run "image build on macOS: docker buildx" image_build_is Darwin docker
check::run "IMAGE_BUILD=docker wins on Linux" image_build_is Linux docker docker
check::run "IMAGE_BUILD=podman is refused" bad_image_build_is_refused

if check::run "hack/demo.sh --target minikube --dry-run exits 0" demo_dry_run; then
  check::run "demo dry run: enables metrics-server and waits for it, no ingress" demo_prints_addons
  check::run "demo dry run: builds and loads linux/${LABEL_ARCH} only (the Node's), as single-platform tarballs" demo_prints_node_platform_images
  check::run "demo dry run: helm release, rollout, controller (deploy-demo)" demo_prints_chart_and_controller
  check::run "demo dry run: the runner's --load-url comes from minikube service --url" demo_prints_service_url_load
  check::run "demo dry run changed nothing (its namespace, controller/deploy-demo's objects, metrics-server, Node labels; no file, no command run)" demo_changed_nothing
fi
check::run "demo dry run with DEMO_LOAD_URL: no minikube service, no --load-url added" load_url_given_skips_service
check::run "demo dry run of layers 1,2: no addon" layers_without_metrics_need_no_addon
check::run "image.sh --minikube --node-arch arm64: arm64 build, arm64 tarballs loaded" image_arm64_node
check::run "image.sh --minikube without --node-arch reads the Node (linux/${LABEL_ARCH})" image_reads_the_node
check::run "image.sh --minikube --node-arch s390x: refused (exit 1), nothing built" image_refuses_s390x
check::run "image.sh --minikube: node linux/arm64 not in --platforms is refused (exit 1)" image_refuses_missing_platform
check::run "image.sh --docker --minikube: buildx for the node's platform, load --daemon" image_docker_builds_node_platform
check::run "image.sh --docker --minikube --platforms with more than the node's: exit 2" image_docker_refuses_other_platforms
check::run "image.sh --minikube dry runs wrote no tarball" image_dry_run_wrote_nothing

if check::run "mkimage.py: a linux/amd64 + linux/arm64 index" build_index; then
  check::run "mkimage.py --export linux/${HOST_ARCH}: that platform only, docker load takes it" exported "${HOST_ARCH}"
  check::run "mkimage.py --export linux/${OTHER_ARCH}: that platform only, docker load takes it" exported "${OTHER_ARCH}"
  check::run "mkimage.py --export linux/s390x: refused, no file" export_refuses_missing_platform
  if [[ "$(id -u)" == 0 ]] && command -v containerd >/dev/null && command -v ctr >/dev/null; then
    if check::run "a throw-away containerd starts" start_containerd; then
      check::run "ctr -n=k8s.io images import (minikube's containerd loader) takes the linux/${HOST_ARCH} tarball" ctr_imports_node_platform
      check::run "ctr -n=k8s.io images import refuses the linux/${OTHER_ARCH} tarball on this ${HOST_ARCH} machine" ctr_refuses_other_platform
      util::stop "${SCRATCH_CTD_PID}"
    fi
  else
    log::info "containerd import checks not run: they need root and containerd (hack/tools.sh install apt)"
  fi
fi
check::summary minikube
