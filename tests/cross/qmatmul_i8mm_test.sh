#!/usr/bin/env bash
# tests/cross/qmatmul_i8mm_test.sh SRC_DIR WORK_DIR — the smmla (+i8mm) kernels' numerics
# under `qemu-aarch64 -cpu max` (this machine has no i8mm): qmatmul_i8mm_check.c, which
# includes codegen/kernels/qmatmul.c, is built with clang-16 for aarch64 (the compiler
# the kernel bitcode comes from, same -ffp-contract=on) and linked with
# aarch64-linux-gnu-gcc. What it checks: the header of qmatmul_i8mm_check.c.
set -euo pipefail
src=$1 work=$2
kernels=$src/codegen/kernels
clang=$(command -v clang-16 || echo /usr/lib/llvm-16/bin/clang)
sysroot=/usr/aarch64-linux-gnu
for tool in qemu-aarch64 aarch64-linux-gnu-gcc "$clang"; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not found (scripts/setup.sh installs it)" >&2; exit 1; }
done
mkdir -p "$work"
flags=(--target=aarch64-linux-gnu -O2 -std=c11 -ffp-contract=on -fno-math-errno -Wall -Wextra
       -Wno-unused-parameter -Wno-psabi -Werror -I"$kernels")
"$clang" "${flags[@]}" -isystem "$sysroot/include" -c "$src/tests/cross/qmatmul_i8mm_check.c" -o "$work/check.o"
# The float kernels qmatmul.c falls back to (K too large for its stack buffer).
"$clang" "${flags[@]}" -ffreestanding -c "$kernels/matmul.c" -o "$work/matmul.o"
aarch64-linux-gnu-gcc "$work/check.o" "$work/matmul.o" -lm -o "$work/qmatmul_i8mm_check"
qemu-aarch64 -cpu max -L "$sysroot" "$work/qmatmul_i8mm_check"
