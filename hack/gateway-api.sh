#!/usr/bin/env bash
# The Gateway API's CRDs (standard channel) for the test bed, from the sigs.k8s.io/gateway-api Go module at a
# pinned release, cached by version like the binaries of hack/build-binaries.sh. No gateway controller is
# installed: the traffic simulator plays the data plane and honours HTTPRoute weights (guarded/sim/routes.py).
#
#   hack/gateway-api.sh dir     print the directory holding the CRDs (fetched on first use)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/versions.sh"   # GUARDED_CACHE, GOTOOLCHAIN, GOFLAGS

# The release whose standard-channel CRDs the test bed serves; change it here and the cache key changes too.
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
GATEWAY_API_DIR="$GUARDED_CACHE/crds/gateway-api-$GATEWAY_API_VERSION"

log() { printf '[gateway-api] %s\n' "$*" >&2; }

fetch() {
  if [[ -f "$GATEWAY_API_DIR/.complete" ]]; then return; fi
  local work module
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  log "fetching sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION"
  module="$(cd "$work" && go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" \
    | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
  [[ -d "$module/config/crd/standard" ]] || { log "no config/crd/standard in the module at $module"; exit 1; }
  rm -rf "$GATEWAY_API_DIR"; mkdir -p "$GATEWAY_API_DIR"
  cp "$module"/config/crd/standard/*.yaml "$GATEWAY_API_DIR/"
  chmod -R u+w "$GATEWAY_API_DIR"   # the module cache is read-only
  touch "$GATEWAY_API_DIR/.complete"
}

case "${1:-}" in
  dir) fetch; echo "$GATEWAY_API_DIR" ;;
  *) echo "usage: $0 dir" >&2; exit 2 ;;
esac
