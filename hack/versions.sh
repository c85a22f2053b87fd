# Pinned versions of everything the test bed builds or installs.
# Sourced by the other hack/ scripts; change a version here and the cache key changes with it.
KUBE_VERSION="${KUBE_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.7.0}"
# Helm only renders, lints and installs charts/guarded-rollouts in the tests; its go.mod has no replace.
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
# Argo Rollouts, the peer bench/peers.py compares against (hack/argo-rollouts.sh builds its controller);
# its go.mod wants a newer Go than the test bed's, so it names the toolchain it is built with.
ARGO_ROLLOUTS_VERSION="${ARGO_ROLLOUTS_VERSION:-v1.10.2}"
ARGO_ROLLOUTS_GOTOOLCHAIN="${ARGO_ROLLOUTS_GOTOOLCHAIN:-go1.27.3}"

GUARDED_CACHE="${GUARDED_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/guarded-rollouts}"
KUBE_BIN_DIR="$GUARDED_CACHE/bin/kubernetes-$KUBE_VERSION"
ETCD_BIN_DIR="$GUARDED_CACHE/bin/etcd-$ETCD_VERSION"
KWOK_BIN_DIR="$GUARDED_CACHE/bin/kwok-$KWOK_VERSION"
HELM_BIN_DIR="$GUARDED_CACHE/bin/helm-$HELM_VERSION"
ARGO_ROLLOUTS_BIN_DIR="$GUARDED_CACHE/bin/argo-rollouts-$ARGO_ROLLOUTS_VERSION"

export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
