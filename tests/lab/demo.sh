#!/usr/bin/env bash
# The main job on the embedded lab: build devnet, build the simulated office
# and cluster (scenario no-path: the laptop reaches only a node's NodePort),
# connect, and reach pods, ClusterIPs and service names through the tunnel.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $(id -u) == 0 ]] || { echo "the lab needs root: sudo $0" >&2; exit 1; }
need=()
for tool in ip:iproute2 iptables:iptables dnsmasq:dnsmasq-base dig:dnsutils curl:curl; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --workspace --bins --release --locked
export DEVNET_BIN=$PWD/target/release
lab=demo
dir=/tmp/devnet-lab-$lab
run() { echo; echo "laptop\$ $*"; ip netns exec "$lab-laptop" "$@"; }
cleanup() {
  ip netns exec "$lab-laptop" "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" disconnect >/dev/null 2>&1 || true
  sleep 1
  bash tests/lab/lab.sh down "$lab"
}
trap cleanup EXIT

bash tests/lab/lab.sh up "$lab" no-path
echo "== lab up (scenario no-path). Before connecting, the laptop cannot reach the cluster:"
run curl -sS -m 2 http://10.96.0.20/ || true

ip netns exec "$lab-laptop" "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" connect --profile "$dir/profile.toml" \
  >"$dir/engine.log" 2>&1 &
for _ in $(seq 50); do
  ip netns exec "$lab-laptop" "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" status --json 2>/dev/null | grep -q '"connected"' && break
  sleep 0.2
done
echo; echo "== devnet connected; the path it chose for every CIDR is the tunnel (devnet0 -> relay):"
run "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" status
run ip route show dev devnet0
run curl -sS http://10.244.1.10:8080/          # a pod IP
run curl -sS http://10.96.0.20/                # a ClusterIP
run curl -sS -g 'http://[fd00:96::20]/'        # an IPv6 ClusterIP
run dig +short @10.96.0.10 web.demo.svc.cluster.local         # DNS over UDP
run dig +short +tcp @10.96.0.10 web.demo.svc.cluster.local AAAA  # DNS over TCP
run "$DEVNET_BIN/devnet-labd" probe rr 10.96.0.30:7 1000
echo; echo "== disconnect: everything devnet added is gone"
run "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" disconnect
sleep 1
run ip route
