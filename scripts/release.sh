#!/usr/bin/env bash
# Builds the linux/amd64 release archive of the plugin and writes the krew manifest with the
# archive's real sha256. The archive holds two files, installed side by side: kubectl-oidc_login
# (what kubectl runs: a small binary that answers a cached token itself) and kubelogin-rs (the
# full plugin, which the small one execs for everything else; README, Performance).
#
#   scripts/release.sh [--bin-dir DIR] [--out DIR] [--manifest FILE] [--base-url URL]
#
# Without --bin-dir it builds both as users install them (kubelogin/release.toml: static-pie,
# packed relocations, fat LTO), checks that they need no shared library, and packs them. With
# --bin-dir it packs the two files in DIR as they are (the test of this script does so with the
# binaries cargo already built, to stay fast).
#
# The archive is reproducible from the binaries: sorted entries, fixed mtime, owner and mode, and
# gzip without a name or timestamp, so the same binaries always give the same sha256.
#
# linux/amd64 is the one platform this machine builds. The manifest lists only it; darwin and
# windows archives (and linux/arm64) wait for a build machine of each, and are added to the
# manifest's platforms with their own sha256 when one exists.
#
# The krew plugin name is `oidc-login-rs`: int128/kubelogin holds `oidc-login` in the krew
# index, so ours lives in a custom index under a name of its own (README, Install).
set -euo pipefail
cd "$(dirname "$0")/.."

name=oidc-login-rs
bin_dir=""
out=target/release-archive
manifest=examples/krew/oidc-login-rs.yaml
base_url=https://example.com/kubelogin-rs/releases
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin_dir=${2%/}; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --manifest) manifest=$2; shift 2 ;;
    --base-url) base_url=${2%/}; shift 2 ;;
    *) echo "error: unknown argument $1 (see the comment at the top of $0)" >&2; exit 1 ;;
  esac
done

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[ -n "$version" ] || { echo "error: no [workspace.package] version in Cargo.toml" >&2; exit 1; }

bins=(kubectl-oidc_login kubelogin-rs)
if [ -z "$bin_dir" ]; then
  cargo build --release --locked -p kubelogin --config kubelogin/release.toml
  bin_dir=${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release
  for b in "${bins[@]}"; do
    binary=$bin_dir/$b
    # The point of the release build: no dynamic loader and no shared library at start.
    if readelf -d "$binary" | grep -q NEEDED; then
      echo "error: $binary needs shared libraries; it should be static-pie" >&2
      readelf -d "$binary" | grep NEEDED >&2
      exit 1
    fi
    readelf -h "$binary" | grep -q 'DYN' || { echo "error: $binary is not position independent" >&2; exit 1; }
  done
  # Through the shim: it execs kubelogin-rs beside it.
  "$bin_dir/kubectl-oidc_login" version
fi
for b in "${bins[@]}"; do
  [ -f "$bin_dir/$b" ] || { echo "error: no $b in $bin_dir" >&2; exit 1; }
done

archive_name=kubectl-oidc_login_linux_amd64.tar.gz
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
for b in "${bins[@]}"; do install -m 0755 "$bin_dir/$b" "$stage/$b"; done
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --mode=0755 \
  -C "$stage" -cf - "${bins[@]}" | gzip -n > "$out/$archive_name"
sha=$(sha256sum "$out/$archive_name" | cut -d' ' -f1)

mkdir -p "$(dirname "$manifest")"
cat > "$manifest" <<YAML
# The krew plugin manifest of kubectl-oidc_login, written by scripts/release.sh (do not edit by
# hand: run the script). For a custom index (int128/kubelogin holds \`oidc-login\` in the krew
# index); with the archive at hand:
#   kubectl krew install --manifest=$manifest --archive=$archive_name
# krew links the binary as kubectl-oidc_login_rs: \`kubectl $name get-token ...\`. Two files:
# kubectl-oidc_login answers a cached token itself and execs kubelogin-rs, installed beside it,
# for everything else (a small binary starts as fast as a process can; the full one does not).
# Only linux/amd64 is built here; darwin, windows and linux/arm64 wait for a build machine.
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: $name
spec:
  version: v$version
  homepage: https://example.com/kubelogin-rs
  shortDescription: Log in to Kubernetes with OpenID Connect (kubelogin-compatible)
  description: |
    kubectl-oidc_login is a kubectl credential plugin for OpenID Connect: browser login with
    PKCE, device code for hosts without a browser, and a token cache on disk or in the OS
    keyring. It accepts int128/kubelogin's flags and kubeconfig entries unchanged. The linux
    build is static-pie, and a cached token is answered by a small binary of its own
    (kubectl-oidc_login) as fast as a process starts; kubelogin-rs, beside it, does the rest.
  platforms:
    - selector:
        matchLabels: {os: linux, arch: amd64}
      uri: $base_url/v$version/$archive_name
      sha256: "$sha"
      bin: kubectl-oidc_login
      files:
        - {from: kubectl-oidc_login, to: .}
        - {from: kubelogin-rs, to: .}
YAML
echo "$out/$archive_name $sha"
echo "wrote $manifest"
