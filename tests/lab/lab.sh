#!/usr/bin/env bash
# The devnet lab: a simulated office and Kubernetes cluster in network
# namespaces on one machine. Everything it makes lives in namespaces named
# "<lab>-…" and in /tmp/devnet-lab-<lab>; the host's own routes, resolv.conf
# and firewall are never touched.
#
#   lab.sh up <lab> [no-path]   build the network, start pods and the relay
#   lab.sh down <lab>           kill everything in the lab and delete it
#   lab.sh relay-start <lab>    (re)start the relay pod's process
#   lab.sh relay-stop <lab> [SIGNAL]
#   lab.sh exec <lab> <host> <command…>
#   lab.sh bgp <lab> all|pods|off
#                               Calico's BIRD on every node peering with the
#                               office switch (bird2, eBGP 64513 <-> 65200):
#                               pod blocks, and with "all" the service CIDR
#                               (BGPConfiguration.serviceClusterIPs), advertised
#   lab.sh api <lab>            the control plane: a STAND-IN Kubernetes API
#                               server (a real one cannot run here) at
#                               https://10.60.20.10:6443 serving the lab's
#                               objects; its kubelet runs the relay pod when
#                               `devnet relay install` creates it (the relay
#                               started by `up` is stopped). Writes
#                               $dir/kubeconfig (contexts lab, lab-nopf,
#                               lab-expired, lab-exec, lab-exec-short,
#                               lab-authprov, lab-down).
#   lab.sh office-dns <lab> plain|forward
#                               the office DNS without, or with, a conditional
#                               forwarder for cluster.local to kube-dns
#   lab.sh firewall <lab> api-only|open
#                               the office lets the laptop reach only the API
#                               server (DROP, like a corporate firewall), or all
#   lab.sh resolved <lab> start|restart|stop
#                               a real systemd-resolved for the laptop, in a
#                               private mount namespace over the laptop's
#                               network namespace (its own /run, system bus,
#                               and /etc/resolv.conf = resolved's stub file);
#                               from then on `exec <lab> laptop` runs there.
#                               The binary is unpacked from Debian's .deb by
#                               run-all.sh (installing it would take over the
#                               host's resolv.conf), into $DEVNET_RESOLVED_ROOT.
#   lab.sh realapi <lab>        the REAL control plane instead of the stand-in:
#                               etcd, kube-apiserver, kube-controller-manager
#                               (tests/realkube/build.sh) at 10.60.20.10:6443,
#                               the lab's nodes, kubeadm-config, kube-dns and
#                               Calico's IPPool CRD; contexts lab, lab-reader.
#                               No kubelet yet: pods stay Pending
#   lab.sh realnode <lab>       a REAL node beside it: node4 (10.60.20.14) with
#                               containerd, runc, CNI and the real kubelet;
#                               images from OCI archives (DEVNET_RELAY_IMAGE_TAR:
#                               the relay's, from installers/relay/build-image.sh)
#   lab.sh realdebug <lab>      REAL debuggers in real pods on node4 (after
#                               realnode), namespace debug: jvm (JDWP *:5005),
#                               jvm-local (JDWP on localhost only), py
#                               (debugpy), node (inspector), go and go-single
#                               (Delve, with and without multiclient), each a
#                               Deployment and a Service; apps from
#                               tests/lab/debuggers/build.sh (cached), runtimes
#                               from the host's /usr. Writes $dir/debuggers.env
#                               (the build's NAME=PATH lines: dlv, jdb, ...)
#                               and $dir/debug-pods (name pod-ip cluster-ip port)
#   lab.sh realapi-apply <lab>  POST/PATCH the YAML documents on stdin (each
#                               headed "# POST <path>" or "# PATCH <path>")
#   lab.sh devnetd <lab> start|stop
#                               devnetd on the laptop as its service unit
#                               (installers/linux/devnetd.service) starts it:
#                               that bounding set, no_new_privs, group devnet;
#                               socket $dir/run/devnetd.sock (the tests' harness
#                               does the same from Rust)
#   lab.sh hostile <lab> on|off
#                               the office router turns hostile (a captive
#                               portal, a rogue access point; security review
#                               finding 1): every TCP connection to the
#                               cluster CIDRs is taken by a listener of its
#                               own (IPv4: an HTTP server that says "hello
#                               from hostile"; IPv6: reset), and DNS to them
#                               is answered by a dnsmasq that says 10.96.0.10
#                               / fd00:96::a to every name (so kube-dns's own
#                               name gets the expected answer). The relay's
#                               node port stays reachable, as the Internet
#                               would be from a café.
#   lab.sh office-routes <lab> none|pods|all|misrouted
#                               seed 001's forwarding node: the office router
#                               routes the pod (and service) CIDRs via node1,
#                               which masquerades the office LAN; misrouted
#                               (seed 004): the pod CIDR via node2, which has
#                               no route for node1's block
#
# Topology (the seeds' office + cluster):
#
#   laptop 192.168.10.2 ── office router ── node net 10.60.20.0/24
#          fd00:10::2        .1 / 10.60.20.1   node1 .11  pods 10.244.1.0/24  fd00:244:0:1::/64
#                                              node2 .12  pods 10.244.2.0/24  fd00:244:0:2::/64
#                                              node3 .13  pods 10.244.3.0/24  fd00:244:0:3::/64
#                                              node4 .14  pods 10.244.4.0/24 (realnode only)
#   Services 10.96.0.0/16 and fd00:96::/112 are DNAT rules on every node (kube-proxy).
#   The relay pod (10.244.1.5) is exposed as NodePort 10.60.20.11:31443.
#   A forwarding node (seed 001's node-30) sits on the office LAN at 192.168.10.30.
#   Scenario no-path: the office router has no route to pods or services
#   (office-routes none); gateway: office-routes all; gateway-pods-only: office-routes pods.
set -euo pipefail

lab=${2:-}
[[ -n "$lab" ]] || { echo "usage: lab.sh up|down|relay-start|relay-stop|exec <lab> …" >&2; exit 2; }
[[ "$lab" =~ ^[a-z0-9]{1,6}$ ]] || { echo "lab name must be 1-6 lowercase letters/digits" >&2; exit 2; }
dir=/tmp/devnet-lab-$lab
bin=${DEVNET_BIN:-$(cd "$(dirname "$0")/../.." && pwd)/target/debug}

ns() { echo "$lab-$1"; }
in_ns() { local n; n=$(ns "$1"); shift; ip netns exec "$n" "$@"; }

# The service table: name ClusterIPv4 ClusterIPv6 port proto pod-ip4 pod-ip6 target-port
SERVICES=(
  "web 10.96.0.20 fd00:96::20 80 tcp 10.244.1.10 fd00:244:0:1::10 8080"
  "kube-dns 10.96.0.10 fd00:96::a 53 tcp 10.244.2.53 fd00:244:0:2::53 53"
  "kube-dns 10.96.0.10 fd00:96::a 53 udp 10.244.2.53 fd00:244:0:2::53 53"
  "echo 10.96.0.30 fd00:96::30 7 tcp 10.244.3.10 fd00:244:0:3::10 7"
  "echo 10.96.0.30 fd00:96::30 7 udp 10.244.3.10 fd00:244:0:3::10 7"
  "devnet-relay 10.96.0.5 fd00:96::5 8443 tcp 10.244.1.5 fd00:244:0:1::5 8443"
)

new_ns() {
  local n; n=$(ns "$1")
  ip netns add "$n"
  # ip netns exec bind-mounts /etc/netns/<ns>/* over /etc: give every
  # namespace its own resolv.conf so nothing in the lab reads or writes the host's.
  mkdir -p "/etc/netns/$n"
  printf '# devnet lab %s: no resolver configured\noptions timeout:1 attempts:1\n' "$lab" >"/etc/netns/$n/resolv.conf"
  in_ns "$1" ip link set lo up
  in_ns "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
}

veth() { # veth <hostA> <ifA> <hostB> <ifB>
  local tmp="v$RANDOM$RANDOM"
  ip link add "${tmp}a" type veth peer name "${tmp}b"
  ip link set "${tmp}a" netns "$(ns "$1")"
  ip link set "${tmp}b" netns "$(ns "$3")"
  in_ns "$1" ip link set "${tmp}a" name "$2"
  in_ns "$3" ip link set "${tmp}b" name "$4"
  in_ns "$1" ip link set "$2" up
  in_ns "$3" ip link set "$4" up
}

router() { in_ns "$1" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1; }

spawn() { # spawn <host> <name> <command…>: run in the background, log and pid in $dir
  local host=$1 name=$2; shift 2
  # `ip netns exec` execs the command, so $! is the server's own pid.
  ip netns exec "$(ns "$host")" "$@" >"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
}

pod() { # pod <node#> <name> <ip4> <ip6>
  local node=node$1 name=$2 ip4=$3 ip6=$4
  new_ns "$name"
  local hostif="cali$name"
  veth "$node" "$hostif" "$name" eth0
  # Calico style: /32 and /128 routes to the veth; the pod's gateway is a
  # link-local address the node answers for.
  in_ns "$node" ip addr add 169.254.1.1/32 dev "$hostif"
  in_ns "$node" ip -6 addr add fe80::1/64 dev "$hostif" nodad
  in_ns "$node" ip route add "$ip4/32" dev "$hostif"
  in_ns "$node" ip -6 route add "$ip6/128" dev "$hostif"
  in_ns "$name" ip addr add "$ip4/32" dev eth0
  in_ns "$name" ip -6 addr add "$ip6/128" dev eth0 nodad
  in_ns "$name" ip route add 169.254.1.1 dev eth0
  in_ns "$name" ip route add default via 169.254.1.1 dev eth0
  in_ns "$name" ip -6 route add default via fe80::1 dev eth0
}

