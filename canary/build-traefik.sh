#!/usr/bin/env bash
# Builds Traefik (a router that understands the nginx canary annotations through its Kubernetes
# Ingress NGINX provider, and Gateway API HTTPRoute weights) from its Go module, for
# e2e/canary.sh's data-plane checks. The module cannot be built as published here, for three
# reasons, each patched in a copy under ~/.cache/selfheal/build (never in this repository):
#   1. github.com/traefik/traefik/dynamic/ext is a nested module, left out of the v3 module zip
#      and not served on its own: recreated as the upstream stub (four empty types).
#   2. github.com/containous/go-http-auth (the basic/digest auth fork) is refused by the module
#      proxy: upstream github.com/abbot/go-http-auth v0.4.0 instead; the two fork-only calls
#      become "reject" (basic auth) and the plain challenge (digest auth). Auth middlewares unused here.
#   3. 14 DNS-provider SDKs that lego's ACME DNS-challenge registry imports are refused: that
#      registry is cut out (a DNS challenge then fails with a message). ACME is unused here.
# Installs ~/.cache/selfheal/tools/traefik-<version>/traefik, linked into ~/.cache/selfheal/bin.
# Prerequisites: go >= 1.26; ~15 min of one core cold.
# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

usage() {
  cat <<EOF2
Usage: canary/build-traefik.sh [-h|--help]

Builds Traefik \${TRAEFIK_VERSION} (default v3.7.13) from its Go module with the patches listed
in this script's header, into ${SELFHEAL_HOME}/tools/traefik-<version>/traefik.

Environment: TRAEFIK_VERSION, SELFHEAL_HOME.

Example:
  canary/build-traefik.sh && hack/image.sh --import traefik && e2e/canary.sh
EOF2
}
util::no_arguments "$@"
util::require_tools go python3

VERSION="${TRAEFIK_VERSION:-v3.7.13}"
DEST="${SELFHEAL_HOME}/tools/traefik-${VERSION}"
if [[ -x "${DEST}/traefik" ]]; then
  ln -sfn "${DEST}/traefik" "${SELFHEAL_BIN}/traefik"
  log::ok "traefik ${VERSION} already built: ${DEST}/traefik"
  exit 0
fi
SRC="${SELFHEAL_HOME}/build/traefik-${VERSION}"
log::step "downloading github.com/traefik/traefik/v3@${VERSION}"
MOD_DIR="$(go mod download -json "github.com/traefik/traefik/v3@${VERSION}" | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
rm -rf "${SRC}"
mkdir -p "$(dirname "${SRC}")"
cp -r "${MOD_DIR}" "${SRC}"
chmod -R u+w "${SRC}"

log::step "patching (see this script's header for why)"
mkdir -p "${SRC}/pkg/config/dynamic/ext"
printf 'module github.com/traefik/traefik/dynamic/ext\n\ngo 1.24.0\n' >"${SRC}/pkg/config/dynamic/ext/go.mod"
cat >"${SRC}/pkg/config/dynamic/ext/ext.go" <<'GO'
package ext

// HTTP is a dynamic.HTTP extension.
type HTTP struct{}

// Router is a dynamic.Router extension.
type Router struct{}

// RouterIng is a RouterIng extension for ingress provider annotations.
type RouterIng struct{}

// ToRouter converts RouterIng to a Router.
func (r RouterIng) ToRouter() Router { return Router{} }
GO
python3 - "${SRC}" <<'PY'
import re, sys
src = sys.argv[1]
def patch(path, old, new):
    p = f"{src}/{path}"
    s = open(p).read()
    if old not in s:
        sys.exit(f"patch target not found in {path}: {old!r} (another Traefik version?)")
    open(p, "w").write(s.replace(old, new, 1))
patch("go.mod", re.search(r"github.com/abbot/go-http-auth => \S+ \S+", open(f"{src}/go.mod").read()).group(0),
      "github.com/abbot/go-http-auth => github.com/abbot/go-http-auth v0.4.0")
patch("pkg/middlewares/auth/basic_auth.go", "checkSecret:       goauth.CheckSecret,",
      "checkSecret:       func(string, string) bool { return false },")
patch("pkg/middlewares/auth/digest_auth.go", "d.auth.RequireAuthStale(rw, req)", "d.auth.RequireAuth(rw, req)")
patch("pkg/provider/acme/provider.go", '\t"github.com/go-acme/lego/v5/providers/dns"\n', "")
patch("pkg/provider/acme/provider.go", "provider, err = dns.NewDNSChallengeProviderByName(p.DNSChallenge.Provider)",
      'err = fmt.Errorf("DNS challenge provider %q: not built into this binary", p.DNSChallenge.Provider)')
PY

log::step "building (go build -p 1: the machine is shared)"
mkdir -p "${DEST}"
(cd "${SRC}" && nice -n 19 go build -mod=mod -p 1 -trimpath -ldflags "-X github.com/traefik/traefik/v3/pkg/version.Version=${VERSION}" \
  -o "${DEST}/traefik" ./cmd/traefik) || log::fatal "traefik build failed"
mkdir -p "${SELFHEAL_BIN}"
ln -sfn "${DEST}/traefik" "${SELFHEAL_BIN}/traefik"
log::ok "built ${DEST}/traefik ($("${DEST}/traefik" version | head -1 | tr -s ' '))"
