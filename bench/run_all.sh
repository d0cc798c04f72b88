#!/usr/bin/env bash
# bench/run_all.sh — every benchmark figure of the README in one command, kiln against
# llama.cpp on the same GGUF files, on this machine. Writes
#
#   bench/results/bandwidth.json   memory read bandwidth, 1 and 2 threads (the roofline)
#   bench/results/backend.json     prefill/decode tokens/s, F16 and Q4_1, 1 and 2 threads,
#                                  with each decode as a fraction of the roofline
#   bench/results/memory.json      peak RSS while decoding; model.kiln vs GGUF size
#   bench/results/perplexity.json  perplexity, Q4_1 and F32, kiln and llama.cpp
#   bench/results/streams.json     multi-stream decode (S = 1..4) and three replies
#   bench/results/qmatmul_rows.json  one more row in the packed int8 kernels (x86 only)
#   bench/results/attention_cold.json  decode attention on a cold KV cache, with and
#                                  without the cache-row prefetch (x86 only)
#   bench/results/backend.png      the plot (tokens/s per configuration and thread count)
#
# About 15-20 minutes on 2 quiet cores (each step prints its progress and time). Run it on
# a quiet machine: the scripts measure kiln and llama.cpp in the same run, alternating, so
# the ratios survive some noise, but bandwidth and absolute tokens/s do not.
#   KILN_BENCH_REPS   repetitions per tokens/s figure (default 3)
#   KILN_PPL_CHUNKS   perplexity chunks of 512 tokens (default 40)
#   KILN_SKIP         steps to skip, e.g. "perplexity memory" (names: bandwidth backend
#                     streams rows attention memory perplexity)
# Needs: scripts/setup.sh done, the kiln build in build/, the peer (../shared/peer/build-llama-cpp.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
skip=" ${KILN_SKIP:-} "
t_all=$(date +%s)
step() { echo "[run_all] === $1 ($(( $(date +%s) - t_all )) s so far)" >&2; }

step "build"
cmake --build build --target kiln kiln_rt kiln_bench bandwidth >/dev/null

if [[ "$skip" != *" bandwidth "* ]]; then
  step "bandwidth (~30 s)"
  build/bench/bandwidth --mib 1024 --reps 10 --threads 1 2 > bench/results/bandwidth.json.partial
  mv bench/results/bandwidth.json.partial bench/results/bandwidth.json
fi
if [[ "$skip" != *" backend "* ]]; then
  step "backend tokens/s and roofline (~4 min)"
  bash bench/run_backend_bench.sh
fi
if [[ "$skip" != *" streams "* ]]; then
  step "multi-stream decode, no adapters; replies to a 1000-token prompt, KV shared vs copied (~2 min)"
  cmake --build build --target streams_bench >/dev/null
  build/bench/streams_bench "$HOME/.cache/kiln/models/SmolLM2-135M-Instruct.Q4_1.gguf" --threads 2 \
    --reps "${KILN_BENCH_REPS:-5}" --long-prompt 1000 > bench/results/streams.json.partial
  mv bench/results/streams.json.partial bench/results/streams.json
fi
if [[ "$skip" != *" rows "* ]] && [ "$(uname -m)" = x86_64 ]; then
  step "cost of one more row in the packed int8 kernels (~1 min)"
  cmake --build build --target qmatmul_rows_bench >/dev/null
  build/bench/qmatmul_rows --reps "$(( ${KILN_BENCH_REPS:-5} * 8 ))" > bench/results/qmatmul_rows.json.partial
  mv bench/results/qmatmul_rows.json.partial bench/results/qmatmul_rows.json
fi
if [[ "$skip" != *" attention "* ]] && [ "$(uname -m)" = x86_64 ]; then
  step "decode attention on a cold KV cache (~10 s)"
  cmake --build build --target attention_cold_bench >/dev/null
  build/bench/attention_cold --reps "$(( ${KILN_BENCH_REPS:-5} * 8 ))" > bench/results/attention_cold.json.partial
  mv bench/results/attention_cold.json.partial bench/results/attention_cold.json
fi
if [[ "$skip" != *" memory "* ]]; then
  step "peak RSS (~1 min)"
  bash bench/run_memory.sh
fi
if [[ "$skip" != *" perplexity "* ]]; then
  step "perplexity (~5-10 min)"
  bash bench/run_perplexity.sh
fi
# The roofline of backend.json follows the latest bandwidth.json (also when the backend step
# was skipped); the bytes per token in it do not depend on the machine.
if [ -f bench/results/bandwidth.json ] && [ -f bench/results/backend.json ]; then
  python3 bench/summarize_backend.py --roofline bench/results/backend.json bench/results/bandwidth.json \
    > bench/results/backend.json.partial
  mv bench/results/backend.json.partial bench/results/backend.json
fi
step "plot"
plotted=0
# Debian's python3-matplotlib lives with /usr/bin/python3, which may not be the python3 on PATH.
for py in python3 /usr/bin/python3; do
  if "$py" -c "import matplotlib" 2>/dev/null; then
    "$py" bench/plot_backend.py bench/results/backend.json bench/results/backend.png
    plotted=1
    break
  fi
done
[ "$plotted" = 1 ] || echo "[run_all] no matplotlib (apt-get install python3-matplotlib): no PNG" >&2
step "done: bench/results/*.json, bench/results/backend.png (tables for the README: python3 bench/report.py)"
