#!/usr/bin/env python3
"""bench/plot_backend.py — bench/results/backend.json -> bench/results/backend.png:
tokens/s of kiln and llama.cpp per model, thread count and phase (prefill, decode)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src = sys.argv[1] if len(sys.argv) > 1 else "bench/results/backend.json"
dst = sys.argv[2] if len(sys.argv) > 2 else "bench/results/backend.png"
r = json.load(open(src))
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
for ax, phase, title in [(axes[0], "prefill", "prefill 128 tokens"), (axes[1], "decode", "decode 64 tokens")]:
    labels, kiln, llama = [], [], []
    for c in r["configs"]:
        labels.append(f"{c['model'].replace('SmolLM2-135M-Instruct.', '').replace('.gguf', '')}\n{c['threads']} thr" + ("\n+" + c["kiln_passes"] if c.get("kiln_passes") else ""))
        kiln.append(c[f"kiln_{phase}_tok_s"])
        llama.append(c[f"llama_{phase}_tok_s"])
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], kiln, 0.4, label="kiln (compiled)")
    ax.bar([i + 0.2 for i in x], llama, 0.4, label="llama.cpp")
    for i, (k, l) in enumerate(zip(kiln, llama)):
        ax.text(i - 0.2, k, f"{k / l:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("tokens/s")
    ax.set_title(title)
    ax.legend(fontsize=8)
fig.suptitle(f"SmolLM2-135M-Instruct, same GGUF files, one run ({r['date']}, {r['machine_cores']} cores)")
fig.tight_layout()
fig.savefig(dst, dpi=110)
print(dst)
