#!/bin/bash
# bench/callgrind-lab.sh: instructions per byte of the real engine and relay
# (issue 14), where counts.sh can only give CPU time.
#
#   sudo bench/callgrind-lab.sh <bin-dir> <label> [MiB]
#
# <bin-dir> holds devnet, devnet-relay and devnet-labd (a copy of
# target/release). Brings up lab "cg" (scenario no-path) with the engine and
# the relay under callgrind, real TLS, kernel and TUN device around them,
# then moves MiB (default 256) up and then down with iperf3, and prints each
# process's instructions (Ir) per byte for each direction. Instruction
# counts hardly move with the machine's load; this VM has no PMU for perf to
# count them. Busy polling is off: it spins for as long as the machine is
# slow, so its count would follow time. The profiles stay in
# /tmp/devnet-callgrind-<label> for callgrind_annotate.
set -u
REAL=$(cd "$1" && pwd); label=$2; mib=${3:-256}; lab=cg; dir=/tmp/devnet-lab-$lab
cd "$(dirname "$0")/.."
out=/tmp/devnet-callgrind-$label wrap=/tmp/devnet-callgrind-$label/bin
rm -rf "$out"; mkdir -p "$wrap"
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends valgrind >/dev/null; }
# The lab starts the relay and the engine from DEVNET_BIN: there, each runs
# under callgrind; every other command runs as it is.
for b in devnet-labd standin-apiserver; do ln -sf "$REAL/$b" "$wrap/$b"; done
cat >"$wrap/devnet-relay" <<WRAP
#!/bin/bash
[[ \$1 == serve ]] && exec valgrind --tool=callgrind --callgrind-out-file=$out/relay.%p "$REAL/devnet-relay" "\$@"
exec "$REAL/devnet-relay" "\$@"
WRAP
cat >"$wrap/devnet" <<WRAP
#!/bin/bash
for a in "\$@"; do [[ \$a == connect ]] && exec valgrind --tool=callgrind --callgrind-out-file=$out/engine.%p "$REAL/devnet" "\$@"; done
exec "$REAL/devnet" "\$@"
WRAP
chmod +x "$wrap/devnet" "$wrap/devnet-relay"
L() { ip netns exec "$lab-$1" "${@:2}"; }
export DEVNET_BIN=$wrap
source bench/lab-engine.sh
bash tests/lab/lab.sh down $lab >/dev/null 2>&1
bash tests/lab/lab.sh up $lab no-path >"$out/up.log" 2>&1 || { echo "lab up failed:"; tail "$out/up.log"; exit 1; }
echo "busy-poll-us = 0" >>"$dir/profile.toml"
L echo iperf3 -s -D -p 5201 >/dev/null
engine_connect 300
sleep 2
engine=$(pgrep -f "valgrind.*$REAL/devnet --state-dir" | head -1)
relay=$(pgrep -f "valgrind.*$REAL/devnet-relay serve" | head -1)
[[ -n $engine && -n $relay ]] || { echo "the engine or the relay did not start; see $dir"; exit 1; }
phase() { # phase <name> <iperf3 args…>: zero both counters, move the bytes, dump both
  callgrind_control -z "$engine" >/dev/null 2>&1; callgrind_control -z "$relay" >/dev/null 2>&1
  local bps; bps=$(L laptop iperf3 -c 10.244.3.10 -n "${mib}M" "${@:2}" -J | jq '.end.sum_received.bits_per_second')
  callgrind_control -d "$1" "$engine" >/dev/null 2>&1; callgrind_control -d "$1" "$relay" >/dev/null 2>&1
  echo "[$label] $1: $(awk -v b="$bps" 'BEGIN{printf "%.0f Mbit/s under valgrind", b/1e6}')"
}
phase up
phase down -R
L laptop "$REAL/devnet" --state-dir "$dir/laptop-state" disconnect >/dev/null 2>&1
sleep 2
bash tests/lab/lab.sh down $lab >/dev/null 2>&1
pkill -f "iperf3 -s -D -p 5201"
bytes=$((mib * 1024 * 1024))
for f in "$out"/engine.*.[12] "$out"/relay.*.[12]; do
  ir=$(awk '/^summary:/{print $2; exit}' "$f"); what=$(awk '/^desc: Trigger:/{print $4; exit}' "$f")
  echo "[$label] $(basename "${f%%.*}") $what: $ir Ir, $(awk -v i="$ir" -v b="$bytes" 'BEGIN{printf "%.2f", i/b}') Ir per byte"
done
