#!/usr/bin/env bash
# bench/run_perplexity.sh — perplexity of kiln and llama.cpp on the same GGUF files, the
# same text and the same chunks. Output: bench/results/perplexity.json (and a table on
# stderr). About 5-10 minutes on 2 quiet cores (it prints each run's time and the total).
#
#   text     the first $lines lines of the King James Bible ($KILN_CACHE/text/kjv.txt, made by
#            scripts/setup.sh from Debian's bible-kjv-text): Genesis, Exodus and the start of Leviticus
#   method   llama-perplexity's: chunks of 512 tokens, each from an empty context, the
#            second half of each chunk scored; the first $chunks chunks (KILN_PPL_CHUNKS)
#   runs     Q4_1 GGUF as shipped: kiln (int8 activations, its default) and llama-perplexity
#            Q4_1 GGUF, kiln with --float-activations (exact dequantised weights x floats)
#            F32 GGUF (a requant of the Q4_1 file: the same weights, unquantised): kiln
#            (float backend) and llama-perplexity
#
# Goal (issue 4): kiln's Q4_1 perplexity within 1% of llama.cpp's on the same weights.
# Needs the kiln build in build/ and the peer (../shared/peer/build-llama-cpp.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${KILN_CACHE:-$HOME/.cache/kiln}
models="$cache/models"
q41="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
f32="$models/SmolLM2-135M-Instruct.F32.gguf"
kjv="$cache/text/kjv.txt"
out=bench/results/perplexity.json
chunks=${KILN_PPL_CHUNKS:-40}
ctx=512
lines=8000
threads=2
t_start=$(date +%s)

bin=$(bash bench/peer_bin.sh)
[ -x "$bin/llama-perplexity" ] || { echo "run_perplexity: no llama-perplexity (build the peer first)" >&2; exit 1; }
export LD_LIBRARY_PATH="$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -f "$kjv" ] || { echo "run_perplexity: no $kjv (run scripts/setup.sh)" >&2; exit 1; }
[ -f "$q41" ] || { echo "run_perplexity: no $q41 (run scripts/setup.sh)" >&2; exit 1; }
if [ ! -f "$f32" ]; then
  echo "[ppl] making $f32 (llama-quantize, F32)" >&2
  "$bin/llama-quantize" --allow-requantize "$q41" "$f32.partial" F32 1 >/dev/null 2>&1
  mv "$f32.partial" "$f32"
fi
echo "[ppl] building kiln" >&2
cmake --build build --target kiln >/dev/null
kiln=build/tools/kiln/kiln

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
text="$tmp/kjv-$lines.txt"
head -n "$lines" "$kjv" > "$text"
echo "[ppl] text: first $lines lines of $kjv ($(wc -c < "$text") bytes); $chunks chunks of $ctx tokens; $threads threads" >&2

# kiln NAME MODEL [FLAGS]: one JSON line into $tmp/runs.jsonl (compile time is not counted
# in "seconds"; the artifact is cached in $KILN_CACHE/compiled like `kiln run`'s).
run_kiln() {
  local name=$1 model=$2; shift 2
  local t0; t0=$(date +%s)
  echo "[ppl] kiln $name: $(basename "$model") $*" >&2
  "$kiln" perplexity "$model" --file "$text" --ctx "$ctx" --chunks "$chunks" --threads "$threads" --json --quiet "$@" \
    > "$tmp/$name.json"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["run"]=sys.argv[2]; print(json.dumps(r))' \
    "$tmp/$name.json" "$name" >> "$tmp/runs.jsonl"
  echo "[ppl]   PPL $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ppl"])' "$tmp/$name.json") ($(( $(date +%s) - t0 )) s)" >&2
}

