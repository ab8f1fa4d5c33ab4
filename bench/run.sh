#!/usr/bin/env bash
# devnet benchmarks, in the lab (not a test: numbers, not pass/fail).
#
# In one lab run, the same measurements over two paths to the same pod:
#   routed: the office router routes the pod block to its node (seed 001's static route);
#   tunnel: no route; devnet's TUN + smoltcp + relay carry it.
# Printed as a table with tunnel/routed ratios, and saved as JSON in bench/results/.
#
#   sudo bench/run.sh [seconds-per-iperf-run]
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "needs root (network namespaces): sudo $0" >&2; exit 1; }
secs=${1:-5}
need=()
for tool in ip:iproute2 iptables:iptables dnsmasq:dnsmasq-base dig:dnsutils curl:curl iperf3:iperf3 jq:jq; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --workspace --bins --release --locked
export DEVNET_BIN=$PWD/target/release
lab=bench
dir=/tmp/devnet-lab-$lab
L() { ip netns exec "$lab-$1" "${@:2}"; }
trap 'L laptop "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" disconnect >/dev/null 2>&1 || true; sleep 1; bash tests/lab/lab.sh down $lab' EXIT

bash tests/lab/lab.sh up "$lab" no-path
L echo iperf3 -s -D -p 5201 >/dev/null
target=10.244.3.10

measure() { # measure <label> <echo-port>: prints one JSON object
  local one eight rr cps port=$2
  # Latency and connection rate first: they suffer for a while after bulk
  # runs (memory reclaim, TIME_WAIT) on a 2-core machine.
  rr=$(L laptop "$DEVNET_BIN/devnet-labd" probe rr "$target:$port" 20000)
  cps=$(L laptop "$DEVNET_BIN/devnet-labd" probe cps "$target:$port" "$secs")
  one=$(L laptop iperf3 -c $target -t "$secs" -J | jq '.end.sum_received.bits_per_second')
  eight=$(L laptop iperf3 -c $target -t "$secs" -P 8 -J | jq '.end.sum_received.bits_per_second')
  jq -n --arg path "$1" --argjson one "$one" --argjson eight "$eight" --argjson rr "$rr" --argjson cps "$cps" \
    '{path: $path, single_stream_bps: $one, eight_streams_bps: $eight, rr_p50_us: $rr.p50_us, rr_p99_us: $rr.p99_us, connections_per_second: $cps.connections_per_second}'
}

# Routed path: a static route on the office router to the pod's node.
L office ip route add 10.244.3.0/24 via 10.60.20.13
# Each path gets its own echo port: thousands of TIME_WAIT sockets from one
# run's connection-rate test would otherwise slow port selection in the next.
routed=$(measure routed 7)
L office ip route del 10.244.3.0/24 via 10.60.20.13

# Tunnel path.
L laptop "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" connect --profile "$dir/profile.toml" >"$dir/engine.log" 2>&1 &
for _ in $(seq 50); do
  L laptop "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" status --json 2>/dev/null | grep -q '"connected"' && break
  sleep 0.2
done
tunnel=$(measure tunnel 17)
rss_kb=$(ps -o rss= -C devnet | sort -n | tail -1)

mkdir -p bench/results
out=bench/results/$(date -u +%Y%m%dT%H%M%SZ).json
jq -n --argjson routed "$routed" --argjson tunnel "$tunnel" --arg rss "$rss_kb" --arg cores "$(nproc)" \
  '{routed: $routed, tunnel: $tunnel, engine_rss_kb: ($rss|tonumber), cores: ($cores|tonumber)}' >"$out"
jq -r '
  def r(a; b): if b == 0 then "n/a" else ((a / b * 1000 | round) / 1000 | tostring) end;
  ["metric", "routed", "tunnel", "tunnel/routed"],
  ["1 stream Gbit/s", (.routed.single_stream_bps/1e9*100|round/100), (.tunnel.single_stream_bps/1e9*100|round/100), r(.tunnel.single_stream_bps; .routed.single_stream_bps)],
  ["8 streams Gbit/s", (.routed.eight_streams_bps/1e9*100|round/100), (.tunnel.eight_streams_bps/1e9*100|round/100), r(.tunnel.eight_streams_bps; .routed.eight_streams_bps)],
  ["RR p50 us", (.routed.rr_p50_us|round), (.tunnel.rr_p50_us|round), r(.tunnel.rr_p50_us; .routed.rr_p50_us)],
  ["RR p99 us", (.routed.rr_p99_us|round), (.tunnel.rr_p99_us|round), r(.tunnel.rr_p99_us; .routed.rr_p99_us)],
  ["new conns/s", (.routed.connections_per_second|round), (.tunnel.connections_per_second|round), r(.tunnel.connections_per_second; .routed.connections_per_second)],
  ["engine RSS MiB", "-", (.engine_rss_kb/1024*10|round/10), "-"]
  | @tsv' "$out" | column -t -s $'\t'
echo "saved $out"
