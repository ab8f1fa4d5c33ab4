#!/usr/bin/env bash
# Builds the real Kubernetes components the realkube_ lab trials run, from the published Go
# modules pinned in this directory's go.mod (k8s.io/kubernetes + etcd) and coredns/go.mod
# (CoreDNS), into a cache OUTSIDE the repository, keyed by version:
#
#   ${DEVNET_KUBE_CACHE:-/var/cache/devnet-lab}/kubernetes-v1.37.2/bin/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy}
#   ${DEVNET_KUBE_CACHE:-/var/cache/devnet-lab}/etcd-v3.7.0/bin/etcd
#   ${DEVNET_KUBE_CACHE:-/var/cache/devnet-lab}/coredns-v1.14.6/bin/coredns
#
# Only what is missing (or was built from different inputs: see the .stamp files) is built, so
# a second run returns at once. Go's module and build caches stay where Go keeps them.
# Builds run niced with `go build -p 1` so that other work on a 2-core machine still progresses.
#
# Usage: tests/realkube/build.sh [--print] [--check-replaces] [NAME...]
#   NAME            build only these (kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
#                   etcd coredns); default: all
#   --print         build nothing, only print the paths
#   --check-replaces  only check that go.mod replaces every staging module k8s.io/kubernetes has
# Log lines go to stderr; stdout gets one NAME=PATH line per binary, for the test harness.
#
# Environment: DEVNET_KUBE_CACHE (cache root), REALKUBE_GO_P (go build -p, default 1),
# REALKUBE_NICE (nice level, default 19), REALKUBE_KUBELET_CGO (1: kubelet with cgo, as upstream),
# GOTOOLCHAIN (default local: the installed Go).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${DEVNET_KUBE_CACHE:-/var/cache/devnet-lab}
jobs=${REALKUBE_GO_P:-1}
nice_level=${REALKUBE_NICE:-19}
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
# -mod=readonly: a go.mod that would need changing fails the build instead of being rewritten.
export GOFLAGS="-trimpath -mod=readonly -buildvcs=false"
# The tags Kubernetes' own build (hack/lib/golang.sh) uses for release binaries.
tags=selinux,notest,grpcnotrace

log() { printf 'realkube: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", b - a }'; }

command -v go >/dev/null || die "go not found (Go >= 1.26 is needed)"

modinfo() { # DIR MODULE -> "version time gomod"
	(cd "$1" && go list -m -f '{{.Version}} {{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{else}}1970-01-01T00:00:00Z{{end}} {{.GoMod}}' "$2")
}

read -r kube_version kube_time kube_gomod < <(modinfo "$here" k8s.io/kubernetes) || die "cannot resolve k8s.io/kubernetes in $here/go.mod"
read -r etcd_version _ _ < <(modinfo "$here" go.etcd.io/etcd/server/v3) || die "cannot resolve etcd in $here/go.mod"
read -r coredns_version _ _ < <(modinfo "$here/coredns" github.com/coredns/coredns) || die "cannot resolve CoreDNS in $here/coredns/go.mod"

