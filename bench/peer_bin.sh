#!/usr/bin/env bash
# bench/peer_bin.sh — prints the folder of the llama.cpp binaries the benchmarks compare
# with, building them if needed. One place for every bench script:
#   KILN_PEER_BIN    use this folder as it is
#   otherwise        ../shared/peer/build-llama-cpp.sh (llama.cpp from llama-cpp-python
#                    0.3.36, GGML_NATIVE=ON), cached in ~/.cache/kiln-peer
# On a CPU that lists AMX (Sapphire Rapids and later) the native build also compiles
# ggml's AMX matmuls, and on the shared test machines those die with SIGILL on the first
# long prompt (although a process that requests the tile state with arch_prctl can run AMX
# there). On such a CPU this script builds the same source once more with AMX turned off (-mno-amx-*; AVX512-VNNI and
# the rest of the native ISA stay) into build-noamx/ and prints that folder.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${KILN_PEER_BIN:-}" ]; then echo "$KILN_PEER_BIN"; exit 0; fi
version=0.3.36
cache=${XDG_CACHE_HOME:-$HOME/.cache}/kiln-peer
src="$cache/llama.cpp-$version"
# The shared script can exit non-zero after building every tool but its last app.
bin=$(bash ../shared/peer/build-llama-cpp.sh 2>/dev/null | tail -n 1 || true)
[ -x "$bin/llama-bench" ] || bin="$src/build/bin"
[ -x "$bin/llama-bench" ] || { echo "peer_bin: no llama.cpp build in $bin" >&2; exit 1; }
if ! grep -qw amx_tile /proc/cpuinfo; then echo "$bin"; exit 0; fi
noamx="$src/build-noamx/bin"
need="llama-bench llama-simple llama-lookup llama-lookup-create llama-lookahead llama-perplexity llama-completion llama-quantize llama-tokenize"
missing=0
for t in $need; do [ -x "$noamx/$t" ] || missing=1; done
if [ "$missing" = 1 ]; then
  echo "peer_bin: building llama.cpp without AMX in $src/build-noamx (once, ~10 min)" >&2
  flags="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  cmake -S "$src" -B "$src/build-noamx" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" >&2
  # shellcheck disable=SC2086
  cmake --build "$src/build-noamx" -j"$(nproc)" --target $need >&2
fi
echo "$noamx"
