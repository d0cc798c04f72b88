#!/usr/bin/env bash
# make_goldens.sh - regenerate kiln's golden reference data from llama.cpp (the peer).
#
# Builds the peer (cached by /work/shared/peer/build-llama-cpp.sh), compiles our own
# scripts/goldens/peer_dump.cpp against its public C API, makes an F32 requant of the
# default model with the peer's llama-quantize (cached), and rewrites:
#   tests/goldens/tokenizer.golden    from tests/goldens/tokenizer_cases.txt
#   tests/goldens/logits_q4_1.golden  from the shipped Q4_1 model
#   tests/goldens/logits_f32.golden   from the F32 requant of it
#   tests/goldens/perplexity.golden   llama-perplexity of both on the King James Bible
# Idempotent: a second run rebuilds nothing and rewrites identical files.
# See tests/goldens/README.md for the formats.
#
# usage: scripts/make_goldens.sh
# env:   KILN_MODEL_DIR      (default /root/.cache/kiln/models)
#        KILN_GOLDENS_BUILD  (default /tmp/kiln-goldens-build: peer_dump binary, scratch)
#        KILN_PEER_BUILD     (default /work/shared/peer/build-llama-cpp.sh)
#        KILN_PEER_VERSION   (default 0.3.36)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
goldens="$repo/tests/goldens"
models=${KILN_MODEL_DIR:-/root/.cache/kiln/models}
build=${KILN_GOLDENS_BUILD:-/tmp/kiln-goldens-build}
peer_script=${KILN_PEER_BUILD:-/work/shared/peer/build-llama-cpp.sh}
peer_version=${KILN_PEER_VERSION:-0.3.36}

q4_1="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
q4_1_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
f32="$models/SmolLM2-135M-Instruct.F32.gguf"
threads=1  # results do not depend on it (checked), 1 keeps a 2-core machine usable

