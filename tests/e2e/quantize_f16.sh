#!/usr/bin/env bash
# tests/e2e/quantize_f16.sh KILN Q4_1_MODEL — `kiln compile --quantize` on the float requant
# of the default model, end to end. The F16 file is llama-quantize's requant of the shipped
# Q4_1, so quantize-int4 (q4_1, groups of 32, q8_0 head) must rebuild the same weights
# closely enough that greedy decoding prints the shipped model's text; q4_0 and an int4
# head with groups of 64 must compile and run. Skips (77) without the F16 file.
set -euo pipefail
kiln=$1
q41=$2
f16=${q41/Q4_1/F16}
[ -f "$f16" ] || { echo "no $f16: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prompt="The capital of France is"
"$kiln" compile "$q41" -o "$tmp/ref" --quiet
"$kiln" compile "$f16" -o "$tmp/int4" --quiet --quantize=int4
want=$("$kiln" run "$q41" --artifact "$tmp/ref" --prompt "$prompt" --max-tokens 24 2>/dev/null)
got=$("$kiln" run "$f16" --artifact "$tmp/int4" --prompt "$prompt" --max-tokens 24 2>/dev/null)
if [ "$want" != "$got" ]; then
  printf 'shipped Q4_1: %s\nF16 --quantize=int4: %s\n' "$want" "$got"
  exit 1
fi
"$kiln" compile "$f16" -o "$tmp/q40" --quiet --quantize=q4_0 --quantize-head=int4 --group-size=64
out=$("$kiln" run "$f16" --artifact "$tmp/q40" --prompt "$prompt" --max-tokens 16 2>/dev/null)
[ -n "${out//[[:space:]]/}" ] || { echo "q4_0/int4-head model printed nothing"; exit 1; }
echo "int4 = shipped Q4_1: $got"
echo "q4_0, int4 head, groups of 64: $out"
