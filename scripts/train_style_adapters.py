#!/usr/bin/env python3
"""Trains the two style LoRA adapters of adapters/ (pirate, shouting) for the default model.

How the data is made (all by rule, reproducible):
  1. data/styles/prompts.txt holds 50 short user prompts written by hand. The first 6 are
     held out (never trained on) and used to show the effect; the other 44 are training data.
  2. The base model answers each prompt greedily through its chat template (at most 64
     new tokens) -> data/styles/base_replies.jsonl. With --kiln (the default when
     build/tools/kiln/kiln exists) the replies come from `kiln run --chat` on the shipped
     Q4_1 model (fast); otherwise from transformers on the F32 GGUF requant.
  3. Each base reply is rewritten by a fixed rule (pirate() and shouting() below) ->
     data/styles/pirate.jsonl and data/styles/shouting.jsonl.
  4. PEFT LoRA (rank 8, alpha 16, q_proj/k_proj/v_proj/o_proj, dropout 0) is trained on
     (chat prompt -> the first 20 tokens of the styled reply), loss on the reply tokens
     only, AdamW lr 1e-2, batch 1, 14 steps (a short run: the shared 2-core machine
     trains at about 30 s a step); the adapter is saved as a PEFT folder with f16 weights:
     adapters/pirate/ and adapters/shouting/ (adapter_config.json +
     adapter_model.safetensors).

Runs on CPU (2 cores: a few minutes per adapter). Needs torch, transformers, peft, gguf,
safetensors (a venv: python3 -m venv ~/.cache/kiln/venv && ~/.cache/kiln/venv/bin/pip
install torch transformers peft gguf safetensors). Never part of the tests.

usage: ~/.cache/kiln/venv/bin/python scripts/train_style_adapters.py [--steps N] [--only pirate]
"""
import argparse
import json
import os
import random
import re
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.environ.get("KILN_CACHE", os.path.expanduser("~/.cache/kiln"))
GGUF = os.path.join(CACHE, "models", "SmolLM2-135M-Instruct.F32.gguf")
DATA = os.path.join(REPO, "data", "styles")
HELD_OUT = 6
MAX_REPLY = 20  # reply tokens trained on per example

# ---- the style rules ------------------------------------------------------------------

PIRATE_WORDS = [
    (r"\byou are\b", "ye be"), (r"\byou're\b", "ye be"), (r"\byour\b", "yer"), (r"\byou\b", "ye"),
    (r"\bis\b", "be"), (r"\bare\b", "be"), (r"\bmy\b", "me"), (r"\bhello\b", "ahoy"), (r"\bhi\b", "ahoy"),
    (r"\bfriend\b", "matey"), (r"\bfriends\b", "mateys"), (r"\bthe\b", "th'"), (r"\bof\b", "o'"),
    (r"\bto\b", "t'"), (r"\byes\b", "aye"), (r"\bmoney\b", "doubloons"), (r"\bstop\b", "avast"),
    (r"\bwow\b", "blimey"), (r"\bman\b", "scallywag"), (r"\bpeople\b", "landlubbers"),
]


def keep_case(src, dst):
    return dst.capitalize() if src[:1].isupper() else dst


def pirate(text):
    """Pirate speech: word swaps, -ing -> -in', 'Arr!' first and ', matey!' last."""
    out = text
    for pat, rep in PIRATE_WORDS:
        out = re.sub(pat, lambda m, rep=rep: keep_case(m.group(0), rep), out, flags=re.IGNORECASE)
    out = re.sub(r"(\w{2,})ing\b", r"\1in'", out)
    out = out.rstrip()
    if out.endswith("."):
        out = out[:-1]
    return "Arr! " + out + ", matey!"


def shouting(text):
    """Shouting: upper case, and every sentence ends with '!'."""
    out = text.upper().rstrip()
    out = re.sub(r"[.?]+(\s|$)", r"!\1", out)
    if not out.endswith("!"):
        out += "!"
    return out


STYLES = {"pirate": pirate, "shouting": shouting}

# ---- data -------------------------------------------------------------------------------


def load_model():
    from transformers import AutoModelForCausalLM, AutoTokenizer
    d, f = os.path.dirname(GGUF), os.path.basename(GGUF)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    return tok, model


def chat_ids(tok, prompt):
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    return list(tok(text, add_special_tokens=False)["input_ids"])


