#!/bin/bash
# Removes devnet from this Mac: `sudo /usr/local/share/devnet/uninstall.sh`.
# macOS packages have no uninstaller, so the package installs this one.
#
# In order, and safe to run again (a second run changes nothing):
#  1. stop devnetd the way launchd does (SIGTERM): it ends every session and
#     undoes its routes and resolver files itself;
#  2. `devnet cleanup`: undoes whatever a crashed devnetd's journals still
#     list (it leaves them alone while a devnetd holds their lock); if it
#     fails, stops there;
#  3. removes /etc/resolver files that carry devnet's marker as their first
#     line (devnet_dns::macos::MARKER) and no other file there: the others
#     belong to VPN clients and administrators;
#  4. removes the files the package installed, then the state and the log;
#  5. forgets the package receipts (`pkgutil --forget`), so macOS no longer
#     lists devnet as installed;
#  6. deletes group devnet, only if it carries the installer's comment.
#
# UNVERIFIED on macOS: golden-tested on Linux with stub commands
# (tests/installers_other_os.rs). Kept to bash 3.2, macOS's /bin/bash.
set -euo pipefail

# The only test seam: tests point ROOT at a scratch directory; on a Mac it is empty.
ROOT="${DEVNET_TEST_ROOT:-}"
LABEL=dev.devnet.devnetd
GROUP=devnet
GROUP_COMMENT="created by the devnet installer; removed by its uninstall.sh"
MARKER="# devnet-managed"
# devnetd's --state-dir in dev.devnet.devnetd.plist: its journals.
STATE_DIR="$ROOT/var/lib/devnet"
DEVNET="$ROOT/usr/local/bin/devnet"

if [[ $(id -u) != 0 ]]; then
  echo "uninstall.sh needs root: it stops devnetd and removes system files (run it with sudo)" >&2
  exit 1
fi

# 1. devnetd
if launchctl print "system/$LABEL" >/dev/null 2>&1; then
  if ! launchctl bootout "system/$LABEL"; then
    echo "could not stop devnetd (launchctl bootout system/$LABEL failed): nothing was removed; try again" >&2
    exit 1
  fi
  echo "stopped devnetd"
fi

# 2. journals a crashed devnetd left. If they cannot be undone, nothing is
# removed: the journals are the only record of what is left, and devnet is
# what reads them. Run this again once the error above is fixed.
if [[ -x $DEVNET ]]; then
  if ! "$DEVNET" cleanup --daemon-state-dir "$STATE_DIR"; then
    echo "devnet cleanup failed: nothing was removed; fix what it says and run uninstall.sh again" >&2
    exit 1
  fi
fi

# 3. resolver files: ours only
for file in "$ROOT"/etc/resolver/*; do
  [[ -f $file && ! -L $file ]] || continue
  first=""
  IFS= read -r first <"$file" || true
  if [[ $first == "$MARKER"* ]]; then
    rm -f -- "$file"
    echo "removed $file"
  fi
done

# 4. files
for path in \
  "$ROOT/Library/LaunchDaemons/$LABEL.plist" \
  "$ROOT/usr/local/libexec/devnetd" \
  "$DEVNET" \
  "$ROOT/Applications/devnet.app" \
  "$ROOT/usr/local/share/devnet" \
  "$ROOT/var/run/devnet" \
  "$ROOT/var/log/devnetd.log"; do
  if [[ -e $path || -L $path ]]; then
    rm -rf -- "$path"
    echo "removed $path"
  fi
done
if [[ -e $STATE_DIR ]]; then
  rm -rf -- "$STATE_DIR"
  echo "removed $STATE_DIR"
fi

# 5. receipts
for pkg in dev.devnet.pkg.daemon dev.devnet.pkg.tray; do
  if pkgutil --pkg-info "$pkg" >/dev/null 2>&1; then
    pkgutil --forget "$pkg" >/dev/null
    echo "forgot package $pkg"
  fi
done

# 6. the group, if the installer made it
comment=$(dscl . -read "/Groups/$GROUP" Comment 2>/dev/null || true)
if [[ $comment == *"$GROUP_COMMENT"* ]]; then
  dseditgroup -o delete "$GROUP"
  echo "deleted group $GROUP"
fi

echo "devnet is uninstalled"
