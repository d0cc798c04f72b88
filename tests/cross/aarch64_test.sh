#!/usr/bin/env bash
# tests/cross/aarch64_test.sh KILN MODEL RUNTIME_DIR HOST_RT — the sm8650 profile end to end:
#
#   1. `kiln compile --profile=sm8650` gives an AArch64 model.o / libmodel.a, twice: as
#      compiled by default (pack-weights: 16-row interleaved weights, the packed sdot
#      kernels) and with --pack-weights=off (GGUF rows: the smmla kernels, as sm8650 has
#      +i8mm); the host compiles the same two ways;
#   2. libkiln_rt.a is cross-built (scripts/build-runtime.sh sm8650 RUNTIME_DIR; reused);
#   3. examples/generate.c is linked with aarch64-linux-gnu-g++ and run under
#      `qemu-aarch64 -cpu max` for both AArch64 builds, and natively against the host
#      compiles (HOST_RT: the host's libkiln_rt.a), all writing the logits they sample
#      from (KILN_GENERATE_LOGITS):
#      - packed: every variant of the packed kernels does the reference's float steps
#        (qmatmul.c), so the AArch64 logits must be the host's, byte for byte;
#      - unpacked: the smmla kernels sum their floats in another order than the host's,
#        so at every step the logits must be no further from the host's than twice the
#        host's own int8 rounding (its logits with --float-activations; why:
#        compare_logits.py) and give the same greedy tokens, unless the host's two best
#        logits were closer than the builds' difference (compare_logits.py says so);
#      and the text must be `kiln run`'s on the host compile;
#   4. the disassembly (llvm-objdump-16) uses NEON: fmla on v-registers; every matmul
#      kernel (k.matmul_*) of the packed build uses sdot, of the unpacked one sdot and
#      smmla; no SVE in either (the Snapdragon parts do not enable it).
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

# 1. The compiles: AArch64 and host, packed (the default) and unpacked, and the yardstick.
t0=$(secs)
"$kiln" compile "$model" --profile=sm8650 --ctx 512 -o "$work/arm" --quiet
t1=$(secs)
echo "kiln compile --profile=sm8650: $(elapsed "$t0" "$t1") s"
"$kiln" compile "$model" --profile=sm8650 --ctx 512 --pack-weights=off -o "$work/arm-rows" --quiet
"$kiln" compile "$model" --ctx 512 -o "$work/host" --quiet
"$kiln" compile "$model" --ctx 512 --pack-weights=off -o "$work/host-rows" --quiet
"$kiln" compile "$model" --ctx 512 --float-activations -o "$work/host-f32" --quiet
for a in arm arm-rows; do
  [[ $(e_machine "$work/$a/model.o") == 183 ]] ||
    { echo "FAIL: $a/model.o is not an AArch64 ELF object (e_machine != 183)" >&2; exit 1; }
done

# 2. The runtime for the phone.
"$src/scripts/build-runtime.sh" sm8650 "$rt" >/dev/null

# 3. The example app for each artifact: AArch64 ones cross-linked and run under qemu,
# host ones natively; each writes its text to NAME.txt and its logits to NAME.logits.
run_app() {  # NAME
  local a=$1 args=() runner=()
  if [[ $a == arm* ]]; then
    args=(-DCMAKE_TOOLCHAIN_FILE="$src/cmake/aarch64-linux-gnu.cmake" -DKILN_RUNTIME_LIB="$rt/lib/libkiln_rt.a"
          -DKILN_INCLUDE_DIR="$rt/include")
    runner=(qemu-aarch64 -cpu max -L "$sysroot")
  else
    args=(-DKILN_RUNTIME_LIB="$host_rt" -DKILN_INCLUDE_DIR="$src/runtime/include")
  fi
  cmake -S "$src/examples" -B "$work/app-$a" -DKILN_ARTIFACT_DIR="$work/$a" "${args[@]}" >/dev/null
  cmake --build "$work/app-$a" >/dev/null
  if [[ $a == arm* && $(e_machine "$work/app-$a/generate") != 183 ]]; then
    echo "FAIL: app-$a/generate is not an AArch64 program" >&2; exit 1
  fi
  local t0 t1
  t0=$(secs)
  KILN_GENERATE_LOGITS=$work/$a.logits "${runner[@]}" "$work/app-$a/generate" "$work/$a/model.kiln" \
    "$prompt" "$n_tokens" > "$work/$a.txt" 2> "$work/$a.err" ||
    { cat "$work/$a.err" >&2; echo "FAIL: generate ($a)" >&2; exit 1; }
  t1=$(secs)
  echo "$a ($(elapsed "$t0" "$t1") s): $(tr -d '\n' < "$work/$a.txt")"
}
for a in arm arm-rows host host-rows host-f32; do run_app "$a"; done
"$kiln" run "$model" --artifact "$work/host" --ctx 512 --chat --prompt "$prompt" --max-tokens "$n_tokens" \
  > "$work/kiln-run.txt" 2>/dev/null
