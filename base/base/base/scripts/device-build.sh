#!/usr/bin/env bash
# Builds longkv with CUDA on a machine that has nvcc, cmake and ninja but no
# network and none of the Debian packages the build needs: they come as .deb
# files in a carried folder (default .devdeps/), unpacked into a private
# prefix. Prepare the folder on a Debian 12 machine with network:
#   mkdir -p .devdeps && cd .devdeps && apt-get download libopenblas0-pthread \
#     libopenblas-pthread-dev libopenblas-dev libopenblas0 nlohmann-json3-dev \
#     libcli11-dev libgtest-dev googletest libgfortran5 libquadmath0
# Usage: scripts/device-build.sh [DEBS_DIR] [BUILD_DIR] [targets...]
# Afterwards: source "$BUILD_DIR/env.sh" for LD_LIBRARY_PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
debs=${1:-.devdeps}
build=${2:-build-device}
shift $(( $# > 2 ? 2 : $# ))
targets=("$@")
((${#targets[@]})) || targets=(longkv-cli longkv_tests)
prefix=/tmp/longkv-deps
mkdir -p "$prefix"
for f in "$debs"/*.deb; do dpkg -x "$f" "$prefix"; done
multi=$prefix/usr/lib/x86_64-linux-gnu
# Debian's openblas .pc and libblas symlinks point into /usr: repoint them.
for pc in "$multi"/pkgconfig/*.pc "$multi"/openblas-pthread/pkgconfig/*.pc; do
  [[ -f $pc ]] && sed -i "s|=/usr/|=$prefix/usr/|" "$pc"
done
ln -sf openblas-pthread/libopenblas.so.0 "$multi/libopenblas.so.0"
ln -sf openblas-pthread/libopenblas.so "$multi/libopenblas.so"
export PKG_CONFIG_PATH=$multi/pkgconfig:$multi/openblas-pthread/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
export LD_LIBRARY_PATH=$multi:$multi/openblas-pthread${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "export LD_LIBRARY_PATH=$LD_LIBRARY_PATH" > /tmp/longkv-deps/env.sh
shared=${LONGKV_SHARED:-$PWD/../shared}
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLONGKV_CUDA="${LONGKV_CUDA:-ON}" -DLONGKV_NATIVE=OFF \
  -DCMAKE_PREFIX_PATH="$prefix/usr" -DLONGKV_SHARED_DIR="$shared" >/dev/null
mkdir -p "$build" && cp /tmp/longkv-deps/env.sh "$build/env.sh"
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}"
