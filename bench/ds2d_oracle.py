#!/usr/bin/env python3
"""bench/ds2d_oracle.py — how far DS2D's text drafts could go on the bench's prompts.

An upper bound for drafting from the text, to read bench/results/ds2d.json against. For
each greedy reply (ds2d_bench --write-outputs DIR) the ideal text drafter, at every step,
looks at each earlier place in the prompt and the reply so far where the last KEY tokens
occur and takes the continuation that agrees with the true reply the longest: it chooses
among the matches knowing the future, which no drafter can. A continuation may run on into
the tokens it has itself drafted (as llama-lookup's does), so a repetition that reaches the
end of the text keeps going. A step either decodes plainly or verifies that chain cut to fit
one of the compiled templates (n nodes hold n - 1 drafts); over a whole reply the steps
are chosen to take the least time (a shortest path over positions), knowing how many
drafts each pass would accept. A tree of several text candidates accepts at most its best
candidate's path, and that path is one of the chains considered here.

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


def best_match(text, at, key):
    """How many tokens from text[at] on agree with the continuation of an earlier place
    where text[at - key:at] occurs (the continuation read from text itself, so it may run
    into the tokens it drafted)."""
    if at < key:
        return 0
    suffix = text[at - key:at]
    best = 0
    for j in range(at - key):
        if text[j:j + key] != suffix:
            continue
        k = 0
        while at + k < len(text) and text[j + key + k] == text[at + k]:
            k += 1
        best = max(best, k)
    return best


def reply_seconds(prompt, out, key, plain_s, verify_s):
    """Least time to produce out[1:] (out[0] comes from the prefill, as in ds2d_bench), and
    the number of steps that takes: a shortest path over positions."""
    text = prompt + out
    n = len(out)
    best = [(0.0, 0)] * (n + 1)  # from position i to the end: (seconds, steps)
    for i in range(n - 1, 0, -1):
        m = best_match(text, len(prompt) + i, key)
        s, st = best[i + 1]
        options = [(plain_s + s, st + 1)]
        for nodes, sec in verify_s.items():
            j = min(n, i + min(m, nodes - 1) + 1)
            s, st = best[j]
            options.append((sec + s, st + 1))
        best[i] = min(options)
    return best[1] if n > 1 else (0.0, 0)


def kind_oracle(files, key, plain_s, verify_s):
    """Tokens, steps and seconds of the ideal drafter over one kind's replies."""
    tokens = steps = 0
    seconds = 0.0
    for f in files:
        prompt, out = read(f)
        if len(out) < 2:
            continue
        s, st = reply_seconds(prompt, out, key, plain_s, verify_s)
        tokens += len(out) - 1
        steps += st
        seconds += s
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
                      f"{a.key} token(s), chosen knowing the reply; steps chosen for the least "
                      "time) vs kiln's DS2D, same run's costs",
              "key_tokens": a.key, "kinds": {}}
    for kind, k in kiln["kinds"].items():
        files = sorted(glob.glob(os.path.join(a.outputs, f"{kind}_*.tokens")))
        if not files or not k.get("plain_tok_s"):
            continue
        uses = {int(n): u for n, u in k["template_uses"].items() if int(n) in cal}
        used_cal = sum(cal[n] * u for n, u in uses.items()) / max(1, sum(uses.values()))
        # Without passes (or plain steps) in the run: the calibrated times (the baseline's).
        passes = k.get("verify_passes", 0)
        scale = (k["seconds_verifying"] / passes) / used_cal if passes and used_cal else 1.0
        verify_s = {n: c * scale for n, c in cal.items()}
        plain_s = k["seconds_plain_steps"] / k["plain_steps"] if k.get("plain_steps") else 1.0 / k["plain_tok_s"]
        tokens, steps, seconds = kind_oracle(files, a.key, plain_s, verify_s)
        if not steps:
            continue
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
