#!/usr/bin/env bash
# bench/run_memory.sh — peak resident memory while decoding, kiln vs llama.cpp, and the
# size of model.kiln against the GGUF. Output: bench/results/memory.json. ~1 minute.
#
# kiln: the example app (examples/generate.c: libmodel.a + libkiln_rt.a, nothing else —
# what an app ships) built against the default model compiled with --ctx 512, run under
# /usr/bin/time -v: prefill a chat prompt, decode 64 tokens (greedy). Its peak RSS is
# compared with (model.kiln + the KV cache it allocates): model.kiln is mmapped, so the
# weight pages count once they are read; the KV cache and the arena are anonymous memory.
# Goal (issue 4): peak RSS <= 1.1 x (model.kiln + KV cache).
# llama.cpp, for reference: llama-completion on the same GGUF, -c 512, 64 tokens, 2 threads.
#
# Needs the kiln build in build/ and the peer (../shared/peer/build-llama-cpp.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
cache=${KILN_CACHE:-$HOME/.cache/kiln}
model=${KILN_BENCH_MODEL:-$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
out=bench/results/memory.json
n_gen=64
ctx=512
prompt="Write a short story about a lighthouse keeper."
t_start=$(date +%s)

bin=$(bash bench/peer_bin.sh)
[ -x "$bin/llama-completion" ] || { echo "run_memory: no llama-completion (build the peer first)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "run_memory: needs /usr/bin/time (Debian package 'time')" >&2; exit 1; }
[ -f "$model" ] || { echo "run_memory: no model $model (run scripts/setup.sh)" >&2; exit 1; }
echo "[memory] building kiln" >&2
cmake --build build --target kiln kiln_rt >/dev/null

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "[memory] compiling $(basename "$model") (--ctx $ctx) and the example app" >&2
build/tools/kiln/kiln compile "$model" -o "$tmp/art" --ctx "$ctx" --quiet
cmake -S examples -B "$tmp/app" -DKILN_ARTIFACT_DIR="$tmp/art" -DKILN_RUNTIME_LIB="$repo/build/runtime/libkiln_rt.a" \
  -DKILN_INCLUDE_DIR="$repo/runtime/include" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$tmp/app" >/dev/null

maxrss_kib() { sed -n 's/.*Maximum resident set size (kbytes): *\([0-9]*\).*/\1/p' "$1"; }
hdr() { sed -n "s/^#define $1 \([0-9]*\).*/\1/p" "$tmp/art/model.h"; }

echo "[memory] kiln: example app, $n_gen tokens" >&2
/usr/bin/time -v "$tmp/app/generate" "$tmp/art/model.kiln" "$prompt" "$n_gen" >"$tmp/kiln.out" 2>"$tmp/kiln.err" \
  || { cat "$tmp/kiln.err" >&2; exit 1; }
grep '^\[generate\]' "$tmp/kiln.err" >&2 || true

echo "[memory] llama.cpp: llama-completion, $n_gen tokens" >&2
LD_LIBRARY_PATH="$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" /usr/bin/time -v "$bin/llama-completion" -m "$model" \
  -c "$ctx" -n "$n_gen" -t 2 --temp 0 --ignore-eos -no-cnv -p "$prompt" </dev/null >"$tmp/llama.out" 2>"$tmp/llama.err" \
  || { tail -20 "$tmp/llama.err" >&2; exit 1; }

python3 - "$out.partial" <<PY
import datetime, json, os, sys
kiln_rss = int("$(maxrss_kib "$tmp/kiln.err")") * 1024
llama_rss = int("$(maxrss_kib "$tmp/llama.err")") * 1024
model_kiln = os.path.getsize("$tmp/art/model.kiln")
gguf = os.path.getsize("$model")
kv = int("$(hdr KILN_MODEL_KV_BYTES)")
arena = int("$(hdr KILN_MODEL_ARENA_BYTES)")
weights = int("$(hdr KILN_MODEL_WEIGHTS_BYTES)")
budget = model_kiln + kv
r = {
    "what": "peak RSS (getrusage maxrss via /usr/bin/time -v) of a process that loads the model, prefills a chat "
            "prompt and decodes $n_gen tokens greedily, context $ctx; kiln = examples/generate.c linked with "
            "libmodel.a and libkiln_rt.a; llama.cpp = llama-completion, same GGUF, -c $ctx -t 2",
    "date": datetime.date.today().isoformat(),
    "model": os.path.basename("$model"),
    "ctx": $ctx, "gen_tokens": $n_gen,
    "gguf_bytes": gguf,
    "model_kiln_bytes": model_kiln,
    "model_kiln_vs_gguf": round(model_kiln / gguf, 4),
    "kiln_weights_bytes": weights,
    "kiln_kv_bytes": kv,
    "kiln_arena_bytes": arena,
    "kiln_peak_rss_bytes": kiln_rss,
    "kiln_rss_over_model_kiln_plus_kv": round(kiln_rss / budget, 4),
    "goal_rss_over_model_kiln_plus_kv": 1.1,
    "llama_peak_rss_bytes": llama_rss,
    "kiln_rss_vs_llama": round(kiln_rss / llama_rss, 4),
}
json.dump(r, open(sys.argv[1], "w"), indent=2)
print(file=open(sys.argv[1], "a"))
mib = lambda b: f"{b / 2**20:.1f} MiB"
print(f"[memory] model.kiln {mib(model_kiln)} vs GGUF {mib(gguf)} ({r['model_kiln_vs_gguf']:.3f}x); KV {mib(kv)}, arena {mib(arena)}",
      file=sys.stderr)
print(f"[memory] peak RSS kiln {mib(kiln_rss)} = {r['kiln_rss_over_model_kiln_plus_kv']:.3f}x (model.kiln + KV) "
      f"[goal <= 1.1]; llama.cpp {mib(llama_rss)}", file=sys.stderr)
PY
mv "$out.partial" "$out"
echo "[memory] wrote $out in $(( $(date +%s) - t_start )) s" >&2