services() { # kube-proxy: DNAT every ClusterIP on every node
  local node=$1 svc name v4 v6 port proto p4 p6 tport
  # Like kube-proxy with --cluster-cidr: traffic to a ClusterIP from outside
  # the pod network is masqueraded, so replies come back through this node.
  in_ns "$node" iptables -t nat -A POSTROUTING ! -s 10.244.0.0/16 -m conntrack --ctstate DNAT --ctorigdst 10.96.0.0/16 -j MASQUERADE
  in_ns "$node" ip6tables -t nat -A POSTROUTING ! -s fd00:244::/48 -m conntrack --ctstate DNAT --ctorigdst fd00:96::/112 -j MASQUERADE
  for svc in "${SERVICES[@]}"; do
    read -r name v4 v6 port proto p4 p6 tport <<<"$svc"
    for chain in PREROUTING OUTPUT; do
      in_ns "$node" iptables -t nat -A "$chain" -d "$v4" -p "$proto" --dport "$port" -j DNAT --to-destination "$p4:$tport"
      in_ns "$node" ip6tables -t nat -A "$chain" -d "$v6" -p "$proto" --dport "$port" -j DNAT --to-destination "[$p6]:$tport"
    done
  done
}

dnsmasq_base() { # what every lab DNS server shares: authoritative for its own records only
  printf '%s\n' no-resolv no-hosts no-daemon bind-dynamic user=root port=53
}

up() {
  local scenario=${3:-no-path}
  [[ "$scenario" == no-path ]] || { echo "unknown scenario $scenario (this lab has: no-path)" >&2; exit 2; }
  down_quiet
  mkdir -p "$dir"
  echo "$scenario" >"$dir/scenario"

  new_ns laptop; new_ns office
  # The laptop resolves through the office DNS, as DHCP would set it up.
  printf '# devnet lab %s laptop: the office DNS\nnameserver 192.168.10.1\noptions timeout:1 attempts:2\n' "$lab" \
    >"/etc/netns/$(ns laptop)/resolv.conf"
  # The office LAN is a bridge on the office router: the laptop and seed
  # 001's forwarding node sit on it.
  in_ns office ip link add lanbr type bridge
  in_ns office ip link set lanbr up
  veth laptop eth0 office lan0
  in_ns office ip link set lan0 master lanbr
  in_ns laptop ip addr add 192.168.10.2/24 dev eth0
  in_ns laptop ip -6 addr add fd00:10::2/64 dev eth0 nodad
  in_ns laptop ip route add default via 192.168.10.1
  in_ns laptop ip -6 route add default via fd00:10::1
  in_ns office ip addr add 192.168.10.1/24 dev lanbr
  in_ns office ip -6 addr add fd00:10::1/64 dev lanbr nodad
  router office
  in_ns office ip link add br0 type bridge
  in_ns office ip link set br0 up
  in_ns office ip addr add 10.60.20.1/24 dev br0
  in_ns office ip -6 addr add fd00:60::1/64 dev br0 nodad

  # Seed 001's node-30: a small node with a leg on the office LAN and one on
  # the node LAN, forwarding to pods and services with MASQUERADE. Nothing
  # routes through it unless a laptop is told to (devnet's gateway mode).
  new_ns fwd; router fwd
  veth fwd eth0 office lan1
  in_ns office ip link set lan1 master lanbr
  veth fwd eth1 office port4
  in_ns office ip link set port4 master br0
  in_ns fwd ip addr add 192.168.10.30/24 dev eth0
  in_ns fwd ip -6 addr add fd00:10::30/64 dev eth0 nodad
  in_ns fwd ip addr add 10.60.20.30/24 dev eth1
  in_ns fwd ip -6 addr add fd00:60::30/64 dev eth1 nodad
  for n in 1 2 3; do
    in_ns fwd ip route add "10.244.$n.0/24" via "10.60.20.1$n"
    in_ns fwd ip -6 route add "fd00:244:0:$n::/64" via "fd00:60::1$n"
  done
  in_ns fwd ip route add 10.96.0.0/16 via 10.60.20.11
  in_ns fwd ip -6 route add fd00:96::/112 via fd00:60::11
  in_ns fwd iptables -t nat -A POSTROUTING -o eth1 -s 192.168.10.0/24 -j MASQUERADE
  in_ns fwd ip6tables -t nat -A POSTROUTING -o eth1 -s fd00:10::/64 -j MASQUERADE

  local n m
  for n in 1 2 3; do
    new_ns "node$n"; router "node$n"
    veth office "port$n" "node$n" eth0
    in_ns office ip link set "port$n" master br0
    in_ns "node$n" ip addr add "10.60.20.1$n/24" dev eth0
    in_ns "node$n" ip -6 addr add "fd00:60::1$n/64" dev eth0 nodad
    in_ns "node$n" ip route add default via 10.60.20.1
    in_ns "node$n" ip -6 route add default via fd00:60::1
    # Calico: the node's own block is blackholed; other nodes' blocks via them.
    in_ns "node$n" ip route add blackhole "10.244.$n.0/24"
    in_ns "node$n" ip -6 route add blackhole "fd00:244:0:$n::/64"
    for m in 1 2 3; do
      [[ $m == "$n" ]] && continue
      in_ns "node$n" ip route add "10.244.$m.0/24" via "10.60.20.1$m"
      in_ns "node$n" ip -6 route add "fd00:244:0:$m::/64" via "fd00:60::1$m"
    done
    services "node$n"
  done

  pod 1 web 10.244.1.10 fd00:244:0:1::10
  pod 2 dns 10.244.2.53 fd00:244:0:2::53
  pod 3 echo 10.244.3.10 fd00:244:0:3::10
  pod 1 relay 10.244.1.5 fd00:244:0:1::5
  # The relay is exposed as a NodePort on node1 (TLS and health).
  in_ns node1 iptables -t nat -A PREROUTING -d 10.60.20.11 -p tcp --dport 31443 -j DNAT --to-destination 10.244.1.5:8443
  in_ns node1 iptables -t nat -A PREROUTING -d 10.60.20.11 -p tcp --dport 31090 -j DNAT --to-destination 10.244.1.5:9090

  spawn web web "$bin/devnet-labd" serve --name web
  spawn echo echo "$bin/devnet-labd" serve --name echo
  # Node2 also has an address inside the pod range, as nodes do where pods
  # and nodes share a subnet (AWS VPC CNI, Azure CNI), with its own servers
  # (the kubelet's and SSH's place): the relay must never dial it (security
  # review R-2), although its allowlist covers it.
  in_ns node2 ip addr add 10.244.2.1/32 dev lo
  spawn node2 node2-services "$bin/devnet-labd" serve --name node2
  { dnsmasq_base; cat <<CONF
local=/cluster.local/
host-record=web.demo.svc.cluster.local,10.96.0.20,fd00:96::20
host-record=echo.demo.svc.cluster.local,10.96.0.30,fd00:96::30
host-record=kube-dns.kube-system.svc.cluster.local,10.96.0.10,fd00:96::a
log-queries
log-facility=$dir/cluster-dns-queries.log
CONF
  } >"$dir/dnsmasq.conf"
  spawn dns dnsmasq dnsmasq --conf-file="$dir/dnsmasq.conf" --pid-file="$dir/dnsmasq.dnsmasq-pid"
  office_dns_conf plain
  spawn office office-dns dnsmasq --conf-file="$dir/office-dns.conf" --pid-file="$dir/office-dns.dnsmasq-pid"

  # Relay credentials, as `devnet relay install` will create them.
  "$bin/devnet-relay" gen-cert --out "$dir/relay-tls" 2>/dev/null
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/token"
  relay_start
  cat >"$dir/profile.toml" <<PROFILE
relay = "10.60.20.11:31443"
token-file = "$dir/token"
relay-ca = "$dir/relay-tls/ca.pem"
cidrs = ["10.244.0.0/16", "10.96.0.0/16", "fd00:244::/48", "fd00:96::/112"]
dns-server = "10.96.0.10"
probe-targets = ["10.244.1.10:8080", "[fd00:244:0:1::10]:8080", "[fd00:96::a]:53"]
# Where the relay proves a direct path is this cluster's: its pod IPs and its
# Service's ClusterIPs (security review finding 1).
relay-endpoints = ["10.244.1.5:8443", "[fd00:244:0:1::5]:8443", "10.96.0.5:8443", "[fd00:96::5]:8443"]
namespaces = ["demo", "kube-system", "com", "corp", "acme"]
cluster-domain = "cluster.local"
PROFILE
  wait_ready
}

office_dns_conf() { # office_dns_conf plain|forward: the office DNS's configuration
  # Public-looking names of its own, no way out (the lab has no internet),
  # and with "forward" the seeds' conditional forwarder for cluster.local.
  { dnsmasq_base; cat <<CONF
host-record=www.example.com,192.0.2.80
host-record=intranet.office.example,192.168.10.80
host-record=git.corp,192.168.10.81
# The office's own zone "acme", which a cluster namespace "acme" must not
# take: the office DNS answers for it (its apex too).
local=/acme/
txt-record=acme,"the office zone"
host-record=git.acme,192.168.10.82
log-queries
log-facility=$dir/office-dns-queries.log
CONF
    if [[ $1 == forward ]]; then echo "server=/cluster.local/10.96.0.10"; fi
  } >"$dir/office-dns.conf"
}

office_dns() { # lab.sh office-dns <lab> plain|forward
  local mode=${3:-}
  [[ $mode == plain || $mode == forward ]] || { echo "office-dns takes plain or forward" >&2; exit 2; }
  office_dns_conf "$mode"
  kill "$(cat "$dir/office-dns.pid")" 2>/dev/null || true
  local i
  for i in $(seq 50); do kill -0 "$(cat "$dir/office-dns.pid")" 2>/dev/null || break; sleep 0.05; done
  spawn office office-dns dnsmasq --conf-file="$dir/office-dns.conf" --pid-file="$dir/office-dns.dnsmasq-pid"
  for i in $(seq 50); do in_ns laptop dig +short +time=1 +tries=1 @192.168.10.1 www.example.com >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "the office DNS did not come back" >&2; exit 1
}

