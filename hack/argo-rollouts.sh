#!/usr/bin/env bash
# Builds the Argo Rollouts controller from its Go module at the pinned release and caches it, with
# the release's CRDs, under ~/.cache/guarded-rollouts/bin/argo-rollouts-<version>/. bench/peers.py
# runs it as a local process against the test bed. A second run finds it and builds nothing.
#
#   rollouts-controller, crds/*.yaml  <- github.com/argoproj/argo-rollouts
#
# As hack/build-binaries.sh does for Kubernetes: a wrapper module that requires the release and
# copies its go.mod's replace block (Argo pins k8s.io/* there), so the build resolves the same
# dependencies the release was tested with. Argo's go.mod asks for a newer Go than the test bed's,
# so this build alone uses $ARGO_ROLLOUTS_GOTOOLCHAIN. It builds at low priority (nice 10).
#
#   hack/argo-rollouts.sh          build when missing, print the directory
#   hack/argo-rollouts.sh dir      print the directory only
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/versions.sh"

log() { printf '[argo-rollouts] %s\n' "$*" >&2; }

build_argo_rollouts() {
  local module=github.com/argoproj/argo-rollouts
  if [[ -x "$ARGO_ROLLOUTS_BIN_DIR/rollouts-controller" && -d "$ARGO_ROLLOUTS_BIN_DIR/crds" ]]; then
    log "argo-rollouts $ARGO_ROLLOUTS_VERSION cached in $ARGO_ROLLOUTS_BIN_DIR"; return
  fi
  export GOTOOLCHAIN="$ARGO_ROLLOUTS_GOTOOLCHAIN"
  local work="$GUARDED_CACHE/build/argo-rollouts-$ARGO_ROLLOUTS_VERSION"
  rm -rf "$work"; mkdir -p "$work"
  log "resolving $module@$ARGO_ROLLOUTS_VERSION"
  local info gomod src
  info="$(cd "$work" && go mod download -json "$module@$ARGO_ROLLOUTS_VERSION")"
  gomod="$(sed -n 's/.*"GoMod": "\(.*\)",*/\1/p' <<<"$info")"
  src="$(sed -n 's/.*"Dir": "\(.*\)",*/\1/p' <<<"$info")"
  [[ -f "$gomod" && -d "$src/manifests/crds" ]] || { log "cannot find go.mod or manifests of $module@$ARGO_ROLLOUTS_VERSION"; exit 1; }
  local go_line
  go_line="$(grep -E '^go ' "$gomod")"
  {
    echo "module guarded.dev/peers/argo-rollouts"
    echo
    echo "$go_line"
    echo
    echo "require $module $ARGO_ROLLOUTS_VERSION"
    echo
    # The release's replace block, verbatim (single-line replaces too).
    awk '/^replace \($/ {on=1} on {print} on && /^\)$/ {on=0} /^replace [^(]/ {print}' "$gomod"
  } > "$work/go.mod"
  cat > "$work/tools.go" <<'GO'
//go:build tools

package tools

import _ "github.com/argoproj/argo-rollouts/cmd/rollouts-controller"
GO
  log "go mod tidy (argo-rollouts, $GOTOOLCHAIN)"
  (cd "$work" && go mod tidy -e >/dev/null 2>"$work/tidy.log") || { cat "$work/tidy.log" >&2; exit 1; }
  local ld="-s -w -X $module/utils/version.version=${ARGO_ROLLOUTS_VERSION#v}"
  ld+=" -X $module/utils/version.gitTag=$ARGO_ROLLOUTS_VERSION -X $module/utils/version.gitTreeState=clean"
  rm -rf "$ARGO_ROLLOUTS_BIN_DIR.tmp"; mkdir -p "$ARGO_ROLLOUTS_BIN_DIR.tmp/crds"
  log "building rollouts-controller $ARGO_ROLLOUTS_VERSION"
  (cd "$work" && CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "$ld" \
    -o "$ARGO_ROLLOUTS_BIN_DIR.tmp/rollouts-controller" "$module/cmd/rollouts-controller")
  cp "$src"/manifests/crds/*-crd.yaml "$ARGO_ROLLOUTS_BIN_DIR.tmp/crds/"
  chmod -R u+w "$ARGO_ROLLOUTS_BIN_DIR.tmp/crds"
  rm -rf "$ARGO_ROLLOUTS_BIN_DIR"; mv "$ARGO_ROLLOUTS_BIN_DIR.tmp" "$ARGO_ROLLOUTS_BIN_DIR"
  log "argo-rollouts $ARGO_ROLLOUTS_VERSION built into $ARGO_ROLLOUTS_BIN_DIR"
}

case "${1:-build}" in
  build) build_argo_rollouts; echo "$ARGO_ROLLOUTS_BIN_DIR" ;;
  dir) echo "$ARGO_ROLLOUTS_BIN_DIR" ;;
  *) echo "usage: $0 [build|dir]" >&2; exit 2 ;;
esac
