#!/usr/bin/env bash
# Builds the control-plane binaries of the test bed from their Go modules and caches
# them by version. A second run finds them and builds nothing.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  <- k8s.io/kubernetes
#   etcd                                                              <- go.etcd.io/etcd/server/v3
#   kwok                                                              <- sigs.k8s.io/kwok
#   helm                                                              <- helm.sh/helm/v3
#
# Each tool gets its own wrapper module so that Go never raises a dependency shared
# between them (see docs/testbed.md).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/versions.sh"

log() { printf '[build] %s\n' "$*" >&2; }

build_kubernetes() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
  local missing=0
  for b in "${want[@]}"; do [[ -x "$KUBE_BIN_DIR/$b" ]] || missing=1; done
  if [[ $missing == 0 ]]; then log "kubernetes $KUBE_VERSION cached in $KUBE_BIN_DIR"; return; fi

  local staging_version="v0.${KUBE_VERSION#v1.}"
  local work="$GUARDED_CACHE/build/kubernetes-$KUBE_VERSION"
  rm -rf "$work"; mkdir -p "$work"
  log "resolving k8s.io/kubernetes@$KUBE_VERSION"
  local gomod
  gomod="$(cd "$work" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  [[ -f "$gomod" ]] || { log "cannot find go.mod of k8s.io/kubernetes@$KUBE_VERSION"; exit 1; }
  local godebug
  godebug="$(grep -E '^godebug ' "$gomod" || true)"
  # Every k8s.io/... requirement at v0.0.0 is a staging module replaced by a local path upstream;
  # here each is replaced by its published release.
  local staging
  staging="$(grep -Eo 'k8s\.io/[a-z0-9-]+ v0\.0\.0$' "$gomod" | awk '{print $1}' | sort -u)"
  {
    echo "module guarded.dev/testbed/kubernetes"
    echo
    echo "go 1.24.0"
    [[ -n "$godebug" ]] && echo "$godebug"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    for m in $staging; do echo "replace $m => $m $staging_version"; done
  } > "$work/go.mod"
  cat > "$work/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  log "go mod tidy (kubernetes)"
  (cd "$work" && go mod tidy -e >/dev/null 2>"$work/tidy.log") || { cat "$work/tidy.log" >&2; exit 1; }
  local minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  local ld=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  mkdir -p "$KUBE_BIN_DIR.tmp"
  for b in "${want[@]}"; do
    log "building $b $KUBE_VERSION"
    (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $ld" -o "$KUBE_BIN_DIR.tmp/$b" "k8s.io/kubernetes/cmd/$b")
  done
  rm -rf "$KUBE_BIN_DIR"; mv "$KUBE_BIN_DIR.tmp" "$KUBE_BIN_DIR"
  log "kubernetes $KUBE_VERSION built into $KUBE_BIN_DIR"
}

build_etcd() {
  if [[ -x "$ETCD_BIN_DIR/etcd" ]]; then log "etcd $ETCD_VERSION cached"; return; fi
  local work="$GUARDED_CACHE/build/etcd-$ETCD_VERSION"
  rm -rf "$work"; mkdir -p "$work"
  cat > "$work/go.mod" <<GOMOD
module guarded.dev/testbed/etcd

go 1.24.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
GOMOD
  cat > "$work/tools.go" <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
  log "go mod tidy (etcd)"
  (cd "$work" && go mod tidy -e >/dev/null 2>"$work/tidy.log") || { cat "$work/tidy.log" >&2; exit 1; }
  mkdir -p "$ETCD_BIN_DIR.tmp"
  log "building etcd $ETCD_VERSION"
  (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ETCD_BIN_DIR.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$ETCD_BIN_DIR"; mv "$ETCD_BIN_DIR.tmp" "$ETCD_BIN_DIR"
}

build_kwok() {
  if [[ -x "$KWOK_BIN_DIR/kwok" ]]; then log "kwok $KWOK_VERSION cached"; return; fi
  mkdir -p "$KWOK_BIN_DIR.tmp"
  log "building kwok $KWOK_VERSION"
  GOBIN="$KWOK_BIN_DIR.tmp" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  rm -rf "$KWOK_BIN_DIR"; mv "$KWOK_BIN_DIR.tmp" "$KWOK_BIN_DIR"
}

# Helm's own Makefile stamps its version and the Kubernetes minor of its client-go (the default
# .Capabilities.KubeVersion of `helm template`, and what `helm lint` checks API versions against);
# without the stamps it would claim Kubernetes 1.20.
build_helm() {
  if [[ -x "$HELM_BIN_DIR/helm" ]]; then log "helm $HELM_VERSION cached"; return; fi
  local gomod client_go minor
  gomod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  [[ -f "$gomod" ]] || { log "cannot find go.mod of helm.sh/helm/v3@$HELM_VERSION"; exit 1; }
  client_go="$(awk '$1 == "k8s.io/client-go" {print $2}' "$gomod")"   # v0.<minor>.<patch>
  minor="${client_go#v0.}"; minor="${minor%%.*}"
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.metadata="
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  mkdir -p "$HELM_BIN_DIR.tmp"
  log "building helm $HELM_VERSION (Kubernetes 1.$minor)"
  GOBIN="$HELM_BIN_DIR.tmp" CGO_ENABLED=0 go install -trimpath -ldflags "$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  rm -rf "$HELM_BIN_DIR"; mv "$HELM_BIN_DIR.tmp" "$HELM_BIN_DIR"
}

what="${1:-all}"
case "$what" in
  all) build_etcd; build_kwok; build_kubernetes; build_helm ;;
  kubernetes) build_kubernetes ;;
  etcd) build_etcd ;;
  kwok) build_kwok ;;
  helm) build_helm ;;
  *) echo "usage: $0 [all|kubernetes|etcd|kwok|helm]" >&2; exit 2 ;;
esac
