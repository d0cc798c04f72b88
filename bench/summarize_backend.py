#!/usr/bin/env python3
"""Joins kiln_bench and llama-bench JSON lines into bench/results/backend.json.

usage: summarize_backend.py KILN.jsonl LLAMA.jsonl SIZES_JSON CORES [BANDWIDTH.json]

With bench/results/bandwidth.json (bench/bandwidth), each configuration also gets its
decode roofline: the read bandwidth at that thread count (best pass) over the bytes one
decode token reads (kiln_bench: weights touched + the KV rows before it), and each side's
decode tokens/s as a fraction of it."""
import datetime
import json
import sys

kiln = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
llama = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
sizes = json.loads(sys.argv[3])
cores = int(sys.argv[4])
bandwidth = json.load(open(sys.argv[5])) if len(sys.argv) > 5 else None


def read_gb_s(threads):
    for r in bandwidth["results"]:
        if r["threads"] == threads:
            return r["best_gb_s"]
    raise SystemExit(f"bandwidth.json has no result for {threads} threads")


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
    c = {
        "model": k["model"], "threads": k["threads"],
        "kiln_prefill_tok_s": k["prefill_tok_s"], "llama_prefill_tok_s": round(pp, 2),
        "prefill_ratio": round(k["prefill_tok_s"] / pp, 3),
        "kiln_decode_tok_s": k["decode_tok_s"], "llama_decode_tok_s": round(tg, 2),
        "decode_ratio": round(k["decode_tok_s"] / tg, 3),
        "kiln_compile_s": k["compile_s"], "kiln_cpu": k["cpu"],
    }
    if "kiln_bytes_per_decode_token" in k:
        c["kiln_bytes_per_decode_token"] = int(k["kiln_bytes_per_decode_token"])
        c["llama_bytes_per_decode_token"] = int(k["llama_bytes_per_decode_token"])
    if bandwidth and "kiln_bytes_per_decode_token" in k:
        bw = read_gb_s(k["threads"]) * 1e9
        c["read_bandwidth_gb_s"] = round(bw / 1e9, 3)
        c["kiln_roofline_decode_tok_s"] = round(bw / k["kiln_bytes_per_decode_token"], 1)
        c["kiln_decode_roofline_fraction"] = round(k["decode_tok_s"] * k["kiln_bytes_per_decode_token"] / bw, 3)
        c["llama_roofline_decode_tok_s"] = round(bw / k["llama_bytes_per_decode_token"], 1)
        c["llama_decode_roofline_fraction"] = round(tg * k["llama_bytes_per_decode_token"] / bw, 3)
    configs.append(c)

out = {
    "what": "prefill 128 tokens / decode 64 tokens from an empty context, tokens/s, median (kiln) "
            "and mean (llama-bench) of the repetitions; kiln = compiled code via libkiln_rt; "
            "llama.cpp = llama-bench of the peer build on the same GGUF",
    "date": datetime.date.today().isoformat(),
    "machine_cores": cores,
    "configs": configs,
    "sizes": sizes,
}
if bandwidth:
    out["roofline"] = ("decode tokens/s x bytes read per decode token / read bandwidth (bench/bandwidth, best pass, "
                       "same thread count); bytes per token = weights touched (kiln: its weight blob; llama.cpp: the "
                       "GGUF tensors) + the KV rows before the token, averaged over the decode")
    out["bandwidth"] = {str(r["threads"]): r["best_gb_s"] for r in bandwidth["results"]}
json.dump(out, sys.stdout, indent=2)
print()