# Every `k8s.io/X => ./staging/src/k8s.io/X` of k8s.io/kubernetes's go.mod must be replaced here
# with the published k8s.io/X v0.MINOR.PATCH; a missing one shows up as "unknown revision v0.0.0".
check_replaces() {
	local staging=v0${kube_version#v1} bad=0 name want got
	for name in $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$kube_gomod"); do
		# Modules k8s.io/kubernetes only replaces but never requires are not needed (and the two
		# sample-* ones are not all served by the proxy).
		grep -Eq "^[[:space:]]*$name v0\.0\.0([[:space:]]|$)" "$kube_gomod" || continue
		want="$name => $name $staging"
		got=$(awk -v n="$name" '$1 == n && $2 == "=>" {print $1, $2, $3, $4}' "$here/go.mod")
		if [[ $got != "$want" ]]; then
			log "go.mod: want '$want', have '${got:-nothing}'"
			bad=1
		fi
	done
	return $bad
}

if [[ ${1-} == --check-replaces ]]; then
	check_replaces && log "go.mod replaces every staging module of k8s.io/kubernetes $kube_version"
	exit
fi
print_only=0
if [[ ${1-} == --print ]]; then print_only=1; shift; fi

kube_dir=$cache/kubernetes-$kube_version/bin
etcd_dir=$cache/etcd-$etcd_version/bin
coredns_dir=$cache/coredns-$coredns_version/bin

# name -> "module-dir package output-dir cgo ldflags"
minor=${kube_version#v1.}; minor=${minor%%.*}
kube_ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
	# As hack/lib/version.sh does; the build date is the release's commit time (reproducible).
	# gitCommit is left empty (not "$Format:%H$"): the module proxy does not say which commit a
	# tag is.
	kube_ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
	kube_ldflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=archive"
	kube_ldflags+=" -X $pkg.buildDate=$kube_time"
done
declare -A spec=(
	[kube-apiserver]="$here k8s.io/kubernetes/cmd/kube-apiserver $kube_dir 0"
	[kube-controller-manager]="$here k8s.io/kubernetes/cmd/kube-controller-manager $kube_dir 0"
	[kube-proxy]="$here k8s.io/kubernetes/cmd/kube-proxy $kube_dir 0"
	[kube-scheduler]="$here k8s.io/kubernetes/cmd/kube-scheduler $kube_dir 0"
	# Kubernetes' release kubelet is built with cgo (the only one); here it is static like the
	# others unless REALKUBE_KUBELET_CGO=1: a cgo build shares no compiled package with the
	# static ones (everything above net is recompiled), which cost 6 more minutes cold.
	[kubelet]="$here k8s.io/kubernetes/cmd/kubelet $kube_dir ${REALKUBE_KUBELET_CGO:-0}"
	[etcd]="$here go.etcd.io/etcd/server/v3 $etcd_dir 0"
	[coredns]="$here/coredns github.com/coredns/coredns $coredns_dir 0"
)
declare -A ldflags=(
	[kube-apiserver]=$kube_ldflags [kube-controller-manager]=$kube_ldflags
	[kube-proxy]=$kube_ldflags [kube-scheduler]=$kube_ldflags [kubelet]=$kube_ldflags
	[etcd]="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$etcd_version"
	[coredns]="-s -w -X github.com/coredns/coredns/coremain.GitCommit=module-$coredns_version"
)
all=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy etcd coredns)
names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=("${all[@]}")
for name in "${names[@]}"; do [[ -n ${spec[$name]-} ]] || die "unknown binary '$name' (known: ${all[*]})"; done

print_paths() {
	local name
	for name in "${names[@]}"; do
		read -r _ _ dir _ <<<"${spec[$name]}"
		printf '%s=%s\n' "$name" "$dir/$name"
	done
}
if [[ $print_only == 1 ]]; then print_paths; exit; fi

check_replaces || die "go.mod's replace block does not match k8s.io/kubernetes $kube_version (see above)"

mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9 # one build at a time per cache

goversion=$(go env GOVERSION GOOS GOARCH | tr '\n' ' ')
cc_ok=0
command -v "$(go env CC)" >/dev/null 2>&1 && cc_ok=1

# What a binary was built from: if this changes, the binary is rebuilt.
stamp_of() { # NAME MODDIR PKG CGO
	{
		printf '%s\n' "$1 $3 cgo=$4 go=$goversion flags=$GOFLAGS tags=$tags ldflags=${ldflags[$1]}"
		cat "$2/go.mod" "$2/go.sum"
	} | sha256sum | cut -d' ' -f1
}

total_start=$(date +%s.%N)
built=0
for name in "${names[@]}"; do
	read -r moddir pkg dir cgo <<<"${spec[$name]}"
	[[ $cgo == 1 && $cc_ok == 0 ]] && cgo=0
	out=$dir/$name
	stamp=$(stamp_of "$name" "$moddir" "$pkg" "$cgo")
	if [[ -x $out && -f $out.stamp && $(<"$out.stamp") == "$stamp" ]]; then
		continue
	fi
	mkdir -p "$dir"
	log "building $name ($pkg, cgo=$cgo) -> $out"
	start=$(date +%s.%N)
	tmp=$(mktemp "$dir/.$name.XXXXXX")
	if ! (cd "$moddir" && CGO_ENABLED=$cgo nice -n "$nice_level" \
		go build -p "$jobs" -tags "$tags" -ldflags "${ldflags[$name]}" -o "$tmp" "$pkg"); then
		rm -f "$tmp"
		die "building $name failed"
	fi
	chmod 0755 "$tmp"
	mv -f "$tmp" "$out"
	printf '%s\n' "$stamp" >"$out.stamp"
	end=$(date +%s.%N)
	log "built $name in $(elapsed "$start" "$end")s ($(du -m "$out" | cut -f1) MB)"
	built=$((built + 1))
done
if [[ $built -gt 0 ]]; then
	log "built $built binaries in $(elapsed "$total_start" "$(date +%s.%N)")s"
else
	log "all binaries up to date in $cache"
fi
print_paths
