#!/usr/bin/env python3
"""Joins kiln_bench and llama-bench JSON lines into bench/results/backend.json.

usage: summarize_backend.py KILN.jsonl LLAMA.jsonl SIZES_JSON CORES [BANDWIDTH.json]
       summarize_backend.py --roofline BACKEND.json BANDWIDTH.json   (recompute the roofline
                                                                       of an existing file)

With bench/results/bandwidth.json (bench/bandwidth), each configuration also gets its
decode roofline: the read bandwidth at that thread count (best pass) over the bytes one
decode token reads (kiln_bench: weights touched + the KV rows before it), and each side's
decode tokens/s as a fraction of it."""
import datetime
import json
import sys

ROOFLINE_WHAT = ("decode tokens/s x bytes read per decode token / read bandwidth (bench/bandwidth, best pass, "
                 "same thread count); bytes per token = weights touched (kiln: its weight blob; llama.cpp: the "
                 "GGUF tensors) + the KV rows before the token, averaged over the decode")


def read_gb_s(bandwidth, threads):
    """The read bandwidth at this thread count (GB/s) and what it rests on. A pass on a busy
    machine waits for a core (bench/bandwidth reports the CPU share of its best pass): then
    the rate over the threads' CPU time is used instead — right for 1 thread (stalls on
    memory count as CPU time), an upper bound for 2 (their slices may not have overlapped),
    which makes the roofline fraction a lower bound."""
    for r in bandwidth["results"]:
        if r["threads"] == threads:
            if r.get("best_pass_cpu_share", 1.0) >= 0.9:
                return r["best_gb_s"], "wall clock, quiet machine"
            return r["best_cpu_time_gb_s"], (f"CPU time (busy machine: the best pass ran {r['best_pass_cpu_share']:.0%} "
                                              "of the wall time; re-run bench/run_all.sh on a quiet machine)")
    raise SystemExit(f"bandwidth.json has no result for {threads} threads")


def add_roofline(out, bandwidth):
    for c in out["configs"]:
        if "kiln_bytes_per_decode_token" not in c:
            continue
        bw, basis = read_gb_s(bandwidth, c["threads"])
        bw *= 1e9
        c["read_bandwidth_gb_s"] = round(bw / 1e9, 3)
        c["read_bandwidth_basis"] = basis
        c["kiln_roofline_decode_tok_s"] = round(bw / c["kiln_bytes_per_decode_token"], 1)
        c["kiln_decode_roofline_fraction"] = round(c["kiln_decode_tok_s"] * c["kiln_bytes_per_decode_token"] / bw, 3)
        c["llama_roofline_decode_tok_s"] = round(bw / c["llama_bytes_per_decode_token"], 1)
        c["llama_decode_roofline_fraction"] = round(c["llama_decode_tok_s"] * c["llama_bytes_per_decode_token"] / bw, 3)
    out["roofline"] = ROOFLINE_WHAT
    out["bandwidth"] = {str(t): read_gb_s(bandwidth, t)[0] for t in sorted({r["threads"] for r in bandwidth["results"]})}


if sys.argv[1] == "--roofline":
    out = json.load(open(sys.argv[2]))
    add_roofline(out, json.load(open(sys.argv[3])))
    json.dump(out, sys.stdout, indent=2)
    print()
    sys.exit(0)

kiln = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
llama = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
sizes = json.loads(sys.argv[3])
cores = int(sys.argv[4])
bandwidth = json.load(open(sys.argv[5])) if len(sys.argv) > 5 else None


def llama_rate(model, threads, kind):
    """llama-bench's tokens/s: the median of its repetitions (samples_ts), as kiln_bench
    reports the median; the mean (avg_ts) only where a build prints no samples."""
    def rate(r):
        samples = sorted(r.get("samples_ts") or [])
        if not samples:
            return r["avg_ts"]
        n = len(samples)
        return samples[n // 2] if n % 2 else (samples[n // 2 - 1] + samples[n // 2]) / 2
    for r in llama:
        if r["model_filename"].endswith(model) and r["n_threads"] == threads:
            if kind == "pp" and r["n_prompt"] > 0 and r["n_gen"] == 0:
                return rate(r)
            if kind == "tg" and r["n_gen"] > 0 and r["n_prompt"] == 0:
                return rate(r)
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
        "kiln_compile_s": k["compile_s"], "kiln_cpu": k["cpu"], "kiln_passes": k.get("passes", ""),
        "kiln_pack_weights": k.get("pack_weights", "auto"),
    }
    if "kiln_bytes_per_decode_token" in k:
        c["kiln_bytes_per_decode_token"] = int(k["kiln_bytes_per_decode_token"])
        c["llama_bytes_per_decode_token"] = int(k["llama_bytes_per_decode_token"])
    configs.append(c)

out = {
    "what": "prefill 128 tokens / decode 64 tokens from an empty context, tokens/s, median (kiln) "
            "and median (llama-bench samples) of the repetitions; kiln = compiled code via libkiln_rt; "
            "llama.cpp = llama-bench of the peer build on the same GGUF",
    "date": datetime.date.today().isoformat(),
    "machine_cores": cores,
    "configs": configs,
    "sizes": sizes,
}
if bandwidth:
    add_roofline(out, bandwidth)
json.dump(out, sys.stdout, indent=2)
print()
