#!/usr/bin/env bash
# scripts/build-runtime.sh TRIPLE|PROFILE OUTDIR — builds libkiln_rt.a for a target, without
# LLVM: OUTDIR/lib/libkiln_rt.a and OUTDIR/include/kiln/{kiln.h,model_abi.h}, which is all
# an app needs next to the artifact of `kiln compile --profile=PROFILE`.
#
#   scripts/build-runtime.sh sm8650 out/rt-arm64                   # a profile (profiles/*.json)
#   scripts/build-runtime.sh aarch64-linux-gnu out/rt-arm64        # or a triple
#   scripts/build-runtime.sh profiles/my-board.json out/rt-board   # or a profile file
#
# aarch64 uses cmake/aarch64-linux-gnu.cmake (Debian's g++-aarch64-linux-gnu); the host's
# own architecture builds natively. The build folder is OUTDIR/build, reused next time.
set -euo pipefail
usage() { echo "usage: $0 TRIPLE|PROFILE OUTDIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
target=$1 out=$2
root=$(cd "$(dirname "$0")/.." && pwd)

# A profile name or file -> its triple.
profile=""
if [[ -f $target ]]; then profile=$target
elif [[ -f $root/profiles/$target.json ]]; then profile=$root/profiles/$target.json
fi
if [[ -n $profile ]]; then
  triple=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["triple"])' "$profile") ||
    { echo "$0: $profile: cannot read the field 'triple'" >&2; exit 1; }
else
  triple=$target
fi
host_arch=$(uname -m)
[[ $triple == detect ]] && triple=$host_arch
arch=${triple%%-*}

cmake_args=(-S "$root/cmake/runtime-only" -B "$out/build" -DCMAKE_INSTALL_PREFIX="$(realpath -m "$out")")
command -v ninja >/dev/null && cmake_args+=(-G Ninja)
case $arch in
  "$host_arch") ;;
  aarch64|arm64)
    command -v aarch64-linux-gnu-g++ >/dev/null ||
      { echo "$0: aarch64-linux-gnu-g++ not found (apt-get install g++-aarch64-linux-gnu)" >&2; exit 1; }
    cmake_args+=(-DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-linux-gnu.cmake") ;;
  *) echo "$0: no toolchain for '$triple' (known: $host_arch, aarch64)" >&2; exit 1 ;;
esac

if [[ -f $out/build/CMakeCache.txt ]] && ! grep -q "^CMAKE_TOOLCHAIN_FILE" "$out/build/CMakeCache.txt" &&
   [[ $arch != "$host_arch" ]]; then
  echo "$0: $out/build was configured for another target; remove it" >&2; exit 1
fi
cmake "${cmake_args[@]}" >/dev/null
cmake --build "$out/build" -j "${KILN_JOBS:-2}"
cmake --install "$out/build" >/dev/null
echo "$(realpath "$out")/lib/libkiln_rt.a ($triple)"
