#!/usr/bin/env bash
# Builds Helm, which the relay chart's tests run (`helm lint`, `helm template`), from its
# published Go module pinned in this directory's go.mod (`tool helm.sh/helm/v3/cmd/helm`), into
# a cache OUTSIDE the repository, keyed by version:
#
#   ${DEVNET_HELM_CACHE:-/var/cache/devnet-lab/helm}/v3.22.0/helm
#
# Nothing is built when the binary is there and was built from the same inputs (the .stamp
# file: go.mod, go.sum, Go version, flags), so a second run returns at once. Go's module and
# build caches stay where Go keeps them. The build runs niced with `go build -p 1` so other
# work on a 2-core machine still progresses.
#
# Usage: tests/lab/helm/build.sh [--print]
#   --print   build nothing, only print the path
# Log lines go to stderr; stdout gets one line, helm=PATH, for the tests.
#
# Environment: DEVNET_HELM_CACHE (cache root), HELM_GO_P (go build -p, default 1),
# HELM_NICE (nice level, default 19), GOTOOLCHAIN (default local: the installed Go).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${DEVNET_HELM_CACHE:-/var/cache/devnet-lab/helm}
jobs=${HELM_GO_P:-1}
nice_level=${HELM_NICE:-19}
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
# -mod=readonly: a go.mod that would need changing fails the build instead of being rewritten.
export GOFLAGS="-trimpath -mod=readonly -buildvcs=false"

log() { printf 'helm-build: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }

command -v go >/dev/null || die "go not found (Go >= 1.26 is needed)"

modver() { (cd "$here" && go list -m -f '{{.Version}}' "$1"); }
version=$(modver helm.sh/helm/v3) || die "cannot resolve helm.sh/helm/v3 in $here/go.mod"
client_go=$(modver k8s.io/client-go) || die "cannot resolve k8s.io/client-go in $here/go.mod"

out=$cache/$version/helm
if [[ ${1-} == --print ]]; then
	printf 'helm=%s\n' "$out"
	exit
fi

# As Helm's Makefile does: its version, and the Kubernetes version `helm lint` and
# `helm template` assume (from the client-go it is built with: v0.37.x is Kubernetes 1.37).
k8s_minor=${client_go#v0.}; k8s_minor=${k8s_minor%%.*}
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=archive"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
	ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done

mkdir -p "$cache/$version"
exec 9>"$cache/.build.lock"
flock 9 # one build at a time per cache

stamp=$({
	printf '%s\n' "helm $version go=$(go env GOVERSION GOOS GOARCH | tr '\n' ' ') flags=$GOFLAGS ldflags=$ldflags"
	cat "$here/go.mod" "$here/go.sum"
} | sha256sum | cut -d' ' -f1)
if [[ -x $out && -f $out.stamp && $(<"$out.stamp") == "$stamp" ]]; then
	log "helm $version is up to date in $out"
else
	log "building helm $version -> $out"
	start=$(date +%s.%N)
	tmp=$(mktemp "$cache/$version/.helm.XXXXXX")
	if ! (cd "$here" && CGO_ENABLED=0 nice -n "$nice_level" \
		go build -p "$jobs" -ldflags "$ldflags" -o "$tmp" helm.sh/helm/v3/cmd/helm); then
		rm -f "$tmp"
		die "building helm failed"
	fi
	chmod 0755 "$tmp"
	mv -f "$tmp" "$out"
	printf '%s\n' "$stamp" >"$out.stamp"
	log "built helm $version in $(elapsed "$start" "$(date +%s.%N)")s ($(du -m "$out" | cut -f1) MB)"
fi
printf 'helm=%s\n' "$out"
