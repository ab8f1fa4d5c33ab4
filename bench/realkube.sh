#!/usr/bin/env bash
# devnet against the lab's REAL Kubernetes cluster (not a test: numbers).
#
# `devnet connect --context lab` (the in-process engine, as bench/run.sh) with:
#   from-nothing:  no relay installed; the office firewall open. Time to the
#                  first HTTP answer from a ClusterIP: discovery, install by
#                  server-side apply, the real scheduler and kubelet starting
#                  the relay from its image, connect, the first request;
#   direct:        the relay installed, reached at its node port (real kube-proxy);
#   port-forward:  only the API server reachable: API server -> kubelet ->
#                  containerd -> the relay pod.
# Throughput: a 64 MiB download from the web pod on the real node, 3 runs each.
#
#   sudo bench/realkube.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "needs root (network namespaces): sudo $0" >&2; exit 1; }
command -v bc >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends bc >/dev/null; }
cargo build --workspace --bins --release --locked
export DEVNET_BIN=$PWD/target/release
lab=rkb
dir=/tmp/devnet-lab-$lab
L() { ip netns exec "$lab-$1" "${@:2}"; }
trap 'bash tests/lab/lab.sh down "$lab"' EXIT
bash tests/lab/lab.sh down "$lab" >/dev/null 2>&1 || true
bash tests/lab/lab.sh up "$lab" no-path >/dev/null
bash tests/lab/lab.sh realapi "$lab" >/dev/null
bash tests/lab/lab.sh realnode "$lab" >/dev/null
web=$(bash tests/lab/lab.sh exec "$lab" api curl -sk -H "Authorization: Bearer admin-token" \
  "https://10.60.20.10:6443/api/v1/namespaces/demo/pods?labelSelector=app%3Dweb" | jq -r '.items[0].status.podIP')

source bench/kube-connect.sh
download() { # median bytes/s of three 64 MiB downloads from the web pod
  local i
  for i in 1 2 3; do
    L laptop curl -s -o /dev/null -w '%{speed_download}\n' "http://$web:8080/zero"
  done | sort -n | sed -n 2p
}

from_nothing=$(kube_connect open); kube_disconnect
direct_s=$(kube_connect open)
transport_direct=$(L laptop "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" status --json | jq -r .transport)
direct_bps=$(download); kube_disconnect
pf_s=$(kube_connect api-only)
transport_pf=$(L laptop "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" status --json | jq -r .transport)
pf_bps=$(download); kube_disconnect

mkdir -p bench/results
out=bench/results/realkube-$(date -u +%Y%m%dT%H%M%SZ).json
jq -n --argjson from "$from_nothing" --argjson ds "$direct_s" --argjson db "$direct_bps" --arg dt "$transport_direct" \
  --argjson ps "$pf_s" --argjson pb "$pf_bps" --arg pt "$transport_pf" \
  '{connect_to_first_answer_s: {from_nothing: $from, installed_direct: $ds, installed_port_forward: $ps},
    download_bytes_per_s: {direct: $db, port_forward: $pb}, port_forward_over_direct: ($pb / $db),
    transports: {direct: $dt, port_forward: $pt}}' | tee "$out"