relay_start() {
  # As `devnet relay install` starts it: its own node's address from the
  # downward API, and every node's addresses known at install.
  spawn relay relay env RUST_LOG=info DEVNET_RELAY_HOST_IPS=10.60.20.11 "$bin/devnet-relay" serve \
    --listen '[::]:8443' --health-listen '[::]:9090' \
    --cert "$dir/relay-tls/cert.pem" --key "$dir/relay-tls/key.pem" --token-file "$dir/token" \
    --allow 10.244.0.0/16,10.96.0.0/16,fd00:244::/48,fd00:96::/112 \
    --deny-node 10.60.20.11,10.60.20.12,10.60.20.13,10.244.2.1
  local i
  for i in $(seq 100); do
    in_ns laptop bash -c 'exec 3<>/dev/tcp/10.60.20.11/31090' 2>/dev/null && return 0
    sleep 0.05
  done
  echo "relay did not come up; its log:" >&2; cat "$dir/relay.log" >&2; exit 1
}

relay_stop() {
  local sig=${3:-TERM}
  [[ -f "$dir/relay.pid" ]] || return 0
  kill -s "$sig" "$(cat "$dir/relay.pid")" 2>/dev/null || true
  local i
  for i in $(seq 100); do
    kill -0 "$(cat "$dir/relay.pid")" 2>/dev/null || return 0
    sleep 0.05
  done
}

wait_ready() {
  local i
  for i in $(seq 100); do
    if in_ns node1 bash -c 'exec 3<>/dev/tcp/10.96.0.20/80' 2>/dev/null \
      && in_ns node1 dig +short +time=1 +tries=1 @10.96.0.10 web.demo.svc.cluster.local >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.05
  done
  echo "lab services did not come up" >&2; exit 1
}

kubeadm_config_yaml() { # the ClusterConfiguration kubeadm leaves in kube-system
  cat <<'YAML'
apiVersion: v1
kind: ConfigMap
metadata: {name: kubeadm-config, namespace: kube-system}
data:
  ClusterConfiguration: |
    apiVersion: kubeadm.k8s.io/v1beta3
    kind: ClusterConfiguration
    networking:
      dnsDomain: cluster.local
      podSubnet: 10.244.0.0/16,fd00:244::/48
      serviceSubnet: 10.96.0.0/16,fd00:96::/112
YAML
}

api_host() { # the control plane's host at 10.60.20.10 on the node LAN
  new_ns api
  veth api eth0 office port9
  in_ns office ip link set port9 master br0
  in_ns api ip addr add 10.60.20.10/24 dev eth0
  in_ns api ip route add default via 10.60.20.1
  local n
  for n in 1 2 3; do
    in_ns api ip route add "10.244.$n.0/24" via "10.60.20.1$n"
    in_ns api ip -6 addr add fd00:60::10/64 dev eth0 nodad 2>/dev/null || true
    in_ns api ip -6 route add "fd00:244:0:$n::/64" via "fd00:60::1$n"
  done
  relay_stop
}

api() {
  api_host
  local a=$dir/api
  mkdir -p "$a/manifests" "$a/exec-out"
  chmod 1777 "$a/exec-out"
  {
    cat <<'YAML'
# The lab cluster as its API server would describe it.
apiVersion: v1
kind: Node
metadata: {name: node1, labels: {kubernetes.io/hostname: node1}}
spec: {podCIDR: 10.244.1.0/24, podCIDRs: [10.244.1.0/24, "fd00:244:0:1::/64"]}
status: {addresses: [{type: InternalIP, address: 10.60.20.11}]}
---
apiVersion: v1
kind: Node
metadata: {name: node2}
spec: {podCIDR: 10.244.2.0/24, podCIDRs: [10.244.2.0/24, "fd00:244:0:2::/64"]}
status: {addresses: [{type: InternalIP, address: 10.60.20.12}]}
---
apiVersion: v1
kind: Node
metadata: {name: node3}
spec: {podCIDR: 10.244.3.0/24, podCIDRs: [10.244.3.0/24, "fd00:244:0:3::/64"]}
status: {addresses: [{type: InternalIP, address: 10.60.20.13}]}
---
YAML
    kubeadm_config_yaml
    echo ---
    cat <<'YAML'
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec: {clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10, "fd00:96::a"], ports: [{name: dns, port: 53, protocol: UDP}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec: {clusterIP: 10.96.0.20, clusterIPs: [10.96.0.20, "fd00:96::20"], ports: [{port: 80, targetPort: 8080}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: com}
---
apiVersion: v1
kind: Namespace
metadata: {name: corp}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: demo, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: web, image: devnet-labd, ports: [{containerPort: 8080}]}]}
status: {phase: Running, hostIP: 10.60.20.11, podIP: 10.244.1.10, podIPs: [{ip: 10.244.1.10}, {ip: "fd00:244:0:1::10"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec: {nodeName: node2, containers: [{name: dns, image: dnsmasq, ports: [{containerPort: 53, protocol: UDP}, {containerPort: 53, protocol: TCP}]}]}
status: {phase: Running, hostIP: 10.60.20.12, podIP: 10.244.2.53, podIPs: [{ip: 10.244.2.53}, {ip: "fd00:244:0:2::53"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: demo, labels: {app: echo}}
spec: {nodeName: node3, containers: [{name: echo, image: devnet-labd, ports: [{containerPort: 7}]}]}
status: {phase: Running, hostIP: 10.60.20.13, podIP: 10.244.3.10, podIPs: [{ip: 10.244.3.10}, {ip: "fd00:244:0:3::10"}]}
YAML
  } >"$a/manifests/cluster.yaml"
  cat >"$a/users.yaml" <<'YAML'
users:
- name: dev
  token: dev-token
  rules:
  - {verbs: ["*"], resources: ["*"]}
- name: reader
  token: reader-token
  rules:
  - {verbs: [get, list, watch], resources: ["*"]}
  - {verbs: [create], resources: [services], namespaces: [default]}
# A colleague who may connect (port-forward to the relay) but not install.
- name: teammate
  token: teammate-token
  rules:
  - {verbs: [get, list, watch], resources: ["*"]}
  - {verbs: [create], resources: [services], namespaces: [default]}
  - {verbs: [create], resources: [pods/portforward], namespaces: [devnet]}
- name: old-session
  token: expired-token
  expired: true
YAML
  spawn api apiserver "$bin/standin-apiserver" --listen 10.60.20.10:6443 --tls-dir "$a" \
    --manifests "$a/manifests" --users "$a/users.yaml" --service-range 10.96.0.0/16,fd00:96::/112 \
    --pod-netns "$(ns relay)" --pod-ip 10.244.1.5,fd00:244:0:1::5 --host-ip 10.60.20.11 \
    --image "ghcr.io/devnet-dev/devnet-relay=$bin/devnet-relay" --work-dir "$a/pods"
  local i up=
  for i in $(seq 100); do
    if in_ns api bash -c 'exec 3<>/dev/tcp/10.60.20.10/6443' 2>/dev/null; then up=1; break; fi
    sleep 0.05
  done
  [[ -n "$up" ]] || { echo "the stand-in API server did not start:" >&2; cat "$dir/apiserver.log" >&2; exit 1; }
  # An exec credential plugin that records who ran it.
  cat >"$a/exec-plugin.sh" <<'SH'
#!/bin/sh
id -u >"$(dirname "$0")/exec-out/uid"
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"dev-token"}}\n'
SH
  chmod 755 "$a/exec-plugin.sh"
  # An exec plugin whose tokens expire at once (61 s ahead: clients refresh
  # a minute early), counting its runs: each new request must run it again.
  cat >"$a/exec-short.sh" <<'SH'
#!/bin/sh
echo run >>"$(dirname "$0")/exec-out/short-runs"
exp=$(date -u -d '+61 seconds' +%Y-%m-%dT%H:%M:%SZ)
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"dev-token","expirationTimestamp":"%s"}}\n' "$exp"
SH
  chmod 755 "$a/exec-short.sh"
  # An auth-provider command (the gcp provider's cmd-path), likewise.
  cat >"$a/auth-provider.sh" <<'SH'
#!/bin/sh
id -u >"$(dirname "$0")/exec-out/auth-provider-uid"
printf '{"credential":{"access_token":"dev-token"}}\n'
SH
  chmod 755 "$a/auth-provider.sh"
  local ca; ca=$(base64 -w0 <"$a/ca.crt")
  cat >"$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
current-context: lab
clusters:
- name: lab
  cluster: {server: "https://10.60.20.10:6443", certificate-authority-data: "$ca"}
- name: lab-down
  cluster: {server: "https://10.60.20.10:6449", certificate-authority-data: "$ca"}
users:
- {name: dev, user: {token: dev-token}}
- {name: reader, user: {token: reader-token}}
- {name: teammate, user: {token: teammate-token}}
- {name: expired, user: {token: expired-token}}
- name: exec
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1, command: "$a/exec-plugin.sh", interactiveMode: Never}
- name: exec-short
  user:
    exec: {apiVersion: client.authentication.k8s.io/v1, command: "$a/exec-short.sh", interactiveMode: Never}
- name: authprov
  user:
    auth-provider:
      name: gcp
      config: {cmd-path: "$a/auth-provider.sh", cmd-args: "config-helper", token-key: "{.credential.access_token}"}
# The developer works in namespace demo: devnet resolves short names
# (web.demo) for the namespaces a kubeconfig names, and only those.
contexts:
- {name: lab, context: {cluster: lab, user: dev, namespace: demo}}
- {name: lab-reader, context: {cluster: lab, user: reader}}
- {name: lab-teammate, context: {cluster: lab, user: teammate}}
- {name: lab-expired, context: {cluster: lab, user: expired}}
- {name: lab-exec, context: {cluster: lab, user: exec}}
- {name: lab-authprov, context: {cluster: lab, user: authprov}}
- {name: lab-exec-short, context: {cluster: lab, user: exec-short}}
- {name: lab-down, context: {cluster: lab-down, user: dev}}
KC
  cat >"$dir/kube-profile.toml" <<PROFILE
# What the cluster cannot tell (devnetd knows where it keeps its state and
# which resolv.conf it manages): nothing for the lab.
PROFILE
}

