# Sourced by bench/run.sh and bench/realkube.sh (which set $lab, $dir,
# $DEVNET_BIN and L): `devnet connect --context lab` with the in-process
# engine, timed to the first HTTP answer from the web ClusterIP.

kube_connect() { # kube_connect <firewall>: connect, print seconds to the first answer (at most 60)
  bash tests/lab/lab.sh firewall "$lab" "$1"
  local start end
  start=$(date +%s.%N)
  L laptop "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" connect --foreground --context lab \
    --kubeconfig "$dir/kubeconfig" --resolv-conf "/etc/netns/$lab-laptop/resolv.conf" >"$dir/engine-kube-$1.log" 2>&1 &
  for _ in $(seq 1200); do
    L laptop curl -s -m 1 -o /dev/null http://10.96.0.20/ 2>/dev/null && break
    sleep 0.05
  done
  end=$(date +%s.%N)
  echo "$end - $start" | bc
}

kube_disconnect() {
  L laptop "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" disconnect >/dev/null
  sleep 1
}
