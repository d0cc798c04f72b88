#!/usr/bin/env python3
"""Adds to bench/results/ds2d.json llama.cpp's plain decode rate at the same thread count
from bench/results/backend.json (llama-bench tg64 on the same GGUF) and each llama.cpp
speculative decoder's speedup over it.

Why: llama-simple, the plain decoder run beside llama-lookup/lookahead, takes no thread
option, so its rate is not llama.cpp's plain decode at --threads; llama-bench's is.
usage: bench/ds2d_vs_llama_decode.py ds2d.json backend.json"""
import json
import sys

ds2d_path, backend_path = sys.argv[1], sys.argv[2]
r = json.load(open(ds2d_path))
backend = json.load(open(backend_path))
base = None
for c in backend["configs"]:
    if c["model"].endswith("Q4_1.gguf") and c["threads"] == r["threads"] and not c.get("kiln_passes"):
        base = c["llama_decode_tok_s"]
if base:
    for kind in r["llama_cpp"].values():
        kind["llama_bench_decode_tok_s"] = base
        for k in ("lookup", "lookup_corpus", "lookahead"):
            tps = kind.get(k + "_tok_s")
            kind[k + "_speedup_vs_llama_bench_decode"] = tps / base if tps else None
    json.dump(r, open(ds2d_path, "w"), indent=2)
    for name, kind in r["llama_cpp"].items():
        print(f"{name}: llama.cpp plain decode (llama-bench) {base:.1f} tok/s; lookup "
              f"{kind['lookup_speedup_vs_llama_bench_decode'] or 0:.2f}x (with the corpus "
              f"{kind['lookup_corpus_speedup_vs_llama_bench_decode'] or 0:.2f}x), lookahead "
              f"{kind['lookahead_speedup_vs_llama_bench_decode'] or 0:.2f}x of it")
