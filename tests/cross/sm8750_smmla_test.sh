#!/usr/bin/env bash
# tests/cross/sm8750_smmla_test.sh KILN MODEL — `kiln compile --profile=sm8750` (+dotprod,
# +i8mm): every int8-activation matmul kernel in model.o (k.matmul_*_q8_*, the fused
# k.matmul_swiglu_* and k.rms_matmul_*) is the i8mm variant and its code has both smmla
# (pairs of rows of x) and sdot (a row of x alone: decode). Disassembly only; running the
# code is aarch64_test.sh's and qmatmul_i8mm_test.sh's job.
set -euo pipefail
kiln=$1 model=$2
objdump=$(command -v llvm-objdump-16 || echo /usr/lib/llvm-16/bin/llvm-objdump)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$kiln" compile "$model" --profile=sm8750 --ctx 512 -o "$work/arm" --quiet
"$objdump" -d --no-show-raw-insn --mattr=+dotprod,+i8mm,+fullfp16,+fp16fml,+bf16 "$work/arm/model.o" \
  > "$work/arm.dis"
# Per kernel: name, smmla count, sdot count (the function's instructions until the next symbol).
awk '/^[0-9a-f]+ </ { if (f != "") print f, m, d; f = ($2 ~ /^<k\.(rms_)?matmul.*_q8_/) ? $2 : ""; m = d = 0 }
     /\tsmmla\t/ { ++m } /\tsdot\t/ { ++d } END { if (f != "") print f, m, d }' "$work/arm.dis" > "$work/kernels"
sed 's/^/  /' "$work/kernels"
n=$(wc -l < "$work/kernels")
[[ $n -gt 0 ]] || { echo "FAIL: no int8-activation matmul kernels (k.*matmul*_q8_*) in model.o" >&2; exit 1; }
bad=$(awk '$1 !~ /_q8_i8mm/ || $2 == 0 || $3 == 0 { print $1 }' "$work/kernels")
[[ -z $bad ]] || { echo "FAIL: not the i8mm variant, or without smmla or sdot: $bad" >&2; exit 1; }
echo "PASS: $n matmul kernels on sm8750, each with smmla and sdot"
