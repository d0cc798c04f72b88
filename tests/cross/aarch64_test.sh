#!/usr/bin/env bash
# tests/cross/aarch64_test.sh KILN MODEL RUNTIME_DIR HOST_RT — the sm8650 profile end to end:
#
#   1. `kiln compile --profile=sm8650` gives an AArch64 model.o / libmodel.a;
#   2. libkiln_rt.a is cross-built (scripts/build-runtime.sh sm8650 RUNTIME_DIR; reused);
#   3. examples/generate.c is linked with aarch64-linux-gnu-g++ and run under
#      `qemu-aarch64 -cpu max`, and natively against a host compile (HOST_RT: the host's
#      libkiln_rt.a), both writing the logits they sample from (KILN_GENERATE_LOGITS).
#      sm8650 has +i8mm, so its matmuls are the smmla kernels, whose float sums run in
#      another order than the host's (qmatmul.c): at every step the logits must be no
#      further from the host's than twice the host's own int8 rounding (its logits with
#      --float-activations; why: compare_logits.py)
#      at every step and give the same greedy tokens, unless the host's two best logits
#      were closer than the builds' difference (compare_logits.py says so if it happens);
#      the text must also be `kiln run`'s on the host compile;
#   4. the disassembly of model.o (llvm-objdump-16) uses NEON: fmla on v-registers, every
#      matmul kernel (k.matmul_*) uses sdot and smmla (int8 activations, +dotprod +i8mm),
#      and no SVE (the Snapdragon parts do not enable it).
set -euo pipefail
kiln=$1 model=$2 rt=$3 host_rt=$4
src=$(cd "$(dirname "$0")/../.." && pwd)
prompt="What is the capital of France? Answer in one sentence."
n_tokens=${KILN_CROSS_TOKENS:-32}
objdump=$(command -v llvm-objdump-16 || echo /usr/lib/llvm-16/bin/llvm-objdump)
sysroot=/usr/aarch64-linux-gnu
for tool in qemu-aarch64 aarch64-linux-gnu-g++ "$objdump"; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool not found (scripts/setup.sh installs it)" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
secs() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
e_machine() { od -An -tu2 -j18 -N2 "$1" | tr -d ' '; }  # ELF e_machine: 183 = AArch64

# 1. Both compiles.
t0=$(secs)
"$kiln" compile "$model" --profile=sm8650 --ctx 512 -o "$work/arm" --quiet
t1=$(secs)
"$kiln" compile "$model" --ctx 512 -o "$work/host" --quiet
echo "kiln compile --profile=sm8650: $(elapsed "$t0" "$t1") s"
[[ $(e_machine "$work/arm/model.o") == 183 ]] ||
  { echo "FAIL: model.o is not an AArch64 ELF object (e_machine != 183)" >&2; exit 1; }

# 2. The runtime for the phone.
"$src/scripts/build-runtime.sh" sm8650 "$rt" >/dev/null

# 3. The example app, cross-linked, under qemu; against kiln run on the host artifact.
cmake -S "$src/examples" -B "$work/app" -DCMAKE_TOOLCHAIN_FILE="$src/cmake/aarch64-linux-gnu.cmake" \
  -DKILN_ARTIFACT_DIR="$work/arm" -DKILN_RUNTIME_LIB="$rt/lib/libkiln_rt.a" \
  -DKILN_INCLUDE_DIR="$rt/include" >/dev/null
cmake --build "$work/app" >/dev/null
[[ $(e_machine "$work/app/generate") == 183 ]] || { echo "FAIL: generate is not an AArch64 program" >&2; exit 1; }
t0=$(secs)
KILN_GENERATE_LOGITS=$work/arm.logits qemu-aarch64 -cpu max -L "$sysroot" "$work/app/generate" "$work/arm/model.kiln" "$prompt" "$n_tokens" \
  > "$work/arm.txt" 2> "$work/arm.err" || { cat "$work/arm.err" >&2; echo "FAIL: generate under qemu" >&2; exit 1; }
t1=$(secs)
"$kiln" run "$model" --artifact "$work/host" --ctx 512 --chat --prompt "$prompt" --max-tokens "$n_tokens" \
  > "$work/host.txt" 2>/dev/null
t2=$(secs)
echo "aarch64 under qemu ($(elapsed "$t0" "$t1") s): $(cat "$work/arm.txt")"
echo "host kiln run      ($(elapsed "$t1" "$t2") s): $(cat "$work/host.txt")"
sed 's/^/  qemu stderr: /' "$work/arm.err"
# The same app on the host, for its logits.
cmake -S "$src/examples" -B "$work/app-host" -DKILN_ARTIFACT_DIR="$work/host" \
  -DKILN_RUNTIME_LIB="$host_rt" -DKILN_INCLUDE_DIR="$src/runtime/include" >/dev/null
