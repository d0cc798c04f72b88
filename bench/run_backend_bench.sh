#!/usr/bin/env bash
# bench/run_backend_bench.sh — kiln's compiled model against llama.cpp, one run, same
# machine, same GGUF files: prefill (128 tokens) and decode (64 tokens) tokens/s for the
# F16 model (the float backend) and the Q4_1 model as shipped (packed by pack-weights, and
# again with --pack-weights=off), at 1 and 2 threads. kiln
# and llama.cpp runs alternate so load on this shared machine hits both alike. Also
# records the stripped sizes of libkiln_rt.a and model.o. With bench/results/bandwidth.json
# (bench/bandwidth, run first by bench/run_all.sh) each configuration also gets its decode
# roofline (summarize_backend.py). Output: bench/results/backend.json (and a table on
# stdout). About 3-4 minutes on 2 quiet cores. If KILN_BENCH_FUSIONS names passes (e.g. a
# fusion under evaluation), kiln also runs the Q4_1 model with them, against the same
# llama.cpp numbers.
#
# Needs the peer (../shared/peer/build-llama-cpp.sh, cached) and the kiln build in build/.
# Not part of CI: it takes minutes and measures, it does not check.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
cache=${KILN_CACHE:-$HOME/.cache/kiln}
models="$cache/models"
q41="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
f16="$models/SmolLM2-135M-Instruct.F16.gguf"
out=bench/results/backend.json
reps=${KILN_BENCH_REPS:-3}
fusions=${KILN_BENCH_FUSIONS:-}

bin=$(bash bench/peer_bin.sh)
[ -x "$bin/llama-bench" ] || { echo "no llama-bench (build the peer first)" >&2; exit 1; }
if [ ! -f "$f16" ]; then
  "$bin/llama-quantize" --allow-requantize "$q41" "$f16.partial" F16 1 >/dev/null 2>&1
  mv "$f16.partial" "$f16"
fi
cmake --build build --target kiln_bench kiln kiln_rt >/dev/null
t_start=$(date +%s)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for model in "$f16" "$q41"; do
  for t in 1 2; do
    echo "[bench] $(basename "$model") threads=$t" >&2
    build/bench/kiln_bench "$model" --threads "$t" --prompt 128 --gen 64 --reps "$reps" >> "$tmp/kiln.jsonl"
    # Q4_1 with GGUF rows (no pack-weights): what the packed layout adds, same llama.cpp runs.
    if [ "$model" = "$q41" ]; then
      build/bench/kiln_bench "$model" --threads "$t" --prompt 128 --gen 64 --reps "$reps" \
        --pack-weights off >> "$tmp/kiln.jsonl"
    fi
    # The optional fusions (passes/), measured against the same llama.cpp runs.
    if [ "$model" = "$q41" ] && [ -n "$fusions" ]; then
      build/bench/kiln_bench "$model" --threads "$t" --prompt 128 --gen 64 --reps "$reps" \
        --passes "$fusions" >> "$tmp/kiln.jsonl"
    fi
    "$bin/llama-bench" -m "$model" -p 128 -n 64 -t "$t" -r "$reps" -o jsonl 2>/dev/null >> "$tmp/llama.jsonl"
  done
done

# Sizes: what an app links.
cp build/runtime/libkiln_rt.a "$tmp/rt.a" && strip --strip-unneeded "$tmp/rt.a" 2>/dev/null || true
build/tools/kiln/kiln compile "$q41" -o "$tmp/art" --quiet 2>/dev/null
cp "$tmp/art/model.o" "$tmp/model.o" && strip --strip-unneeded "$tmp/model.o"
sizes=$(printf '{"libkiln_rt_a_stripped": %d, "model_o_stripped": %d, "model_kiln": %d, "gguf_q4_1": %d}' \
  "$(stat -c %s "$tmp/rt.a")" "$(stat -c %s "$tmp/model.o")" "$(stat -c %s "$tmp/art/model.kiln")" "$(stat -c %s "$q41")")

bw=()
[ -f bench/results/bandwidth.json ] && bw=(bench/results/bandwidth.json)
python3 bench/summarize_backend.py "$tmp/kiln.jsonl" "$tmp/llama.jsonl" "$sizes" "$(nproc)" "${bw[@]}" > "$out.partial"
mv "$out.partial" "$out"
python3 - "$out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{'model':<34} {'passes':<20} {'thr':>3} {'kiln pp':>9} {'llama pp':>9} {'ratio':>6} {'kiln tg':>9} {'llama tg':>9} {'ratio':>6}")
for c in r["configs"]:
    print(f"{c['model']:<34} {c.get('kiln_passes', ''):<20} {c['threads']:>3} {c['kiln_prefill_tok_s']:>9.1f} {c['llama_prefill_tok_s']:>9.1f} "
          f"{c['prefill_ratio']:>6.2f} {c['kiln_decode_tok_s']:>9.1f} {c['llama_decode_tok_s']:>9.1f} {c['decode_ratio']:>6.2f}")
print("sizes:", r["sizes"])
for c in r["configs"]:
    if "kiln_decode_roofline_fraction" in c:
        print(f"roofline {c['model']:<34} {c['threads']} thr: {c['read_bandwidth_gb_s']:.1f} GB/s; kiln reads "
              f"{c['kiln_bytes_per_decode_token'] / 2**20:.1f} MiB/token -> {c['kiln_decode_roofline_fraction']:.2f} of "
              f"its roofline ({c['kiln_roofline_decode_tok_s']:.0f} tok/s); llama.cpp "
              f"{c['llama_decode_roofline_fraction']:.2f}")
PY
echo "[bench] backend: $(( $(date +%s) - t_start )) s" >&2
# Debian's python3-matplotlib lives with /usr/bin/python3, which may not be the python3 on PATH.
for py in python3 /usr/bin/python3; do
  if "$py" -c "import matplotlib" 2>/dev/null; then "$py" bench/plot_backend.py "$out" bench/results/backend.png >/dev/null; break; fi
done
