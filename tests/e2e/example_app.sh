#!/usr/bin/env bash
# tests/e2e/example_app.sh KILN RUNTIME_LIB MODEL — the example app, built only from the
# artifact (model.h, libmodel.a, model.kiln), libkiln_rt.a and kiln/kiln.h, prints the
# same greedy text as `kiln run` on the same artifact; the chat example, the same
# conversation as `kiln chat`.
set -euo pipefail
kiln=$1 rt=$2 model=$3
src=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prompt="What is the capital of France? Answer in one sentence."
"$kiln" compile "$model" -o "$work/art" --ctx 512 --quiet
cmake -S "$src/examples" -B "$work/build" -DKILN_ARTIFACT_DIR="$work/art" \
  -DKILN_RUNTIME_LIB="$rt" -DKILN_INCLUDE_DIR="$src/runtime/include" >/dev/null
cmake --build "$work/build" >/dev/null
"$work/build/generate" "$work/art/model.kiln" "$prompt" 32 > "$work/app.txt"
"$kiln" run "$model" --artifact "$work/art" --ctx 512 --chat --prompt "$prompt" --max-tokens 32 > "$work/kiln.txt" 2>/dev/null
echo "example app: $(cat "$work/app.txt")"
echo "kiln run:    $(cat "$work/kiln.txt")"
if ! diff <(tr -d '\n' < "$work/app.txt") <(tr -d '\n' < "$work/kiln.txt"); then
  echo "FAIL: the example app and kiln run disagree" >&2
  exit 1
fi
grep -q Paris "$work/app.txt" || { echo "FAIL: no coherent answer" >&2; exit 1; }
echo "PASS: same text"
# The chat example: a two-turn conversation gives kiln chat's replies, the second turn
# reusing the first's tokens.
conv=$'What is the capital of France? Answer in one sentence.\nAnd of Italy?'
printf '%s\n' "$conv" | "$work/build/chat" "$work/art/model.kiln" 32 > "$work/chat_app.txt" 2> "$work/chat_app.err"
printf '%s\n' "$conv" | "$kiln" chat "$model" --artifact "$work/art" --ctx 512 --adapter-slots 0 --max-tokens 32 \
  > "$work/chat_kiln.txt" 2>/dev/null
echo "chat example: $(tr '\n' '|' < "$work/chat_app.txt")"
echo "kiln chat:    $(tr '\n' '|' < "$work/chat_kiln.txt")"
diff "$work/chat_app.txt" "$work/chat_kiln.txt" || { echo "FAIL: the chat example and kiln chat disagree" >&2; exit 1; }
grep -q "Rome" "$work/chat_app.txt" || { echo "FAIL: the second turn lost the conversation" >&2; exit 1; }
grep -q "[1-9][0-9]* tokens reused" "$work/chat_app.err" || { echo "FAIL: no turn reused the history" >&2; exit 1; }
echo "PASS: same conversation"
# An artifact for a newer CPU than the one running it is refused at load, naming the
# extension it lacks (not a SIGILL in the first step): the host build under qemu's
# Haswell model, which has AVX2 but no AVX-512.
if command -v qemu-x86_64 >/dev/null && grep -q 'CPU_FEATURES ".*avx512f' "$work/art/model.h"; then
  if qemu-x86_64 -cpu Haswell "$work/build/generate" "$work/art/model.kiln" "Hi" 4 > "$work/old.txt" 2> "$work/old.err"; then
    echo "FAIL: an AVX-512 artifact ran on a CPU without AVX-512" >&2; exit 1
  fi
  grep -q "KILN_ERR_MODEL_MISMATCH.*uses avx512f, which this CPU lacks" "$work/old.err" ||
    { echo "FAIL: not refused by name:" >&2; cat "$work/old.err" >&2; exit 1; }
  echo "PASS: refused on an older CPU"
else
  echo "SKIP: refusal on an older CPU (no qemu-x86_64, or the host artifact needs no AVX-512)"
fi
