#!/bin/sh
# `refit bench delta` end to end on a one-layer model: per-step rows with
# the memcpy baseline and every delta reproducing its version exactly; the
# --sweep table; --engine (publisher and receivers through the engine, each
# step by delta, identical to the full refit, reading exactly the delta);
# --device cuda runs where a GPU is and is a clear error
# elsewhere; bad options are usage errors.  Never asserts a time.
set -u
refit="$1"
fail() { echo "FAIL: $*" >&2; exit 1; }
out=$("$refit" bench delta --layers 1 --vocab 2048 --steps 2 --lr 1e-5 --group-mb 8) || fail "exit $?"
echo "$out"
echo "$out" | grep -q 'memcpy ms' || fail "no memcpy baseline"
[ "$(echo "$out" | grep -cE '^ +[12] .*\| yes$')" -eq 2 ] || fail "not two exact steps"
echo "$out" | grep -q 'SPARSE' || fail "no segment summary"
out=$("$refit" bench delta --sweep --group-mb 2) || fail "--sweep exit $?"
echo "$out"
[ "$(echo "$out" | grep -cE '^ +[0-9.]+% ')" -eq 9 ] || fail "--sweep: not nine densities"
"$refit" bench delta --layers 1 --vocab 1024 --steps 1 --device cuda >out.$$ 2>err.$$; rc=$?
msg=$(cat err.$$); cuda_out=$(cat out.$$); rm -f err.$$ out.$$
if [ $rc -eq 0 ]; then
    echo "$cuda_out"
    echo "$cuda_out" | grep -qE '^ +1 \|.*\| yes$' || fail "--device cuda: no exact GPU step"
else
    echo "$msg" | grep -qiE 'cuda|gpu' || fail "--device cuda message: $msg"
fi
# --engine: a publisher and full / delta receivers (bf16 and FP8) through the
# engine; every step after the first by delta, every receiver identical.
out=$("$refit" bench delta --engine --fp8 --layers 1 --vocab 2048 --steps 2 --lr 1e-5 --group-mb 8) ||
    fail "--engine exit $?: $out"
echo "$out"
[ "$(echo "$out" | grep -cE ' 0 yes$')" -eq 6 ] || fail "--engine: not six identical rows without fallback"
[ "$(echo "$out" | grep -cE '^ +[23] .* [1-9][0-9]* \| .* 0 yes$')" -eq 2 ] || fail "--engine: steps not by delta"
# the delta receiver reads exactly the publisher's delta bytes (no more)
echo "$out" | grep -E '^ +[23] ' | awk '{ if ($5 != $9) exit 1 }' || fail "--engine: read more than the delta"
echo "$out" | grep -E '^bf16 target' | awk '{ if ($10 + 0 > 0.2) exit 1 }' || fail "--engine: delta over 0.2 of full"
"$refit" bench delta --fp8 >/dev/null 2>&1 && fail "--fp8 without --engine accepted"
"$refit" bench delta --lr 2 >/dev/null 2>&1 && fail "--lr 2 accepted"
"$refit" bench delta --steps 0 >/dev/null 2>&1 && fail "--steps 0 accepted"
"$refit" bench delta --impl sse9 >/dev/null 2>&1 && fail "--impl sse9 accepted"
"$refit" bench delta --bogus 1 >/dev/null 2>&1 && fail "--bogus accepted"
"$refit" bench --help | grep -q 'delta' || fail "bench --help lists no delta"
exit 0
