#!/usr/bin/env bash
# scripts/quickstart.sh — the README's first command: set up, build kiln, and run the
# default model (SmolLM2-135M-Instruct) on a chat prompt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
model=${KILN_CACHE:-$HOME/.cache/kiln}/models/SmolLM2-135M-Instruct.Q4_1.gguf
prompt=${1:-"What is the capital of France? Answer in one sentence."}
echo "[quickstart] kiln run $model --chat --prompt \"$prompt\""
build/tools/kiln/kiln run "$model" --chat --prompt "$prompt" --max-tokens 64
