#!/usr/bin/env bash
# devnet benchmarks, in the lab (not a test: numbers, not pass/fail).
#
# In one lab run, the same measurements over several paths to the same pod:
#   routed:    the office router routes the pod block to its node (seed 001's static route);
#   devnet:    no route; devnet's TUN + smoltcp + relay carry it;
#   wireguard: userspace WireGuard (boringtun), server in the relay pod;
#   openvpn:   OpenVPN (UDP, static key), server in the relay pod;
#   sshuttle:  sshuttle over ssh to an sshd in the relay pod;
#   kube-direct / kube-portforward: `devnet connect --context lab` against the
#              lab's stand-in API server, relay reached by node port or
#              through the API server's port-forward.
# Cluster name lookups (each name new, so no cache answers): the cluster DNS
# over a routed path, and through devnet with each resolver backend.
# Printed as a table with ratios against the routed path and devnet/peer ratios,
# and saved as JSON in bench/results/.
#
#   sudo bench/run.sh [seconds-per-iperf-run]
#   sudo BENCH_ONLY=far bench/run.sh [seconds]   only the far-away cases (a
#        check of the WAN link; printed and saved in /tmp, not in bench/results/)
#   sudo BENCH_ONLY=devnet bench/run.sh [seconds]   only devnet's own
#        measurements and memory, no routed path or peers to compare with (a
#        check while changing the data path; saved in /tmp, not in bench/results/)
#   DEVNET_BIN=<dir>: use the binaries there instead of building release ones
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "needs root (network namespaces): sudo $0" >&2; exit 1; }
secs=${1:-5}
only=${BENCH_ONLY:-}
[[ -z $only || $only == far || $only == devnet ]] ||
  { echo "BENCH_ONLY=$only: the subsets are far (the far-away cases) and devnet (devnet alone, with its memory)" >&2; exit 2; }
need=()
for tool in ip:iproute2 tc:iproute2 iptables:iptables dnsmasq:dnsmasq-base dig:dnsutils curl:curl iperf3:iperf3 jq:jq gnuplot:gnuplot-nox \
  openvpn:openvpn sshuttle:sshuttle sshd:openssh-server ssh:openssh-client wg:wireguard-tools ping:iputils-ping column:bsdextrautils; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Userspace WireGuard: boringtun, from crates.io.
command -v bc >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends bc >/dev/null; }
command -v boringtun-cli >/dev/null || cargo install boringtun-cli --locked
export PATH=$PATH:$HOME/.cargo/bin
[[ -n $only ]] || bash tests/lab/fetch-resolved.sh
if [[ -z ${DEVNET_BIN:-} ]]; then
  cargo build --workspace --bins --release --locked
  export DEVNET_BIN=$PWD/target/release
fi
lab=bench
dir=/tmp/devnet-lab-$lab
L() { ip netns exec "$lab-$1" "${@:2}"; }
source bench/lab-engine.sh
cleanup() {
  # The userspace WAN link first: its TAPs go with it.
  wan_link_stop
  L laptop "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" disconnect >/dev/null 2>&1 || true
  sleep 1
  if declare -F wireguard_down >/dev/null; then wireguard_down; openvpn_down; sshuttle_down; fi
  bash tests/lab/lab.sh down $lab
}
wan_link_stop() { # the userspace WAN link's process, if one runs
  local pid
  [[ -f $dir/wan-link.pid ]] || return 0
  pid=$(cat "$dir/wan-link.pid")
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -f "$dir/wan-link.pid"
}
trap cleanup EXIT

bash tests/lab/lab.sh up "$lab" no-path
L echo iperf3 -s -D -p 5201 >/dev/null
target=10.244.3.10

