#!/usr/bin/env bash
# Draws a bench/run.sh result as a PNG: each path's throughput and
# connection rates as multiples of the routed path's (higher is better),
# and its request/response latency (lower is better).
#   bench/chart.sh RESULT.json OUT.png
set -euo pipefail
json=${1:?usage: bench/chart.sh RESULT.json OUT.png}
png=${2:?usage: bench/chart.sh RESULT.json OUT.png}
command -v gnuplot >/dev/null || { echo "bench/chart.sh needs gnuplot (apt-get install gnuplot-nox)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# One row per path: ratios to routed, then p50 and p99 in µs.
jq -r '(.paths[] | select(.path == "routed")) as $r
  | .paths[] | [.path,
      .single_stream_bps / $r.single_stream_bps,
      ((.eight_streams_bps // 0) / $r.eight_streams_bps),
      ((.download_bps // 0) / ($r.download_bps // 1)),
      .connections_per_second / $r.connections_per_second,
      ((.connections_per_second_16 // 0) / ($r.connections_per_second_16 // 1)),
      .rr_p50_us, .rr_p99_us]
  | @tsv' "$json" >"$tmp/paths.tsv"
title=$(basename "$json" .json)
gnuplot <<GP
set terminal pngcairo size 1400,900 font "sans,11"
set output "$png"
set datafile separator "\t"
set multiplot layout 2,1 title "devnet bench $title: every path to the same pod, one run"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key outside right top
set xtics rotate by -20
set ylabel "multiple of routed (higher is better)"
set yrange [0:*]
plot "$tmp/paths.tsv" using 2:xtic(1) title "1 stream", \
     "" using 3 title "8 streams", \
     "" using 4 title "download", \
     "" using 5 title "new conns/s (1 at a time)", \
     "" using 6 title "new conns/s (16 at once)"
set ylabel "request/response latency, µs (lower is better)"
plot "$tmp/paths.tsv" using 7:xtic(1) title "p50", "" using 8 title "p99"
unset multiplot
GP
echo "chart: $png"
