#!/usr/bin/env bash
# tests/e2e/adapter_targets.sh KILN MODEL ADAPTERS — `kiln run --adapter` compiling its own
# model puts LoRA side paths on the projections the adapter adapts only (the committed
# adapters: q, k, v, o), so gate/up keep their fused kernel, and the text is the same as
# with an artifact compiled for every projection (whose gate/up are unfused); likewise
# for --stream-adapter, where the targets are the union of the streams' adapters.
set -euo pipefail
kiln=$1
model=$2
adapters=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export KILN_CACHE=$tmp/cache
prompt="Tell me about the sea."
args=(--chat --prompt "$prompt" --max-tokens 24 --ignore-eos --ctx 256)

"$kiln" run "$model" "${args[@]}" --adapter "$adapters/pirate" -v > "$tmp/own.txt" 2> "$tmp/own.log"
grep -q "LoRA side paths on q,k,v,o (what the adapters adapt)" "$tmp/own.log" ||
  { echo "FAIL: the run's compile did not take the adapter's targets:"; cat "$tmp/own.log"; exit 1; }

"$kiln" compile "$model" -o "$tmp/all" --lora-slots 2 --ctx 256 --quiet
"$kiln" run "$model" "${args[@]}" --artifact "$tmp/all" --adapter "$adapters/pirate" > "$tmp/all.txt" 2> "$tmp/all.log"
cmp -s "$tmp/own.txt" "$tmp/all.txt" ||
  { echo "FAIL: text differs between the adapter-targeted compile and the all-targets artifact"; diff "$tmp/own.txt" "$tmp/all.txt"; exit 1; }
grep -q "Arr" "$tmp/own.txt" || { echo "FAIL: the pirate adapter did not style the reply:"; cat "$tmp/own.txt"; exit 1; }

"$kiln" run "$model" "${args[@]}" --streams 2 --stream-adapter none --stream-adapter "$adapters/shouting" -v \
  > /dev/null 2> "$tmp/streams.log"
grep -q "LoRA side paths on q,k,v,o" "$tmp/streams.log" ||
  { echo "FAIL: --stream-adapter's compile did not take the adapters' targets:"; cat "$tmp/streams.log"; exit 1; }
echo "adapter-targeted compile: same text as the all-targets artifact"
