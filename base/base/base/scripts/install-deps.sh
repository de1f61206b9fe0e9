#!/usr/bin/env bash
# Debian 12 packages longkv needs to build (and, with --test, to test).
# Run as root (or through sudo). Idempotent.
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config libopenblas-dev nlohmann-json3-dev libcli11-dev)
if [[ "${1:-}" == "--test" ]]; then
  # GoogleTest, the SentencePiece library (tokenizer oracle), Google
  # Benchmark, clang + its sanitizer/fuzzer runtime for the fuzz targets.
  pkgs+=(libgtest-dev libgmock-dev libsentencepiece-dev libbenchmark-dev clang libclang-rt-14-dev)
fi
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
