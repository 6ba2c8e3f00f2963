#!/usr/bin/env bash
# Builds a release of apimon for x86_64 Linux that runs on glibc 2.31 and
# later (Debian 11, Ubuntu 20.04) with no dynamic OpenSSL, checks both, and
# writes it with its sha256 (and, given a key, its signature) to
# target/dist/. Not part of the suite: it takes minutes.
#
#   scripts/release.sh                      # the binary, its .sha256
#   APIMON_RELEASE_SIGNING_KEY=~/.ssh/release scripts/release.sh
#                                           # … and its .sig (ssh-keygen -Y sign -n apimon-release)
#
# musl is not an option here (no musl Rust std can be installed), so the
# glibc baseline comes from cargo-zigbuild (zig as the linker, targeting
# x86_64-unknown-linux-gnu.2.31), both installed from PyPI into
# target/release-tools; OpenSSL and libgit2 are built in (`--features
# vendored`). Then: `apimon_binary: {url, sha256, signature_url}` in
# apimon.yaml pins it (docs/operations.md, "Making a release").
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'release: %s\n' "$*" >&2; exit 1; }

baseline="2.31"
target="x86_64-unknown-linux-gnu"
tools="target/release-tools"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"

command -v cargo >/dev/null || die "cargo is required (https://rustup.rs)"
command -v objdump >/dev/null || die "objdump is required (Debian package binutils)"
if [ ! -x "$tools/bin/cargo-zigbuild" ]; then
  log "installing ziglang and cargo-zigbuild into $tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install -q 'ziglang==0.13.0' 'cargo-zigbuild==0.19.8'
fi
export PATH="$PWD/$tools/bin:$PATH"

log "building apimon $version for $target.$baseline (OpenSSL and libgit2 built in)"
cargo zigbuild --release --locked --features vendored --target "$target.$baseline"
binary="target/$target/release/apimon"
[ -x "$binary" ] || die "no binary at $binary"

log "checking the glibc baseline and the libraries"
newest="$(objdump -T "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -Vu | tail -n 1)"
[ -n "$newest" ] || die "no GLIBC symbol versions found in $binary"
if [ "$(printf '%s\n%s\n' "$newest" "$baseline" | sort -V | tail -n 1)" != "$baseline" ]; then
  die "$binary needs GLIBC_$newest, newer than the $baseline baseline"
fi
if ldd "$binary" | grep -Eq 'libssl|libcrypto'; then
  die "$binary links OpenSSL dynamically: $(ldd "$binary" | grep -E 'libssl|libcrypto' | tr -s ' ')"
fi
"$binary" --version >/dev/null || die "$binary does not answer --version"

dist="target/dist"
mkdir -p "$dist"
name="apimon-$version-$target"
install -m 0755 "$binary" "$dist/$name"
(cd "$dist" && sha256sum "$name" >"$name.sha256")
if [ -n "${APIMON_RELEASE_SIGNING_KEY:-}" ]; then
  ssh-keygen -Y sign -n apimon-release -f "$APIMON_RELEASE_SIGNING_KEY" "$dist/$name" >/dev/null
  log "signed: $dist/$name.sig"
fi
log "newest glibc symbol: GLIBC_$newest; no libssl/libcrypto"
echo "$dist/$name"
