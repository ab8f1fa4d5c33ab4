#!/bin/bash
# bench/counts.sh: stable counts for one build of the data path (issue 14).
#
#   sudo bench/counts.sh <bin-dir> <label> [lab]
#
# <bin-dir> holds devnet, devnetd, devnet-relay and devnet-labd (e.g. a copy
# of target/release). Brings up the lab (default name e2e, scenario no-path),
# connects the engine in the foreground, and over a FIXED amount of work
# (20,000 one-byte round trips; iperf3 -n 2G up, down and with -P 8; 5 s of
# sequential new connections) records perf stat's software counts for the
# engine and the relay (task-clock, context switches, page faults, syscalls:
# machines without a PMU have no instruction counts), and the engine's and
# relay's VmHWM/VmRSS idle, right after the 8-stream run and 30 s later.
# Divide by the work (per GB, per round trip, per connection) to compare
# builds; times vary by tens of percent on a shared 2-core VM, counts less.
# Not the bench: bench/run.sh stays the one entry point for the table.
# measure.sh <bindir> <label>: brings up lab e2e, connects, runs fixed work under perf stat, RSS.
set -u
BIN=$1; label=$2; lab=${3:-e2e}; dir=/tmp/devnet-lab-$lab
cd "$(dirname "$0")/.."
out=$(mktemp -d)
L() { ip netns exec "$lab-$1" "${@:2}"; }
export DEVNET_BIN=$BIN
source bench/lab-engine.sh
bash tests/lab/lab.sh down $lab >/dev/null 2>&1
bash tests/lab/lab.sh up $lab no-path >$out/up.log 2>&1 || { echo up failed; tail $out/up.log; exit 1; }
L echo iperf3 -s -D -p 5201 >/dev/null
engine_connect
sleep 2
pid=$(pgrep -f "^$BIN/devnet --state-dir $dir" | head -1); rpid=$(pgrep -f "^$BIN/devnet-relay serve.*devnet-lab-$lab" | head -1); echo "pids $pid $rpid"
mem() { grep -E 'VmHWM|VmRSS' /proc/$1/status | tr -s ' ' | tr '\n' ' '; }
echo "[$label] idle engine: $(mem $pid) relay: $(mem $rpid)"
ev=task-clock,context-switches,page-faults,raw_syscalls:sys_enter
run() { # run <name> <cmd...>
  local name=$1; shift
  perf stat -x, -e $ev -p $pid -o $out/$label-$name.eng -- sleep 600 & local p1=$!
  perf stat -x, -e $ev -p $rpid -o $out/$label-$name.rel -- sleep 600 & local p2=$!
  sleep 0.5
  local res; res=$("$@" 2>&1 | tail -c 400)
  pkill -P $p1 -x sleep; pkill -P $p2 -x sleep; wait $p1 $p2 2>/dev/null
  echo "[$label] $name: $(echo "$res" | tr '\n' ' ' | tail -c 200)"
  echo "   engine: $(grep -v '^#' $out/$label-$name.eng | awk -F, 'NF>2{printf "%s=%s ", $3, $1}')"
  echo "   relay:  $(grep -v '^#' $out/$label-$name.rel | awk -F, 'NF>2{printf "%s=%s ", $3, $1}')"
}
t=10.244.3.10
run rr L laptop "$BIN/devnet-labd" probe rr "$t:17" 20000
run up1 bash -c "ip netns exec $lab-laptop iperf3 -c $t -n 2G -J | jq -c '.end.sum_received.bits_per_second'"
run down1 bash -c "ip netns exec $lab-laptop iperf3 -c $t -n 2G -R -J | jq -c '.end.sum_received.bits_per_second'"
run up8 bash -c "ip netns exec $lab-laptop iperf3 -c $t -n 2G -P 8 -J | jq -c '.end.sum_received.bits_per_second'"
echo "[$label] after P8 engine: $(mem $pid) relay: $(mem $rpid)"
sleep 30
echo "[$label] +30s engine: $(mem $pid) relay: $(mem $rpid)"
run cps L laptop "$BIN/devnet-labd" probe cps "$t:17" 5
L laptop "$BIN/devnet" --state-dir "$dir/laptop-state" disconnect >/dev/null 2>&1
sleep 1
bash tests/lab/lab.sh down $lab >/dev/null 2>&1
