#!/usr/bin/env bash
# build-image.sh OUT.tar: the relay image as an OCI archive, reproducibly and
# without a container daemon (see oci-archive.sh for why and how). The image:
# the static relay binary (glibc, crt-static) and /etc/passwd with its user,
# uid 65532; no shell. Named ghcr.io/devnet-dev/devnet-relay:<version>, what
# `devnet connect` deploys by default; override with DEVNET_RELAY_IMAGE_NAME.
#
# RELAY_BIN may name a static relay binary already built; otherwise it is
# built here (release, into DEVNET_RELAY_TARGET_DIR or target/relay-image).
#
# Then: `skopeo copy oci-archive:OUT.tar docker://registry.example.com/devnet-relay:0.1.0`
# (or `ctr -n k8s.io images import OUT.tar` on a node), and
# `devnet connect --relay-image registry.example.com/devnet-relay:0.1.0`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
[[ $# == 1 ]] || { echo "usage: $0 OUT.tar" >&2; exit 2; }
out=$(realpath -m "$1")
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
protocol=$(sed -n 's/^pub const PROTOCOL_VERSION: u16 = \([0-9]*\);/\1/p' "$root/crates/devnet-proto/src/lib.rs")
name=${DEVNET_RELAY_IMAGE_NAME:-ghcr.io/devnet-dev/devnet-relay:$version}
bin=${RELAY_BIN:-}
if [[ -z $bin ]]; then
  target_dir=${DEVNET_RELAY_TARGET_DIR:-$root/target/relay-image}
  # Stripped: the image carries no debug information.
  RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked -p devnet-relay \
    --target x86_64-unknown-linux-gnu --target-dir "$target_dir" --manifest-path "$root/Cargo.toml" >&2
  bin=$target_dir/x86_64-unknown-linux-gnu/release/devnet-relay
fi
if ldd "$bin" 2>&1 | grep -q '=>'; then
  echo "$bin is dynamically linked: build it with RUSTFLAGS=\"-C target-feature=+crt-static\"" >&2
  exit 1
fi
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
install -D -m 0755 "$bin" "$rootfs/devnet-relay"
install -D -m 0644 "$here/passwd" "$rootfs/etc/passwd"
install -D -m 0644 "$here/group" "$rootfs/etc/group"
labels=$(jq -cn --arg v "$version" --arg p "$protocol" \
  '{"org.opencontainers.image.title": "devnet-relay", "org.opencontainers.image.version": $v,
    "org.opencontainers.image.licenses": "Apache-2.0", "devnet.dev/protocol": $p}')
bash "$here/oci-archive.sh" "$out" "$name" "65532:65532" '["/devnet-relay"]' "$labels" "$rootfs"