firewall() {
  local mode=${3:-}
  in_ns office iptables -D FORWARD -s 192.168.10.0/24 -d 10.60.20.0/24 -j LABFW 2>/dev/null || true
  in_ns office iptables -F LABFW 2>/dev/null || true
  in_ns office iptables -X LABFW 2>/dev/null || true
  case "$mode" in
    open) ;;
    api-only)
      in_ns office iptables -N LABFW
      in_ns office iptables -A LABFW -d 10.60.20.10 -p tcp --dport 6443 -j RETURN
      in_ns office iptables -A LABFW -j DROP
      in_ns office iptables -I FORWARD -s 192.168.10.0/24 -d 10.60.20.0/24 -j LABFW ;;
    *) echo "firewall takes api-only or open" >&2; exit 2 ;;
  esac
}

office_routes() {
  local mode=${3:-}
  local pods4=10.244.0.0/16 pods6=fd00:244::/48 svc4=10.96.0.0/16 svc6=fd00:96::/112
  in_ns office ip route del "$pods4" 2>/dev/null || true
  in_ns office ip route del "$svc4" 2>/dev/null || true
  in_ns office ip -6 route del "$pods6" 2>/dev/null || true
  in_ns office ip -6 route del "$svc6" 2>/dev/null || true
  # node2 knows node1's block again (misrouted takes it away).
  in_ns node2 ip route replace 10.244.1.0/24 via 10.60.20.11
  # node1 is the forwarding node: it masquerades the office LAN (seed 001).
  if ! in_ns node1 iptables -t nat -C POSTROUTING -s 192.168.10.0/24 -j MASQUERADE 2>/dev/null; then
    in_ns node1 iptables -t nat -A POSTROUTING -s 192.168.10.0/24 -j MASQUERADE
    in_ns node1 ip6tables -t nat -A POSTROUTING -s fd00:10::/64 -j MASQUERADE
  fi
  case "$mode" in
    none) ;;
    pods)
      in_ns office ip route add "$pods4" via 10.60.20.11
      in_ns office ip -6 route add "$pods6" via fd00:60::11 ;;
    all)
      in_ns office ip route add "$pods4" via 10.60.20.11
      in_ns office ip -6 route add "$pods6" via fd00:60::11
      in_ns office ip route add "$svc4" via 10.60.20.11
      in_ns office ip -6 route add "$svc6" via fd00:60::11 ;;
    misrouted)
      # Seed 004: the office router sends the pod CIDR to node2, which has
      # no route for node1's block (a hop without the route).
      in_ns office ip route add "$pods4" via 10.60.20.12
      in_ns node2 ip route replace unreachable 10.244.1.0/24 ;;
    *) echo "office-routes takes none, pods, all or misrouted" >&2; exit 2 ;;
  esac
}

hostile() {
  local mode=${3:-} cidr
  for cmd in iptables ip6tables; do
    in_ns office "$cmd" -t nat -D PREROUTING -j LABHOSTILE 2>/dev/null || true
    in_ns office "$cmd" -t nat -F LABHOSTILE 2>/dev/null || true
    in_ns office "$cmd" -t nat -X LABHOSTILE 2>/dev/null || true
  done
  for f in hostile-web hostile-dns; do
    [[ -f $dir/$f.pid ]] && kill "$(cat "$dir/$f.pid")" 2>/dev/null || true
    rm -f "$dir/$f.pid"
  done
  case "$mode" in
    off) return 0 ;;
    on) ;;
    *) echo "hostile takes on or off" >&2; exit 2 ;;
  esac
  spawn office hostile-web "$bin/devnet-labd" serve --name hostile
  { dnsmasq_base | sed 's/^port=53$/port=5353/'; cat <<CONF
address=/#/10.96.0.10
address=/#/fd00:96::a
log-queries
log-facility=$dir/hostile-dns-queries.log
CONF
  } >"$dir/hostile-dns.conf"
  spawn office hostile-dns dnsmasq --conf-file="$dir/hostile-dns.conf" --pid-file="$dir/hostile-dns.dnsmasq-pid"
  in_ns office iptables -t nat -N LABHOSTILE
  in_ns office ip6tables -t nat -N LABHOSTILE
  for cidr in 10.244.0.0/16 10.96.0.0/16; do
    in_ns office iptables -t nat -A LABHOSTILE -d "$cidr" -p udp --dport 53 -j REDIRECT --to-ports 5353
    in_ns office iptables -t nat -A LABHOSTILE -d "$cidr" -p tcp --dport 53 -j REDIRECT --to-ports 5353
    # Every SYN is answered: the HTTP server takes the connection.
    in_ns office iptables -t nat -A LABHOSTILE -d "$cidr" -p tcp -j REDIRECT --to-ports 8080
  done
  for cidr in fd00:244::/48 fd00:96::/112; do
    in_ns office ip6tables -t nat -A LABHOSTILE -d "$cidr" -p udp --dport 53 -j REDIRECT --to-ports 5353
    in_ns office ip6tables -t nat -A LABHOSTILE -d "$cidr" -p tcp --dport 53 -j REDIRECT --to-ports 5353
    # Every SYN is reset: nothing listens on port 1.
    in_ns office ip6tables -t nat -A LABHOSTILE -d "$cidr" -p tcp -j REDIRECT --to-ports 1
  done
  in_ns office iptables -t nat -I PREROUTING -i lanbr -j LABHOSTILE
  in_ns office ip6tables -t nat -I PREROUTING -i lanbr -j LABHOSTILE
  local i
  for i in $(seq 100); do
    if in_ns laptop bash -c 'exec 3<>/dev/tcp/10.244.1.10/8080' 2>/dev/null \
      && in_ns laptop dig +short +time=1 +tries=1 @10.96.0.10 anything.example >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.05
  done
  echo "the hostile router did not come up" >&2; exit 1
}

bird_start() { # bird_start <host> <config>
  spawn "$1" "bird-$1" bird -f -c "$2" -s "$dir/bird-$1.ctl" -P "$dir/bird-$1.bird-pid"
}