cmake --build "$work/app-host" >/dev/null
KILN_GENERATE_LOGITS=$work/host.logits "$work/app-host/generate" "$work/host/model.kiln" "$prompt" \
  "$n_tokens" > "$work/host-app.txt" 2>/dev/null
if ! diff <(tr -d '\n' < "$work/host-app.txt") <(tr -d '\n' < "$work/host.txt"); then
  echo "FAIL: the example app on the host and kiln run generate different text" >&2
  exit 1
fi
# The yardstick: the host build with float activations.
"$kiln" compile "$model" --ctx 512 --float-activations -o "$work/host-f32" --quiet
cmake -S "$src/examples" -B "$work/app-host-f32" -DKILN_ARTIFACT_DIR="$work/host-f32" \
  -DKILN_RUNTIME_LIB="$host_rt" -DKILN_INCLUDE_DIR="$src/runtime/include" >/dev/null
cmake --build "$work/app-host-f32" >/dev/null
KILN_GENERATE_LOGITS=$work/host-f32.logits "$work/app-host-f32/generate" "$work/host-f32/model.kiln" \
  "$prompt" "$n_tokens" > /dev/null 2>&1
n_vocab=$(sed -n 's/^#define KILN_MODEL_N_VOCAB \([0-9]*\).*/\1/p' "$work/host/model.h")
cmp_out=$(python3 "$src/tests/cross/compare_logits.py" "$work/arm.logits" "$work/host.logits" \
  "$work/host-f32.logits" "$n_vocab") ||
  { echo "$cmp_out" >&2; exit 1; }
echo "$cmp_out"
if [[ $cmp_out != *"near tie"* ]] && ! diff <(tr -d '\n' < "$work/arm.txt") <(tr -d '\n' < "$work/host.txt"); then
  echo "FAIL: the AArch64 build and the host build generate different text" >&2
  exit 1
fi
# (Whether the answer is right is e2e.cli_chat_answers' job; this test is about the target.)
[[ -s $work/arm.txt && $(tr -d ' \n' < "$work/arm.txt") != "" ]] || { echo "FAIL: no text" >&2; exit 1; }

# 4. What the AArch64 code is made of.
"$objdump" -d --no-show-raw-insn --mattr=+dotprod,+i8mm,+fullfp16,+fp16fml,+bf16,+sve "$work/arm/model.o" \
  > "$work/arm.dis"
count() { grep -cE "$1" "$work/arm.dis" || true; }
fmla_v=$(count $'\tfmla\tv[0-9]+\\.')
sdot=$(count $'\tsdot\t')
smmla=$(count $'\tsmmla\t')
sve=$(count $'\t(ptrue|whilelo|ld1w\t\\{ ?z)')
echo "disassembly of model.o: fmla(v) $fmla_v, sdot $sdot, smmla $smmla, SVE $sve," \
     "instructions $(grep -cE '^ +[0-9a-f]+:' "$work/arm.dis")"
[[ $fmla_v -gt 0 ]] || { echo "FAIL: no NEON fmla on v-registers in model.o" >&2; exit 1; }
# Per matmul kernel: the function's instructions until the next symbol.
no_sdot=$(awk '/^[0-9a-f]+ </ { if (f != "" && !(d && m)) print f; f = ($2 ~ /^<k\.matmul/) ? $2 : ""; d = m = 0 }
               /\tsdot\t/ { d = 1 } /\tsmmla\t/ { m = 1 } END { if (f != "" && !(d && m)) print f }' "$work/arm.dis")
n_matmul=$(grep -cE '^[0-9a-f]+ <k\.matmul' "$work/arm.dis" || true)
echo "matmul kernels: $n_matmul; without sdot and smmla: ${no_sdot:-none}"
[[ $n_matmul -gt 0 ]] || { echo "FAIL: no matmul kernel symbols (k.matmul_*) in model.o" >&2; exit 1; }
[[ -z $no_sdot ]] || { echo "FAIL: matmul kernels without sdot and smmla on sm8650: $no_sdot" >&2; exit 1; }
[[ $sve -eq 0 ]] || { echo "FAIL: SVE instructions in code for an SoC without SVE" >&2; exit 1; }
echo "PASS: AArch64 (qemu) logits within tolerance of the host's, same text; NEON fmla, sdot and smmla in every matmul, no SVE"