measure() { # measure <label> <echo-port>: prints one JSON object
  local ones=() eights=() down rr cps cps16 i port=$2
  # Latency and connection rate first: they suffer for a while after bulk
  # runs (memory reclaim, TIME_WAIT) on a 2-core machine.
  rr=$(L laptop "$DEVNET_BIN/devnet-labd" probe rr "$target:$port" 20000)
  # New connections one after another (a connection's latency) and from 16
  # connectors at once (the capacity), each for the same time. The second
  # on a port of its own (the echo server's port + 1000): on the first
  # port, the thousands of TIME_WAIT sockets the first left make the kernel
  # search for a free source port, and routed measured 622 connections/s
  # there against 3356 on a fresh port.
  cps=$(L laptop "$DEVNET_BIN/devnet-labd" probe cps "$target:$port" "$secs")
  cps16=$(L laptop "$DEVNET_BIN/devnet-labd" probe cps "$target:$((port + 1000))" "$secs" 16)
  down=$(L laptop iperf3 -c $target -t "$secs" -R -J | jq '.end.sum_received.bits_per_second')
  # One stream and 8 streams three times each, taking turns, and the median
  # of each: this machine's speed moves by tens of percent from one minute
  # to the next, and one sample of each made "8 streams against one" swing
  # from 0.60 to 1.07 between runs of the same build. 8 streams go last:
  # the engine's memory is read right after them.
  for i in 1 2 3; do
    ones+=("$(L laptop iperf3 -c $target -t "$secs" -J | jq '.end.sum_received.bits_per_second // null')")
    eights+=("$(L laptop iperf3 -c $target -t "$secs" -P 8 -J | jq '.end.sum_received.bits_per_second // null')")
  done
  jq -n --arg path "$1" --argjson ones "$(printf '%s\n' "${ones[@]}" | jq -s .)" \
    --argjson eights "$(printf '%s\n' "${eights[@]}" | jq -s .)" --argjson down "$down" --argjson rr "$rr" \
    --argjson cps "$cps" --argjson cps16 "$cps16" \
    'def median: map(select(. != null)) | sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
     {path: $path, single_stream_bps: ($ones | median), eight_streams_bps: ($eights | median),
      single_stream_bps_runs: $ones, eight_streams_bps_runs: $eights, download_bps: $down,
      rr_p50_us: $rr.p50_us, rr_p99_us: $rr.p99_us, connections_per_second: $cps.connections_per_second,
      connections_per_second_16: $cps16.connections_per_second}'
}

rss_kb() { # rss_kb <command name>: the largest resident set of processes of that name, in KiB
  ps -o rss= -C "$1" | sort -n | tail -1
}

devnet_with_memory() { # devnet's measurements, with the RSS of the engine and relay around them
  engine_connect
  # Memory connected and idle (no traffic yet), right after the 8-stream run,
  # and 30 s later; the relay's too.
  sleep 2
  engine_idle_kb=$(rss_kb devnet); relay_idle_kb=$(rss_kb devnet-relay)
  devnet=$(measure devnet 17)
  engine_load_kb=$(rss_kb devnet); relay_load_kb=$(rss_kb devnet-relay)
  sleep 30
  engine_after_kb=$(rss_kb devnet); relay_after_kb=$(rss_kb devnet-relay)
}
rss_json() {
  jq -n --arg e_idle "$engine_idle_kb" --arg e_load "$engine_load_kb" --arg e_after "$engine_after_kb" \
    --arg r_idle "$relay_idle_kb" --arg r_load "$relay_load_kb" --arg r_after "$relay_after_kb" \
    '{engine_idle: ($e_idle|tonumber), engine_after_8_streams: ($e_load|tonumber), engine_30s_later: ($e_after|tonumber),
      relay_idle: ($r_idle|tonumber), relay_after_8_streams: ($r_load|tonumber), relay_30s_later: ($r_after|tonumber)}'
}
if [[ $only == devnet ]]; then
  devnet_with_memory
  # Not in $dir: the lab's teardown removes it.
  out=/tmp/devnet-bench-devnet-$(date -u +%Y%m%dT%H%M%SZ).json
  jq -n --argjson devnet "$devnet" --argjson rss "$(rss_json)" '{devnet: $devnet, rss_kb: $rss}' | tee "$out"
  echo "saved $out (a devnet-only run: not in bench/results/)"
  exit 0
fi

