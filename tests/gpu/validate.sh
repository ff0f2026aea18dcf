#!/usr/bin/env bash
# tests/gpu/validate.sh — the whole GPU path in one call, on a lent GPU machine (no network there).
#
# How to call it (from a session with the device tool), after tests/gpu/prepare.sh ran HERE:
#   run(command="bash tests/gpu/validate.sh", carry=[".gpu-deps/debs"], timeout_s=600)
# It unpacks the carried .debs into .gpu-deps/root, configures a Release build with CUDA for the GPU it
# finds (nvidia-smi's compute capability), builds the GPU tests and the benchmark, runs `ctest -L gpu`, then
# sluice-bench-cuda, and prints one summary table at the end. Logs go to $OUT (when set) so they come back.
# Budget: under 8 minutes on an H100 (build ~2-3 min with 16 cores, tests ~1 min, benchmark ~3 min).
# Environment knobs: SL_BENCH_ARGS (passed to sluice-bench-cuda), SL_SKIP_BENCH=1.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEPS="$ROOT/.gpu-deps"
R="$DEPS/root"
B="${SL_GPU_BUILD_DIR:-$ROOT/build-gpu}"
LOGS="${OUT:-$ROOT/build-gpu-logs}"
mkdir -p "$LOGS"
T0=$(date +%s)
declare -a SUMMARY=()
note() { SUMMARY+=("$(printf '%-44s %s' "$1" "$2")"); }
step() { echo; echo "==== [$(($(date +%s) - T0))s] $*"; }

finish() {
  echo
  echo "================================ SUMMARY ================================"
  printf '%-44s %s\n' "step / test" "result"
  printf '%s\n' "${SUMMARY[@]}"
  echo "logs: $LOGS   (elapsed $(($(date +%s) - T0)) s)"
  exit "${1:-0}"
}

# ---- 0. the machine ----------------------------------------------------------------------------------------
step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1 | tee "$LOGS/gpu.txt" ||
  echo "no nvidia-smi (no GPU here?)" > "$LOGS/gpu.txt"
CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
[ -n "$CAP" ] || CAP=90
note "gpu" "$(head -1 "$LOGS/gpu.txt") (arch $CAP)"
NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
"$NVCC" --version | tail -1
cmake --version | head -1
JOBS=$(nproc)

