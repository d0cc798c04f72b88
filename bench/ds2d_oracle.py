#!/usr/bin/env python3
"""bench/ds2d_oracle.py — how far DS2D's text drafts could go on the bench's prompts.

An upper bound for drafting from the text, to read bench/results/ds2d.json against. For
each greedy reply (ds2d_bench --write-outputs DIR) the ideal text drafter, at every step,
looks at each earlier place in the prompt and the reply so far where the last KEY tokens
occur and takes the continuation that agrees with the true reply the longest: it chooses
among the matches knowing the future, which no drafter can. A step then either decodes
plainly or verifies that chain in the smallest compiled template that holds it, whichever
gives more tokens per second (knowing how many will be accepted). A tree of several
candidates accepts at most the best candidate's path, so it cannot beat this chain.

Costs are the same run's (ds2d_bench's JSON): a plain step inside DS2D, a verify pass of
each template (its calibrated time, scaled so that the passes the run made cost what they
measured), and the plain-decode baseline per token. Prints one JSON object.

usage: ds2d_oracle.py OUTPUTS_DIR KILN_JSON [--key 1]
"""
import argparse
import glob
import json
import os


def read(path):
    lines = open(path).read().split("\n")
    return [int(t) for t in lines[0].split()], [int(t) for t in lines[1].split()]


def best_match(ctx, key, future):
    """The longest agreement with `future` of a continuation of an earlier `key`-token
    suffix match in ctx."""
    if len(ctx) <= key:
        return 0
    suffix = ctx[-key:]
    best = 0
    for j in range(len(ctx) - key):
        if ctx[j:j + key] != suffix:
            continue
        k = 0
        while k < len(future) and j + key + k < len(ctx) and ctx[j + key + k] == future[k]:
            k += 1
        best = max(best, k)
    return best


def kind_oracle(files, key, plain_s, verify_s):
    """Tokens, steps and seconds of the ideal drafter over one kind's replies."""
    tokens = steps = 0
    seconds = 0.0
    for f in files:
        prompt, out = read(f)
        i = 1  # the first token comes from the prefill, as in ds2d_bench
        while i < len(out):
            m = best_match(prompt + out[:i], key, out[i:])
            options = [(1, plain_s)]  # (tokens, seconds)
            for nodes, sec in verify_s.items():
                options.append((min(m, nodes - 1) + 1, sec))
            n, sec = max(options, key=lambda o: o[0] / o[1])
            i += n
            steps += 1
            seconds += sec
        tokens += len(out) - 1
    return tokens, steps, seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outputs")
    ap.add_argument("kiln_json")
    ap.add_argument("--key", type=int, default=1, help="tokens of suffix a match needs (default 1)")
    a = ap.parse_args()
    kiln = json.load(open(a.kiln_json))
    cal = {t["nodes"]: t["verify_ms"] / 1e3 for t in kiln["templates"]}
    result = {"what": "ideal text drafter (best continuation of any earlier match of the last "
                      f"{a.key} token(s), chosen knowing the reply) vs kiln's DS2D, same run's costs",
              "key_tokens": a.key, "kinds": {}}
    for kind, k in kiln["kinds"].items():
        files = sorted(glob.glob(os.path.join(a.outputs, f"{kind}_*.tokens")))
        if not files or not k.get("verify_passes") or not k.get("plain_steps"):
            continue
        uses = {int(n): u for n, u in k["template_uses"].items()}
        used_cal = sum(cal[n] * u for n, u in uses.items() if n in cal) / max(1, sum(uses.values()))
        scale = (k["seconds_verifying"] / k["verify_passes"]) / used_cal if used_cal else 1.0
        verify_s = {n: c * scale for n, c in cal.items()}
        plain_s = k["seconds_plain_steps"] / k["plain_steps"]
        tokens, steps, seconds = kind_oracle(files, a.key, plain_s, verify_s)
        baseline = tokens / k["plain_tok_s"]
        result["kinds"][kind] = {
            "replies": len(files), "tokens": tokens,
            "ideal_tokens_per_step": round(tokens / steps, 3),
            "ideal_speedup": round(baseline / seconds, 3),
            "kiln_tokens_per_step": k["tokens_per_step"], "kiln_speedup": k["speedup"],
            "plain_step_vs_baseline": round(plain_s * k["plain_tok_s"], 3),
            "verify_pass_vs_baseline": {str(n): round(s * k["plain_tok_s"], 3) for n, s in sorted(verify_s.items())},
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
