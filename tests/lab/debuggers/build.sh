#!/usr/bin/env bash
# Builds the debuggees `lab.sh realdebug` runs in real pods, from the sources
# beside this script, into a cache OUTSIDE the repository:
#
#   ${DEVNET_KUBE_CACHE:-/var/cache/devnet-lab}/debuggers/
#     java/Main.class   javac -g (Debian's openjdk-17-jdk-headless); Main.java beside it
#     py/app.py
#     node/app.js
#     go/hello          go build -gcflags='all=-N -l' (the installed Go); main.go beside it
#     debugpy/          debugpy from PyPI, `pip install --target` with Debian's
#                       /usr/bin/python3 (never into the system: PEP 668)
#
# The pods mount this directory read-only at /app, and the host's /usr for the
# runtimes (java, python3, node, dlv): nothing of a runtime is copied here.
# Sources are copied next to what is built from them, and built there, so the
# debug info names files that exist on the node and on the laptop alike (dlv's
# and jdb's `list`).
#
# Only what is missing, or was built from other inputs (sources, tool
# versions: see the .stamp files), is built; a second run returns at once.
#
# Usage: tests/lab/debuggers/build.sh [--print]
#   --print   build nothing, only print the paths
# Log lines go to stderr; stdout gets NAME=PATH lines for the lab and the tests:
#   dir java py node go debugpy (in the cache); jdk (Debian's JDK 17: its
#   bin/java runs the JVM pods), dlv (the pods' and the laptop's Delve), jdb
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${DEVNET_KUBE_CACHE:-/var/cache/devnet-lab}
out=$cache/debuggers
debugpy_version=1.8.22
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}

# Delve: Debian's package (bookworm: 1.20.2). It is older than the Go that
# builds the debuggee (1.26), so it runs with --check-go-version=false and
# warns "version of Delve is too old"; against a Go 1.26 binary it still lists
# goroutines, sets breakpoints, steps, prints variables and serves DAP, which
# is what the lab needs (`call tick()` works too). Its known gaps with Go
# 1.26, which Delve 1.27.2 from the module proxy does not have: goroutine wait
# reasons are mislabelled (time.Sleep shows [chan receive]: Go renumbered
# them) and `stepout` shows no return values; its log says "could not patch
# runtime.mallogc: no type entry found". The pods run this same binary (the
# host's /usr), and so does the laptop's `dlv connect`.
dlv=/usr/bin/dlv
# JDK 17 by its own path, not /usr/bin/java (an alternatives link that may
# name another JDK): the JVM pods run $jdk/bin/java and mount its /etc part.
jdk=/usr/lib/jvm/java-17-openjdk-$(dpkg --print-architecture)

log() { printf 'debuggers: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

print_paths() {
	cat <<PATHS
dir=$out
java=$out/java
py=$out/py/app.py
node=$out/node/app.js
go=$out/go/hello
debugpy=$out/debugpy
jdk=$jdk
dlv=$dlv
jdb=$jdk/bin/jdb
PATHS
}
if [[ ${1-} == --print ]]; then print_paths; exit; fi

# The runtimes the pods use from the host's /usr, and the clients.
for tool in "$jdk/bin/java":openjdk-17-jdk-headless "$jdk/bin/javac":openjdk-17-jdk-headless "$jdk/bin/jdb":openjdk-17-jdk-headless \
	/usr/bin/python3:python3 /usr/bin/node:nodejs "$dlv":delve; do
	[[ -x ${tool%%:*} ]] || die "${tool%%:*} is missing (apt-get install ${tool#*:})"
done
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || die "pip for /usr/bin/python3 is missing (apt-get install python3-pip)"
go=$(command -v go || echo /usr/local/go/bin/go)
[[ -x $go ]] || die "go not found (Go >= 1.26 is needed)"

umask 022 # the pods run as an unprivileged user
mkdir -p "$out"
exec 9>"$cache/.debuggers.lock"
flock 9

# stamp_of PART TOOL-VERSION FILES...: what PART is built from.
stamp_of() {
	local part=$1 version=$2; shift 2
	{ printf '%s\n' "$part" "$version"; cat "$@"; } | sha256sum | cut -d' ' -f1
}
fresh() { [[ -f $out/.$1.stamp && $(<"$out/.$1.stamp") == "$2" ]]; }
# build PART STAMP: PART's directory is made anew, then build_PART fills it;
# the stamp is written last, so an interrupted build is redone.
built=0
build() {
	local part=$1 stamp=$2 start=$SECONDS
	fresh "$part" "$stamp" && return 0
	log "building $part -> $out/$part"
	rm -rf "${out:?}/$part" "$out/.$part.stamp"
	mkdir -p "$out/$part"
	"build_$part" "$out/$part" || die "building $part failed"
	printf '%s\n' "$stamp" >"$out/.$part.stamp"
	log "built $part in $((SECONDS - start))s"
	built=$((built + 1))
}

build_java() {
	cp "$here/java/Main.java" "$1/"
	(cd "$1" && "$jdk/bin/javac" -g --release 17 -d . Main.java)
}
build_py() { cp "$here/py/app.py" "$1/"; }
build_node() { cp "$here/node/app.js" "$1/"; }
build_go() {
	cp "$here/go/main.go" "$here/go/go.mod" "$1/"
	(cd "$1" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false "$go" build -gcflags='all=-N -l' -o hello .)
}
build_debugpy() {
	# --target: into this directory only (Debian marks its Python externally
	# managed, PEP 668; --target is not the system). Compiled here, as the
	# pods' copy is read-only.
	PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore /usr/bin/python3 -m pip install --quiet --no-deps --target "$1" \
		"debugpy==$debugpy_version" >&2
}

build java "$(stamp_of java "$("$jdk/bin/javac" -version 2>&1)" "$here/java/Main.java")"
build py "$(stamp_of py - "$here/py/app.py")"
build node "$(stamp_of node - "$here/node/app.js")"
build go "$(stamp_of go "$("$go" env GOVERSION GOOS GOARCH | tr '\n' ' ') $out" "$here/go/main.go" "$here/go/go.mod")"
build debugpy "$(stamp_of debugpy "$debugpy_version $(/usr/bin/python3 --version 2>&1)" /dev/null)"
[[ $built -gt 0 ]] || log "all up to date in $out"
print_paths
