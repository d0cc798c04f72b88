#!/usr/bin/env bash
# scripts/fuzz.sh [SECONDS] — builds the libFuzzer targets with clang-16 (ASan + UBSan)
# and runs each for SECONDS (default 60), starting from the committed seed corpus.
# A finding leaves its input in build-fuzz/findings/ and fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_FUZZ=ON \
  -DKILN_BUILD_TESTS=OFF -DCMAKE_C_COMPILER=clang-16 -DCMAKE_CXX_COMPILER=clang++-16 >/dev/null
cmake --build build-fuzz --target gguf_fuzz model_file_fuzz adapter_fuzz hf_checkpoint_fuzz ir_text_fuzz tokenizer_fuzz
mkdir -p build-fuzz/findings
# run_target NAME CORPUS: NAME for $secs seconds from the committed seeds in
# tests/fuzz/corpus/CORPUS (copied, so that the fuzzer's additions stay out of git).
run_target() {
  local name=$1 corpus=$2
  mkdir -p "build-fuzz/corpus/$corpus"
  cp -n "tests/fuzz/corpus/$corpus"/* "build-fuzz/corpus/$corpus/" 2>/dev/null || true
  echo "[fuzz] $name for ${secs}s"
  "build-fuzz/tests/fuzz/$name" -max_total_time="$secs" -max_len=65536 -rss_limit_mb=4096 \
    -artifact_prefix=build-fuzz/findings/ -print_final_stats=1 "build-fuzz/corpus/$corpus" 2>&1 |
    tail -n 12
  echo "[fuzz] $name: no finding in ${secs}s"
}
run_target gguf_fuzz gguf
run_target model_file_fuzz model_file
run_target adapter_fuzz adapter
run_target hf_checkpoint_fuzz hf_checkpoint
run_target ir_text_fuzz ir_text
# The tokenizer with the default model's real vocabulary when scripts/setup.sh fetched it.
default_model=${KILN_CACHE:-$HOME/.cache/kiln}/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ -z "${KILN_FUZZ_VOCAB:-}" ] && [ -f "$default_model" ]; then export KILN_FUZZ_VOCAB=$default_model; fi
echo "[fuzz] tokenizer_fuzz vocabulary: ${KILN_FUZZ_VOCAB:-the committed tiny one, as scripts/setup.sh has not fetched the default model}"
run_target tokenizer_fuzz tokenizer
