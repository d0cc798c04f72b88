#!/usr/bin/env bash
# tests/e2e/hf_checkpoint.sh KILN GGUF_TO_HF Q4_1_MODEL — a Hugging Face checkpoint folder,
# end to end. The default model is written out as one (config.json, F32 safetensors holding
# its dequantized weights exactly, q/k rows in Hugging Face's rope order, tokenizer.json,
# tokenizer_config.json with the chat template); `kiln compile DIR --quantize=int4` must
# then print the shipped Q4_1's greedy text, plain and through the chat template (so the
# tokenizer, special tokens and template came through), as must `kiln run DIR
# --quantize=int4` (whose cache must keep the compile until a file of the folder changes),
# and `kiln inspect DIR` must show the translated metadata.
set -euo pipefail
kiln=$1
export_hf=$2
q41=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$export_hf" "$q41" "$tmp/hf"
"$kiln" compile "$q41" -o "$tmp/ref" --quiet
"$kiln" compile "$tmp/hf" -o "$tmp/int4" --quiet --quantize=int4
check() {
  local want got
  want=$("$kiln" run "$q41" --artifact "$tmp/ref" "$@" 2>/dev/null)
  got=$("$kiln" run "$tmp/hf" --artifact "$tmp/int4" "$@" 2>/dev/null)
  if [ "$want" != "$got" ]; then
    printf 'shipped Q4_1: %s\nHF checkpoint --quantize=int4: %s\n' "$want" "$got"
    exit 1
  fi
  echo "same text: $got"
}
check --prompt "In 1969, 3 astronauts flew to the" --max-tokens 24
check --chat --prompt "What is the capital of France? Answer in one sentence." --max-tokens 24
# kiln run compiles (and caches) the folder itself with --quantize.
want=$("$kiln" run "$q41" --artifact "$tmp/ref" --prompt "The capital of France is" --max-tokens 12 2>/dev/null)
got=$(KILN_CACHE="$tmp/cache" "$kiln" run "$tmp/hf" --quantize=int4 --prompt "The capital of France is" --max-tokens 12 2>/dev/null)
[ "$want" = "$got" ] || { printf 'kiln run --quantize=int4 on the folder: %s\nshipped: %s\n' "$got" "$want"; exit 1; }
# The cache keeps that compile until a file of the folder changes (the folder's own mtime
# does not move when model.safetensors is rewritten in place).
compiles() {  # 0 when kiln run compiled the folder (into $tmp/cache) rather than reuse a compile
  local log
  log=$(KILN_CACHE="$tmp/cache" "$kiln" run "$tmp/hf" --quantize=int4 --prompt "Hi" --max-tokens 2 2>&1 >/dev/null)
  [[ $log == *"writing $tmp/cache/compiled/"* ]]
}
if compiles; then echo "kiln run recompiled an unchanged folder"; exit 1; fi
touch "$tmp/hf/model.safetensors"
compiles || { echo "kiln run kept a stale compile after model.safetensors changed"; exit 1; }
"$kiln" inspect "$tmp/hf" --tensors > "$tmp/inspect.txt"
grep -q "tokenizer.ggml.pre.*smollm" "$tmp/inspect.txt" || { echo "inspect: no smollm pre-tokenizer"; cat "$tmp/inspect.txt" | head -40; exit 1; }
grep -q "blk.29.attn_q.weight" "$tmp/inspect.txt" || { echo "inspect: no blk.29.attn_q.weight"; exit 1; }
