#!/usr/bin/env bash
# pack.sh — put the binaries of a CUDA-enabled build that the GPU runs need
# (tools/dev/gpu/cuda_ipc.sh: the cuda_ipc transport; tools/dev/gpu/devmem.sh:
# device pointers in the engine) into devbuild/ (or the directory given
# second), and nothing else, so that ../shared/hooks/device-pack can walk it
# (that hook runs ldd on every file and stops on a meson build dir's objects).
#
#   tools/dev/gpu/pack.sh BUILD_DIR [OUT_DIR]      (from the project root)
#
# Layout of OUT_DIR (default devbuild):
#   refit  librefit.so*  plugins/<kind>/<name>/refit-<kind>-<name>.so
#   tests/transport/test_transport  tests/transport/tp_peer
#   tests/cuda/test-cuda-devmem  tests/cuda/test-cuda-fp8   (when built)
# Then: ../shared/hooks/device-pack devbuild, and on the GPU machine
# (from the project root): source .devpack/env.sh && tools/dev/gpu/cuda_ipc.sh
# (and DEVBUILD=$REFIT_BUILD tools/dev/gpu/devmem.sh).
set -euo pipefail
die() { echo "pack.sh: $*" >&2; exit 2; }
[ $# -ge 1 ] || die "usage: tools/dev/gpu/pack.sh BUILD_DIR [OUT_DIR]"
top=$(git rev-parse --show-toplevel)
cd "$top"
build=${1%/}
out=${2:-devbuild}
out=${out%/}
[ -f "$build/build.ninja" ] || die "'$build' is not a meson build directory"
case "$(realpath -m "$out")" in
  "$(realpath -m "$build")"|"$(realpath -m "$build")"/*|"$top") die "OUT_DIR must be a directory of its own" ;;
esac
# Current binaries: build what the run uses (and nothing slow besides).
ninja -C "$build" tools/refit/refit tests/transport/test_transport tests/transport/tp_peer \
  plugins/transport/cuda_ipc/refit-transport-cuda_ipc.so >/dev/null ||
  die "ninja in '$build' failed (is it configured with CUDA? meson's summary says 'cuda: True')"
ninja -C "$build" >/dev/null || die "ninja in '$build' failed"
so="$build/plugins/transport/cuda_ipc/refit-transport-cuda_ipc.so"
[ -f "$so" ] || die "$so missing: '$build' was configured without CUDA"
rm -rf "$out"
mkdir -p "$out/plugins" "$out/tests/transport"
# -L: symbolic links become files (device-pack copies regular files only).
cp -L "$build/tools/refit/refit" "$out/refit"
for f in "$build"/core/librefit.so*; do
  [ -d "$f" ] && continue # librefit.so.p: meson's object directory
  cp -L "$f" "$out/$(basename "$f")"
done
ls "$out"/librefit.so* >/dev/null 2>&1 || die "no librefit.so in $build/core"
n=0
while IFS= read -r -d '' f; do
  rel=${f#"$build/plugins/"}
  mkdir -p "$out/plugins/$(dirname "$rel")"
  cp -L "$f" "$out/plugins/$rel"
  n=$((n + 1))
done < <(find "$build/plugins" -mindepth 3 -maxdepth 3 -name 'refit-*.so' \( -type f -o -type l \) -print0)
cp -L "$build/tests/transport/test_transport" "$build/tests/transport/tp_peer" "$out/tests/transport/"
extra=""
for t in test-cuda-devmem test-cuda-fp8 test-cuda-dprog; do
  if [ -f "$build/tests/cuda/$t" ]; then
    mkdir -p "$out/tests/cuda"
    cp -L "$build/tests/cuda/$t" "$out/tests/cuda/"
    extra="$extra, $t"
  fi
done
# Nothing but ELF files may be in it.
while IFS= read -r -d '' f; do
  file -b "$f" | grep -q '^ELF' || die "not a binary: $f"
done < <(find "$out" -type f -print0)
echo "pack.sh: $out/ has refit, $(ls "$out"/librefit.so* | wc -l) librefit file(s), $n plugins, test_transport, tp_peer$extra ($(du -sh "$out" | cut -f1))"
echo "next: ../shared/hooks/device-pack $out   (or /work/shared/hooks/device-pack $out)"
echo "then on the GPU machine: source .devpack/env.sh && tools/dev/gpu/cuda_ipc.sh"
echo "                    and: source .devpack/env.sh && DEVBUILD=\$REFIT_BUILD tools/dev/gpu/devmem.sh"
