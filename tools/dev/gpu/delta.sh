#!/usr/bin/env bash
# delta.sh — the delta codec's CUDA kernels (core/src/cuda/delta.cu) on a GPU
# machine: correctness against the host codec on random data, then timing.
#
# Here (a CUDA-enabled build: meson's summary says 'cuda: True'), from the
# project root:
#   tools/dev/gpu/delta.sh pack build          # -> build-delta-gpu/ (git-ignored: refit, librefit,
#                                              #    plugins, test-delta-cuda)
#   ../shared/hooks/device-pack build-delta-gpu # -> .devpack/ (with the libraries)
# On the GPU machine (the device tool carrying [".devpack"]), from the root:
#   source .devpack/env.sh && tools/dev/gpu/delta.sh run
#       1. test-delta-cuda: batches of awkward tensors at densities 0..1,
#          device bytes == host bytes, device apply == next version, damaged
#          deltas refused exactly when the host refuses them, untouched
#       2. test-delta-devrcv device: receivers with CUDA destinations take
#          deltas (device bytes == a full refit's, under a fifth of the wire
#          bytes, skipped version and torn record pulled whole, TP2->TP1 FP8)
#       3. refit demo --device cuda with refit.delta.enabled: the publisher's
#          CUDA tensors encoded on the GPU (never falling back), the device
#          engines' wire bytes falling after v1, every engine byte-identical
#       4. refit bench delta --device cuda at lr 1e-6 and 1e-5: the whole
#          Qwen3-0.6B-shaped model per step, GPU encode/apply GB/s (CUDA
#          events) beside a device copy, every step's GPU bytes checked
#          against the host's ("same bytes" column)
#   DELTA_QUICK=1: a 4-layer model instead (a minute).
# Prints PASS/FAIL per step and a summary; exits 1 if any failed.
set -u
what=${1:-run}
root=$(pwd)

if [ "$what" = pack ]; then
    build=${2:-build}
    out=${3:-build-delta-gpu}
    [ -f "$build/build.ninja" ] || { echo "delta.sh: '$build' is not a meson build directory"; exit 2; }
    ninja -C "$build" tools/refit/refit tests/delta/test-delta-cuda tests/delta/test-delta-devrcv >/dev/null || { echo "delta.sh: ninja failed"; exit 2; }
    grep -q 'have_cuda\|REFIT_TEST_HAVE_CUDA' "$build/build.ninja" ||
        { echo "delta.sh: '$build' was configured without CUDA"; exit 2; }
    rm -rf "$out"
    mkdir -p "$out/plugins" "$out/tests/delta"
    cp -L "$build/tools/refit/refit" "$out/refit"
    for f in "$build"/core/librefit.so*; do
        [ -d "$f" ] || cp -L "$f" "$out/$(basename "$f")"
    done
    while IFS= read -r -d '' f; do
        rel=${f#"$build/plugins/"}
        mkdir -p "$out/plugins/$(dirname "$rel")"
        cp -L "$f" "$out/plugins/$rel"
    done < <(find "$build/plugins" -mindepth 3 -maxdepth 3 -name 'refit-*.so' \( -type f -o -type l \) -print0)
    cp -L "$build/tests/delta/test-delta-cuda" "$build/tests/delta/test-delta-devrcv" "$out/tests/delta/"
    echo "delta.sh: $out/ ready ($(du -sh "$out" | cut -f1)); next: ../shared/hooks/device-pack $out"
    exit 0
fi
[ "$what" = run ] || { echo "usage: tools/dev/gpu/delta.sh pack [BUILD [OUT]] | run"; exit 2; }

db=${DEVBUILD:-${REFIT_BUILD:-$root/build-delta-gpu}}
fails=0
passes=0
step() {
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== $name: $*"
    timeout "$limit" "$@"
    local rc=$?
    if [ $rc -eq 0 ]; then
        echo "PASS $name"; passes=$((passes + 1))
    elif [ $rc -eq 77 ]; then
        echo "FAIL $name: skipped itself (exit 77): it saw no CUDA device"; fails=$((fails + 1))
    else
        echo "FAIL $name: exit status $rc"; fails=$((fails + 1))
    fi
}
for f in "$db/refit" "$db/tests/delta/test-delta-cuda" "$db/tests/delta/test-delta-devrcv"; do
    [ -x "$f" ] || { echo "FAIL preflight: $f missing (tools/dev/gpu/delta.sh pack, then device-pack)"; exit 1; }
done
export LD_LIBRARY_PATH="$db${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
REFIT_PLUGIN_PATH=$(find "$db/plugins" -name 'refit-*.so' -printf '%h\n' | sort -u | paste -sd: -)
export REFIT_PLUGIN_PATH REFIT_NO_BUILD_TREE=1 CK_FORK=yes CK_VERBOSITY=normal
nvidia-smi -L 2>/dev/null || echo "(nvidia-smi not found)"

step "test-delta-cuda" 300 "$db/tests/delta/test-delta-cuda"
step "test-delta-devrcv-device" 300 env REFIT_BIN="$db/refit" "$db/tests/delta/test-delta-devrcv" device
# The publisher's CUDA tensors encoded on the device (delta_dev.c) and
# engines with device destinations applying them (delta_rcv.c): a demo with
# delta on must be byte-identical, never fall back to whole ("CUDA tensors
# published without a delta" is that fallback's warning), and each engine's
# wire bytes (the GB column) after v1 must be below v1's.
demo_delta() {
    local log=/tmp/delta-demo.$$.log
    REFIT_REFIT_DELTA_ENABLED=true REFIT_REFIT_DELTA_MAX_RATIO=0.9 "$db/refit" demo --layers 2 --vocab 1000 \
        --config "$root/configs/clusters/local.yaml" --device cuda --fp8 off --src-tp 1 --dst-tp 1 --engines 1 \
        --cycles 4 >"$log" 2>&1
    local rc=$?
    grep -E '^engine-0-0 ' "$log"
    tail -1 "$log"
    if grep -q "without a delta" "$log"; then grep -m1 "without a delta" "$log"; rc=1; fi
    if ! awk '$1 ~ /^engine-/ { if ($2 == 1) first[$1] = $12; else { n++; if (!($1 in first) || $12 >= first[$1]) bad++ } }
              END { exit (n > 0 && !bad) ? 0 : 1 }' "$log"; then
        echo "demo-delta-cuda: the engines' wire bytes did not fall after v1"; rc=1
    fi
    rm -f "$log"
    return $rc
}
export -f demo_delta
export db root
step "demo-delta-cuda" 300 bash -c demo_delta
if [ -n "${DELTA_QUICK:-}" ]; then
    step "bench-delta-quick" 300 "$db/refit" bench delta --device cuda --layers 4 --vocab 16384 --steps 3
else
    for lr in 1e-6 1e-5; do
        step "bench-delta-lr$lr" 540 "$db/refit" bench delta --device cuda --lr "$lr" --steps 3 --group-mb 512
    done
fi
echo
echo "delta.sh: $passes passed, $fails failed"
[ $fails -eq 0 ]
