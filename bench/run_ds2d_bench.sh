#!/usr/bin/env bash
# bench/run_ds2d_bench.sh — DS2D decoding against plain decoding (kiln, same binary, one
# run) and llama.cpp's own speculative decoders without a draft model (llama-lookup:
# prompt n-gram lookup; llama-lookahead: Jacobi-style lookahead) against its plain decode
# (llama-simple), on the same prompts (bench/prompts: grounded and open chat, in the
# model's chat template) and the same GGUF. Greedy everywhere; up to TOKENS tokens per
# reply, ending at the end of generation. Also the bound bench/ds2d_oracle.py puts on
# drafting from the text, for the same replies at this run's costs (text_drafting_bound).
# With a corpus (the model's own replies to bench/prompts/corpus.txt, made by ds2d_bench):
# kiln's DS2D drafting from it too, and llama-lookup with it as a static n-gram cache
# (llama-lookup-create; -lcs).
# Output: bench/results/ds2d.json.
#
# usage: bench/run_ds2d_bench.sh [MODEL.gguf]   (env: KILN_DS2D_TOKENS=128,
#        KILN_DS2D_THREADS=2, KILN_DS2D_TEMPLATES=<compile default>, KILN_BUILD=build)
# Not part of CI: it takes minutes and measures, it does not check.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${KILN_CACHE:-$HOME/.cache/kiln}
model=${1:-$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
tokens=${KILN_DS2D_TOKENS:-128}
threads=${KILN_DS2D_THREADS:-2}
build=${KILN_BUILD:-build}
out=bench/results/ds2d.json

bin=$(bash bench/peer_bin.sh)
[ -x "$bin/llama-lookup" ] || { echo "no llama-lookup (build the peer first)" >&2; exit 1; }
export LD_LIBRARY_PATH="$bin${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
cmake --build "$build" --target ds2d_bench >/dev/null

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tmpl_args=()
[ -n "${KILN_DS2D_TEMPLATES:-}" ] && tmpl_args=(--templates "$KILN_DS2D_TEMPLATES")
echo "[ds2d] kiln: DS2D vs plain decode" >&2
"$build/bench/ds2d_bench" "$model" --threads "$threads" --tokens "$tokens" --write-prompts "$tmp/prompts" \
  --write-outputs "$tmp/outputs" --write-corpus "$tmp/corpus.txt" "${tmpl_args[@]}" > "$tmp/kiln.json"
# What an ideal drafter from the text could reach on the same replies, at this run's costs.
python3 bench/ds2d_oracle.py "$tmp/outputs" "$tmp/kiln.json" > "$tmp/oracle.json" ||
  echo '{"error": "bench/ds2d_oracle.py failed"}' > "$tmp/oracle.json"

echo "[ds2d] llama.cpp: llama-simple, llama-lookup (without and with the corpus), llama-lookahead" >&2
"$bin/llama-lookup-create" -m "$model" -f "$tmp/corpus.txt" -lcs "$tmp/corpus.lcs" > "$tmp/lookup-create.log" 2>&1 ||
  echo "[ds2d] llama-lookup-create failed: $tmp/lookup-create.log" >&2
# llama-lookahead verifies a large fixed window each step (W=15, N=5, G=15 in the
# example), which is slow on 2 cores: it runs on the first $la prompts of each kind only.
la=${KILN_DS2D_LOOKAHEAD_PROMPTS:-4}
for f in "$tmp"/prompts/*.txt; do
  name=$(basename "$f" .txt)
  timeout 300 "$bin/llama-simple" -m "$model" -n "$tokens" "$(cat "$f")" > "$tmp/$name.simple" 2>&1 || true
  timeout 300 "$bin/llama-lookup" -m "$model" -f "$f" -n "$tokens" -t "$threads" --temp 0 > "$tmp/$name.lookup" 2>&1 || true
  timeout 300 "$bin/llama-lookup" -m "$model" -f "$f" -n "$tokens" -t "$threads" --temp 0 -lcs "$tmp/corpus.lcs" \
    > "$tmp/$name.lookup_corpus" 2>&1 || true
  idx=$((10#${name##*_}))
  if [ "$idx" -lt "$la" ]; then
    timeout 600 "$bin/llama-lookahead" -m "$model" -f "$f" -n "$tokens" -t "$threads" --temp 0 \
      > "$tmp/$name.lookahead" 2>&1 || true
  else
    : > "$tmp/$name.lookahead"
  fi
done

python3 - "$tmp" "$out" "$model" "$tokens" "$threads" "$(nproc)" <<'PY'
import glob, json, os, re, sys, time
tmp, out, model, tokens, threads, nproc = sys.argv[1:]
kiln = json.load(open(os.path.join(tmp, "kiln.json")))

def num(pat, text, cast=float):
    m = re.search(pat, text)
    return cast(m.group(1)) if m else None

def peer(kind):
    # Speedups compare each decoder with llama-simple on the same prompts.
    acc = {k: dict(n=0, sec=0.0, pred=0, acc=0, sn=0, ssec=0.0, prompts=0) for k in ("lookup", "lookup_corpus", "lookahead")}
    simple = [0, 0.0]
    for f in sorted(glob.glob(os.path.join(tmp, "prompts", kind + "_*.txt"))):
        name = os.path.basename(f)[:-4]
        s = open(os.path.join(tmp, name + ".simple"), errors="replace").read()
        ms, runs = num(r"(?<!prompt )eval time =\s*([\d.]+) ms /", s), num(r"(?<!prompt )eval time =\s*[\d.]+ ms /\s*(\d+) runs", s, int)
        if not (ms and runs):
            continue
        simple[0] += runs; simple[1] += ms / 1e3
        for k in ("lookup", "lookup_corpus", "lookahead"):
            t = open(os.path.join(tmp, f"{name}.{k}"), errors="replace").read()
            n, sec = num(r"decoded\s+(\d+) tokens in", t, int), num(r"decoded\s+\d+ tokens in\s+([\d.]+) seconds", t)
            pred, a = num(r"n_predict\s*=\s*(\d+)", t, int), num(r"n_accept\s*=\s*(\d+)", t, int)
            if not (n and sec):
                continue
            r = acc[k]
            r["n"] += n; r["sec"] += sec; r["sn"] += runs; r["ssec"] += ms / 1e3; r["prompts"] += 1
            if pred and a is not None:
                r["pred"] += pred; r["acc"] += a
    res = {"simple_tok_s": simple[0] / simple[1] if simple[1] else None}
    for k, r in acc.items():
        tps = r["n"] / r["sec"] if r["sec"] else None
        base = r["sn"] / r["ssec"] if r["ssec"] else None
        res[k + "_prompts"] = r["prompts"]
        res[k + "_tok_s"] = tps
        res[k + "_speedup_vs_simple"] = tps / base if tps and base else None
        # Each step yields one token plus the accepted drafts.
        res[k + "_tokens_per_step"] = r["pred"] / (r["pred"] - r["acc"]) if r["pred"] > r["acc"] else None
    return res

result = {
    "what": "DS2D vs plain decode in kiln (same binary, one run) and llama.cpp lookup/lookahead vs llama-simple",
    "command": "bench/run_ds2d_bench.sh " + os.path.basename(model),
    "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "nproc": int(nproc), "threads": int(threads), "max_tokens": int(tokens),
    "kiln": kiln,
    "text_drafting_bound": json.load(open(os.path.join(tmp, "oracle.json"))),
    "llama_cpp": {kind: peer(kind) for kind in ("grounded", "chat")},
}
json.dump(result, open(out + ".partial", "w"), indent=2)
os.replace(out + ".partial", out)
print(f"{'kind':<9} {'kiln plain':>10} {'kiln DS2D':>10} {'speedup':>8} {'acc/pass':>8} {'tok/step':>8} "
      f"{'+corpus':>8} | {'llama':>7} {'lookup':>7} {'x':>5} {'+corpus':>7} {'lookahd':>7} {'x':>5}")
for kind in ("grounded", "chat"):
    k, p = kiln["kinds"][kind], result["llama_cpp"][kind]
    f = lambda v, w=7, d=1: f"{v:>{w}.{d}f}" if v is not None else " " * (w - 1) + "-"
    print(f"{kind:<9} {k['plain_tok_s']:>10.1f} {k['ds2d_tok_s']:>10.1f} {k['speedup']:>7.2f}x "
          f"{k['accepted_per_verify_pass']:>8.2f} {k['tokens_per_step']:>8.2f} {f(k.get('corpus_speedup'), 7, 2)}x | "
          f"{f(p['simple_tok_s'])} {f(p['lookup_tok_s'])} {f(p['lookup_speedup_vs_simple'], 5, 2)} "
          f"{f(p['lookup_corpus_speedup_vs_simple'], 7, 2)} {f(p['lookahead_tok_s'])} "
          f"{f(p['lookahead_speedup_vs_simple'], 5, 2)}")
PY
# llama.cpp's speculative decoders against its plain decode at the same thread count
# (llama-bench, from bench/run_backend_bench.sh), since llama-simple takes no thread option.
[ -f bench/results/backend.json ] && python3 bench/ds2d_vs_llama_decode.py "$out" bench/results/backend.json