same_text() { diff <(tr -d '\n' < "$1") <(tr -d '\n' < "$2") >/dev/null; }
same_text "$work/host.txt" "$work/kiln-run.txt" ||
  { echo "FAIL: the example app on the host and kiln run generate different text" >&2; exit 1; }
# Packed: the same bytes.
cmp -s "$work/arm.logits" "$work/host.logits" ||
  { echo "FAIL: the packed AArch64 build's logits are not the packed host build's, byte for byte" >&2; exit 1; }
same_text "$work/arm.txt" "$work/host.txt" ||
  { echo "FAIL: the packed AArch64 build and the host build generate different text" >&2; exit 1; }
echo "packed: AArch64 logits = host logits, byte for byte ($(($(stat -c %s "$work/arm.logits") / 4)) floats)"
# Unpacked (smmla): within the host's own int8 rounding.
n_vocab=$(sed -n 's/^#define KILN_MODEL_N_VOCAB \([0-9]*\).*/\1/p' "$work/host/model.h")
cmp_out=$(python3 "$src/tests/cross/compare_logits.py" "$work/arm-rows.logits" "$work/host-rows.logits" \
  "$work/host-f32.logits" "$n_vocab") ||
  { echo "$cmp_out" >&2; exit 1; }
echo "unpacked: $cmp_out"
if [[ $cmp_out != *"near tie"* ]] && ! same_text "$work/arm-rows.txt" "$work/host-rows.txt"; then
  echo "FAIL: the unpacked AArch64 build and the unpacked host build generate different text" >&2
  exit 1
fi
# (Whether the answer is right is e2e.cli_chat_answers' job; this test is about the target.)
[[ -s $work/arm.txt && $(tr -d ' \n' < "$work/arm.txt") != "" ]] || { echo "FAIL: no text" >&2; exit 1; }

# 4. What the AArch64 code is made of.
disasm_check() {  # NAME REQUIRED-IN-EVERY-MATMUL (sdot | sdot+smmla)
  local a=$1 need=$2 dis=$work/$1.dis
  "$objdump" -d --no-show-raw-insn --mattr=+dotprod,+i8mm,+fullfp16,+fp16fml,+bf16,+sve "$work/$a/model.o" > "$dis"
  count() { grep -cE "$1" "$dis" || true; }
  local fmla_v sdot smmla sve n_matmul bad
  fmla_v=$(count $'\tfmla\tv[0-9]+\\.')
  sdot=$(count $'\tsdot\t')
  smmla=$(count $'\tsmmla\t')
  sve=$(count $'\t(ptrue|whilelo|ld1w\t\\{ ?z)')
  echo "disassembly of $a/model.o: fmla(v) $fmla_v, sdot $sdot, smmla $smmla, SVE $sve," \
       "instructions $(grep -cE '^ +[0-9a-f]+:' "$dis")"
  [[ $fmla_v -gt 0 ]] || { echo "FAIL: no NEON fmla on v-registers in $a/model.o" >&2; exit 1; }
  # Per matmul kernel: the function's instructions until the next symbol.
  bad=$(awk -v need="$need" '
    function done_fn() { if (f != "" && !(d && (m || need == "sdot"))) print f }
    /^[0-9a-f]+ </ { done_fn(); f = ($2 ~ /^<k\.matmul/) ? $2 : ""; d = m = 0 }
    /\tsdot\t/ { d = 1 } /\tsmmla\t/ { m = 1 } END { done_fn() }' "$dis")
  n_matmul=$(grep -cE '^[0-9a-f]+ <k\.matmul' "$dis" || true)
  echo "  matmul kernels: $n_matmul; without $need: ${bad:-none}"
  [[ $n_matmul -gt 0 ]] || { echo "FAIL: no matmul kernel symbols (k.matmul_*) in $a/model.o" >&2; exit 1; }
  [[ -z $bad ]] || { echo "FAIL: matmul kernels without $need in $a/model.o: $bad" >&2; exit 1; }
  [[ $sve -eq 0 ]] || { echo "FAIL: SVE instructions in code for an SoC without SVE" >&2; exit 1; }
}
disasm_check arm sdot
disasm_check arm-rows sdot+smmla
echo "PASS: AArch64 (qemu) packed logits = host's, unpacked within tolerance, same text; NEON fmla, sdot (and smmla unpacked) in every matmul, no SVE"