if [[ $only != far ]]; then
  # Routed path: a static route on the office router to the pod's node.
  L office ip route add 10.244.3.0/24 via 10.60.20.13
  # Each path gets its own echo port: thousands of TIME_WAIT sockets from one
  # run's connection-rate test would otherwise slow port selection in the next.
  routed=$(measure routed 7)
  L office ip route del 10.244.3.0/24 via 10.60.20.13

  dns_lookups() { # dns_lookups <label> <server>: one JSON object
    local r
    r=$(L laptop "$DEVNET_BIN/devnet-labd" probe dns "$2" demo.svc.cluster.local 2000)
    jq -n --arg path "$1" --argjson r "$r" '{path: $path, p50_us: $r.p50_us, p99_us: $r.p99_us, lost: $r.lost}'
  }
  # The cluster DNS over a routed path (kube-dns is DNAT on the nodes).
  L office ip route add 10.96.0.0/16 via 10.60.20.11
  dns_routed=$(dns_lookups routed 10.96.0.10:53)
  L office ip route del 10.96.0.0/16 via 10.60.20.11

  # devnet.
  devnet_with_memory
  # devnet's stub (resolv.conf backend), the cluster DNS through the tunnel.
  dns_stub=$(dns_lookups devnet-resolv-conf 127.0.0.153:53)
  L laptop "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" disconnect >/dev/null
  sleep 1

  # The systemd-resolved backend: the lab's real resolved, programs asking
  # 127.0.0.53, resolved sending cluster names to devnet's link.
  # (at info level: resolved logging every query at debug level would be measured too)
  DEVNET_RESOLVED_LOG_LEVEL=info bash tests/lab/lab.sh resolved "$lab" start
  nsenter -t "$(cat "$dir/resolved/holder.pid")" -m -n "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" connect \
    --foreground --resolv-conf /etc/resolv.conf --profile "$dir/profile.toml" >"$dir/engine-resolved.log" 2>&1 &
  wait_connected
  dns_resolved=$(dns_lookups devnet-systemd-resolved 127.0.0.53:53)
  L laptop "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" disconnect >/dev/null
  sleep 1
  bash tests/lab/lab.sh resolved "$lab" stop

  # Peers.
  source bench/peers.sh
  wireguard_up; wireguard=$(measure wireguard 27); wireguard_down
  openvpn_up; openvpn=$(measure openvpn 37); openvpn_down
  sshuttle_up; sshuttle=$(measure sshuttle 47); sshuttle_down
else
  source bench/peers.sh
fi

# Far from the cluster: the laptop's link gets half the added round trip
# each way and the loss each way, for routed, devnet and userspace WireGuard.
# With netem where the kernel has it (on both ends of the laptop's link,
# inside the lab's namespaces); else (CONFIG_NET_SCH_NETEM unset) with
# `devnet-labd wan-link`, the same delay and loss in userspace: the laptop's
# veth (laptop eth0 <-> office lan0) swapped for two TAPs of the same names,
# MACs, MTU, addresses and routes, joined by that process, and swapped back
# after each case.
far() { # far <label> <echo-port>: one JSON object over the current far link
  # Random loss makes one short stream's throughput vary by a third from run
  # to run (where its few losses fall): the median of three runs.
  local runs=() rr i
  # A run right after another can find iperf3's server still busy with the
  # last one (through a tunnel its end comes later): a pause, and a failed
  # run is null, left out of the median.
  for i in 1 2 3; do
    runs+=("$(L laptop iperf3 -c $target -t "$secs" -J | jq '.end.sum_received.bits_per_second // null')")
    sleep 1
  done
  # A failed latency run is null too (and says why on stderr), so one case
  # cannot lose the whole run's results.
  rr=$(L laptop "$DEVNET_BIN/devnet-labd" probe rr "$target:$2" 200 2>"$dir/far-rr.err") ||
    { echo "far ($1): the latency probe failed: $(grep -m1 '^Error' "$dir/far-rr.err")" >&2; rr=null
      [[ ! -s $dir/engine-far.log ]] || { echo "far ($1): the engine's log ends:" >&2; tail -15 "$dir/engine-far.log" >&2; }; }
  jq -n --arg path "$1" --argjson runs "$(printf '%s\n' "${runs[@]}" | jq -s .)" --argjson rr "$rr" \
    '{path: $path, single_stream_bps_runs: $runs,
      single_stream_bps: ($runs | map(select(. != null)) | sort | if length == 0 then null else .[(length - 1) / 2 | floor] end),
      rr_p50_us: $rr.p50_us, rr_p99_us: $rr.p99_us}'
}
laptop_link_config() { # laptop_link_config <laptop-mac> <office-mac>: lab.sh up's config of the laptop's link
  L laptop ip link set eth0 address "$1" mtu 1500 up
  L office ip link set lan0 address "$2" mtu 1500 master lanbr up
  L laptop ip addr add 192.168.10.2/24 dev eth0
  L laptop ip -6 addr add fd00:10::2/64 dev eth0 nodad
  L laptop ip route add default via 192.168.10.1
  L laptop ip -6 route add default via fd00:10::1
}
wan_link_start() { # wan_link_start <rtt-ms> <loss-%>: the laptop's link through devnet-labd wan-link
  local mac_l mac_o i
  mac_l=$(L laptop cat /sys/class/net/eth0/address)
  mac_o=$(L office cat /sys/class/net/lan0/address)
  echo "$mac_l $mac_o" >"$dir/laptop-link-macs"
  L laptop ip link del eth0 # and its peer, office lan0
  "$DEVNET_BIN/devnet-labd" wan-link --a "$lab-laptop:eth0" --b "$lab-office:lan0" \
    --delay-us "$(($1 * 500))" --loss-percent "$2" --seed 14 >"$dir/wan-link.log" 2>&1 &
  echo $! >"$dir/wan-link.pid"
  for i in $(seq 100); do
    L laptop ip link show eth0 >/dev/null 2>&1 && L office ip link show lan0 >/dev/null 2>&1 && break
    ((i < 100)) || { echo "devnet-labd wan-link did not come up:" >&2; cat "$dir/wan-link.log" >&2; return 1; }
    sleep 0.1
  done
  laptop_link_config "$mac_l" "$mac_o"
}
wan_link_restore() { # back to lab.sh up's veth
  local mac_l mac_o tmp=v$RANDOM$RANDOM
  wan_link_stop
  read -r mac_l mac_o <"$dir/laptop-link-macs"
  ip link add "${tmp}a" netns "$lab-laptop" type veth peer name "${tmp}b" netns "$lab-office"
  L laptop ip link set "${tmp}a" name eth0
  L office ip link set "${tmp}b" name lan0
  laptop_link_config "$mac_l" "$mac_o"
}
netem() { # netem <rtt-ms> <loss-%>
  L laptop tc qdisc replace dev eth0 root netem delay "$(($1 / 2))ms" loss "$2%"
  L office tc qdisc replace dev lan0 root netem delay "$(($1 / 2))ms" loss "$2%"
}
netem_off() {
  L laptop tc qdisc del dev eth0 root 2>/dev/null || true
  L office tc qdisc del dev lan0 root 2>/dev/null || true
}
far_all=()
far_cases=("20 0.1" "60 1")
far_link=netem
if ! L laptop tc qdisc replace dev eth0 root netem delay 1ms 2>/dev/null; then
  echo "this kernel has no netem (CONFIG_NET_SCH_NETEM): the far-away cases go through devnet-labd wan-link" >&2
  far_link=wan-link
