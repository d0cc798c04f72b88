#!/usr/bin/env python3
"""Joins kiln_bench and llama-bench JSON lines into bench/results/backend.json."""
import datetime
import json
import sys

kiln = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
llama = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
sizes = json.loads(sys.argv[3])
cores = int(sys.argv[4])


def llama_rate(model, threads, kind):
    for r in llama:
        if r["model_filename"].endswith(model) and r["n_threads"] == threads:
            if kind == "pp" and r["n_prompt"] > 0 and r["n_gen"] == 0:
                return r["avg_ts"]
            if kind == "tg" and r["n_gen"] > 0 and r["n_prompt"] == 0:
                return r["avg_ts"]
    raise SystemExit(f"no llama-bench {kind} result for {model} at {threads} threads")


configs = []
for k in kiln:
    pp = llama_rate(k["model"], k["threads"], "pp")
    tg = llama_rate(k["model"], k["threads"], "tg")
    configs.append({
        "model": k["model"], "threads": k["threads"],
        "kiln_prefill_tok_s": k["prefill_tok_s"], "llama_prefill_tok_s": round(pp, 2),
        "prefill_ratio": round(k["prefill_tok_s"] / pp, 3),
        "kiln_decode_tok_s": k["decode_tok_s"], "llama_decode_tok_s": round(tg, 2),
        "decode_ratio": round(k["decode_tok_s"] / tg, 3),
        "kiln_compile_s": k["compile_s"], "kiln_cpu": k["cpu"], "kiln_passes": k.get("passes", ""),
    })

json.dump({
    "what": "prefill 128 tokens / decode 64 tokens from an empty context, tokens/s, median (kiln) "
            "and mean (llama-bench) of the repetitions; kiln = compiled code via libkiln_rt; "
            "llama.cpp = llama-bench of the peer build on the same GGUF",
    "date": datetime.date.today().isoformat(),
    "machine_cores": cores,
    "configs": configs,
    "sizes": sizes,
}, sys.stdout, indent=2)
print()
