#!/usr/bin/env bash
# A clean Debian root for the package tests (tests/lab_packages.rs), made by
# debootstrap into a folder and kept as a tarball in the lab's cache, outside
# the repository: `debian-root.sh` prints the tarball's path, building it once
# per package list. The tests unpack a fresh copy for every trial.
#
# What is in it besides minbase, and why:
#   systemd          systemctl, systemd-sysusers and systemd-tmpfiles for the
#                    maintainer scripts, systemd-analyze for the unit
#   iproute2 procps  what devnetd runs (ip, sysctl)
#   libwebkit2gtk-4.1-0 libgtk-3-0 (by apt, without recommends, after
#                    debootstrap: configuring them inside debootstrap fails)
#                    the tray app's libraries, so installing devnet-tray needs
#                    no network during the test (its Depends are checked by
#                    dpkg as on any desktop)
set -euo pipefail

suite=bookworm
mirror=${DEVNET_DEBIAN_MIRROR:-http://deb.debian.org/debian}
include=systemd,iproute2,procps
desktop="libwebkit2gtk-4.1-0 libgtk-3-0"
cache=/var/cache/devnet-lab/debian-root
key=$(printf '%s\n' "$suite" "$include" "$desktop" | sha256sum | cut -c1-12)
tar="$cache/$suite-$key.tar"

if [[ -s $tar ]]; then
  echo "$tar"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is needed: apt-get install debootstrap" >&2; exit 1; }
mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$cache/debs"
debootstrap --variant=minbase --cache-dir="$cache/debs" --include="$include" "$suite" "$work/root" "$mirror" >"$work/log" 2>&1 || {
  tail -20 "$work/log" "$work/root/debootstrap/debootstrap.log" >&2
  echo "debootstrap of $suite from $mirror failed (log above)" >&2
  exit 1
}
# The desktop libraries, by apt inside the root: /proc and /dev mounted in
# a private mount namespace, and no service may start (policy-rc.d).
printf '#!/bin/sh\nexit 101\n' >"$work/root/usr/sbin/policy-rc.d"
chmod +x "$work/root/usr/sbin/policy-rc.d"
unshare --mount --propagation private sh -c '
  r=$1; shift
  mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev" || exit 111
  exec chroot "$r" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive sh -c "$*"
' sh "$work/root" "apt-get update -qq && apt-get install -y -qq --no-install-recommends $desktop" >>"$work/log" 2>&1 || {
  tail -30 "$work/log" >&2
  echo "installing $desktop in the root failed (log above)" >&2
  exit 1
}
rm -f "$work/root/usr/sbin/policy-rc.d"
# Nothing of the build machine's apt lists or caches: a smaller tarball, and
# a root that looks like a fresh install.
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
tar -C "$work/root" --numeric-owner -cf "$work/root.tar" .
mv "$work/root.tar" "$tar"
echo "$tar"