fi
netem_off
for case in "${far_cases[@]}"; do
  read -r rtt loss <<<"$case"
  if [[ $far_link == netem ]]; then netem "$rtt" "$loss"; else wan_link_start "$rtt" "$loss"; fi
  L office ip route add 10.244.3.0/24 via 10.60.20.13
  r=$(far routed 7)
  L office ip route del 10.244.3.0/24 via 10.60.20.13
  L laptop "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" connect --foreground \
    --resolv-conf "/etc/netns/$lab-laptop/resolv.conf" --profile "$dir/profile.toml" >"$dir/engine-far.log" 2>&1 &
  wait_connected
  d=$(far devnet 17)
  L laptop "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" disconnect >/dev/null
  sleep 1
  wireguard_up; w=$(far wireguard 27); wireguard_down
  if [[ $far_link == netem ]]; then netem_off; else wan_link_restore; fi
  far_all+=("$(jq -n --argjson rtt "$rtt" --argjson loss "$loss" --argjson r "$r" --argjson d "$d" --argjson w "$w" \
    --arg link "$far_link" '{added_rtt_ms: $rtt, loss_percent_each_way: $loss, link: $link, paths: [$r, $d, $w]}')")
done
far_json=$(printf '%s\n' "${far_all[@]}" | jq -s .)
far_lines() { # far_lines <json file>: one line per far case and path
  jq -r 'if (.far|type) == "string" then "far away: \(.far)" else .far[] | . as $c | (.paths[] | select(.path == "routed")) as $r | .paths[]
    | "+\($c.added_rtt_ms) ms RTT, \($c.loss_percent_each_way)% loss each way (\($c.link // "netem")), \(.path): 1 stream \(if .single_stream_bps == null or $r.single_stream_bps == null then "failed" else "\(.single_stream_bps/1e6|round) Mbit/s (\((.single_stream_bps/$r.single_stream_bps*100|round)/100)x routed)" end), RR p50 \(if .rr_p50_us == null then "failed" else "\(.rr_p50_us/1000*100|round/100) ms" end)" end' "$1"
}
# devnet with Kubernetes, last: the relay it installs takes over node1's
# node port 31443, where the other devnet measurements (the far-away cases
# too) reach the lab's own relay.
kube_section() {
  # devnet with Kubernetes (the lab's STAND-IN API server; its kubelet runs the
  # real relay binary, so "from nothing" has no image pull in it): time from
  # `devnet connect --context lab` to the first HTTP answer from a ClusterIP,
  # then the direct (node port) and API-server port-forward transports.
  bash tests/lab/lab.sh api "$lab"
  source bench/kube-connect.sh
  from_nothing_s=$(kube_connect open); kube_disconnect
  installed_direct_s=$(kube_connect open)
  kube_direct=$(measure kube-direct 57); kube_disconnect
  installed_portforward_s=$(kube_connect api-only)
  kube_portforward=$(measure kube-portforward 67); kube_disconnect
  bash tests/lab/lab.sh firewall "$lab" open

}
[[ $only == far ]] || kube_section
if [[ $only == far ]]; then
  # Not in $dir: the lab's teardown removes it.
  out=/tmp/devnet-bench-far-$(date -u +%Y%m%dT%H%M%SZ).json
  jq -n --argjson far "$far_json" --arg cores "$(nproc)" '{far: $far, cores: ($cores|tonumber)}' >"$out"
  far_lines "$out"
  echo "saved $out (a far-only run: not in bench/results/)"
  exit 0
