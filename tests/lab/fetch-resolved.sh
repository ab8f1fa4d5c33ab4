#!/usr/bin/env bash
set -euo pipefail
# systemd-resolved for the lab (lab.sh resolved): Debian's .deb (and the
# private library of the same version) unpacked into a cache, never installed
# (installing it would take over this machine's /etc/resolv.conf). The lab
# runs it in a mount namespace of its own (lab.sh resolved). dbus-daemon and
# nsenter/unshare come with the base system.
resolved_root=${DEVNET_RESOLVED_ROOT:-/var/cache/devnet-lab/systemd-resolved}
if [[ ! -x $resolved_root/lib/systemd/systemd-resolved ]]; then
  echo "unpacking systemd-resolved into $resolved_root"
  command -v dbus-daemon >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dbus-daemon >/dev/null
  debs=$(mktemp -d)
  chmod 755 "$debs" # apt downloads as its own user
  version=$(apt-cache policy systemd-resolved | awk '/Candidate:/ { print $2 }')
  if [[ -z $version || $version == "(none)" ]]; then
    apt-get update -qq
    version=$(apt-cache policy systemd-resolved | awk '/Candidate:/ { print $2 }')
  fi
  (cd "$debs" && apt-get download -qq "systemd-resolved=$version" "libsystemd-shared=$version")
  mkdir -p "$resolved_root"
  for deb in "$debs"/*.deb; do dpkg-deb -x "$deb" "$resolved_root"; done
  rm -rf "$debs"
fi
