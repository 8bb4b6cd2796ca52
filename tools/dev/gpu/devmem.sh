#!/usr/bin/env bash
# devmem.sh — device pointers in the publisher and receiver (issue 9) on a
# GPU machine: the CUDA device-memory tests and `refit bench staged`.
#
# Run from the project root (configs/ is read from there) with devbuild/
# holding binaries of a CUDA-enabled build (tools/dev/gpu/pack.sh makes it):
#   devbuild/refit  devbuild/librefit.so*  devbuild/plugins/<kind>/<name>/*.so
#   devbuild/tests/cuda/test-cuda-devmem  (and test-cuda-fp8, optional)
# plus the libraries they need that the machine lacks (libcudart.so.13 ...)
# anywhere in devbuild/ or on LD_LIBRARY_PATH.
#
#   tools/dev/gpu/devmem.sh [all|tests|bench]
#       tests: test-cuda-devmem (+ test-cuda-fp8 when packed), a few minutes
#       bench: refit bench staged at 1.19 GB and 2.0 GB (DEVMEM_FP8=1: and
#              1.19 GB with FP8), a few minutes
#       all (default): both; split them when a command may run 10 minutes at most
#   DEVBUILD=/path tools/dev/gpu/devmem.sh      (default ./devbuild)
#   DEVMEM_QUICK=1: one small bench instead
#
# Prints a PASS or FAIL line per step and a summary; exits 1 if any failed.
set -u

what=${1:-all}
case "$what" in
    all | tests | bench) ;;
    *) echo "usage: tools/dev/gpu/devmem.sh [all|tests|bench]"; exit 2 ;;
esac
root=$(pwd)
db=${DEVBUILD:-$root/devbuild}
fails=0
passes=0

pass() { echo "PASS $1"; passes=$((passes + 1)); }
fail() { echo "FAIL $1${2:+: $2}"; fails=$((fails + 1)); }

# step NAME TIMEOUT_S CMD...: runs CMD, its output shown, PASS on exit 0.
step() {
    local name=$1 limit=$2
    shift 2
    echo
    echo "=== $name: $*"
    timeout "$limit" "$@"
    local rc=$?
    if [ $rc -eq 0 ]; then
        pass "$name"
    elif [ $rc -eq 124 ]; then
        fail "$name" "timed out after ${limit}s"
    elif [ $rc -eq 77 ]; then
        fail "$name" "skipped itself (exit 77): it saw no CUDA device"
    else
        fail "$name" "exit status $rc"
    fi
}

# --- preflight -------------------------------------------------------------
[ -f "$root/configs/clusters/local.yaml" ] ||
    { echo "FAIL preflight: run from the project root (no configs/clusters/local.yaml in $root)"; exit 1; }
for f in "$db/refit" "$db/tests/cuda/test-cuda-devmem"; do
    [ -x "$f" ] || { echo "FAIL preflight: $f missing or not executable (see tools/dev/gpu/pack.sh)"; exit 1; }
done
ls "$db"/librefit.so* >/dev/null 2>&1 || { echo "FAIL preflight: no $db/librefit.so*"; exit 1; }

# Libraries: devbuild first (librefit, anything packed beside it), then
# whatever the machine has.
libdirs=$(find "$db" -name '*.so*' ! -path "$db/plugins/*" ! -path "$db/tests/*" -printf '%h\n' 2>/dev/null | sort -u | paste -sd: -)
export LD_LIBRARY_PATH="$db${libdirs:+:$libdirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Plugins: every directory under devbuild/plugins holding a refit-*.so
# (core/src/loader.c looks for refit-<kind>-<name>.so in each
# REFIT_PLUGIN_PATH entry); the build tree compiled into librefit is not
# on this machine.
plugdirs=$(find "$db/plugins" -name 'refit-*.so' -printf '%h\n' 2>/dev/null | sort -u | paste -sd: -)
[ -n "$plugdirs" ] || { echo "FAIL preflight: no plugins under $db/plugins/<kind>/<name>/"; exit 1; }
export REFIT_PLUGIN_PATH="$plugdirs"
export REFIT_NO_BUILD_TREE=1
export REFIT_BIN="$db/refit"
export REFIT_SOURCE_ROOT="$root"
export CK_FORK=yes
export CK_VERBOSITY=normal
unset LD_PRELOAD MOCK_CUDA_STRICT_PINNED
# Only for checking this script on a machine without a GPU: the mock CUDA
# runtime of tests/cuda (mock_cudart.c), e.g. build/tests/cuda/libmockcudart.so.
if [ -n "${DEVMEM_PRELOAD:-}" ]; then
    export LD_PRELOAD="$DEVMEM_PRELOAD" MOCK_CUDA_STRICT_PINNED=1
    echo "NOTE: running against $DEVMEM_PRELOAD, not a GPU"
fi

echo "devbuild: $db"
echo "REFIT_PLUGIN_PATH=$REFIT_PLUGIN_PATH"
nvidia-smi -L 2>/dev/null || echo "(nvidia-smi not found)"
missing=$(for b in "$db/refit" "$db"/librefit.so* "$db/tests/cuda/test-cuda-devmem"; do ldd "$b" 2>/dev/null; done |
          grep 'not found' | sort -u)
if [ -n "$missing" ]; then
    echo "$missing"
    echo "FAIL preflight: libraries not found (copy them into $db or set LD_LIBRARY_PATH)"
    exit 1
fi
if ! "$db/refit" plugins >/dev/null 2>&1; then
    "$db/refit" plugins
    echo "FAIL preflight: refit plugins"
    exit 1
fi
pass preflight

# --- tests -------------------------------------------------------------------
if [ "$what" != bench ]; then
    step "test-cuda-devmem" 400 "$db/tests/cuda/test-cuda-devmem"
    if [ -x "$db/tests/cuda/test-cuda-fp8" ]; then
        step "test-cuda-fp8" 300 "$db/tests/cuda/test-cuda-fp8"
    fi
fi

# --- benchmark -----------------------------------------------------------------
if [ "$what" != tests ]; then
    if [ -n "${DEVMEM_QUICK:-}" ]; then
        step "bench-staged-small" 300 "$db/refit" bench staged --layers 4 --cycles 3
    else
        step "bench-staged-1.2GB" 300 "$db/refit" bench staged
        step "bench-staged-2.0GB" 300 "$db/refit" bench staged --layers 56
        if [ -n "${DEVMEM_FP8:-}" ]; then
            step "bench-staged-1.2GB-fp8" 300 "$db/refit" bench staged --fp8 trainer
        fi
    fi
fi

echo
echo "devmem.sh: $passes passed, $fails failed"
[ $fails -eq 0 ]