# llama-perplexity NAME MODEL: parses "Final estimate: PPL = X +/- Y".
run_llama() {
  local name=$1 model=$2
  local t0; t0=$(date +%s)
  echo "[ppl] llama.cpp $name: $(basename "$model")" >&2
  "$bin/llama-perplexity" -m "$model" -f "$text" -c "$ctx" --chunks "$chunks" -t "$threads" > "$tmp/$name.log" 2>&1 \
    || { tail -20 "$tmp/$name.log" >&2; exit 1; }
  local line; line=$(grep -o 'Final estimate: PPL = [0-9.]* +/- [0-9.]*' "$tmp/$name.log" | tail -1)
  [ -n "$line" ] || { echo "run_perplexity: no final estimate from llama-perplexity" >&2; tail -20 "$tmp/$name.log" >&2; exit 1; }
  local ppl err; ppl=$(echo "$line" | awk '{print $5}'); err=$(echo "$line" | awk '{print $7}')
  local secs=$(( $(date +%s) - t0 ))
  printf '{"run": "%s", "engine": "llama.cpp", "model": "%s", "ctx": %d, "chunks": %d, "ppl": %s, "ppl_stderr": %s, "seconds": %d}\n' \
    "$name" "$model" "$ctx" "$chunks" "$ppl" "$err" "$secs" >> "$tmp/runs.jsonl"
  echo "[ppl]   PPL $ppl ($secs s)" >&2
}

run_kiln kiln_q4_1 "$q41"
run_llama llama_q4_1 "$q41"
run_kiln kiln_q4_1_float_act "$q41" --float-activations
run_kiln kiln_f32 "$f32" --float-activations
run_llama llama_f32 "$f32"

python3 - "$tmp/runs.jsonl" "$out.partial" "$lines" "$kjv" <<'PY'
import datetime, json, os, sys
runs = {}
for l in open(sys.argv[1]):
    r = json.loads(l)
    r["model"] = os.path.basename(r["model"])
    r.pop("file", None)
    runs[r.pop("run")] = r
p = lambda k: runs[k]["ppl"]
res = {
    "what": "perplexity as llama-perplexity computes it (chunks of ctx tokens from an empty context, second half "
            "of each chunk scored), same GGUF, same text, same chunks, both sides",
    "date": datetime.date.today().isoformat(),
    "text": f"first {sys.argv[3]} lines of the King James Bible as printed by `bible -l80 gen1:1-rev22:21` "
            f"(Debian bible-kjv + bible-kjv-text; scripts/setup.sh writes {os.path.basename(sys.argv[4])})",
    "runs": runs,
    "kiln_q4_1_vs_llama_q4_1": round(p("kiln_q4_1") / p("llama_q4_1") - 1, 5),
    "kiln_f32_vs_llama_f32": round(p("kiln_f32") / p("llama_f32") - 1, 5),
    "kiln_q4_1_vs_kiln_f32": round(p("kiln_q4_1") / p("kiln_f32") - 1, 5),
    "llama_q4_1_vs_llama_f32": round(p("llama_q4_1") / p("llama_f32") - 1, 5),
    "kiln_int8_act_vs_float_act": round(p("kiln_q4_1") / p("kiln_q4_1_float_act") - 1, 5),
    "goal_abs_kiln_q4_1_vs_llama_q4_1": 0.01,
}
json.dump(res, open(sys.argv[2], "w"), indent=2)
open(sys.argv[2], "a").write("\n")
print(f"{'run':<22} {'engine':<10} {'model':<36} {'PPL':>9} {'+/-':>7} {'s':>6}", file=sys.stderr)
for k, r in runs.items():
    print(f"{k:<22} {r['engine']:<10} {r['model']:<36} {r['ppl']:>9.4f} {r['ppl_stderr']:>7.4f} {r['seconds']:>6.0f}",
          file=sys.stderr)
for k in ("kiln_q4_1_vs_llama_q4_1", "kiln_f32_vs_llama_f32", "kiln_q4_1_vs_kiln_f32", "llama_q4_1_vs_llama_f32",
          "kiln_int8_act_vs_float_act"):
    print(f"{k:<28} {res[k] * 100:+.3f}%", file=sys.stderr)
PY
mv "$out.partial" "$out"
echo "[ppl] wrote $out in $(( $(date +%s) - t_start )) s" >&2
