#!/usr/bin/env bash
# tests/gpu/prepare.sh — run HERE (a Debian bookworm machine with a network), before validating on a GPU machine.
#
# The lent GPU machine has CUDA, CMake, ninja and python3, but none of the Debian -dev packages the build needs
# and no network. This script downloads those packages' .debs (apt-get download: no root, nothing installed)
# into .gpu-deps/debs/ (ignored by git); tests/gpu/validate.sh unpacks them there with dpkg-deb/ar. Bookworm's
# glibc (2.36) is older than any current GPU image's, so its libraries load there.
#
# Then, with the device tool (`run`), from the repository root:
#   command: bash tests/gpu/validate.sh
#   carry:   [".gpu-deps/debs"]
#   timeout_s: 600
# (the tree plus .gpu-deps must stay under 64 MiB: this script prints the total).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST="$ROOT/.gpu-deps/debs"
mkdir -p "$DEST"

# What CMakeLists.txt finds (libuv, jansson, yaml, openblas, criterion, jemalloc, llhttp's sources), the
# runtime libraries they load (criterion: libgit2 -> mbedtls, http-parser, ssh2, krb5; openblas: gfortran),
# and pkgconf in case the GPU image has no pkg-config. Libraries a GPU image surely has (libc, libstdc++,
# zlib, libffi, openssl, pcre2) are left out; validate.sh also skips unpacking any library the system has.
PKGS=(
  libuv1 libuv1-dev
  libjansson4 libjansson-dev
  libyaml-0-2 libyaml-dev
  libopenblas0 libopenblas0-pthread libopenblas-dev libopenblas-pthread-dev libgfortran5 libquadmath0
  libcriterion3 libcriterion-dev libboxfort-dev libnanomsg5 libgit2-1.5 libmbedtls14 libmbedx509-1
  libmbedcrypto7 libhttp-parser2.9 libssh2-1 libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0
  libkeyutils1 libcom-err2
  libjemalloc2 libjemalloc-dev
  node-llhttp
  pkgconf pkgconf-bin libpkgconf3
)

cd "$DEST"
for p in "${PKGS[@]}"; do
  if ! ls "${p}"_*.deb >/dev/null 2>&1; then
    apt-get download "$p" >/dev/null || { echo "prepare.sh: apt-get download $p failed" >&2; exit 1; }
  fi
done
ls -1 "$DEST"/*.deb | wc -l | xargs echo "debs in .gpu-deps/debs:"

# Python wheels: none needed (the GPU tests are C; the benchmark prints its own table).

rm -rf "$ROOT/.gpu-deps/root" # a local dry run's unpacked tree: validate.sh rebuilds it there; never carried
deps=$(du -cb "$ROOT/.gpu-deps/debs" | tail -1 | cut -f1)
tree=$(cd "$ROOT" && git ls-files -z | xargs -0 du -cb 2>/dev/null | awk '/total$/ {s += $1} END {print s}')
untracked=$(cd "$ROOT" && git ls-files -z --others --exclude-standard | xargs -0 -r du -cb 2>/dev/null | awk '/total$/ {s += $1} END {print s + 0}')
total=$((deps + tree + untracked))
printf 'sizes: .gpu-deps/debs %.1f MiB, tracked tree %.1f MiB, untracked files %.1f MiB, total %.1f MiB (limit 64)\n' \
  "$(echo "$deps / 1048576" | bc -l)" "$(echo "$tree / 1048576" | bc -l)" "$(echo "$untracked / 1048576" | bc -l)" \
  "$(echo "$total / 1048576" | bc -l)"
if [ "$total" -ge $((60 * 1048576)) ]; then
  echo "prepare.sh: over 60 MiB: the device tool may refuse to carry it" >&2
  exit 1
fi
