#!/usr/bin/env bash
# setup.sh — from a fresh Debian (12) checkout to a built, tested or running Sluice, in one command.
#
#   ./setup.sh              install what is missing, then build (Release, into build/)
#   ./setup.sh test         the above, then run the tests: ctest --test-dir build --output-on-failure -j2
#                           (SLUICE_ASAN=1: also an ASan+UBSan build in build-asan/ and its tests)
#   ./setup.sh asan         the setup, then only the ASan build and its tests (what CI runs second)
#   ./setup.sh demo [TEXT]  the setup, then chat with the default model on the CLI (build/sluice generate)
#   ./setup.sh serve ARGS   the setup, then exec build/sluice serve ARGS (once the HTTP server has landed)
#
# Stages, each timed and each a no-op when already done (so running it again costs seconds):
#   1. Debian packages: installed with apt-get only if some are missing (apt-get update first); that needs
#      root or sudo, and the script says so when it has neither.
#   2. Python: a virtual environment in .venv with the few packages the tests and scripts use.
#   3. The default model, fetched into the cache by models/fetch_default_model.sh (checksum-verified).
#   4. Configure and build with CMake + Ninja. CUDA is built when nvcc is found
#      (CMAKE_CUDA_ARCHITECTURES=90, i.e. H100/H200; SLUICE_CUDA_ARCHITECTURES overrides), else left out.
#
# Environment: SLUICE_ASAN=1 (see above), SLUICE_JOBS (parallel build jobs; default: the core count),
# SLUICE_CUDA_ARCHITECTURES, SLUICE_ASAN_CTEST_ARGS (extra ctest arguments for the ASan run; default
# `-LE slow|e2e`, the fast unit tests), and the model cache's variables (see models/fetch_default_model.sh).
set -Eeuo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$root"

# Everything the build, the tests and the scripts need from Debian. gcc and libc6-dev compile; cmake,
# ninja-build and pkg-config configure and drive the build; python3/python3-venv make .venv; the -dev
# packages are the libraries CMakeLists.txt finds (node-llhttp ships llhttp's C sources, compiled in);
# curl is what the end-to-end tests drive the server with; ca-certificates lets it and pip speak HTTPS; wrk
# is the HTTP load tool of benchmarks/RESULTS.md; prometheus brings promtool, which lints /metrics in a test
# (only the binary is used: no service is started); chromium and chromium-driver let a test look at the
# dashboard in a real headless browser.
readonly DEB_PACKAGES=(
    cmake ninja-build gcc libc6-dev pkg-config python3 python3-venv
    libuv1-dev node-llhttp libopenblas-dev libjemalloc-dev libcriterion-dev libjansson-dev libyaml-dev
    curl ca-certificates wrk prometheus chromium chromium-driver
)
# The Python packages the tests and scripts import (module name differs from the package for pyyaml).
readonly PY_PACKAGES=(numpy gguf tokenizers jinja2 pytest openai jsonschema requests pyyaml selenium)
readonly PY_MODULES=(numpy gguf tokenizers jinja2 pytest openai jsonschema requests yaml selenium)

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# ---- stage bookkeeping: name, time, and a clear word when one fails -------------------------------------
current_stage=""
stage_times=()
on_error() {
    local rc=$?
    printf '[setup] FAILED in stage "%s" (exit %d)\n' "$current_stage" "$rc" >&2
    exit "$rc"
}
trap on_error ERR