def base_replies(tok, model, prompts, kiln):
    path = os.path.join(DATA, "base_replies.jsonl")
    if os.path.exists(path):
        rows = [json.loads(l) for l in open(path)]
        if [r["prompt"] for r in rows] == prompts:
            return rows
    rows = []
    if kiln:
        import subprocess
        q41 = os.path.join(CACHE, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
        for p in prompts:
            out = subprocess.run([kiln, "run", q41, "--chat", "--max-tokens", "64", "--ctx", "512", "--prompt", p],
                                 check=True, capture_output=True, text=True).stdout.strip()
            rows.append({"prompt": p, "reply": out})
            print(f"[base] {p} -> {out[:60]}...", flush=True)
        with open(path, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        return rows
    model.eval()
    with torch.no_grad():
        for p in prompts:
            ids = torch.tensor([chat_ids(tok, p)])
            out = model.generate(ids, max_new_tokens=64, do_sample=False)
            reply = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
            rows.append({"prompt": p, "reply": reply})
            print(f"[base] {p} -> {reply[:60]}...", flush=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return rows


# ---- training -------------------------------------------------------------------------------


def train(tok, name, rows, steps, lr, seed=0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    random.seed(seed)
    d, f = os.path.dirname(GGUF), os.path.basename(GGUF)
    base = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    model = get_peft_model(base, cfg)
    examples = []
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    for r in rows:
        prompt = chat_ids(tok, r["prompt"])
        # The style shows from the first tokens on: train on the first MAX_REPLY of each reply
        # (2 CPU cores must finish in minutes).
        reply = tok(r["styled"], add_special_tokens=False)["input_ids"][:MAX_REPLY]
        examples.append((prompt, reply))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    model.train()
    batch = 1
    t0 = time.time()
    order = []
    for step in range(steps):
        if len(order) < batch:
            order += random.sample(range(len(examples)), len(examples))
        idx, order = order[:batch], order[batch:]
        seqs = [examples[i] for i in idx]
        n = max(len(p) + len(r) for p, r in seqs)
        ids = torch.full((len(seqs), n), tok.pad_token_id or 0)
        labels = torch.full((len(seqs), n), -100)
        mask = torch.zeros((len(seqs), n), dtype=torch.long)
        for b, (p, r) in enumerate(seqs):
            s = p + r
            ids[b, :len(s)] = torch.tensor(s)
            labels[b, len(p):len(s)] = torch.tensor(r)
            mask[b, :len(s)] = 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 2 == 0 or step == steps - 1:
            print(f"[{name}] step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)", flush=True)
    return model


def save_f16(model, name):
    from safetensors.torch import load_file, save_file
    out = os.path.join(REPO, "adapters", name)
    model.save_pretrained(out, safe_serialization=True)
    st = os.path.join(out, "adapter_model.safetensors")
    tensors = {k: v.to(torch.float16).contiguous() for k, v in load_file(st).items()}
    save_file(tensors, st, metadata={"format": "pt"})
    cfg_path = os.path.join(out, "adapter_config.json")
    cfg = json.load(open(cfg_path))
    cfg["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"
    json.dump(cfg, open(cfg_path, "w"), indent=2, sort_keys=True)
    readme = os.path.join(out, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    return out


def show(tok, model, prompts, name):
    model.eval()
    with torch.no_grad():
        for p in prompts[:2]:
            ids = torch.tensor([chat_ids(tok, p)])
            out = model.generate(ids, max_new_tokens=40, do_sample=False)
            print(f"[{name}] {p} -> {tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--only", choices=sorted(STYLES))
    default_kiln = os.path.join(REPO, "build", "tools", "kiln", "kiln")
    ap.add_argument("--kiln", default=default_kiln if os.path.exists(default_kiln) else "",
                    help="kiln binary for the base replies ('' : transformers)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    prompts = [l.strip() for l in open(os.path.join(DATA, "prompts.txt")) if l.strip()]
    tok, model = load_model()
    rows = base_replies(tok, model, prompts, args.kiln)
    del model
    for name, rule in STYLES.items():
        if args.only and name != args.only:
            continue
        styled = [{"prompt": r["prompt"], "reply": r["reply"], "styled": rule(r["reply"])} for r in rows]
        with open(os.path.join(DATA, f"{name}.jsonl"), "w") as f:
            for r in styled:
                f.write(json.dumps(r) + "\n")
        m = train(tok, name, styled[HELD_OUT:], args.steps, args.lr)
        out = save_f16(m, name)
        print(f"[{name}] saved {out}", flush=True)
        show(tok, m, prompts, name)


if __name__ == "__main__":
    main()
