#!/usr/bin/env bash
# Every test devnet has, from a fresh Debian machine: installs what the tests
# need, checks formatting and lints, builds, and runs the unit tests and the
# end-to-end lab tests (network namespaces; needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ $(id -u) != 0 ]]; then
  echo "run-all.sh needs root: the lab builds network namespaces and TUN devices (try: sudo $0)" >&2
  exit 1
fi

# Lab tools: containerd, runc and the CNI plugins (the lab's real node; never
# started as services), busybox-static (its test images), jq and openssl (its
# control plane's objects and certificates), iproute2 (namespaces, veth),
# iptables (kube-proxy DNAT inside the lab's namespaces only), dnsmasq (the cluster and office DNS), bird2 (Calico's
# BIRD and the office switch), dig and curl (clients), setpriv (devnetd as its
# service unit starts it, and clients as desktop users). The debuggers of
# `lab.sh realdebug` and their clients, whose pods run the host's own /usr:
# OpenJDK 17 (java, javac, jdb), python3 and pip (debugpy, pip-installed into
# the lab's cache), Node.js, and Debian's Delve. For the packages' tests:
# debootstrap (a clean Debian root), systemd-container (systemd-nspawn boots
# it), rpm (rpm's own checks and scriptlets),
# dpkg-dev (dpkg-shlibdeps), desktop-file-utils, binutils (strip).
need=()
jdk=/usr/lib/jvm/java-17-openjdk-$(dpkg --print-architecture)/bin
for tool in ip:iproute2 ss:iproute2 openssl:openssl jq:jq containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins /bin/busybox:busybox-static iptables:iptables dnsmasq:dnsmasq-base dig:dnsutils curl:curl pkill:procps bird:bird2 setpriv:util-linux nsenter:util-linux \
  "$jdk/javac:openjdk-17-jdk-headless" /usr/bin/python3:python3 /usr/bin/node:nodejs /usr/bin/dlv:delve \
  pkg-config:pkg-config WebKitWebDriver:webkit2gtk-driver Xvfb:xvfb dbus-daemon:dbus dunst:dunst gdbus:libglib2.0-bin \
  /usr/bin/chromium:chromium \
  debootstrap:debootstrap systemd-nspawn:systemd-container rpm:rpm dpkg-shlibdeps:dpkg-dev desktop-file-validate:desktop-file-utils strip:binutils; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
/usr/bin/python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# The tray app builds against WebKitGTK (Tauri v2 on Linux).
pkg-config --exists webkit2gtk-4.1 2>/dev/null || need+=(libwebkit2gtk-4.1-dev)
if ((${#need[@]})); then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# The real node's kubelet evicts pods when the disk runs out (the lab sets
# its thresholds at 1 %); the build itself needs about 12 GiB.
avail_gib=$(( $(df --output=avail -k . | tail -1) / 1024 / 1024 ))
if (( avail_gib < 15 )); then
  echo "warning: only ${avail_gib} GiB free here; the build and the real node need about 15 GiB (pods evicted for disk pressure fail the realkube and preflight trials)" >&2
fi

# systemd-resolved for the lab's resolved trials (unpacked, never installed).
bash tests/lab/fetch-resolved.sh

# The real Kubernetes control plane for the realkube trials, built from its Go
# modules into /var/cache/devnet-lab (once per version; seconds when cached).
command -v go >/dev/null || { echo "Go (>= 1.26) is needed to build the lab's Kubernetes" >&2; exit 1; }
REALKUBE_GO_P=2 REALKUBE_NICE=0 bash tests/realkube/build.sh >/dev/null
# The debuggees of `lab.sh realdebug` (and debugpy), cached there too.
bash tests/lab/debuggers/build.sh >/dev/null
# The relay's product image (static binary, OCI archive), which the lab's
# real node runs; its build is cached outside the repository too.
mkdir -p /var/cache/devnet-lab/relay-image
DEVNET_RELAY_TARGET_DIR=/var/cache/devnet-lab/relay-target \
  bash installers/relay/build-image.sh /var/cache/devnet-lab/relay-image/devnet-relay.tar
export DEVNET_RELAY_IMAGE_TAR=/var/cache/devnet-lab/relay-image/devnet-relay.tar
# Helm, for the relay chart's tests (helm lint and template against `devnet
# relay manifests`; helm install into the real cluster), built from its Go
# module into /var/cache/devnet-lab/helm (once per version; seconds when cached).
HELM_GO_P=2 HELM_NICE=0 bash tests/lab/helm/build.sh >/dev/null

# The package tests' clean Debian root (debootstrap, cached as a tarball)
# and nfpm, which builds the .deb and .rpm (built from its Go module, cached).
bash tests/lab/debian-root.sh >/dev/null
bash installers/linux/build-packages.sh --fetch-only

# tauri-driver, which drives the tray app's window for lab_tray (cached).
td=/var/cache/devnet-lab/tauri-driver
if [[ ! -x $td/bin/tauri-driver ]]; then
  mkdir -p "$td/bin"
  CARGO_TARGET_DIR=/var/cache/devnet-lab/tauri-driver-target \
    cargo install tauri-driver --version 2.1.0 --locked --root "$td" >/dev/null
fi

# The tray app's window (ui/): types checked, unit tests, the bundle the app
# embeds (so it is built before the Rust workspace), and every state in real
# Chromium against a mock helper; screenshots in target/test-artifacts/ui.
export DEVNET_ARTIFACTS=${DEVNET_ARTIFACTS:-$PWD/target/test-artifacts}
(
  cd ui
  npm ci --no-audit --no-fund --loglevel=error
  npm run check
  npm test
  npm run build
  npm run e2e
)

# Coverage-guided fuzzing (cargo-fuzz, fuzz/): each target for 20 s, after a
# one-time build cached in /var/cache/devnet-lab/fuzz-target; the committed
# corpus also replays on stable in `cargo test` (devnet-fuzz-targets).
FUZZ_TARGET_DIR=/var/cache/devnet-lab/fuzz-target FUZZ_NICE=0 bash fuzz/run.sh 20

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
# Unit, property and lab tests; then one closing line with the totals over
# every test binary (cargo prints a line per binary, the last often a doc-test
# run with nothing in it).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# Each failure's message again at the end, where a log cut to its tail (as
# CI reports show it) still has it: libtest's "---- name ----" blocks, up to
# 60 lines each.
awk '/^---- .* ----$/ { keep = 1; n = 0; print "failed: " $0; next }
     /^failures:$/ { keep = 0 }
     keep && n++ < 60 { print }' "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