now() { printf '%s' "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

stage() {
    current_stage=$1
    shift
    local t0
    t0=$(now)
    log "==> $current_stage"
    "$@"
    local dt
    dt=$(elapsed "$t0")
    stage_times+=("$(printf '%-34s %8ss' "$current_stage" "$dt")")
    log "    $current_stage: ${dt}s"
}

summary() {
    log "stage times:"
    local line
    for line in "${stage_times[@]}"; do log "    $line"; done
}

# ---- 1. Debian packages ------------------------------------------------------------------------------------
deb_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        log "not a Debian system: make sure these (or their equivalents) are installed: ${DEB_PACKAGES[*]}"
        return 0
    fi
    local missing=() p
    for p in "${DEB_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        log "    all ${#DEB_PACKAGES[@]} Debian packages are installed"
        return 0
    fi
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 ||
            die "missing Debian packages: ${missing[*]}. Installing them needs root, and sudo is not available: run
        apt-get update && apt-get install -y ${missing[*]}
as root, then run ./setup.sh again."
        sudo=(sudo)
        log "    installing with sudo (it may ask for your password)"
    fi
    log "    missing: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# ---- 2. Python virtual environment ----------------------------------------------------------------------------
python_env() {
    if [[ ! -x .venv/bin/python ]]; then
        log "    creating .venv"
        python3 -m venv .venv
    fi
    local missing=() i
    for i in "${!PY_MODULES[@]}"; do
        .venv/bin/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('${PY_MODULES[$i]}') is None)" ||
            missing+=("${PY_PACKAGES[$i]}")
    done
    if ((${#missing[@]} == 0)); then
        log "    .venv has all ${#PY_PACKAGES[@]} Python packages"
        return 0
    fi
    log "    pip install ${missing[*]}"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "${missing[@]}"
}

# ---- 3. the default model ----------------------------------------------------------------------------------------
model() { PYTHON="$root/.venv/bin/python" models/fetch_default_model.sh; }

# ---- 4. build ---------------------------------------------------------------------------------------------------
build_jobs() { printf '%s' "${SLUICE_JOBS:-$(nproc 2>/dev/null || echo 2)}"; }

have_nvcc() { command -v nvcc >/dev/null 2>&1 || [[ -x /usr/local/cuda/bin/nvcc ]]; }

build() { # build DIR BUILD_TYPE
    local dir=$1 type=$2 cuda=()
    if [[ "$type" != Asan ]] && have_nvcc; then
        cuda=(-DSLUICE_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${SLUICE_CUDA_ARCHITECTURES:-90}")
        log "    nvcc found: building the CUDA backend (${cuda[1]})"
    else
        cuda=(-DSLUICE_CUDA=OFF)
    fi
    cmake -S . -B "$dir" -G Ninja "-DCMAKE_BUILD_TYPE=$type" "${cuda[@]}"
    cmake --build "$dir" -j "$(build_jobs)"
}

run_tests() { # run_tests DIR [ctest args...]
    local dir=$1
    shift
    ctest --test-dir "$dir" --output-on-failure -j2 "$@"
}

asan_tests() {
    local args
    read -r -a args <<<"${SLUICE_ASAN_CTEST_ARGS:--LE slow|e2e}"
    # detect_leaks: LeakSanitizer is on by default on Linux; say so anyway, and make UBSan's reports fatal.
    ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
        run_tests build-asan "${args[@]}"
}

# ---- main ---------------------------------------------------------------------------------------------------------
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

command=${1:-}
case "$command" in
"" | test | asan | serve | demo) ;;
-h | --help | help) usage; exit 0 ;;
*) usage >&2; die "unknown command '$command'" ;;
esac
[[ $# -gt 0 ]] && shift

t_start=$(now)
stage "Debian packages" deb_packages
stage "Python environment (.venv)" python_env
stage "default model" model
if [[ "$command" != asan ]]; then
    stage "build (Release, build/)" build build Release
fi

case "$command" in
test)
    stage "tests (build/)" run_tests build
    if [[ "${SLUICE_ASAN:-0}" == 1 ]]; then
        stage "build (Asan, build-asan/)" build build-asan Asan
        stage "tests (build-asan/)" asan_tests
    fi
    ;;
asan)
    stage "build (Asan, build-asan/)" build build-asan Asan
    stage "tests (build-asan/)" asan_tests
    ;;
esac

current_stage="done"
summary
log "total: $(elapsed "$t_start")s"
if [[ "$command" == demo ]]; then
    prompt=${1:-"Write a short poem about a river."}
    log "exec build/sluice generate --chat -n 200 -p \"$prompt\""
    exec build/sluice generate --chat -n 200 -p "$prompt"
fi
if [[ "$command" == serve ]]; then
    log "exec build/sluice serve $*"
    exec build/sluice serve "$@"
fi