# ---- 1. unpack the .debs ---------------------------------------------------------------------------------------
step "unpacking .gpu-deps/debs into $R"
if ! ls "$DEPS"/debs/*.deb >/dev/null 2>&1; then
  note "deps" "FAIL: no .debs in .gpu-deps/debs (run tests/gpu/prepare.sh here first; carry .gpu-deps/debs)"
  finish 1
fi
rm -rf "$R" && mkdir -p "$R"
extract() { # dpkg-deb where there is one, else ar + tar
  if command -v dpkg-deb >/dev/null; then dpkg-deb -x "$1" "$R"; else
    local t; t=$(mktemp -d); (cd "$t" && ar x "$1" && tar -xf data.tar.* -C "$R"); rm -rf "$t"; fi
}
n_skip=0
for deb in "$DEPS"/debs/*.deb; do
  name=$(basename "$deb")
  # A runtime library package whose sonames the system already has is left out: the system's copy is
  # newer and already loaded by everything else (one libkrb5 in a process, not two).
  case "$name" in
    *-dev_*|node-llhttp_*|pkgconf*|libpkgconf*|libcriterion3_*|libboxfort*|libuv1_*|libjansson4_*|libyaml-0-2_*|libopenblas*|libjemalloc2_*) extract "$deb";;
    *)
      libs=$( (dpkg-deb -c "$deb" 2>/dev/null || true) | grep -o '[^/ ]*\.so\.[0-9][0-9.]*' | sort -u)
      have=1
      for l in $libs; do ldconfig -p 2>/dev/null | grep -qE "^[[:space:]]$l " || have=0; done
      if [ -n "$libs" ] && [ $have = 1 ]; then n_skip=$((n_skip + 1)); else extract "$deb"; fi;;
  esac
done
LIBDIRS="$R/usr/lib/x86_64-linux-gnu:$R/usr/lib/x86_64-linux-gnu/openblas-pthread:$R/lib/x86_64-linux-gnu"
for d in ${LIBDIRS//:/ }; do [ -d "$d" ] && ldconfig -n "$d" 2>/dev/null; done
# libopenblas.so.0 is made by Debian's alternatives, not shipped: the soname link the executables need
OB="$R/usr/lib/x86_64-linux-gnu/openblas-pthread"
[ -e "$OB/libopenblas.so.0" ] || ln -sf "$(basename "$(ls "$OB"/libopenblasp-r*.so | head -1)")" "$OB/libopenblas.so.0"
# .pc files: point them at $R and drop the private requirements (their .pc files are not carried; we link
# shared libraries, so the private ones never matter)
PCDIR="$R/pc"
mkdir -p "$PCDIR"
for pc in "$R"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$R"/usr/share/pkgconfig/*.pc; do
  [ -e "$pc" ] || continue
  sed -e "s|=/usr|=$R/usr|g" -e "s| /usr/| $R/usr/|g" -e '/^Requires.private/d' -e '/^Libs.private/d' "$pc" \
    > "$PCDIR/$(basename "$pc")"
done
export PKG_CONFIG_PATH="$PCDIR"
export LD_LIBRARY_PATH="$LIBDIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
PKGCONF_ARG=()
if ! command -v pkg-config >/dev/null; then
  PKGCONF_ARG=(-DPKG_CONFIG_EXECUTABLE="$R/usr/bin/pkgconf")
  export PKG_CONFIG_LIBDIR="$PCDIR" # Debian's compiled-in paths do not exist here
fi
note "deps" "ok ($(ls "$DEPS"/debs/*.deb | wc -l) debs, $n_skip left to the system)"

# ---- 2. configure and build ----------------------------------------------------------------------------------
step "configure (Release, CUDA arch $CAP)"
JEMALLOC_ARG=(-DSLUICE_JEMALLOC=OFF)
[ -e "$R/usr/lib/x86_64-linux-gnu/libjemalloc.so" ] && JEMALLOC_ARG=(-DJEMALLOC_LIB="$R/usr/lib/x86_64-linux-gnu/libjemalloc.so")
if ! cmake -S "$ROOT" -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=Release -DSLUICE_CUDA=ON \
    -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$CAP" "${PKGCONF_ARG[@]}" "${JEMALLOC_ARG[@]}" \
    -DOPENBLAS_INCLUDE_DIR="$R/usr/include/x86_64-linux-gnu/openblas-pthread" -DOPENBLAS_LIB="$OB/libopenblas.so" \
    -DLLHTTP_SRC_DIR="$R/usr/share/llhttp" -DLLHTTP_INCLUDE_DIR="$R/usr/share/include/llhttp" \
    -DCMAKE_C_FLAGS="-I$R/usr/include" >"$LOGS/configure.log" 2>&1; then
  tail -30 "$LOGS/configure.log"
  note "configure" "FAIL (configure.log)"
  finish 1
fi
grep -E "Sluice:|CUDA" "$LOGS/configure.log" | head -5
note "configure" "ok"

step "build"
TARGETS=(test_cuda_ops test_cuda_model test_comm_cuda1 sluice-bench-cuda sluice-make-bench-models)
for t in "${TARGETS[@]}"; do
  if ninja -C "$B" -j"$JOBS" "$t" >>"$LOGS/build.log" 2>&1; then note "build $t" "ok"; else
    note "build $t" "FAIL (build.log)"; fi
done
grep -E "error|warning" "$LOGS/build.log" | head -20

# ---- 3. the GPU tests ---------------------------------------------------------------------------------------
# The default model cannot come here (no network; 98 MB is over what travels with the tree). Unless one is
# already in the cache, a stand-in of its shape (SmolLM2-135M: 576 hidden, 30 layers, 9/3 heads, Q4_1) with
# stories260K's tokenizer and random weights is written on the spot, so the default-model GPU tests run too.
if [ -z "${SLUICE_MODEL:-}" ] && [ ! -f "$HOME/.cache/sluice/models/SmolLM2-135M-Instruct.Q4_1.gguf" ] &&
   [ -x "$B/benchmarks/sluice-make-bench-models" ]; then
  mkdir -p "$B/smol"
  if "$B/benchmarks/sluice-make-bench-models" -o "$B/smol" --types q4_1 --shape smol \
       --tokenizer "$ROOT/tests/data/stories260K.gguf" >>"$LOGS/build.log" 2>&1; then
    export SLUICE_MODEL="$B/smol/bench-smol-q4_1.gguf"
    note "default-shaped stand-in model" "ok (random weights, stories260K tokenizer)"
  else
    note "default-shaped stand-in model" "FAIL (build.log): default-model tests will skip"
  fi
fi
step "ctest -L gpu"
# every test has a TIMEOUT property (600 s), which ctest's --timeout does not override: bound the whole step
(cd "$B" && timeout 300 ctest -L gpu -V) >"$LOGS/ctest_gpu.log" 2>&1 || true
grep -E "^\s*[0-9]+/[0-9]+ Test|tests passed|\[(FAIL|SKIP|METRIC)\]|\[----\]" "$LOGS/ctest_gpu.log" | head -80
for name in cuda_ops cuda_model comm_cuda1; do
  line=$(grep -E "Test +#[0-9]+: $name " "$LOGS/ctest_gpu.log" | tail -1)
  if [ -z "$line" ]; then note "ctest $name" "NOT RUN (not built?)"; continue; fi
  res=$(echo "$line" | grep -oE "Passed|\*\*\*Failed|Failed|Not Run|Timeout|Exception.*" | head -1)
  skips=$(grep -cE "^[0-9]+: \[SKIP\] $name::" "$LOGS/ctest_gpu.log")
  passes=$(grep -cE "^[0-9]+: \[PASS\] $name::" "$LOGS/ctest_gpu.log")
  note "ctest $name" "$res ($passes passed, $skips skipped)"
done
while read -r l; do # "[SKIP] suite::test: reason" -> "  SKIP suite::test" | reason
  note "  $(echo "$l" | sed -E 's/^\[(FAIL|SKIP)\] ([^:]+::[^:]+).*/\1 \2/')" "$(echo "$l" | sed -E 's/^[^:]+::[^:]+: ?//' | cut -c1-160)"
