#!/usr/bin/env bash
# Builds devnet's Linux packages from binaries already built:
#
#   installers/linux/build-packages.sh BIN_DIR OUT_DIR [VERSION [RELEASE]]
#
#   BIN_DIR  holds devnet, devnetd and devnet-tray (target/release for a
#            release; the tests use the debug build CI already made)
#   OUT_DIR  gets devnet_<v>-<r>_<arch>.deb, devnet-tray_…deb and the .rpm of
#            each
#   VERSION  defaults to the workspace's; RELEASE to 1
#
#   installers/linux/build-packages.sh --fetch-only   builds nfpm only
#
# Why nfpm: one declarative file per package makes both the .deb and the .rpm
# (contents and maintainer scripts written once), it packages binaries that
# are already built (the Tauri bundler and cargo-deb build their own, and
# the Tauri bundler knows no system service), and it is a single static Go
# program, built here from its module at a pinned version and cached outside
# the repository like the lab's other tools.
set -euo pipefail

nfpm_version=v2.45.2
nfpm=/var/cache/devnet-lab/nfpm/$nfpm_version/nfpm
if [[ ! -x $nfpm ]]; then
  command -v go >/dev/null || { echo "Go is needed to build nfpm $nfpm_version (apt-get install golang, or Go >= 1.24)" >&2; exit 1; }
  echo "building nfpm $nfpm_version into ${nfpm%/nfpm} (once)" >&2
  GOBIN=${nfpm%/nfpm} GOFLAGS=-buildvcs=false go install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$nfpm_version"
fi
[[ ${1:-} == --fetch-only ]] && exit 0

usage="usage: build-packages.sh BIN_DIR OUT_DIR [VERSION [RELEASE]]"
bin_dir=$(realpath "${1:?$usage}")
out_dir=${2:?$usage}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
version=${3:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)}
release=${4:-1}

for b in devnet devnetd devnet-tray; do
  [[ -x $bin_dir/$b ]] || { echo "$bin_dir/$b is missing: build it first (cargo build --release -p devnet-cli -p devnetd -p devnet-tray)" >&2; exit 1; }
done
[[ $version =~ ^[0-9][0-9A-Za-z.+~]*$ ]] || { echo "version '$version' must start with a digit and hold only [0-9A-Za-z.+~]" >&2; exit 1; }
[[ $release =~ ^[0-9][0-9A-Za-z.+~]*$ ]] || { echo "release '$release' must start with a digit and hold only [0-9A-Za-z.+~]" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/stage/completions" "$out_dir"
ln -s "$here" "$work/linux"
# Stripped, as Debian's and Fedora's own tooling ships binaries.
for b in devnet devnetd devnet-tray; do
  strip --strip-unneeded -o "$work/stage/$b" "$bin_dir/$b"
done
"$bin_dir/devnet" completion bash >"$work/stage/completions/devnet.bash"
"$bin_dir/devnet" completion zsh >"$work/stage/completions/_devnet"
"$bin_dir/devnet" completion fish >"$work/stage/completions/devnet.fish"
cat >"$work/stage/copyright" <<EOF
devnet $version
Copyright the devnet developers.
License: Apache-2.0
On Debian systems the full text of the license is in /usr/share/common-licenses/Apache-2.0.
EOF

export DEVNET_VERSION=$version DEVNET_RELEASE=$release
DEVNET_ARCH=$(dpkg --print-architecture 2>/dev/null || uname -m)
export DEVNET_ARCH
out_dir=$(realpath "$out_dir")
cd "$work"
for pkg in devnet devnet-tray; do
  for format in deb rpm; do
    "$nfpm" package --config "linux/$pkg.nfpm.yaml" --packager "$format" --target "$out_dir/" >&2
  done
done
ls "$out_dir"
