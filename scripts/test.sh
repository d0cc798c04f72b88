#!/usr/bin/env bash
# scripts/test.sh — the README's test command: set up, build, run every test.
#
# Runs ctest over all labels (unit, lit, e2e: the end-to-end checks on the default model
# against committed llama.cpp goldens), then the libFuzzer targets under ASan+UBSan for
# KILN_FUZZ_SECONDS each (default 60). Idempotent; rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc)
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" ${KILN_CTEST_ARGS:-}
bash scripts/fuzz.sh "${KILN_FUZZ_SECONDS:-60}"
