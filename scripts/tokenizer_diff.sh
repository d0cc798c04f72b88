#!/usr/bin/env bash
# scripts/tokenizer_diff.sh [MODEL] [N] — kiln's tokenizer against llama.cpp's on N (default
# 300) random byte strings: `kiln tokenize --file` against `llama-tokenize --ids --no-bos
# --no-parse-special -f`, same GGUF (default: the default model). The strings are built
# from pieces chosen to stress the pre-tokenizer and the byte handling: words, spaces,
# digits, contractions, multi-byte characters and combining marks, control bytes, and
# invalid UTF-8 (stray continuation bytes, truncated and overlong sequences, surrogates,
# code points past U+10FFFF). Prints how many agree, differ, or make llama.cpp fail
# (it aborts on some invalid UTF-8, where kiln still returns tokens), the first few
# differences in full, and exits 1 if any string is tokenized differently.
# Needs the build (scripts/quickstart.sh or scripts/test.sh makes it) and the llama.cpp peer (bench/peer_bin.sh builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-${KILN_CACHE:-$HOME/.cache/kiln}/models/SmolLM2-135M-Instruct.Q4_1.gguf}
n=${2:-300}
kiln=build/tools/kiln/kiln
[ -x "$kiln" ] || { echo "tokenizer_diff: $kiln is missing: build first (bash scripts/quickstart.sh or bash scripts/test.sh)" >&2; exit 1; }
[ -f "$model" ] || { echo "tokenizer_diff: $model: no such model (scripts/setup.sh fetches the default one)" >&2; exit 1; }
peer=$(bash bench/peer_bin.sh)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work" "$n" <<'EOF'
import random, sys
work, n = sys.argv[1], int(sys.argv[2])
random.seed(2026)
pieces = [b'Hello', b' world', b' the', b"'s", b"'ll", b' 123', b'4567', b'!', b'?!', b' ', b'  ', b'\n', b'\n\n',
          b'\t', b'\r\n', b'\xc3\xa9', b'\xe4\xb8\xad\xe6\x96\x87', b'\xf0\x9f\x98\x80', b'A\xcc\x81', b'\xcc\x81',
          b'\x00', b'\x04', b'\x1d', b'\x7f',
          b'\x80', b'\xbf', b'\xc3', b'\xe2\x80', b'\xc0\xaf', b'\xe0\x80\xaf', b'\xed\xa0\x80',
          b'\xf1\x80\x80\x80', b'\xf4\x8f\xbf\xbf', b'\xf4\x90\x80\x80', b'\xf5\x80\x80\x80', b'\xfe', b'\xff']
for i in range(n):
    s = b''.join(random.choice(pieces) for _ in range(random.randint(1, 10)))
    open('%s/%04d.txt' % (work, i), 'wb').write(s)
EOF
same=0; differ=0; peer_failed=0; shown=0
for f in "$work"/*.txt; do
  k=$("$kiln" tokenize "$model" --file "$f")
  if ! l=$(LD_LIBRARY_PATH="$peer" "$peer/llama-tokenize" -m "$model" -f "$f" --ids --no-bos --no-parse-special \
           --log-disable 2>/dev/null | tail -n 1) || [[ "$l" != \[* ]]; then
    peer_failed=$((peer_failed + 1)); continue
  fi
  if [ "$k" = "$l" ]; then same=$((same + 1)); continue; fi
  differ=$((differ + 1))
  if [ "$shown" -lt 5 ]; then
    shown=$((shown + 1))
    echo "differs: bytes $(od -An -tx1 "$f" | tr -s ' \n' ' ')"
    echo "  kiln      $k"
    echo "  llama.cpp $l"
  fi
done
echo "tokenizer_diff: $n strings, $(basename "$model"): $same identical, $differ different, $peer_failed where llama-tokenize failed"
[ "$differ" -eq 0 ]