bird_stop() {
  local f
  for f in "$dir"/bird-*.pid; do
    [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null || true
  done
  sleep 0.3
  rm -f "$dir"/bird-*.pid "$dir"/bird-*.ctl
}

bgp() {
  local mode=${3:-} n timers='connect retry time 1; hold time 6; keepalive time 2; error wait time 1, 5;'
  bird_stop
  [[ $mode == off ]] && return 0
  [[ $mode == all || $mode == pods ]] || { echo "bgp takes all, pods or off" >&2; exit 2; }
  {
    echo "router id 10.60.20.1;"
    echo "protocol device {}"
    echo "protocol kernel { ipv4 { import none; export all; }; }"
    echo "protocol kernel { ipv6 { import none; export all; }; }"
    for n in 1 2 3; do
      echo "protocol bgp node${n}v4 { local 10.60.20.1 as 65200; neighbor 10.60.20.1$n as 64513; $timers ipv4 { import all; export none; }; }"
      echo "protocol bgp node${n}v6 { local fd00:60::1 as 65200; neighbor fd00:60::1$n as 64513; $timers ipv6 { import all; export none; }; }"
    done
  } >"$dir/bird-office.conf"
  bird_start office "$dir/bird-office.conf"
  for n in 1 2 3; do
    {
      echo "router id 10.60.20.1$n;"
      echo "protocol device {}"
      # The pod block is announced as Calico's BIRD does; the kernel already
      # has it (blackhole) and the routes to the other nodes.
      echo "protocol static { ipv4; route 10.244.$n.0/24 blackhole; }"
      echo "protocol static { ipv6; route fd00:244:0:$n::/64 blackhole; }"
      if [[ $mode == all ]]; then
        echo "protocol static { ipv4; route 10.96.0.0/16 blackhole; }"
        echo "protocol static { ipv6; route fd00:96::/112 blackhole; }"
      fi
      echo "protocol bgp officev4 { local 10.60.20.1$n as 64513; neighbor 10.60.20.1 as 65200; $timers ipv4 { import none; export all; }; }"
      echo "protocol bgp officev6 { local fd00:60::1$n as 64513; neighbor fd00:60::1 as 65200; $timers ipv6 { import none; export all; }; }"
    } >"$dir/bird-node$n.conf"
    bird_start "node$n" "$dir/bird-node$n.conf"
  done
  # Wait for the office router to learn the pod blocks (and services).
  local want=3 i
  [[ $mode == all ]] && want=4
  for i in $(seq 150); do
    local got got6
    got=$(in_ns office ip route show proto bird | grep -c -E '^10\.(244|96)\.' || true)
    got6=$(in_ns office ip -6 route show proto bird | grep -c -E '^fd00:(244|96):' || true)
    ((got >= want && got6 >= want)) && return 0
    sleep 0.1
  done
  echo "BGP did not converge:" >&2; in_ns office ip route >&2; cat "$dir"/bird-*.log >&2; exit 1
}

# systemd-resolved, unpacked (not installed) by run-all.sh.
resolved_root=${DEVNET_RESOLVED_ROOT:-/var/cache/devnet-lab/systemd-resolved}
holder_pid() { cat "$dir/resolved/holder.pid" 2>/dev/null; }
in_laptop_mounts() { nsenter -t "$(holder_pid)" -m -n "$@"; }

resolved_run() { # start systemd-resolved inside the holder, wait for it on the bus
  local w=$dir/resolved i
  # nsenter and env exec, so $! is resolved's own pid (a shell function
  # here would put a subshell in between).
  nsenter -t "$(holder_pid)" -m -n env LD_LIBRARY_PATH="$resolved_root/usr/lib/x86_64-linux-gnu/systemd" \
    SYSTEMD_LOG_LEVEL="${DEVNET_RESOLVED_LOG_LEVEL:-debug}" "$resolved_root/lib/systemd/systemd-resolved" >>"$w/resolved.log" 2>&1 &
  echo $! >"$w/resolved.pid"
  for i in $(seq 100); do
    if in_laptop_mounts "$resolved_root/usr/bin/resolvectl" status >/dev/null 2>&1 \
      && in_laptop_mounts test -s /run/systemd/resolve/stub-resolv.conf; then return 0; fi
    sleep 0.05
  done
  echo "systemd-resolved did not come up:" >&2; tail -20 "$w/resolved.log" >&2; exit 1
}

resolved() { # lab.sh resolved <lab> start|restart|stop
  local w=$dir/resolved i
  case ${3:-} in
    start)
      [[ -x $resolved_root/lib/systemd/systemd-resolved && -x $resolved_root/usr/bin/resolvectl ]] || {
        echo "systemd-resolved is not unpacked at $resolved_root: run tests/run-all.sh (it downloads and unpacks Debian's systemd-resolved .deb), or set DEVNET_RESOLVED_ROOT" >&2
        exit 1
      }
      command -v dbus-daemon >/dev/null || { echo "dbus-daemon is missing: apt-get install dbus-daemon" >&2; exit 1; }
      mkdir -p "$w/conf.d"
      # resolved drops to this user; the host need not have it.
      { cat /etc/passwd; getent passwd systemd-resolve >/dev/null || echo 'systemd-resolve:x:64953:64953::/:/usr/sbin/nologin'; } >"$w/passwd"
      { cat /etc/group; getent group systemd-resolve >/dev/null || echo 'systemd-resolve:x:64953:'; } >"$w/group"
      cat >"$w/bus.conf" <<'CONF'
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path=/run/dbus/system_bus_socket</listen><auth>EXTERNAL</auth>
<policy context="default"><allow user="*"/><allow own="*"/><allow send_type="method_call"/><allow send_destination="*"/><allow receive_sender="*"/></policy></busconfig>
CONF
      # The office DNS for everything else; no fallback servers (the lab has
      # no internet, and nothing may leave it), no multicast resolution.
      printf '[Resolve]\nDNS=192.168.10.1\nFallbackDNS=\nLLMNR=no\nMulticastDNS=no\nDNSSEC=no\n' >"$w/conf.d/lab.conf"
      # The holder: a private mount namespace over the laptop's network
      # namespace, with its own /run. `ip netns exec` and unshare exec, so
      # $! is the holder's own pid.
      ip netns exec "$(ns laptop)" unshare -m --propagation private sh -c "
        # /run/netns stays visible, so ip names the lab's namespaces as before.
        mkdir -p '$w/netns'; mount --rbind /run/netns '$w/netns'
        mount -t tmpfs -o mode=755 tmpfs /run
        mkdir -p /run/netns; mount --move '$w/netns' /run/netns
        mkdir -p /run/dbus /run/systemd/resolve /run/systemd/resolved.conf.d
        cp '$w/conf.d/lab.conf' /run/systemd/resolved.conf.d/
        mount --bind '$w/passwd' /etc/passwd
        mount --bind '$w/group' /etc/group
        chown systemd-resolve:systemd-resolve /run/systemd/resolve
        touch '$w/holder.ready'
        exec sleep infinity" >"$w/holder.log" 2>&1 &
      echo $! >"$w/holder.pid"
      for i in $(seq 100); do [[ -e $w/holder.ready ]] && break; sleep 0.05; done
      [[ -e $w/holder.ready ]] || { echo "the laptop's mount namespace did not come up:" >&2; cat "$w/holder.log" >&2; exit 1; }
      in_laptop_mounts dbus-daemon --config-file="$w/bus.conf" --fork --nopidfile
      resolved_run
      # Programs on the laptop now ask resolved, as on Ubuntu or Fedora.
      in_laptop_mounts mount --bind /run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
      ;;
    restart)
      local pid; pid=$(cat "$w/resolved.pid")
      kill "$pid"
      for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      # What a restart forgets when /run is cleared (a reboot of the
      # service's state): resolved keeps link settings made over D-Bus in
      # /run/systemd/resolve/netif and would restore them by itself.
      if [[ ${4:-} == forget ]]; then in_laptop_mounts sh -c 'rm -f /run/systemd/resolve/netif/*'; fi
      resolved_run
      ;;
    stop)
      [[ -e $w/holder.pid ]] || return 0
      # Every process in the holder's mount namespace: resolved, the bus,
      # and anything started there.
      local m; m=$(readlink "/proc/$(holder_pid)/ns/mnt" || true)
      for i in /proc/[0-9]*; do
        [[ -n $m && $(readlink "$i/ns/mnt" 2>/dev/null) == "$m" ]] && kill -9 "${i#/proc/}" 2>/dev/null || true
      done
      rm -rf "$w"
      ;;
    *) echo "resolved takes start, restart [forget] or stop" >&2; exit 2 ;;
  esac
}

# The REAL control plane: etcd, kube-apiserver and kube-controller-manager
# built from Kubernetes' Go modules (tests/realkube/build.sh; cached outside
# the repository), on the api host. No kubelet yet: pods stay Pending.
realapi() {
  api_host
  local a=$dir/api etcd kube_apiserver kube_controller_manager
  # NAME=PATH lines, as variables (kube-apiserver -> kube_apiserver).
  local kube_scheduler
  eval "$(bash "$(dirname "$0")/../realkube/build.sh" kube-apiserver kube-controller-manager kube-scheduler etcd \
    | awk -F= '{ gsub("-", "_", $1); print $1 "=" $2 }')"
  mkdir -p "$a/etcd" "$a/exec-out"
  chmod 1777 "$a/exec-out"
  # A cluster CA, the API server's serving certificate, the service-account keys.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=devnet-lab-ca" \
    -keyout "$a/ca.key" -out "$a/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout "$a/apiserver.key" -out "$a/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:10.60.20.10,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n' >"$a/san.ext"
  openssl x509 -req -in "$a/apiserver.csr" -CA "$a/ca.crt" -CAkey "$a/ca.key" -CAcreateserial -days 2 \
    -extfile "$a/san.ext" -out "$a/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$a/sa.key" 2048 2>/dev/null
  openssl rsa -in "$a/sa.key" -pubout -out "$a/sa.pub" 2>/dev/null
  # Users by static token: admin and dev are cluster admins (system:masters),
  # reader gets the aggregated `view` role below, kcm is the controller manager.
  cat >"$a/tokens.csv" <<CSV
admin-token,admin,100,system:masters
dev-token,dev,1001,system:masters
reader-token,reader,1002,
kcm-token,system:kube-controller-manager,1003,
sched-token,system:kube-scheduler,1004,
node4-token,system:node:node4,1014,system:nodes
proxy-token,system:kube-proxy,1005,
CSV
  # The API server's client certificate toward kubelets (system:masters, as kubeadm's).
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" \
    -keyout "$a/kubelet-client.key" -out "$a/kubelet-client.csr" 2>/dev/null
  openssl x509 -req -in "$a/kubelet-client.csr" -CA "$a/ca.crt" -CAkey "$a/ca.key" -CAcreateserial -days 2 \
    -out "$a/kubelet-client.crt" 2>/dev/null
  in_ns api "$etcd" --name lab --data-dir "$a/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster lab=http://127.0.0.1:2380 \
    --log-level warn >"$dir/etcd.log" 2>&1 &
  in_ns api "$kube_apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address=10.60.20.10 --advertise-address=10.60.20.10 --secure-port=6443 \
    --tls-cert-file="$a/apiserver.crt" --tls-private-key-file="$a/apiserver.key" --client-ca-file="$a/ca.crt" \
    --token-auth-file="$a/tokens.csv" --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$a/sa.pub" \
    --service-account-signing-key-file="$a/sa.key" --service-cluster-ip-range=10.96.0.0/16,fd00:96::/112 \
    --enable-admission-plugins=NodeRestriction --allow-privileged=false \
    --kubelet-preferred-address-types=InternalIP --kubelet-certificate-authority="$a/ca.crt" \
    --kubelet-client-certificate="$a/kubelet-client.crt" --kubelet-client-key="$a/kubelet-client.key" \
    >"$dir/apiserver.log" 2>&1 &
  local i up=
  for i in $(seq 300); do
    if in_ns api curl -sk -m 1 -H "Authorization: Bearer admin-token" https://10.60.20.10:6443/readyz 2>/dev/null | grep -qx ok; then up=1; break; fi
    sleep 0.1
  done
  [[ -n "$up" ]] || { echo "kube-apiserver did not become ready:" >&2; tail -30 "$dir/apiserver.log" >&2; exit 1; }
  realapi_kubeconfig kcm-token >"$a/kcm.kubeconfig"
  realapi_kubeconfig sched-token >"$a/scheduler.kubeconfig"
  # Only the controllers devnet's relay and these tests meet; no scheduler
  # (pods that must run name their node).
  in_ns api "$kube_controller_manager" --kubeconfig="$a/kcm.kubeconfig" --authentication-skip-lookup \
    --leader-elect=false --secure-port=0 --use-service-account-credentials=true \
    --controllers=namespace-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,clusterrole-aggregation-controller,service-cidr-controller,deployment-controller,replicaset-controller,endpointslice-controller,node-lifecycle-controller \
    --service-account-private-key-file="$a/sa.key" --root-ca-file="$a/ca.crt" \
    --cluster-signing-cert-file="$a/ca.crt" --cluster-signing-key-file="$a/ca.key" >"$dir/controller-manager.log" 2>&1 &
  # The real scheduler: the relay's Deployment names no node. Nodes 1-3 have
  # no kubelet, so they are tainted; only a real node (realnode) takes pods.
  in_ns api "$kube_scheduler" --kubeconfig="$a/scheduler.kubeconfig" --authentication-kubeconfig="$a/scheduler.kubeconfig" \
    --authorization-kubeconfig="$a/scheduler.kubeconfig" --leader-elect=false --secure-port=0 >"$dir/scheduler.log" 2>&1 &
  # The cluster as kubeadm and Calico would leave it: nodes with their pod
  # CIDRs, kubeadm-config, kube-dns, Calico's IPPool CRD and pool.
  realapi_apply "$(realapi_objects)"
  for i in $(seq 100); do
    realapi_curl GET /apis/crd.projectcalico.org/v1/ippools 2>/dev/null | grep -q '"kind": *"IPPoolList"' && break
    sleep 0.1
  done
  realapi_apply "# POST /apis/crd.projectcalico.org/v1/ippools
apiVersion: crd.projectcalico.org/v1
kind: IPPool
metadata: {name: default-ipv4-ippool}
spec: {cidr: 10.244.0.0/16, ipipMode: Never, vxlanMode: Never, natOutgoing: false, blockSize: 24}"
  local ca; ca=$(base64 -w0 <"$a/ca.crt")
  cat >"$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
current-context: lab
clusters:
- name: lab
  cluster: {server: "https://10.60.20.10:6443", certificate-authority-data: "$ca"}
users:
- {name: dev, user: {token: dev-token}}
- {name: reader, user: {token: reader-token}}
# The developer works in namespace demo: devnet resolves short names
# (web.demo) for the namespaces a kubeconfig names, and only those.
contexts:
- {name: lab, context: {cluster: lab, user: dev, namespace: demo}}
- {name: lab-reader, context: {cluster: lab, user: reader}}
KC
  cat >"$dir/kube-profile.toml" <<PROFILE
# What the cluster cannot tell: nothing for the lab.
PROFILE
}

