#!/usr/bin/env bash
# tests/cross/sm8750_smmla_test.sh KILN MODEL — `kiln compile --profile=sm8750` (+dotprod,
# +i8mm), disassembly only (running the code is aarch64_test.sh's and the qemu kernel
# checks' job):
#   - with --pack-weights=off every int8-activation matmul kernel in model.o
#     (k.matmul_*_q8_*, the fused k.matmul_swiglu_* and k.rms_matmul_*) is the i8mm
#     variant and its code has both smmla (pairs of rows of x) and sdot (a row of x
#     alone: decode);
#   - as compiled by default (pack-weights) every one is the packed (x16) dotprod variant
#     and has sdot.
set -euo pipefail
kiln=$1 model=$2
objdump=$(command -v llvm-objdump-16 || echo /usr/lib/llvm-16/bin/llvm-objdump)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Per kernel of artifact NAME: name, smmla count, sdot count (the function's instructions
# until the next symbol), into NAME.kernels.
kernels() {
  "$objdump" -d --no-show-raw-insn --mattr=+dotprod,+i8mm,+fullfp16,+fp16fml,+bf16 "$work/$1/model.o" \
    > "$work/$1.dis"
  awk '/^[0-9a-f]+ </ { if (f != "") print f, m, d; f = ($2 ~ /^<k\.(rms_)?matmul.*_q8_/) ? $2 : ""; m = d = 0 }
       /\tsmmla\t/ { ++m } /\tsdot\t/ { ++d } END { if (f != "") print f, m, d }' "$work/$1.dis" > "$work/$1.kernels"
  sed 's/^/  /' "$work/$1.kernels"
  [[ -s $work/$1.kernels ]] || { echo "FAIL: no int8-activation matmul kernels (k.*matmul*_q8_*) in $1/model.o" >&2; exit 1; }
}
"$kiln" compile "$model" --profile=sm8750 --ctx 512 --pack-weights=off -o "$work/rows" --quiet
kernels rows
bad=$(awk '$1 !~ /_q8_i8mm/ || $2 == 0 || $3 == 0 { print $1 }' "$work/rows.kernels")
[[ -z $bad ]] || { echo "FAIL: --pack-weights=off: not the i8mm variant, or without smmla or sdot: $bad" >&2; exit 1; }
"$kiln" compile "$model" --profile=sm8750 --ctx 512 -o "$work/packed" --quiet
kernels packed
bad=$(awk '$1 !~ /x16_q8_dotprod/ || $3 == 0 { print $1 }' "$work/packed.kernels")
[[ -z $bad ]] || { echo "FAIL: packed: not the x16 dotprod variant, or without sdot: $bad" >&2; exit 1; }
echo "PASS: sm8750: $(wc -l < "$work/rows.kernels") matmul kernels with smmla and sdot (--pack-weights=off)," \
     "$(wc -l < "$work/packed.kernels") packed ones with sdot"
