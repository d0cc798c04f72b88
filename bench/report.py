#!/usr/bin/env python3
"""bench/report.py — the README's performance tables, in Markdown, from bench/results/*.json
(written by bench/run_all.sh). Prints to stdout; missing files are skipped with a note.

usage: python3 bench/report.py [RESULTS_DIR]"""
import json
import os
import sys

d = sys.argv[1] if len(sys.argv) > 1 else "bench/results"


def load(name):
    p = os.path.join(d, name)
    if not os.path.exists(p):
        print(f"<!-- {p} missing: run bash bench/run_all.sh -->\n")
        return None
    return json.load(open(p))


def short(model):
    return model.replace("SmolLM2-135M-Instruct.", "").replace(".gguf", "")


backend = load("backend.json")
if backend:
    print(f"Tokens/s ({backend['date']}, {backend['machine_cores']} cores; kiln / llama.cpp, same GGUF):\n")
    roof = any("kiln_decode_roofline_fraction" in c for c in backend["configs"])
    head = "| model | threads | prefill 128 tok/s | decode 64 tok/s |"
    rule = "|---|---|---|---|"
    if roof:
        head += " decode / roofline kiln, llama.cpp |"
        rule += "---|"
    print(head)
    print(rule)
    names = {"F16": "F16 requant (float backend)", "Q4_1": "Q4_1 as shipped (kiln: int8 activations, packed)"}
    for c in backend["configs"]:
        name = names.get(short(c['model']), short(c['model']))
        if c.get("kiln_pack_weights") == "off":
            name = name.replace(", packed)", ", --pack-weights=off)")
        row = (f"| {name} | {c['threads']} | "
               f"{c['kiln_prefill_tok_s']:.0f} / {c['llama_prefill_tok_s']:.0f} ({c['prefill_ratio']:.2f}x) | "
               f"{c['kiln_decode_tok_s']:.0f} / {c['llama_decode_tok_s']:.0f} ({c['decode_ratio']:.2f}x) |")
        if roof:
            row += (f" {c['kiln_decode_roofline_fraction']:.0%}, {c['llama_decode_roofline_fraction']:.0%} "
                    f"of {c['kiln_roofline_decode_tok_s']:.0f} tok/s |" if "kiln_decode_roofline_fraction" in c else " |")
        print(row)
    print()

bw = load("bandwidth.json")
if bw:
    parts = []
    for r in bw["results"]:
        t = f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}"
        if r.get("best_pass_cpu_share", 1.0) >= 0.9:
            parts.append(f"{t}: {r['best_gb_s']:.1f} GB/s")
        else:  # what summarize_backend.py uses for the roofline on a busy machine
            parts.append(f"{t}: {r['best_cpu_time_gb_s']:.1f} GB/s over CPU time (wall clock {r['best_gb_s']:.1f} GB/s: "
                         f"a busy machine, the best pass got {r['best_pass_cpu_share']:.0%} of the cores)")
    print(f"Read bandwidth (bench/bandwidth, {bw['buffer_bytes'] >> 20} MiB buffer, best of {bw['reps']}): "
          f"{'; '.join(parts)}.\n")

mem = load("memory.json")
if mem:
    mib = lambda b: f"{b / 2**20:.1f} MiB"
    print("| memory (decode 64 tokens, context 512) | kiln | llama.cpp |")
    print("|---|---|---|")
    print(f"| model file | model.kiln {mib(mem['model_kiln_bytes'])} ({mem['model_kiln_vs_gguf']:.3f}x the GGUF) | "
          f"GGUF {mib(mem['gguf_bytes'])} |")
    print(f"| peak RSS | {mib(mem['kiln_peak_rss_bytes'])} = {mem['kiln_rss_over_model_kiln_plus_kv']:.2f}x "
          f"(model.kiln + {mib(mem['kiln_kv_bytes'])} KV) | {mib(mem['llama_peak_rss_bytes'])} |")
    print()

ppl = load("perplexity.json")
if ppl:
    r = ppl["runs"]
    chunks = r["kiln_q4_1"]["chunks"]
    print(f"Perplexity ({chunks} chunks of {r['kiln_q4_1']['ctx']} tokens, {ppl['text']}):\n")
    print("| weights | kiln | llama.cpp | kiln vs llama.cpp |")
    print("|---|---|---|---|")
    print(f"| Q4_1 as shipped (kiln: int8 activations) | {r['kiln_q4_1']['ppl']:.4f} | {r['llama_q4_1']['ppl']:.4f} | "
          f"{ppl['kiln_q4_1_vs_llama_q4_1']:+.3%} |")
    print(f"| Q4_1, kiln --float-activations | {r['kiln_q4_1_float_act']['ppl']:.4f} | | |")
    print(f"| F32 requant (same weights, float) | {r['kiln_f32']['ppl']:.4f} | {r['llama_f32']['ppl']:.4f} | "
          f"{ppl['kiln_f32_vs_llama_f32']:+.3%} |")
    print(f"| int8 activations: Q4_1 vs F32 | {ppl['kiln_q4_1_vs_kiln_f32']:+.2%} | {ppl['llama_q4_1_vs_llama_f32']:+.2%} | |")
    print()
