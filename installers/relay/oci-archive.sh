#!/usr/bin/env bash
# oci-archive.sh OUT.tar NAME USER ENTRYPOINT_JSON LABELS_JSON ROOTFS_DIR
#
# Writes a one-layer OCI image archive (an OCI image layout in a tar) from a
# directory, without a container daemon or image tool: the layer tar, its
# config, manifest and index are written here, byte for byte the same for the
# same inputs (sorted entries, mtime 0, uid/gid 0, gzip -n, no timestamps in
# the config). NAME is recorded as `io.containerd.image.name`, so
# `ctr images import` names the image, and as the ref name's tag.
#
# Used by installers/relay/build-image.sh (the relay image) and by the lab for
# its pause and test images.
set -euo pipefail
[[ $# == 6 ]] || { echo "usage: $0 OUT.tar NAME USER ENTRYPOINT_JSON LABELS_JSON ROOTFS_DIR" >&2; exit 2; }
out=$1 name=$2 user=$3 entrypoint=$4 labels=$5 rootfs=$6
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
blobs=$work/layout/blobs/sha256
mkdir -p "$blobs"
sha() { sha256sum "$1" | cut -d' ' -f1; }
put() { local d; d=$(sha "$1"); mv "$1" "$blobs/$d"; echo "$d"; }

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$rootfs" -cf "$work/layer.tar" .
diff_id=$(sha "$work/layer.tar")
gzip -n -9 "$work/layer.tar"
layer_size=$(stat -c %s "$work/layer.tar.gz")
layer=$(put "$work/layer.tar.gz")

jq -cn --arg user "$user" --argjson entrypoint "$entrypoint" --argjson labels "$labels" --arg diff "sha256:$diff_id" \
  '{architecture: "amd64", os: "linux",
    config: {User: $user, Entrypoint: $entrypoint, Labels: $labels, Env: ["PATH=/"]},
    rootfs: {type: "layers", diff_ids: [$diff]}}' >"$work/config.json"
config_size=$(stat -c %s "$work/config.json")
config=$(put "$work/config.json")

jq -cn --arg config "sha256:$config" --argjson csize "$config_size" --arg layer "sha256:$layer" --argjson lsize "$layer_size" \
  --argjson labels "$labels" \
  '{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $config, size: $csize},
    layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $layer, size: $lsize}],
    annotations: $labels}' >"$work/manifest.json"
manifest_size=$(stat -c %s "$work/manifest.json")
manifest=$(put "$work/manifest.json")

jq -cn --arg m "sha256:$manifest" --argjson size "$manifest_size" --arg name "$name" --arg tag "${name##*:}" \
  '{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $size,
                 annotations: {"io.containerd.image.name": $name, "org.opencontainers.image.ref.name": $tag}}]}' \
  >"$work/layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work/layout" -cf "$out" .
echo "$name sha256:$manifest $(stat -c %s "$out") bytes" >&2