done < <(grep -oE "\[(FAIL|SKIP)\] [a-z_0-9]+::[a-z_0-9]+.*" "$LOGS/ctest_gpu.log" | head -24)
while read -r l; do note "  metric" "$l"; done < <(grep -oE "\[METRIC\].*" "$LOGS/ctest_gpu.log" | sed 's/\[METRIC\] //')

# ---- 4. the benchmark ---------------------------------------------------------------------------------------
if [ "${SL_SKIP_BENCH:-0}" != 1 ] && [ -x "$B/benchmarks/sluice-bench-cuda" ]; then
  step "sluice-bench-cuda ${SL_BENCH_ARGS:-}"
  # shellcheck disable=SC2086
  timeout 240 "$B/benchmarks/sluice-bench-cuda" ${SL_BENCH_ARGS:-} >"$LOGS/bench_cuda.log" 2>&1
  rc=$?
  cat "$LOGS/bench_cuda.log"
  note "bench sluice-bench-cuda" "rc $rc"
  while read -r l; do note "  bench" "$l"; done < <(grep -E "^\| " "$LOGS/bench_cuda.log")
else
  note "bench sluice-bench-cuda" "not run"
fi
cp "$B"/Testing/Temporary/LastTest*.log "$LOGS/" 2>/dev/null
# ---- 5. the rest of the tree, last (not needed above; a failure is only reported) ------------------------------
step "build all, ldd rule"
if timeout 120 ninja -C "$B" -j"$JOBS" >>"$LOGS/build_all.log" 2>&1; then note "build all" "ok"; else
  note "build all" "FAIL or not finished in 120 s (build_all.log)"; fi
if [ -x "$B/sluice" ]; then
  if ldd "$B/sluice" | grep -qE "libcuda\.so|libnvidia-ml|libcublas"; then note "ldd rule (no libcuda/NVML/cuBLAS)" "FAIL"; else
    note "ldd rule (no libcuda/NVML/cuBLAS)" "ok"; fi
fi
finish 0
