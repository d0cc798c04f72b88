#!/usr/bin/env bash
# tests/e2e/perplexity.sh KILN MODEL TEXT — `kiln perplexity` on the default model over the
# first 1000 lines of the King James Bible, 4 chunks of 128 tokens, against llama.cpp's
# perplexity on the same text and chunks (tests/goldens/perplexity.golden):
#   1. compiled code, int8 activations (the default) vs llama.cpp on the Q4_1 file: finite,
#      in a sane range, within 2% (the benchmark's goal is 1% over 40 chunks of 512; 4 short
#      chunks leave more room for the int8 rounding each side does its own way);
#   2. compiled code, --float-activations (exact dequantised weights) vs llama.cpp on the
#      F32 requant of the file (the same weight values in float): within 0.2%;
#   3. the reference interpreter vs the compiled --float-activations code, 1 chunk: within 0.1%.
set -euo pipefail
kiln=$1 model=$2 text=$3
src=$(cd "$(dirname "$0")/../.." && pwd)
[ -f "$text" ] || { echo "FAIL: no $text (scripts/setup.sh writes it)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
head -n 1000 "$text" > "$work/kjv.txt"
golden="$src/tests/goldens/perplexity.golden"
ref() { awk -v m="$1" '$1 == m && $2 == 128 && $3 == 4 {print $4}' "$golden"; }
q_ref=$(ref "$(basename "$model")")
f_ref=$(ref "$(basename "$model" | sed 's/\.Q4_1\.gguf$/.F32.gguf/')")
[ -n "$q_ref" ] && [ -n "$f_ref" ] || { echo "FAIL: no references for $(basename "$model") in $golden" >&2; exit 1; }
ppl() { "$kiln" perplexity "$model" --file "$work/kjv.txt" --ctx 128 --quiet --json "$@"; }
ppl --chunks 4 > "$work/int8.json"
ppl --chunks 4 --float-activations > "$work/float.json"
ppl --chunks 1 --float-activations > "$work/float1.json"
ppl --chunks 1 --interpreter > "$work/interp1.json"
python3 - "$work" "$q_ref" "$f_ref" <<'PY'
import json, math, sys
work, q_ref, f_ref = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
r = {k: json.load(open(f"{work}/{k}.json")) for k in ("int8", "float", "float1", "interp1")}
fails = []
def check(name, ppl, ref, tol):
    rel = ppl / ref - 1 if math.isfinite(ppl) else float("inf")
    ok = math.isfinite(ppl) and 1.0 < ppl < 100.0 and abs(rel) <= tol
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {ppl:.4f} vs {ref:.4f} ({rel * 100:+.3f}%, tolerance {tol * 100:g}%)")
    if not ok:
        fails.append(name)
check("compiled int8 activations vs llama.cpp Q4_1", r["int8"]["ppl"], q_ref, 0.02)
check("compiled float activations vs llama.cpp F32", r["float"]["ppl"], f_ref, 0.002)
check("interpreter vs compiled float activations (1 chunk)", r["interp1"]["ppl"], r["float1"]["ppl"], 0.001)
if r["int8"]["tokens_scored"] != 4 * 63:
    fails.append(f"scored {r['int8']['tokens_scored']} tokens, expected {4 * 63}")
print("PASS" if not fails else "FAIL: " + "; ".join(fails))
sys.exit(1 if fails else 0)
PY
