#!/bin/bash
# Builds devnet-<version>.pkg on a Mac: `installers/macos/build-pkg.sh [OUT_DIR]`
# (default target/pkg). Needs Xcode's command line tools (pkgbuild,
# productbuild, lipo), rustup with the aarch64-apple-darwin and
# x86_64-apple-darwin targets, Node.js (the tray app's window) and tauri-cli
# (`cargo install tauri-cli --version ^2 --locked`).
#
# Two component packages, put together by Distribution.xml:
#   dev.devnet.pkg.daemon  /usr/local/bin/devnet, /usr/local/libexec/devnetd,
#                          the LaunchDaemon plist and uninstall.sh, with
#                          scripts/preinstall and scripts/postinstall;
#   dev.devnet.pkg.tray    /Applications/devnet.app.
# The receipts' names are the ones uninstall.sh forgets.
#
# Not signed or notarized: a release adds `productsign --sign "Developer ID
# Installer: …"` and `xcrun notarytool submit`; until then Gatekeeper asks
# before opening the package.
#
# UNVERIFIED: never run on a Mac (tests/installers_other_os.rs checks its
# inputs on Linux).
set -euo pipefail
cd "$(dirname "$0")/../.."

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
out=${1:-target/pkg}
stage="$out/stage"
rm -rf "$stage"
mkdir -p "$stage/daemon-root" "$stage/tray-root"

# Universal binaries: Distribution.xml admits both arm64 and x86_64 Macs.
for target in aarch64-apple-darwin x86_64-apple-darwin; do
  cargo build --release --locked --target "$target" -p devnetd -p devnet-cli
done
root="$stage/daemon-root"
install -d -m 755 "$root/usr/local/bin" "$root/usr/local/libexec" "$root/usr/local/share/devnet" \
  "$root/Library/LaunchDaemons"
lipo -create -output "$root/usr/local/libexec/devnetd" \
  target/aarch64-apple-darwin/release/devnetd target/x86_64-apple-darwin/release/devnetd
lipo -create -output "$root/usr/local/bin/devnet" \
  target/aarch64-apple-darwin/release/devnet target/x86_64-apple-darwin/release/devnet
chmod 755 "$root/usr/local/libexec/devnetd" "$root/usr/local/bin/devnet"
# launchd ignores a daemon plist that group or others may write.
install -m 644 installers/macos/dev.devnet.devnetd.plist "$root/Library/LaunchDaemons/dev.devnet.devnetd.plist"
install -m 755 installers/macos/uninstall.sh "$root/usr/local/share/devnet/uninstall.sh"

# The tray app: its window first (it is embedded), then Tauri's .app bundle.
(cd ui && npm ci --no-audit --no-fund && npm run build)
cargo tauri build --target universal-apple-darwin --bundles app --config '{"bundle":{"active":true}}'
app=target/universal-apple-darwin/release/bundle/macos/devnet.app
# The app runs `devnet doctor --json` and looks for devnet beside itself
# first: apps started from the Finder have no /usr/local/bin on their PATH.
install -m 755 "$root/usr/local/bin/devnet" "$app/Contents/MacOS/devnet"
ditto "$app" "$stage/tray-root/devnet.app"

# pkgbuild records root:wheel for every file (its default ownership).
pkgbuild --root "$root" --install-location / \
  --identifier dev.devnet.pkg.daemon --version "$version" \
  --scripts installers/macos/scripts \
  "$out/devnet-daemon.pkg"
pkgbuild --root "$stage/tray-root" --install-location /Applications \
  --component-plist installers/macos/tray-components.plist \
  --identifier dev.devnet.pkg.tray --version "$version" \
  "$out/devnet-tray.pkg"
productbuild --distribution installers/macos/Distribution.xml --package-path "$out" \
  "$out/devnet-$version.pkg"
echo "built $out/devnet-$version.pkg"
