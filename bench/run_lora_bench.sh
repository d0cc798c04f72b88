#!/usr/bin/env bash
# bench/run_lora_bench.sh — LoRA adapters as runtime inputs, one run (bench/lora_bench.cpp):
# switch latency, memory per adapter, tokens/s per stream for S = 1..4 (each stream its
# own adapter), 3 styled replies of 64 tokens multi-stream vs sequential, and decode with
# the zero adapter against the build without LoRA. Uses the committed style adapters
# (adapters/pirate, adapters/shouting) when present, else seeded random ones.
# Output: bench/results/lora.json and bench/results/lora.png. Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${KILN_CACHE:-$HOME/.cache/kiln}
q41="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
reps=${KILN_BENCH_REPS:-5}
cmake --build build --target lora_bench >/dev/null
adapters=()
for a in adapters/pirate adapters/shouting; do [ -d "$a" ] && adapters+=("$a"); done
out=bench/results/lora.json
build/bench/lora_bench "$q41" --threads 2 --reps "$reps" "${adapters[@]}" > "$out.partial"
python3 - "$out.partial" "$out" <<'PY'
import datetime, json, sys
r = json.load(open(sys.argv[1]))
r["date"] = datetime.date.today().isoformat()
r["what"] = ("LoRA adapters as runtime inputs on the Q4_1 default model (int8 activations, 2 threads, "
             "5 slots of rank 16 on every projection): adapter switch latency (kiln_stream_set_adapter), "
             "memory per loaded adapter, decode tokens/s per stream with each stream on its own adapter, "
             "3 styled replies of 64 tokens in one 3-stream pass vs 3 sequential runs (also on a build with "
             "side paths on the adapters' own projections only), and single-stream "
             "decode with the zero adapter vs the same model compiled without LoRA (interleaved runs)")
json.dump(r, open(sys.argv[2], "w"), indent=2)
PY
rm -f "$out.partial"
for py in python3 /usr/bin/python3; do
  if "$py" -c "import matplotlib" 2>/dev/null; then "$py" bench/plot_lora.py "$out" bench/results/lora.png; break; fi
done
cat "$out"
