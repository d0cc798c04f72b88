#!/usr/bin/env python3
"""Plots bench/results/lora.json: tokens/s per stream by stream count, the 3-reply wall
times, and zero adapter vs no LoRA. usage: plot_lora.py lora.json out.png"""
import json
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

r = json.load(open(sys.argv[1]))
fig, ax = plt.subplots(1, 3, figsize=(13, 4))
s = [d["streams"] for d in r["decode_by_streams"]]
ax[0].bar([x - 0.2 for x in s], [d["total_tok_s"] for d in r["decode_by_streams"]], 0.4, label="all streams")
ax[0].bar([x + 0.2 for x in s], [d["per_stream_tok_s"] for d in r["decode_by_streams"]], 0.4, label="per stream")
ax[0].set_xlabel("streams (each on its own adapter)")
ax[0].set_ylabel("decode tokens/s")
ax[0].set_xticks(s)
ax[0].legend()
ax[0].set_title("multi-adapter decoding")
names = list(r["three_replies"])
seq = [r["three_replies"][n]["sequential_s"] for n in names]
mul = [r["three_replies"][n]["multi_stream_s"] for n in names]
xs = range(len(names))
ax[1].bar([x - 0.2 for x in xs], seq, 0.4, label="3 sequential runs")
ax[1].bar([x + 0.2 for x in xs], mul, 0.4, label="one 3-stream pass")
for x, n in zip(xs, names):
    ax[1].text(x, max(seq[x], mul[x]), f'{r["three_replies"][n]["speedup"]:.2f}x', ha="center", va="bottom")
ax[1].set_xticks(list(xs))
ax[1].set_xticklabels([n.replace("styled_by_", "by ").replace("_zero_adapter", "\n(zero adapter)")
                        .replace("_own_targets", "\n(its targets only)") for n in names])
ax[1].set_ylabel("seconds for 3 replies of 64 tokens")
ax[1].set_ylim(0, 1.3 * max(seq + mul))
ax[1].legend(loc="upper right", fontsize="small")
ax[1].set_title("3 styled replies")
z = r["zero_adapter_vs_no_lora"]
ax[2].bar(["no LoRA", "zero adapter"], [z["no_lora_tok_s"], z["zero_adapter_tok_s"]])
ax[2].set_ylabel("decode tokens/s (1 stream)")
ax[2].set_title(f'zero adapter: {z["ratio"]:.2f}x, switch {r["switch_latency_us"]:.3f} us')
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=100)