fi

mkdir -p bench/results
out=bench/results/$(date -u +%Y%m%dT%H%M%SZ).json
jq -n --argjson routed "$routed" --argjson devnet "$devnet" --argjson wireguard "$wireguard" \
  --argjson openvpn "$openvpn" --argjson sshuttle "$sshuttle" --arg cores "$(nproc)" \
  --argjson rss "$(rss_json)" --argjson far "$far_json" \
  --argjson kube_direct "$kube_direct" --argjson kube_portforward "$kube_portforward" \
  --arg nothing "$from_nothing_s" --arg direct_s "$installed_direct_s" --arg pf_s "$installed_portforward_s" \
  --argjson dns_routed "$dns_routed" --argjson dns_stub "$dns_stub" --argjson dns_resolved "$dns_resolved" \
  '{paths: [$routed, $devnet, $kube_direct, $kube_portforward, $wireguard, $openvpn, $sshuttle],
    dns_lookups: [$dns_routed, $dns_stub, $dns_resolved],
    connect_to_first_request_s: {from_nothing: ($nothing|tonumber), relay_installed_direct: ($direct_s|tonumber),
                                 relay_installed_portforward: ($pf_s|tonumber)},
    rss_kb: $rss,
    far: $far, cores: ($cores|tonumber)}' >"$out"

# One row per path; ratios are devnet's metric over that path's (higher is
# better for throughput and connections, lower is better for latency).
jq -r '
  def g(x): (x * 100 | round) / 100;
  (.paths[] | select(.path == "devnet")) as $d
  | ["path", "1 stream Gbit/s", "8 streams", "download", "RR p50 us", "RR p99 us", "conns/s", "conns/s x16",
     "devnet/path: 1 stream", "8 streams", "download", "p50", "conns/s", "x16"],
    (.paths[] | [.path, g(.single_stream_bps/1e9), g(.eight_streams_bps/1e9), g(.download_bps/1e9), (.rr_p50_us|round),
      (.rr_p99_us|round), (.connections_per_second|round), (.connections_per_second_16|round),
      g($d.single_stream_bps/.single_stream_bps), g($d.eight_streams_bps/.eight_streams_bps), g($d.download_bps/.download_bps),
      g($d.rr_p50_us/.rr_p50_us), g($d.connections_per_second/.connections_per_second),
      g($d.connections_per_second_16/.connections_per_second_16)])
  | @tsv' "$out" | column -t -s $'\t'
jq -r '.connect_to_first_request_s | "connect to first request: from nothing \(.from_nothing)s (goal < 15 s + image pull); relay installed: direct \(.relay_installed_direct)s, port-forward \(.relay_installed_portforward)s (goal < 2 s)"' "$out"
jq -r '(.dns_lookups[] | select(.path == "routed")) as $r | .dns_lookups[]
  | "cluster name lookups, \(.path): p50 \(.p50_us|round) us, p99 \(.p99_us|round) us (\((.p50_us/$r.p50_us*100|round)/100)x routed p50), \(.lost) of 2000 lost"' "$out"
far_lines "$out"
jq -r '.rss_kb | "RSS MiB: engine idle \(.engine_idle/1024|round), after 8 streams \(.engine_after_8_streams/1024|round), 30 s later \(.engine_30s_later/1024|round); relay idle \(.relay_idle/1024|round), after 8 streams \(.relay_after_8_streams/1024|round), 30 s later \(.relay_30s_later/1024|round)"' "$out"
echo "$(nproc) cores shared by every process in the lab"
bash bench/chart.sh "$out" "${out%.json}.png"
echo "saved $out"
