#!/bin/bash
# bench/cpu-split.sh: where the machine's CPU goes for one stream, routed
# and through devnet, and what that allows (issue 14).
#
#   sudo bench/cpu-split.sh <bin-dir> [seconds]
#
# <bin-dir> holds devnet, devnet-relay and devnet-labd (a copy of
# target/release). Brings up lab "cs" (scenario no-path) and runs one
# iperf3 upload over the routed path (the office router's static route to
# the pod's node), then one through devnet, each while `perf record -a`
# samples every CPU (cpu-clock: this VM has no PMU). For each it prints the
# throughput and the cores busy in the kernel, in user space and idle, and
# core-seconds per Gbit.
#
# The last line is the ceiling the kernel alone leaves devnet: the
# throughput if the engine and the relay took no CPU of their own in user
# space, with every core busy in the kernel's share of devnet's work (the
# TUN device, three TCP connections where routed has one, their copies and
# wake-ups), as a ratio of this run's routed throughput. Not a bench row:
# bench/run.sh stays the one entry point for the table.
set -u
REAL=$(cd "$1" && pwd); secs=${2:-8}; lab=cs; dir=/tmp/devnet-lab-$lab
cd "$(dirname "$0")/.."
out=$(mktemp -d)
L() { ip netns exec "$lab-$1" "${@:2}"; }
export DEVNET_BIN=$REAL
source bench/lab-engine.sh
cores=$(nproc)
bash tests/lab/lab.sh down $lab >/dev/null 2>&1
bash tests/lab/lab.sh up $lab no-path >"$out/up.log" 2>&1 || { echo "lab up failed:"; tail "$out/up.log"; exit 1; }
L echo iperf3 -s -D -p 5201 >/dev/null

sample() { # sample <label>: one upload while perf samples; prints one JSON object
  L laptop iperf3 -c 10.244.3.10 -t $((secs + 6)) -J >"$out/$1.json" &
  local iperf=$!
  sleep 3
  perf record -a -e cpu-clock -F 999 -o "$out/$1.data" -- sleep "$secs" >/dev/null 2>&1
  wait $iperf
  # Shares of all samples: idle (the idle task), kernel (any other task in
  # the kernel), user (the rest).
  perf report -i "$out/$1.data" --stdio --no-children --sort comm,dso 2>/dev/null | awk -v label="$1" \
    -v cores="$cores" -v bps="$(jq '.end.sum_received.bits_per_second' "$out/$1.json")" '
    $1 ~ /%$/ { p = $1 + 0; if ($2 == "swapper") idle += p; else if ($NF == "[kernel.kallsyms]") kern += p; else user += p }
    END {
      gbps = bps / 1e9
      printf "{\"path\":\"%s\",\"gbit_per_s\":%.3f,\"cores\":%d,\"kernel_cores\":%.3f,\"user_cores\":%.3f,\"idle_cores\":%.3f}\n",
        label, gbps, cores, cores * kern / 100, cores * user / 100, cores * idle / 100
    }'
}

L office ip route add 10.244.3.0/24 via 10.60.20.13
routed=$(sample routed)
L office ip route del 10.244.3.0/24 via 10.60.20.13

engine_connect
sleep 2
devnet=$(sample devnet)
L laptop "$REAL/devnet" --state-dir "$dir/laptop-state" disconnect >/dev/null 2>&1
sleep 1
bash tests/lab/lab.sh down $lab >/dev/null 2>&1
pkill -f "iperf3 -s -D -p 5201"
rm -rf "$out"

for j in "$routed" "$devnet"; do
  echo "$j" | jq -r '"\(.path): \(.gbit_per_s) Gbit/s; cores busy in the kernel \(.kernel_cores), in user space \(.user_cores), idle \(.idle_cores) of \(.cores); \((.kernel_cores + .user_cores) / .gbit_per_s * 1000 | round / 1000) core-s per Gbit (kernel \(.kernel_cores / .gbit_per_s * 1000 | round / 1000))"'
done
jq -rn --argjson r "$routed" --argjson d "$devnet" '
  ($d.cores / ($d.kernel_cores / $d.gbit_per_s)) as $ceiling
  | "ceiling with no user-space CPU: \($ceiling * 100 | round / 100) Gbit/s = \($ceiling / $r.gbit_per_s * 100 | round / 100)x this run'"'"'s routed (devnet measured \($d.gbit_per_s / $r.gbit_per_s * 100 | round / 100)x)"'
