#!/usr/bin/env bash
# scripts/quickstart.sh [PROMPT] — the README's first command: install what is missing,
# build kiln, fetch the default model (SmolLM2-135M-Instruct), compile it ahead of time
# into out/smollm2/, and chat with the compiled model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
model=${KILN_CACHE:-$HOME/.cache/kiln}/models/SmolLM2-135M-Instruct.Q4_1.gguf
prompt=${1:-"What is the capital of France? Answer in one sentence."}
echo "[quickstart] kiln compile $model -o out/smollm2"
build/tools/kiln/kiln compile "$model" -o out/smollm2
echo "[quickstart] kiln run --artifact out/smollm2 --chat --prompt \"$prompt\""
build/tools/kiln/kiln run "$model" --artifact out/smollm2 --chat --prompt "$prompt" --max-tokens 64
echo "[quickstart] to hold a conversation: build/tools/kiln/kiln chat $model (one message per line; /help)"
