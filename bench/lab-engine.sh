# bench/lab-engine.sh: sourced by the bench scripts that drive one lab, with
# lab, dir, DEVNET_BIN and L() set: devnet's engine on the lab's laptop.

# wait_connected [tries]: until the laptop's session says connected, polling
# every 0.2 s (100 tries, 20 s, unless told; an engine under valgrind needs more).
wait_connected() {
  for _ in $(seq "${1:-100}"); do
    L laptop "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" status --json 2>/dev/null | grep -q '"connected"' && return 0
    sleep 0.2
  done
  echo "devnet on the laptop did not connect; its log: $dir/engine.log" >&2
  return 1
}

# engine_connect [tries]: `devnet connect --foreground` on the laptop with the
# lab's profile (the engine in the client's process: devnetd would add only
# its IPC at connect, nothing on the data path), logging to $dir/engine.log,
# then wait_connected.
engine_connect() {
  L laptop "$DEVNET_BIN/devnet" --state-dir "$dir/laptop-state" connect --foreground \
    --resolv-conf "/etc/netns/$lab-laptop/resolv.conf" --profile "$dir/profile.toml" >"$dir/engine.log" 2>&1 &
  wait_connected "${1:-100}"
}