log() { printf 'make_goldens: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- the default model, as shipped
[ -f "$q4_1" ] || die "missing $q4_1"
echo "$q4_1_sha256  $q4_1" | sha256sum --check --quiet - || die "$q4_1 has the wrong sha256"

# --- the peer (cached: a second run only prints the bin folder)
log "peer: llama.cpp $peer_version via $peer_script"
peer_cache="${XDG_CACHE_HOME:-$HOME/.cache}/kiln-peer"
if ! bin=$(bash "$peer_script" "$peer_cache" "$peer_version" | tail -n 1); then
  # A fresh 0.3.36 build ends in a link error of the `llama` app (it wants the server/cli
  # libraries, which LLAMA_BUILD_SERVER=OFF leaves out); libllama and llama-quantize are
  # built before that, and are all this script needs.
  bin="$peer_cache/llama.cpp-$peer_version/build/bin"
  log "warning: the peer build reported an error; continuing with $bin"
fi
peer=$(dirname "$(dirname "$bin")")
[ -f "$bin/libllama.so" ] && [ -x "$bin/llama-quantize" ] || die "peer build incomplete in $bin"
[ -f "$peer/include/llama.h" ] || die "no llama.h under $peer"
log "peer: $bin"

# --- peer_dump, rebuilt only when its source, the compiler flags or the peer changed
mkdir -p "$build"
src="$repo/scripts/goldens/peer_dump.cpp"
dump="$build/peer_dump"
cxx=${CXX:-g++}
cxxflags=(-std=c++20 -O2 -Wall -Wextra -Werror -I"$peer/include" -I"$peer/ggml/include")
ldflags=(-L"$bin" -lllama -lggml -lggml-base -Wl,-rpath,"$bin")
stamp="$(sha256sum "$src" "$bin/libllama.so" | cut -d' ' -f1 | tr '\n' ' ') $cxx ${cxxflags[*]} ${ldflags[*]}"
if [ ! -x "$dump" ] || [ "$(cat "$dump.stamp" 2>/dev/null)" != "$stamp" ]; then
  log "compiling $src"
  "$cxx" "${cxxflags[@]}" "$src" -o "$dump.tmp" "${ldflags[@]}"
  mv "$dump.tmp" "$dump"
  printf '%s' "$stamp" >"$dump.stamp"
else
  log "peer_dump up to date: $dump"
fi

# --- F32 requant of the default model (same weight values, dequantized), cached; the
# stamp records the sha256 of the F32 file this script made, so a changed file is remade
f32_stamp="$build/f32.sha256"
if [ ! -f "$f32" ] || [ ! -f "$f32_stamp" ] || ! sha256sum --check --quiet "$f32_stamp" >/dev/null 2>&1; then
  log "requantizing to F32: $f32"
  "$bin/llama-quantize" --allow-requantize "$q4_1" "$f32.tmp" F32 "$threads" >"$build/quantize.log" 2>&1 \
    || { cat "$build/quantize.log" >&2; die "llama-quantize to F32 failed"; }
  mv "$f32.tmp" "$f32"
  sha256sum "$f32" >"$f32_stamp"
else
  log "F32 model up to date: $f32"
fi

# --- logits prompts: <parse_special> TAB <escaped text>, escapes as in tokenizer_cases.txt.
# The chat prompts are what the model's ChatML template renders (with the default system
# prompt it inserts when the first message is not a system message), add_generation_prompt.
sys='<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n'
chat() {  # chat USER_MESSAGE -> one rendered single-turn prompt
  printf '1\t%s<|im_start|>user\\n%s<|im_end|>\\n<|im_start|>assistant\\n\n' "$sys" "$1"
}
prompts="$build/prompts.txt"
{
  printf '0\t%s\n' 'The capital of France is'
  printf '0\t%s\n' 'Once upon a time, in a small village at the edge of a great forest, there lived a little fox named Rusty. One morning,'
  printf '0\t%s\n' 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n'
  chat 'What is the capital of France?'
  chat 'Write a haiku about the ocean.'
  chat 'How do I reverse a list in Python?'
  printf '1\t%s<|im_start|>user\\n%s<|im_end|>\\n<|im_start|>assistant\\n%s<|im_end|>\\n<|im_start|>user\\n%s<|im_end|>\\n<|im_start|>assistant\\n\n' \
    "$sys" 'Hi!' 'Hello! How can I help you today?' 'Tell me a fun fact about octopuses.'
} >"$prompts"

# --- goldens: written to a scratch file first, moved into place when complete
run() {  # run OUT_NAME peer_dump-args...
  local out=$1; shift
  "$dump" "$@" "$build/$out.tmp"
  mv "$build/$out.tmp" "$goldens/$out"
}
logits_flags=(--threads "$threads" --top 32 --gen 32 --gtop 8)
log "tokenizer.golden"
run tokenizer.golden tokenize "$q4_1" "$goldens/tokenizer_cases.txt"
log "logits_q4_1.golden"
run logits_q4_1.golden logits "${logits_flags[@]}" "$q4_1" "$prompts"
log "logits_f32.golden"
run logits_f32.golden logits "${logits_flags[@]}" "$f32" "$prompts"

# --- how far apart the two logits goldens are (quoted in tests/goldens/README.md)
python3 - "$goldens/logits_q4_1.golden" "$goldens/logits_f32.golden" <<'EOF'
import sys

def load(path):
    recs, cur = [], None
    for line in open(path):
        f = line.split()
        if f[0] == "prompt":
            cur = {"top": [], "greedy": [], "gtop": []}
        elif f[0] in ("top", "gtop"):
            cur[f[0]].append({int(k): float(v) for k, v in (e.split(":") for e in f[2:])})
        elif f[0] == "greedy":
            cur["greedy"] = [int(x) for x in f[1:]]
        elif f[0] == "end":
            recs.append(cur)
    return recs

q, r = load(sys.argv[1]), load(sys.argv[2])
assert len(q) == len(r)
n = same1 = 0
worst = 0.0
for i, (a, b) in enumerate(zip(q, r)):
    gap = 0.0
    for ta, tb in zip(a["top"], b["top"]):
        n += 1
        same1 += next(iter(ta)) == next(iter(tb))
        for k in ta.keys() & tb.keys():
            gap = max(gap, abs(ta[k] - tb[k]))
    worst = max(worst, gap)
    agree = next((s for s, (x, y) in enumerate(zip(a["greedy"], b["greedy"])) if x != y), len(a["greedy"]))
    print(f"make_goldens: prompt {i}: max |q4_1 - f32| logit over shared top-32 ids {gap:.4f}, "
          f"greedy agrees for {agree}/{len(a['greedy'])} steps", file=sys.stderr)
print(f"make_goldens: top-1 same at {same1}/{n} prompt positions; max |q4_1 - f32| {worst:.4f}", file=sys.stderr)
EOF
# --- perplexity: llama-perplexity on the first 1000 lines of the KJV text (scripts/setup.sh),
# 4 chunks of 128 tokens (what tests/e2e/perplexity.sh runs kiln on)
kjv=${KILN_PPL_TEXT:-${KILN_CACHE:-$HOME/.cache/kiln}/text/kjv.txt}
[ -f "$kjv" ] || die "missing $kjv (run scripts/setup.sh)"
head -n 1000 "$kjv" >"$build/kjv1000.txt"
log "perplexity.golden"
{
  echo "# llama-perplexity (llama.cpp $peer_version peer) on the first 1000 lines of \$KILN_CACHE/text/kjv.txt"
  echo "# (scripts/setup.sh), -c 128 --chunks 4 -t $threads. Written by scripts/make_goldens.sh; read by"
  echo "# tests/e2e/perplexity.sh. Fields: model ctx chunks ppl"
  for m in "$q4_1" "$f32"; do
    ppl=$(LD_LIBRARY_PATH="$bin" "$bin/llama-perplexity" -m "$m" -f "$build/kjv1000.txt" -c 128 --chunks 4 -t "$threads" 2>&1 \
      | sed -n 's/.*Final estimate: PPL = \([0-9.]*\).*/\1/p')
    [ -n "$ppl" ] || die "llama-perplexity gave no estimate for $m"
    echo "$(basename "$m") 128 4 $ppl"
  done
} >"$build/perplexity.golden.tmp"
mv "$build/perplexity.golden.tmp" "$goldens/perplexity.golden"

log "done: $(cd "$goldens" && wc -c tokenizer.golden logits_q4_1.golden logits_f32.golden perplexity.golden | tail -n 1)"