in_node4() { nsenter -t "$(cat "$dir/node4/holder.pid")" -m -n "$@"; } # node4's mount and network namespaces

# A REAL node beside the control plane: node4 (10.60.20.14, pods in
# 10.244.4.0/24), with Debian's containerd, runc and CNI plugins and the real
# kubelet, all in one private mount namespace over node4's network namespace
# (so the kubelet's volume mounts are the runtime's, and nothing is mounted on
# the host). Images come from OCI archives built here (no registry): pause and
# web from Debian's static busybox, the relay from installers/relay.
# The kubelet wants some kernel sysctls set (vm.overcommit_memory, kernel.panic,
# ...); they are global, so in its mount namespace it reads (and may write)
# files bind-mounted over them, and the host's values stay as they are.
realnode() {
  local d=$dir/node4 a=$dir/api kubelet kube_proxy n
  eval "$(bash "$(dirname "$0")/../realkube/build.sh" kubelet kube-proxy | awk -F= '{ gsub("-", "_", $1); print $1 "=" $2 }')"
  new_ns node4
  veth office port14 node4 eth0
  in_ns office ip link set port14 master br0
  in_ns node4 ip addr add 10.60.20.14/24 dev eth0
  in_ns node4 ip route add default via 10.60.20.1
  in_ns node4 sysctl -qw net.ipv4.ip_forward=1
  in_ns api ip route add 10.244.4.0/24 via 10.60.20.14
  # The other nodes route node4's block to it, as Calico would: with
  # office-routes pods (office -> node1) the laptop reaches node4's pods.
  for n in 1 2 3; do in_ns "node$n" ip route add 10.244.4.0/24 via 10.60.20.14; done
  mkdir -p "$d"/{cni,images,kubelet,pki,logs,sysctl,state,root}
  # The kubelet's serving certificate, from the lab CA; its identity, a token.
  openssl req -newkey rsa:2048 -nodes -subj "/O=system:nodes/CN=system:node:node4" \
    -keyout "$d/pki/kubelet.key" -out "$d/pki/kubelet.csr" 2>/dev/null
  printf 'subjectAltName=IP:10.60.20.14,DNS:node4\n' >"$d/pki/san.ext"
  openssl x509 -req -in "$d/pki/kubelet.csr" -CA "$a/ca.crt" -CAkey "$a/ca.key" -CAcreateserial -days 2 \
    -extfile "$d/pki/san.ext" -out "$d/pki/kubelet.crt" 2>/dev/null
  realapi_kubeconfig node4-token >"$d/kubelet.kubeconfig"
  realapi_kubeconfig proxy-token >"$d/kube-proxy.kubeconfig"
  cat >"$d/containerd.toml" <<TOML
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/lab/pause:1"
  netns_mounts_under_state_dir = true
  # These machines withhold CAP_SYS_RESOURCE from everything, so no process
  # may lower an oom_score_adj (the kubelet asks -998 for sandboxes).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni"
TOML
  cat >"$d/cni/10-lab.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "lab", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.4.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$d/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
  cat >"$d/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$d/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /devnet-lab-$lab
failCgroupV1: false
failSwapOn: false
address: 10.60.20.14
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: $d/pki/kubelet.crt
tlsPrivateKeyFile: $d/pki/kubelet.key
authentication: {anonymous: {enabled: false}, webhook: {enabled: true}, x509: {clientCAFile: $a/ca.crt}}
authorization: {mode: Webhook}
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: $d/logs
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
registerNode: true
YAML
  # Lab-owned cgroups for the kubelet's pods, in every v1 hierarchy.
  local c
  for c in /sys/fs/cgroup/*/; do [[ $c == */unified/ ]] || mkdir -p "$c/devnet-lab-$lab"; done
  # What the kubelet wants the global sysctls to be, as files.
  printf '1\n' >"$d/sysctl/vm.overcommit_memory"; printf '0\n' >"$d/sysctl/vm.panic_on_oom"
  printf '10\n' >"$d/sysctl/kernel.panic"; printf '1\n' >"$d/sysctl/kernel.panic_on_oops"
  printf '1000000\n' >"$d/sysctl/kernel.keys.root_maxkeys"; printf '25000000\n' >"$d/sysctl/kernel.keys.root_maxbytes"
  # nsenter, not `ip netns exec`: that remounts /sys and so hides the cgroup
  # hierarchies the kubelet needs.
  nsenter --net="/var/run/netns/$(ns node4)" unshare --mount --propagation private sleep infinity >/dev/null 2>&1 &
  echo $! >"$d/holder.pid"
  sleep 0.2
  local holder; holder=$(pgrep -P "$(cat "$d/holder.pid")" sleep || cat "$d/holder.pid")
  echo "$holder" >"$d/holder.pid"
  local f
  for f in "$d"/sysctl/*; do
    in_node4 mount --bind "$f" "/proc/sys/$(basename "$f" | tr . /)"
  done
  in_node4 containerd --config "$d/containerd.toml" >"$dir/containerd.log" 2>&1 &
  for i in $(seq 100); do [[ -S $d/containerd.sock ]] && break; sleep 0.1; done
  realnode_images
  for img in "$d"/images/*.tar; do
    in_node4 ctr --address "$d/containerd.sock" -n k8s.io images import --all-platforms "$img" >/dev/null
  done
  in_node4 "$kubelet" --config="$d/kubelet.yaml" --kubeconfig="$d/kubelet.kubeconfig" --hostname-override=node4 \
    --node-ip=10.60.20.14 --root-dir="$d/kubelet" --cert-dir="$d/pki" >"$dir/kubelet.log" 2>&1 &
  # The real kube-proxy (iptables, in node4's network namespace only): node
  # ports, and ClusterIPs for node4's pods (the relay among them). It leaves
  # the global conntrack sysctls alone.
  in_node4 "$kube_proxy" --kubeconfig="$d/kube-proxy.kubeconfig" --hostname-override=node4 --proxy-mode=iptables \
    --cluster-cidr=10.244.0.0/16 --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 \
    --conntrack-tcp-timeout-close-wait=0 --metrics-bind-address=127.0.0.1:10249 \
    --healthz-bind-address=127.0.0.1:10256 --nodeport-addresses=10.60.20.14/32 >"$dir/kube-proxy.log" 2>&1 &
  local i ready=
  for i in $(seq 300); do
    if realapi_curl GET /api/v1/nodes/node4 2>/dev/null | jq -e '.status.conditions[]? | select(.type=="Ready" and .status=="True")' >/dev/null; then
      ready=1; break
    fi
    sleep 0.2
  done
  [[ -n $ready ]] || { echo "node4's kubelet did not become Ready:" >&2; tail -40 "$dir/kubelet.log" >&2; exit 1; }
  # Schedulable once the node lifecycle controller lifts the not-ready taint.
  for i in $(seq 300); do
    realapi_curl GET /api/v1/nodes/node4 2>/dev/null | jq -e '.spec.taints // [] | length == 0' >/dev/null \
      && { realnode_workload; return 0; }
    sleep 0.2
  done
  echo "node4 kept its taints:" >&2; realapi_curl GET /api/v1/nodes/node4 | jq -c .spec >&2; exit 1
}

realnode_workload() { # CoreDNS as kube-dns, a web Deployment and its ClusterIP Service, on the real node
  realapi_apply "# POST /api/v1/namespaces/kube-system/serviceaccounts
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
# POST /apis/rbac.authorization.k8s.io/v1/clusterroles
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: 'system:coredns'}
rules:
- {apiGroups: [''], resources: [endpoints, services, pods, namespaces], verbs: [list, watch]}
- {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [list, watch]}
---
# POST /apis/rbac.authorization.k8s.io/v1/clusterrolebindings
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: 'system:coredns'}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: 'system:coredns'}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
# POST /api/v1/namespaces/kube-system/configmaps
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
        }
        cache 5
    }
---
# POST /apis/apps/v1/namespaces/kube-system/deployments
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      containers:
      - name: coredns
        image: localhost/lab/coredns:1
        imagePullPolicy: Never
        ports: [{containerPort: 53, protocol: UDP}, {containerPort: 53, protocol: TCP}]
        readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 1}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]"
  realapi_apply "# POST /apis/apps/v1/namespaces/demo/deployments
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: demo}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      automountServiceAccountToken: false
      securityContext: {runAsNonRoot: true, runAsUser: 65532, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: web
        image: localhost/lab/web:1
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
---
# POST /api/v1/namespaces/demo/services
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec: {clusterIP: 10.96.0.20, selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}"
  local i
  for i in $(seq 150); do
    # Ready, its ClusterIP programmed by kube-proxy, and its name served.
    in_ns node4 curl -sf -m 1 -o /dev/null http://10.96.0.20/ \
      && [[ $(in_ns node4 dig +short +time=1 +tries=1 @10.96.0.10 web.demo.svc.cluster.local) == 10.96.0.20 ]] && return 0
    sleep 0.2
  done
  echo "the web Deployment did not answer at its ClusterIP, or CoreDNS not for its name, on node4" >&2; exit 1
}

realnode_images() { # the lab's images as OCI archives: pause, web, CoreDNS and the relay
  local d=$dir/node4 r oci coredns; oci="$(dirname "$0")/../../installers/relay/oci-archive.sh"
  eval "$(bash "$(dirname "$0")/../realkube/build.sh" coredns)"
  r=$(mktemp -d)
  install -D -m 0755 /bin/busybox "$r/bin/busybox"
  bash "$oci" "$d/images/pause.tar" localhost/lab/pause:1 65535:65535 '["/bin/busybox","sleep","2147483647"]' '{}' "$r" 2>/dev/null
  mkdir -p "$r/www"; echo "hello from a real pod" >"$r/www/index.html"
  # For bench/realkube.sh's downloads (zeros: the gzip layer stays small).
  head -c 67108864 /dev/zero >"$r/www/zero"
  bash "$oci" "$d/images/web.tar" localhost/lab/web:1 65532:65532 '["/bin/busybox","httpd","-f","-p","8080","-h","/www"]' '{}' "$r" 2>/dev/null
  rm -rf "$r"
  # CoreDNS, built from its Go module like the rest of the cluster.
  r=$(mktemp -d)
  install -D -m 0755 "$coredns" "$r/coredns"
  bash "$oci" "$d/images/coredns.tar" localhost/lab/coredns:1 0:0 '["/coredns","-conf","/etc/coredns/Corefile"]' '{}' "$r" 2>/dev/null
  rm -rf "$r"
  # The relay's product image: given (run-all.sh builds it once), or built
  # here with its static binary cached outside the repository.
  if [[ -n ${DEVNET_RELAY_IMAGE_TAR:-} ]]; then
    cp "$DEVNET_RELAY_IMAGE_TAR" "$d/images/relay.tar"
  else
    DEVNET_RELAY_TARGET_DIR=${DEVNET_KUBE_CACHE:-/var/cache/devnet-lab}/relay-target \
      bash "$(dirname "$0")/../../installers/relay/build-image.sh" "$d/images/relay.tar"
  fi
}

# REAL debuggers in real pods on the real node (after up, realapi and
# realnode): a JVM with JDWP on every address and one on localhost only,
# debugpy, Node's inspector, and Delve with and without --accept-multiclient,
# each a Deployment and a Service in namespace debug, for `devnet preflight`
# and real debugger clients (jdb, dlv connect, DAP, Chrome DevTools).
# The runtimes are the host's: one tiny image (merged-/usr symlinks, empty
# dirs) and the host's /usr mounted read-only, with the few /etc paths the
# runtimes read; the apps are built once into a cache outside the repository
# (tests/lab/debuggers/build.sh) and mounted at /app. Nothing of this is made
# unless realdebug runs.
REALDEBUG_APPS=(jvm jvm-local py node go go-single)

realdebug() {
  local d=$dir/node4 r oci line
  [[ -e $d/holder.pid ]] || { echo "realdebug needs realnode first" >&2; exit 1; }
  oci="$(dirname "$0")/../../installers/relay/oci-archive.sh"
  # The build's NAME=PATH lines, as dbg_NAME variables (its "dir" is not $dir).
  local dbg_dir dbg_java dbg_py dbg_node dbg_go dbg_debugpy dbg_jdk dbg_dlv dbg_jdb
  bash "$(dirname "$0")/debuggers/build.sh" >"$dir/debuggers.env"
  eval "$(awk -F= '{ print "dbg_" $1 "=" $2 }' "$dir/debuggers.env")"
  # The image: nothing but the merged-/usr symlinks and the mount points.
  r=$(mktemp -d)
  chmod 0755 "$r"
  mkdir -p "$r"/{etc,tmp,proc,sys,dev,app,usr}
  chmod 1777 "$r/tmp"
  for line in bin lib lib64 sbin; do ln -s "usr/$line" "$r/$line"; done
  bash "$oci" "$d/images/host.tar" localhost/lab/host:1 65532:65532 '["/usr/bin/sleep","infinity"]' '{}' "$r" 2>/dev/null
  rm -rf "$r"
  in_node4 ctr --address "$d/containerd.sock" -n k8s.io images import --all-platforms "$d/images/host.tar" >/dev/null
  # No Pod Security labels on the namespace: the API server's PodSecurity
  # admission then applies its default level, privileged, which allows the
  # hostPath volumes (baseline and restricted would refuse them).
  realapi_apply "# POST /api/v1/namespaces
apiVersion: v1
kind: Namespace
metadata: {name: debug}"
  # A small JVM: two of them share the lab's 2 cores with everything else.
  local jvm='-XX:-UsePerfData, -XX:+UseSerialGC, -XX:TieredStopAtLevel=1, -Xmx64m'
  realapi_apply "$(
    realdebug_app jvm jdwp 5005 jdwp "[$dbg_jdk/bin/java, $jvm, '-agentlib:jdwp=transport=dt_socket,server=y,suspend=n,address=*:5005', -cp, /app/java, Main]"
    echo ---
    # JDK 9 and later bind a bare port to localhost only: the pod listens,
    # but nothing outside it can attach.
    realdebug_app jvm-local jdwp 5005 jdwp "[$dbg_jdk/bin/java, $jvm, '-agentlib:jdwp=transport=dt_socket,server=y,suspend=n,address=5005', -cp, /app/java, Main]"
    echo ---
    # -Xfrozen_modules=off: as debugpy asks (it may miss breakpoints otherwise).
    realdebug_app py debugpy 5678 debugpy "[/usr/bin/python3, -Xfrozen_modules=off, -m, debugpy, --listen, 0.0.0.0:5678, /app/py/app.py]" \
      ", {name: PYTHONPATH, value: /app/debugpy}"
    echo ---
    realdebug_app node inspector 9229 inspector "[/usr/bin/node, --inspect=0.0.0.0:9229, /app/node/app.js]"
    echo ---
    # Debian's Delve is older than the Go that built the debuggee: it must be
    # told not to refuse it (tests/lab/debuggers/build.sh says what works).
    realdebug_app go dlv 2345 dlv "[$dbg_dlv, exec, --headless, '--listen=:2345', --api-version=2, --accept-multiclient, --continue, --check-go-version=false, /app/go/hello]"
    echo ---
    # Without --accept-multiclient Delve serves one client, and then closes
    # its listener. It also refuses --continue ("--continue requires
    # --accept-multiclient"), so the debuggee waits, stopped at its entry
    # point, for that client to continue it.
    realdebug_app go-single dlv 2345 dlv "[$dbg_dlv, exec, --headless, '--listen=:2345', --api-version=2, --check-go-version=false, /app/go/hello]"
  )"
  realdebug_wait
}

# realdebug_app <name> <debugger> <port> <port-name> <command> [more env]: a
# Deployment (its pods on node4, the only node with a kubelet) and a Service.
realdebug_app() {
  local name=$1 debugger=$2 port=$3 pname=$4 command=$5 env=${6:-} mounts='' volumes=''
  if [[ $debugger == jdwp ]]; then
    # The JDK's lib/jvm.cfg and conf/ are links into /etc/java-17-openjdk
    # (java is run by its JDK path, so /etc/alternatives is not needed).
    mounts='
        - {name: etc-java, mountPath: /etc/java-17-openjdk, readOnly: true}'
    volumes='
      - {name: etc-java, hostPath: {path: /etc/java-17-openjdk, type: Directory}}'
  fi
  # No readiness or liveness probe connects to the debugger's port: a TCP
  # connect would be the one client Delve without --accept-multiclient
  # serves (it then closes its listener) and would take debugpy's only
  # client slot. The startup probe instead reads the pod's own
  # /proc/net/tcp{,6} for a socket LISTENing on the port (state 0A), once a
  # second until it is there; the container is Ready from then on.
  cat <<YAML
# POST /apis/apps/v1/namespaces/debug/deployments
apiVersion: apps/v1
kind: Deployment
metadata: {name: $name, namespace: debug, labels: {app: $name}}
spec:
  replicas: 1
  selector: {matchLabels: {app: $name}}
  template:
    metadata: {labels: {app: $name, devnet.dev/debugger: $debugger}}
    spec:
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: 1
      securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532}
      containers:
      - name: $name
        image: localhost/lab/host:1
        imagePullPolicy: Never
        command: $command
        workingDir: /tmp
        env: [{name: HOME, value: /tmp}, {name: PATH, value: /usr/bin}$env]
        ports: [{containerPort: $port, name: $pname}]
        startupProbe:
          exec: {command: [sh, -c, "grep -Eq '^ *[0-9]+: [0-9A-F]+:$(printf %04X "$port") [0-9A-F]+:[0-9A-F]+ 0A ' /proc/net/tcp /proc/net/tcp6"]}
          periodSeconds: 1
          failureThreshold: 180
        securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
        volumeMounts:
        - {name: usr, mountPath: /usr, readOnly: true}
        - {name: ld-so-cache, mountPath: /etc/ld.so.cache, readOnly: true}
        - {name: apps, mountPath: /app, readOnly: true}$mounts
      volumes:
      - {name: usr, hostPath: {path: /usr, type: Directory}}
      - {name: ld-so-cache, hostPath: {path: /etc/ld.so.cache, type: File}}
      - {name: apps, hostPath: {path: $dbg_dir, type: Directory}}$volumes
---
# POST /api/v1/namespaces/debug/services
apiVersion: v1
kind: Service
metadata: {name: $name, namespace: debug, labels: {app: $name}}
spec: {selector: {app: $name}, ports: [{name: $pname, port: $port, targetPort: $pname}]}
YAML
}

realdebug_pod_netns() { # realdebug_pod_netns <pod-ip>: the pod's network namespace file, in node4's mounts
  local f
  for f in $(in_node4 sh -c "ls $dir/node4/state/io.containerd.grpc.v1.cri/netns/*"); do
    in_node4 nsenter --net="$f" ip -4 -o addr show | grep -q " inet $1/" && { echo "$f"; return 0; }
  done
  return 1
}

realdebug_wait() { # every pod Running and Ready, and every debugger listening where it should
  local d=$dir/node4 pods app missing i ip netns addrs port want
  for i in $(seq 360); do
    pods=$(realapi_curl GET /api/v1/namespaces/debug/pods 2>/dev/null) || pods='{}'
    missing=
    for app in "${REALDEBUG_APPS[@]}"; do
      jq -e --arg app "$app" '[.items[]? | select(.metadata.labels.app == $app and .metadata.deletionTimestamp == null
          and .status.phase == "Running" and any(.status.conditions[]?; .type == "Ready" and .status == "True"))] | length == 1' \
        <<<"$pods" >/dev/null || missing+=" $app"
    done
    [[ -z $missing ]] && break
    sleep 0.5
  done
  if [[ -n $missing ]]; then
    echo "debug pods not Running and Ready:$missing" >&2
    local pod f
    for app in $missing; do
      jq -c --arg app "$app" '.items[]? | select(.metadata.labels.app == $app)
        | {pod: .metadata.name, phase: .status.phase, conditions: [.status.conditions[]? | {type, status, reason, message}],
           containers: [.status.containerStatuses[]? | {name, ready, restartCount, state, lastState}]}' <<<"$pods" >&2
      # The container logs (kubectl logs), as the kubelet writes them.
      for pod in $(jq -r --arg app "$app" '.items[]? | select(.metadata.labels.app == $app) | .metadata.name' <<<"$pods"); do
        for f in "$d"/logs/debug_"$pod"_*/*/*.log; do
          [[ -e $f ]] || continue
          echo "--- $f" >&2; tail -20 "$f" >&2
        done
      done
    done
    exit 1
  fi
  : >"$dir/debug-pods"
  for app in "${REALDEBUG_APPS[@]}"; do
    ip=$(jq -r --arg app "$app" '.items[] | select(.metadata.labels.app == $app and .metadata.deletionTimestamp == null and .status.phase == "Running") | .status.podIP' <<<"$pods")
    port=$(jq -r --arg app "$app" '.items[] | select(.metadata.labels.app == $app and .metadata.deletionTimestamp == null and .status.phase == "Running") | .spec.containers[0].ports[0].containerPort' <<<"$pods")
    netns=$(realdebug_pod_netns "$ip") || { echo "no network namespace on node4 has $app's pod IP $ip" >&2; exit 1; }
    # What listens on the port, seen from inside the pod, without connecting:
    # a connection would be go-single's one client (Delve then closes its
    # listener), and debugpy's is no place for probes either. Ready already
    # means a listener (the startup probe); this also checks the address.
    case $app in
      jvm-local) want='^(127\.0\.0\.1|\[::1\]|\[::ffff:127\.0\.0\.1\]):' ;;
      *) want='^(0\.0\.0\.0|\*|\[::\]):' ;;
    esac
    for i in $(seq 20); do
      addrs=$(in_node4 nsenter --net="$netns" ss -ltnH "sport = :$port" | awk '{print $4}' | sort -u | paste -sd' ')
      [[ -n $addrs ]] && ! grep -qvE "$want" <<<"${addrs// /$'\n'}" && break
      sleep 0.5
    done
    [[ -n $addrs ]] && ! grep -qvE "$want" <<<"${addrs// /$'\n'}" \
      || { echo "$app ($ip): want a listener on port $port matching $want, have: ${addrs:-none}" >&2; exit 1; }
    echo "$app $ip $(realapi_curl GET "/api/v1/namespaces/debug/services/$app" | jq -r .spec.clusterIP) $port" >>"$dir/debug-pods"
  done
  # The inspector answers as Chrome DevTools' discovery (a connection is fine: it takes many).
  ip=$(awk '$1 == "node" {print $2}' "$dir/debug-pods")
  in_ns node4 curl -sf -m 2 "http://$ip:9229/json/version" | jq -e .Browser >/dev/null \
    || { echo "node's inspector at $ip:9229 did not answer /json/version" >&2; exit 1; }
  cat "$dir/debug-pods"
}

realapi_kubeconfig() { # realapi_kubeconfig <token>: a kubeconfig for a control-plane component
  cat <<KC
apiVersion: v1
kind: Config
clusters: [{name: lab, cluster: {server: "https://10.60.20.10:6443", certificate-authority: "$dir/api/ca.crt"}}]
users: [{name: u, user: {token: $1}}]
contexts: [{name: lab, context: {cluster: lab, user: u}}]
current-context: lab
KC
}

realapi_curl() { # realapi_curl <method> <path> [yaml body]: as admin
  in_ns api curl -sk -m 5 -X "$1" -H "Authorization: Bearer admin-token" -H "Content-Type: ${4:-application/yaml}" \
    ${3:+--data-binary "$3"} "https://10.60.20.10:6443$2"
}

realapi_apply() { # POST each YAML document to the path on its first line (# POST <path>)
  local doc path body
  while IFS= read -r -d $'\x1e' doc; do
    path=$(sed -n 's/^# \(POST\|PATCH\) //p' <<<"$doc" | head -1)
    [[ -n $path ]] || continue
    body=$(grep -v '^# \(POST\|PATCH\) ' <<<"$doc")
    if grep -q '^# PATCH' <<<"$doc"; then
      realapi_curl PATCH "$path" "$body" application/merge-patch+json >/dev/null
    else
      realapi_curl POST "$path" "$body" >/dev/null
    fi
  done < <(awk 'BEGIN{RS="\n---\n"; ORS="\x1e"} {print}' <<<"$1")
}

realapi_objects() {
  local n
  for n in 1 2 3; do cat <<YAML
# POST /api/v1/nodes
apiVersion: v1
kind: Node
metadata: {name: node$n, labels: {kubernetes.io/hostname: node$n}}
spec: {podCIDR: 10.244.$n.0/24, podCIDRs: [10.244.$n.0/24, "fd00:244:0:$n::/64"], taints: [{key: devnet.dev/no-kubelet, effect: NoSchedule}]}
---
# PATCH /api/v1/nodes/node$n/status
{"status": {"addresses": [{"type": "InternalIP", "address": "10.60.20.1$n"}]}}
---
YAML
  done
  echo '# POST /api/v1/namespaces/kube-system/configmaps'
  kubeadm_config_yaml
  echo ---
  cat <<'YAML'
# POST /api/v1/namespaces/kube-system/services
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec: {ipFamilyPolicy: PreferDualStack, clusterIP: 10.96.0.10, clusterIPs: [10.96.0.10, "fd00:96::a"], ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, protocol: TCP}], selector: {k8s-app: kube-dns}}
---
# POST /api/v1/namespaces
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
# POST /apis/rbac.authorization.k8s.io/v1/clusterrolebindings
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: reader-view}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: reader}]
---
# POST /apis/apiextensions.k8s.io/v1/customresourcedefinitions
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: ippools.crd.projectcalico.org}
spec:
  group: crd.projectcalico.org
  scope: Cluster
  names: {kind: IPPool, listKind: IPPoolList, plural: ippools, singular: ippool}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
YAML
}

devnetd_ctl() {
  local unit pid caps groups i
  unit="$(dirname "$0")/../../installers/linux/devnetd.service"
  case "${3:-}" in
    start)
      getent group devnet >/dev/null || groupadd --system devnet
      caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$unit" | tr ' ' '\n' | sed 's/^CAP_/+/' | tr 'A-Z' 'a-z' | paste -sd,)
      groups=$(sed -n 's/^SupplementaryGroups=//p' "$unit" | xargs -n1 getent group | cut -d: -f3 | paste -sd,)
      in_ns laptop setpriv --bounding-set="-all,$caps" --inh-caps=-all --no-new-privs --groups="$groups" -- \
        "$bin/devnetd" --socket "$dir/run/devnetd.sock" --state-dir "$dir/laptop-state" \
        --resolv-conf "/etc/netns/$(ns laptop)/resolv.conf" >>"$dir/devnetd.log" 2>&1 &
      echo $! >"$dir/devnetd.pid"
      for i in $(seq 100); do
        grep -q "devnetd serving" "$dir/devnetd.log" 2>/dev/null && return 0
        sleep 0.05
      done
      echo "devnetd did not start:" >&2; cat "$dir/devnetd.log" >&2; exit 1
      ;;
    stop)
      pid=$(cat "$dir/devnetd.pid" 2>/dev/null) || return 0
      kill -TERM "$pid" 2>/dev/null || true
      for i in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
      rm -f "$dir/devnetd.pid"
      ;;
    *) echo "devnetd takes start or stop" >&2; exit 2 ;;
  esac
}

down_quiet() {
  local n c
  # The real node's pods live in their own namespaces; find them by cgroup.
  for c in /sys/fs/cgroup/pids/devnet-lab-$lab; do
    [[ -d $c ]] || continue
    find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
  done
  [[ -e $dir/node4/holder.pid ]] && kill -9 "$(cat "$dir/node4/holder.pid")" 2>/dev/null || true
  for n in $(ip netns list | awk '{print $1}' | grep "^$lab-" || true); do
    # Every process in the namespace goes with it.
    ip netns pids "$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$n" 2>/dev/null || true
    rm -rf "/etc/netns/$n"
  done
  sleep 0.2
  for c in /sys/fs/cgroup/*/devnet-lab-$lab; do
    [[ -d $c ]] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$dir"
}

case "$1" in
  up) up "$@" ;;
  down) down_quiet ;;
  relay-start) relay_start ;;
  relay-stop) relay_stop "$@" ;;
  exec)
    shift 2; host=$1; shift
    # With the lab's systemd-resolved running, the laptop is its mount namespace.
    if [[ $host == laptop && -n $(holder_pid) ]]; then in_laptop_mounts "$@"; else in_ns "$host" "$@"; fi
    ;;
  resolved) resolved "$@" ;;
  devnetd) devnetd_ctl "$@" ;;
  realapi) realapi ;;
  realnode) realnode ;;
  realdebug) realdebug ;;
  realapi-apply) shift 2; realapi_apply "$(cat)" ;;
  office-routes) office_routes "$@" ;;
  hostile) hostile "$@" ;;
  api) api ;;
  office-dns) office_dns "$@" ;;
  firewall) firewall "$@" ;;
  bgp) bgp "$@" ;;
  *) echo "unknown command $1" >&2; exit 2 ;;
esac
