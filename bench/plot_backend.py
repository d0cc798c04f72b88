#!/usr/bin/env python3
"""bench/plot_backend.py — bench/results/backend.json -> bench/results/backend.png:
tokens/s of kiln and llama.cpp per model, thread count and phase (prefill, decode). On the
decode panel, a line over each configuration marks its memory-bandwidth roofline (read
bandwidth at that thread count / bytes one decode token reads), when backend.json has it
(bench/run_all.sh measures the bandwidth first)."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

src = sys.argv[1] if len(sys.argv) > 1 else "bench/results/backend.json"
dst = sys.argv[2] if len(sys.argv) > 2 else "bench/results/backend.png"
r = json.load(open(src))
fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
for ax, phase, title in [(axes[0], "prefill", "prefill 128 tokens"), (axes[1], "decode", "decode 64 tokens")]:
    labels, kiln, llama = [], [], []
    for c in r["configs"]:
        labels.append(f"{c['model'].replace('SmolLM2-135M-Instruct.', '').replace('.gguf', '')}\n{c['threads']} thr" + ("\n+" + c["kiln_passes"] if c.get("kiln_passes") else "")
                      + ("\nunpacked" if c.get("kiln_pack_weights") == "off" else ""))
        kiln.append(c[f"kiln_{phase}_tok_s"])
        llama.append(c[f"llama_{phase}_tok_s"])
    x = range(len(labels))
    ax.bar([i - 0.2 for i in x], kiln, 0.4, label="kiln (compiled)", color="#d95f02")
    ax.bar([i + 0.2 for i in x], llama, 0.4, label="llama.cpp", color="#7570b3")
    for i, (k, l) in enumerate(zip(kiln, llama)):
        ax.text(i - 0.2, k, f"{k / l:.2f}x", ha="center", va="bottom", fontsize=8)
    top = max(kiln + llama)
    if phase == "decode":
        first = True
        for i, c in enumerate(r["configs"]):
            roof = c.get("kiln_roofline_decode_tok_s")
            if roof is None:
                continue
            ax.hlines(roof, i - 0.45, i + 0.45, colors="black", linestyles="--", linewidth=1.2,
                      label=f"roofline (read bandwidth / bytes per token)" if first else None)
            ax.text(i + 0.45, roof, f"{c['kiln_decode_roofline_fraction']:.0%}", ha="right", va="bottom", fontsize=7)
            top = max(top, roof)
            first = False
    ax.set_ylim(0, top * 1.15)
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("tokens/s")
    ax.set_title(title + (" (% = kiln's fraction of the roofline)" if phase == "decode" and "bandwidth" in r else ""),
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
bw = r.get("bandwidth")
busy = any(c.get("read_bandwidth_basis", "").startswith("CPU time") for c in r["configs"])
sub = (f"; read bandwidth {', '.join(f'{v:.1f} GB/s at {k} thr' for k, v in bw.items())}"
       + (" over CPU time: busy machine" if busy else "")) if bw else ""
fig.suptitle(f"SmolLM2-135M-Instruct, same GGUF files, one run ({r['date']}, {r['machine_cores']} cores{sub})",
             fontsize=10)
fig.tight_layout()
fig.savefig(dst, dpi=110)
print(dst)
