# Peers for bench/run.sh, each set up in the same lab as devnet: the server
# end in the relay pod (reached through a NodePort on node1, like devnet's
# relay), the client end on the laptop, routing only the target pod's block.
# Sourced by run.sh; uses its L(), $lab, $dir.

relay_nat() { # the peer's server forwards tunnel traffic into the cluster, masqueraded
  L relay sysctl -qw net.ipv4.ip_forward=1
  L relay iptables -t nat -C POSTROUTING -s "$1" -o eth0 -j MASQUERADE 2>/dev/null \
    || L relay iptables -t nat -A POSTROUTING -s "$1" -o eth0 -j MASQUERADE
}

node_port() { # node_port <proto> <port>
  L node1 iptables -t nat -A PREROUTING -d 10.60.20.11 -p "$1" --dport "$2" -j DNAT --to-destination "10.244.1.5:$2"
}

wireguard_up() { # userspace WireGuard (boringtun), as the peers' "userspace WireGuard" row
  local bt; bt=$(command -v boringtun-cli)
  wg genkey >"$dir/wg-s.key"; wg pubkey <"$dir/wg-s.key" >"$dir/wg-s.pub"
  wg genkey >"$dir/wg-c.key"; wg pubkey <"$dir/wg-c.key" >"$dir/wg-c.pub"
  node_port udp 51820
  relay_nat 100.64.0.0/24
  L relay "$bt" --disable-drop-privileges "wg-$lab-s" >"$dir/wg-s.log" 2>&1
  L relay wg set "wg-$lab-s" private-key "$dir/wg-s.key" listen-port 51820 peer "$(cat "$dir/wg-c.pub")" allowed-ips 100.64.0.2/32
  L relay ip addr add 100.64.0.1/32 dev "wg-$lab-s"
  L relay ip link set "wg-$lab-s" up
  L relay ip route add 100.64.0.2/32 dev "wg-$lab-s"
  L laptop "$bt" --disable-drop-privileges "wg-$lab-c" >"$dir/wg-c.log" 2>&1
  L laptop wg set "wg-$lab-c" private-key "$dir/wg-c.key" peer "$(cat "$dir/wg-s.pub")" \
    endpoint 10.60.20.11:51820 allowed-ips 10.244.3.0/24 persistent-keepalive 25
  L laptop ip addr add 100.64.0.2/32 dev "wg-$lab-c"
  L laptop ip link set "wg-$lab-c" up
  L laptop ip route add 10.244.3.0/24 dev "wg-$lab-c"
}

wireguard_down() {
  L laptop ip link del "wg-$lab-c" 2>/dev/null || true
  L relay ip link del "wg-$lab-s" 2>/dev/null || true
  pkill -f "boringtun-cli --disable-drop-privileges wg-$lab-" 2>/dev/null || true
  rm -f "/var/run/wireguard/wg-$lab-s.sock" "/var/run/wireguard/wg-$lab-c.sock"
}

openvpn_up() { # OpenVPN 2.6, UDP, static key (the simplest setup a team would script)
  (umask 077 && openvpn --genkey secret "$dir/ovpn.key")
  node_port udp 1194
  relay_nat 100.65.0.0/24
  # Static-key mode is deprecated in 2.6 but still the quickest p2p setup; the
  # data channel (AES-256-CBC + HMAC-SHA256, UDP) is what the benchmark measures.
  local common=(--dev-type tun --secret "$dir/ovpn.key" --cipher AES-256-CBC --auth SHA256 --proto udp --verb 1 --daemon)
  L relay openvpn "${common[@]}" --dev "ovpn-$lab-s" --ifconfig 100.65.0.1 100.65.0.2 --lport 1194 \
    --log "$dir/ovpn-s.log" --writepid "$dir/ovpn-s.pid"
  L laptop openvpn "${common[@]}" --dev "ovpn-$lab-c" --ifconfig 100.65.0.2 100.65.0.1 --remote 10.60.20.11 1194 \
    --route 10.244.3.0 255.255.255.0 --log "$dir/ovpn-c.log" --writepid "$dir/ovpn-c.pid"
  local i
  for i in $(seq 100); do
    L laptop ping -c1 -W1 10.244.3.10 >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "openvpn did not come up:" >&2; cat "$dir/ovpn-c.log" "$dir/ovpn-s.log" >&2; return 1
}

openvpn_down() {
  local f
  for f in "$dir/ovpn-c.pid" "$dir/ovpn-s.pid"; do
    [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null || true
  done
  sleep 0.5
}

sshuttle_up() { # sshuttle over ssh to an sshd in the relay pod
  ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh-host" <<<y >/dev/null
  ssh-keygen -q -t ed25519 -N '' -f "$dir/ssh-client" <<<y >/dev/null
  cp "$dir/ssh-client.pub" "$dir/authorized_keys"
  cat >"$dir/sshd_config" <<CONF
Port 2222
HostKey $dir/ssh-host
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
StrictModes no
UsePAM no
PidFile $dir/sshd.pid
CONF
  mkdir -p /run/sshd
  node_port tcp 2222
  L relay /usr/sbin/sshd -f "$dir/sshd_config"
  L laptop sshuttle -D --pidfile "$dir/sshuttle.pid" -r root@10.60.20.11:2222 10.244.3.0/24 \
    -e "ssh -i $dir/ssh-client -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR" \
    >"$dir/sshuttle.log" 2>&1
  local i
  for i in $(seq 100); do
    L laptop "$DEVNET_BIN/devnet-labd" probe connect 10.244.3.10:7 --timeout-ms 500 2>/dev/null | grep -q connected && return 0
    sleep 0.1
  done
  echo "sshuttle did not come up:" >&2; cat "$dir/sshuttle.log" >&2; return 1
}

sshuttle_down() {
  [[ -f "$dir/sshuttle.pid" ]] && kill "$(cat "$dir/sshuttle.pid")" 2>/dev/null || true
  [[ -f "$dir/sshd.pid" ]] && kill "$(cat "$dir/sshd.pid")" 2>/dev/null || true
  sleep 1
}
