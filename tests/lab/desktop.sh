#!/usr/bin/env bash
# A desktop for the tray app's end-to-end test, on a lab's laptop, as a
# desktop user (no root, member of group devnet):
#   desktop.sh start <lab> <uid>   Xvfb, a D-Bus session bus, dunst (a real
#                                  notification daemon), dbus-monitor
#                                  recording every Notify call, and
#                                  tauri-driver (WebKitWebDriver) on the
#                                  laptop's loopback port 4444
#   desktop.sh app <lab>           runs the tray app as that user, as a login
#                                  would start it (no window), in the foreground
#   desktop.sh stop <lab>          stops all of it
# Everything runs inside the lab's laptop network namespace; the display
# and the bus are Unix sockets under the lab's directory (and /tmp/.X11-unix).
set -euo pipefail
cmd=$1 lab=$2
dir=/tmp/devnet-lab-$lab
d=$dir/desktop
ns=$lab-laptop
display=:$((90 + $(printf '%s' "$lab" | cksum | cut -d' ' -f1) % 100))
tauri_driver=${TAURI_DRIVER:-/var/cache/devnet-lab/tauri-driver/bin/tauri-driver}

# The desktop user's command prefix and environment.
user_env() {
  local uid=$1
  as_user=(setpriv --reuid="$uid" --regid="$uid" --groups="$(getent group devnet | cut -d: -f3)" --)
  env_user=(env -i PATH=/usr/bin:/bin HOME="$d/home" XDG_CONFIG_HOME="$d/home/.config" XDG_RUNTIME_DIR="$d/run"
    DISPLAY="$display" DBUS_SESSION_BUS_ADDRESS="unix:path=$d/bus" LANG=C.UTF-8 NO_AT_BRIDGE=1
    DEVNET_SOCKET="$dir/run/devnetd.sock" DEVNET_CLI="${DEVNET_BIN:?}/devnet" KUBECONFIG="$d/home/.kube/config")
}

stop() {
  for p in "$d"/*.pid; do
    [[ -e $p ]] || continue
    kill "$(cat "$p")" 2>/dev/null || true
    rm -f "$p"
  done
  # The app and WebKit's helpers, started by tauri-driver as the desktop
  # user, who has nothing else running.
  if [[ -e $d/uid ]]; then pkill -KILL -u "$(cat "$d/uid")" 2>/dev/null || true; fi
}

case "$cmd" in
  start)
    uid=$3
    stop
    # D-Bus and WebKit look their user up: a system account for the test's
    # desktop user, made once (like the group devnet the package makes).
    getent group "$uid" >/dev/null || groupadd --system --gid "$uid" devnet-desktop
    getent passwd "$uid" >/dev/null ||
      useradd --system --uid "$uid" --gid "$uid" --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin devnet-desktop
    rm -rf "$d"
    mkdir -p "$d/home/.kube" "$d/home/.config" "$d/run"
    echo "$uid" >"$d/uid"
    cp "$dir/kubeconfig" "$d/home/.kube/config"
    chmod 700 "$d/run"
    chmod 600 "$d/home/.kube/config"
    chown -R "$uid:$uid" "$d"
    chmod 755 "$d"
    user_env "$uid"
    ip netns exec "$ns" Xvfb "$display" -screen 0 1280x900x24 -nolisten tcp >"$d/xvfb.log" 2>&1 &
    echo $! >"$d/xvfb.pid"
    for _ in $(seq 100); do [[ -S /tmp/.X11-unix/X${display#:} ]] && break; sleep 0.1; done
    ip netns exec "$ns" "${as_user[@]}" "${env_user[@]}" dbus-daemon --session --address="unix:path=$d/bus" \
      --nofork --nopidfile >"$d/dbus.log" 2>&1 &
    echo $! >"$d/dbus.pid"
    for _ in $(seq 100); do [[ -S $d/bus ]] && break; sleep 0.1; done
    ip netns exec "$ns" "${as_user[@]}" "${env_user[@]}" dunst >"$d/dunst.log" 2>&1 &
    echo $! >"$d/dunst.pid"
    ip netns exec "$ns" "${as_user[@]}" "${env_user[@]}" dbus-monitor --session \
      "type='method_call',interface='org.freedesktop.Notifications',member='Notify'" >"$d/notifications.log" 2>&1 &
    echo $! >"$d/monitor.pid"
    ip netns exec "$ns" "${as_user[@]}" "${env_user[@]}" \
      "$tauri_driver" --port 4444 --native-driver /usr/bin/WebKitWebDriver >"$d/tauri-driver.log" 2>&1 &
    echo $! >"$d/tauri-driver.pid"
    for _ in $(seq 100); do
      ip netns exec "$ns" curl -s -o /dev/null http://127.0.0.1:4444/status && break
      sleep 0.1
    done
    echo "display $display, bus $d/bus, webdriver 127.0.0.1:4444 in $ns"
    ;;
  app)
    user_env "$(cat "$d/uid")"
    exec ip netns exec "$ns" "${as_user[@]}" "${env_user[@]}" "$DEVNET_BIN/devnet-tray"
    ;;
  stop) stop ;;
  *) echo "usage: desktop.sh start <lab> <uid> | stop <lab>" >&2; exit 2 ;;
esac
