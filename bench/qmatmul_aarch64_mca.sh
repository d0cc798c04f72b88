#!/usr/bin/env bash
# bench/qmatmul_aarch64_mca.sh [CPU] — a static estimate (llvm-mca-16, no hardware: this
# machine is x86 and qemu's timings say nothing about a phone) of the aarch64 int8 matmul
# inner block: cycles per block of 32 for 2 weight rows x R rows of x, sdot variant vs
# smmla variant, R = 8 (prefill) and R = 1 (decode), on CPU (default neoverse-v2, the
# sm8750 profile's tuning; cortex-x3 for sm8650). Writes bench/results/qmatmul_aarch64_mca.json.
# It is llvm-mca's scheduling model of straight-line code, not a measurement: no memory
# stalls (decode is bound by memory on a phone), no loop overhead.
set -euo pipefail
cpu=${1:-neoverse-v2}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results=()
for R in 8 1; do
  clang-16 --target=aarch64-linux-gnu -mcpu="$cpu" -march=armv8.6-a+dotprod+i8mm -O2 -ffreestanding -nostdlibinc \
    -ffp-contract=on -fno-math-errno -Wno-psabi -DMCA_R=$R -I"$root/codegen/kernels" \
    -S "$root/bench/qmatmul_aarch64_mca.c" -o "$work/r$R.s"
  for v in dotprod i8mm; do
    # The region between the markers, without directives and labels (straight-line code).
    awk -v v="$v" '/LLVM-MCA-BEGIN/ { on = ($NF == v); next } /LLVM-MCA-END/ { on = 0 }
                   on && !/^[ \t]*(\/\/|\.)/ && !/^\.L/' "$work/r$R.s" > "$work/$v$R.s"
    if grep -qE '^\s*(b|b\.[a-z]+|cbz|cbnz|tbz|tbnz)\s' "$work/$v$R.s"; then
      echo "$0: the $v region for R=$R has a branch: not straight-line code" >&2; exit 1
    fi
    c=$(llvm-mca-16 -mtriple=aarch64 -mcpu="$cpu" -mattr=+dotprod,+i8mm -iterations=200 "$work/$v$R.s" |
        sed -n 's/^Block RThroughput: *//p')
    echo "R=$R $v: $c cycles per block (2 weight rows x $R rows of x)"
    results+=("{\"R\": $R, \"variant\": \"$v\", \"cycles_per_block\": $c}")
  done
done
out=$root/bench/results/qmatmul_aarch64_mca.json
printf '{"tool": "llvm-mca-16 (static estimate, not a measurement)", "cpu": "%s", "k": 576, "weights": "q4_1", "results": [%s]}\n' \
  "$cpu" "$(IFS=,; echo "${results[*]}")" > "$out"
echo "wrote $out"
