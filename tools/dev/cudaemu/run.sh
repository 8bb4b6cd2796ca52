#!/usr/bin/env bash
# run.sh — the bytes of the CUDA delta kernels (core/src/cuda/delta.cu)
# without a GPU: the file compiled as host C++ with emu.h, checked against
# the host codec by delta_same_bytes.cpp.  From the project root, with a
# build directory holding the delta objects (any build: the host codec):
#   tools/dev/cudaemu/run.sh [BUILD [DENSITIES]]     (~1 min per density)
# Bytes only: the GPU run (tools/dev/gpu/delta.sh) is still the test.
set -euo pipefail
build=${1:-build}
here=tools/dev/cudaemu
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 "$here/xform.py" core/src/cuda/delta.cu "$tmp/delta_emu.cpp"
g++ -std=c++20 -O1 -pthread -Wno-subobject-linkage -I"$here" -I"$tmp" -Icore/src/delta -Icore/src/include -Icore/include \
    -o "$tmp/same_bytes" "$here/delta_same_bytes.cpp" "$here/emu.cpp" \
    "$build"/core/librf_delta.a.p/*.o "$build"/core/librf_delta_avx2.a.p/*.o \
    "$build"/core/librf_delta_avx512.a.p/*.o -L"$build/core" -lrefit
LD_LIBRARY_PATH="$build/core" "$tmp/same_bytes" ${2:-}
