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
#   libwebkit2gtk-4.1-0 libgtk-3-0
#                    the tray app's libraries, so installing devnet-tray needs
#                    no network during the test (its Depends are checked by
#                    dpkg as on any desktop)
set -euo pipefail

suite=bookworm
mirror=${DEVNET_DEBIAN_MIRROR:-http://deb.debian.org/debian}
include=systemd,iproute2,procps,libwebkit2gtk-4.1-0,libgtk-3-0
cache=/var/cache/devnet-lab/debian-root
key=$(printf '%s\n' "$suite" "$include" | sha256sum | cut -c1-12)
tar="$cache/$suite-$key.tar"

if [[ -s $tar ]]; then
  echo "$tar"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is needed: apt-get install debootstrap" >&2; exit 1; }
mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include="$include" "$suite" "$work/root" "$mirror" >"$work/log" 2>&1 || {
  tail -20 "$work/log" >&2
  echo "debootstrap of $suite from $mirror failed (log above)" >&2
  exit 1
}
# Nothing of the build machine's apt lists or caches: a smaller tarball, and
# a root that looks like a fresh install.
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
tar -C "$work/root" --numeric-owner -cf "$work/root.tar" .
mv "$work/root.tar" "$tar"
echo "$tar"
