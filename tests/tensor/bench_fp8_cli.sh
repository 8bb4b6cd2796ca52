#!/bin/sh
# `refit bench fp8` end to end on a small odd-shaped matrix: every variant
# runs and prints beside the memcpy baseline; bad options are usage errors.
# Never asserts a time.
set -u
refit="$1"
fail() { echo "FAIL: $*" >&2; exit 1; }
out=$("$refit" bench fp8 --rows 130 --cols 260 --iters 2) || fail "exit $?"
echo "$out"
echo "$out" | grep -q '^  memcpy ' || fail "no memcpy baseline"
for rule in trainer deepgemm; do
    echo "$out" | grep -q "^  $rule *scalar " || fail "no $rule scalar line"
done
echo "$out" | grep -q 'x memcpy' || fail "no ratio column"
# --device cuda: runs where a GPU is (figures beside the copy and, when
# torch is there, PyTorch); elsewhere a clear usage error.
"$refit" bench fp8 --device cuda --rows 300 --cols 260 --iters 3 >out.$$ 2>err.$$; rc=$?
msg=$(cat err.$$); cuda_out=$(cat out.$$); rm -f err.$$ out.$$
if [ $rc -eq 0 ]; then
    echo "$cuda_out"
    echo "$cuda_out" | grep -q 'd2d copy' || fail "--device cuda: no copy baseline"
    for rule in trainer deepgemm; do
        echo "$cuda_out" | grep -q "^  $rule *refit " || fail "--device cuda: no $rule line"
    done
else
    [ $rc -eq 2 ] || fail "--device cuda: exit $rc ($msg)"
    echo "$msg" | grep -q 'CUDA' || fail "--device cuda message: $msg"
fi
"$refit" bench fp8 --device tpu >/dev/null 2>&1 && fail "--device tpu accepted"
"$refit" bench fp8 --rows 0 >/dev/null 2>&1 && fail "--rows 0 accepted"
"$refit" bench fp8 --bogus >/dev/null 2>&1 && fail "--bogus accepted"
"$refit" bench nothing >/dev/null 2>&1 && fail "unknown benchmark accepted"
"$refit" bench --help | grep -q 'fp8' || fail "bench --help lists no fp8"
exit 0
