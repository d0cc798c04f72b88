#!/usr/bin/env bash
# tests/cross/qmatmul_qemu_test.sh SRC_DIR WORK_DIR CHECK — an AArch64 kernel check run
# under `qemu-aarch64 -cpu max` (this machine has no sdot or smmla): tests/cross/CHECK.c
# (qmatmul_i8mm_check: the smmla kernels; qmatmul_packed_check: the packed sdot kernels),
# which includes codegen/kernels/qmatmul.c, is built with clang-16 for aarch64 (the
# compiler the kernel bitcode comes from, same -ffp-contract=on) and linked with
# aarch64-linux-gnu-gcc. What it checks: the header of CHECK.c.
set -euo pipefail
src=$1 work=$2 check=$3
kernels=$src/codegen/kernels
clang=$(command -v clang-16 || echo /usr/lib/llvm-16/bin/clang)
sysroot=/usr/aarch64-linux-gnu
for tool in qemu-aarch64 aarch64-linux-gnu-gcc "$clang"; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not found (scripts/setup.sh installs it)" >&2; exit 1; }
done
mkdir -p "$work"
flags=(--target=aarch64-linux-gnu -O2 -std=c11 -ffp-contract=on -fno-math-errno -Wall -Wextra
       -Wno-unused-parameter -Wno-psabi -Werror -I"$kernels")
"$clang" "${flags[@]}" -isystem "$sysroot/include" -c "$src/tests/cross/$check.c" -o "$work/$check.o"
# The float kernels qmatmul.c falls back to (K too large for its stack buffer).
"$clang" "${flags[@]}" -ffreestanding -c "$kernels/matmul.c" -o "$work/matmul-$check.o"
aarch64-linux-gnu-gcc "$work/$check.o" "$work/matmul-$check.o" -lm -o "$work/$check"
qemu-aarch64 -cpu max -L "$sysroot" "$work/$check"
