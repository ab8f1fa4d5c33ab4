#!/usr/bin/env bash
# The main job on the embedded lab: build devnet, build the simulated office
# and cluster, `devnet connect --context lab` from nothing but a kubeconfig,
# and reach pods, ClusterIPs and service names through the path devnet chose:
# first at "home", where only the API server is reachable (discovery, relay
# install, tunnel through the API server's port-forward), then at the
# "office", where Calico's BIRD peers with the office switch (direct).
# As on a real machine, devnetd runs as its service and the person at the
# laptop (alice, in group devnet) uses devnet without sudo.
#
# The lab's API server is a STAND-IN (a real one cannot run here): it speaks
# the real REST and port-forward protocols over TLS, and its kubelet runs the
# real relay binary as the relay pod.
set -euo pipefail
cd "$(dirname "$0")/../.."
[[ $(id -u) == 0 ]] || { echo "the lab needs root: sudo $0" >&2; exit 1; }
need=()
for tool in ip:iproute2 iptables:iptables dnsmasq:dnsmasq-base dig:dnsutils curl:curl bird:bird2; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cargo build --workspace --bins --release --locked
export DEVNET_BIN=$PWD/target/release
lab=demo
dir=/tmp/devnet-lab-$lab
# The person at the laptop: alice (uid 2101), a member of group devnet, no sudo.
export DEVNET_SOCKET=$dir/run/devnetd.sock
as_alice() { ip netns exec "$lab-laptop" setpriv --reuid=2101 --regid=2101 --groups="$(getent group devnet | cut -d: -f3)" -- env HOME="$dir/home-alice" "$@"; }
run() { echo; echo "alice@laptop\$ $*"; as_alice "$@"; }
run_root() { echo; echo "laptop\$ $*"; ip netns exec "$lab-laptop" "$@"; }
cleanup() {
  as_alice "$DEVNET_BIN/devnet" disconnect >/dev/null 2>&1 || true
  sleep 1
  bash tests/lab/lab.sh devnetd "$lab" stop
  bash tests/lab/lab.sh down "$lab"
}
trap cleanup EXIT

bash tests/lab/lab.sh up "$lab" no-path
bash tests/lab/lab.sh api "$lab"
bash tests/lab/lab.sh firewall "$lab" api-only
# What the package does: group devnet, and devnetd started by its unit.
bash tests/lab/lab.sh devnetd "$lab" start
install -d -o 2101 -g 2101 "$dir/home-alice"
cp "$dir/kubeconfig" "$dir/home-alice/kubeconfig" && chown 2101:2101 "$dir/home-alice/kubeconfig"
echo "== lab up; devnetd runs as its service ($(grep -o 'capabilities=.*' "$dir/devnetd.log"))."
echo "   At home the laptop reaches only the API server (https://10.60.20.10:6443); not the cluster:"
run curl -sS -m 2 http://10.96.0.20/ || true

echo; echo "alice@laptop\$ devnet connect --context lab     # no sudo; kubeconfig: $dir/home-alice/kubeconfig"
as_alice "$DEVNET_BIN/devnet" connect --context lab --kubeconfig "$dir/home-alice/kubeconfig" >"$dir/engine.log" 2>&1 &
for _ in $(seq 150); do
  as_alice "$DEVNET_BIN/devnet" status --json 2>/dev/null | grep -q '"connected"' && break
  sleep 0.2
done
grep '^devnet:' "$dir/engine.log" | head -20
echo; echo "== devnet connected at home: every CIDR through the tunnel, the relay through the API server's port-forward:"
run "$DEVNET_BIN/devnet" status
run curl -sS http://10.244.1.10:8080/          # a pod IP
run curl -sS http://10.96.0.20/                # a ClusterIP
run curl -sS -g 'http://[fd00:96::20]/'        # an IPv6 ClusterIP
run getent hosts web.demo.svc.cluster.local    # the system resolver, cluster name
run getent hosts web.demo                      # ... and the short form
run getent hosts www.example.com               # public names still go to the office DNS
run dig +short +tcp @10.96.0.10 web.demo.svc.cluster.local AAAA  # DNS over TCP to kube-dns

echo; echo "== walk into the office: no firewall, and Calico's BIRD on every node peers with the office switch (seed 000)"
bash tests/lab/lab.sh firewall "$lab" open
bash tests/lab/lab.sh bgp "$lab" all
for _ in $(seq 150); do
  as_alice "$DEVNET_BIN/devnet" status --json 2>/dev/null \
    | grep -q '"tunnel"' || break
  sleep 0.2
done
echo "devnet noticed and moved every CIDR to the direct path:"
run "$DEVNET_BIN/devnet" status
run curl -sS http://10.96.0.20/
run getent hosts web.demo

echo; echo "== disconnect: everything devnet added is gone"
run "$DEVNET_BIN/devnet" disconnect
sleep 1
run_root ip route
run_root ip rule
run_root cat /etc/resolv.conf
