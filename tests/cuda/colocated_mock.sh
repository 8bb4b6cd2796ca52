#!/bin/sh
# colocated_mock.sh REFIT — colocated resident pulls as one device program
# (core/src/engine/rcvprog.c) end to end on the mock CUDA runtime of
# tests/transport/mockcuda (preloaded by meson): trainers and engines over
# cuda_ipc, in place, with REFIT_DPROG_HOST=1 so that the program's host
# reference stands in for the kernel (the mock runs no kernels).  Each run
# must take the device-program path and give `refit convert`'s bytes (the
# demo's own check): TP1 -> TP1 with FP8 (trainer rule), TP2 -> TP1 without
# (row-parallel column slices gathered; acks by a worker, refit.ack_async), TP2 -> TP2 with FP8 (deepgemm).
# The first run also traces its pulls (REFIT_PULL_TRACE=1): each pull's
# line names the program's steps and the acknowledgement.
set -u
refit=$1
# REFIT_DPROG_FLAG=1: the program signals its end through a host-mapped word
# (the host reference writes it here), polled by the wait instead of the event.
export REFIT_DPROG_FLAG=${REFIT_DPROG_FLAG:-1}
export REFIT_REFIT_IN_PLACE=true REFIT_REFIT_VERIFY=off REFIT_DPROG_HOST=1 MOCK_CUDA_GBPS=0 REFIT_LOG=info
fails=0
for run in "1 1 trainer" "2 1 off" "2 2 deepgemm"; do
    set -- $run
    trace=0
    [ "$1 $2 $3" = "1 1 trainer" ] && trace=1
    # The TP2 -> TP1 run with its acks written by a worker (refit.ack_async).
    async=false
    [ "$1 $2" = "2 1" ] && async=true
    out=$(REFIT_PULL_TRACE=$trace REFIT_REFIT_ACK_ASYNC=$async "$refit" demo --device cuda --transport cuda_ipc --src-tp "$1" --dst-tp "$2" --layers 2 --vocab 512 \
          --cycles 2 --fp8 "$3" 2>&1)
    rc=$?
    if [ $rc -ne 0 ] || ! echo "$out" | grep -q 'byte-identical to the offline conversion'; then
        echo "FAIL tp $1 -> tp $2, fp8 $3: exit $rc"; echo "$out" | tail -15; fails=$((fails + 1))
    elif ! echo "$out" | grep -q 'colocated pull as a device program'; then
        echo "FAIL tp $1 -> tp $2, fp8 $3: the pull did not run as a device program"
        echo "$out" | grep -i 'receiver' | tail -5; fails=$((fails + 1))
    elif [ $trace = 1 ] && ! echo "$out" | grep -E 'refit pull trace engine-0-0 v2: total [0-9.]+ ms' |
            grep 'program-check' | grep 'kernel-wait' | grep -q ' ack'; then
        echo "FAIL tp $1 -> tp $2, fp8 $3: no pull trace line for v2 with the program's steps"
        echo "$out" | grep 'pull trace' | tail -3; fails=$((fails + 1))
    elif [ $trace = 0 ] && echo "$out" | grep -q 'pull trace'; then
        echo "FAIL tp $1 -> tp $2, fp8 $3: a pull trace without REFIT_PULL_TRACE=1"; fails=$((fails + 1))
    elif echo "$out" | grep -q 'goes through the transport'; then
        echo "FAIL tp $1 -> tp $2, fp8 $3: a tensor fell back to the transport's path"; fails=$((fails + 1))
    else
        echo "ok tp $1 -> tp $2, fp8 $3: $(echo "$out" | grep -m1 -o '[0-9]* operations, [0-9]* tiles, [0-9]* launch(es)')"
    fi
done
# refit bench gpu --colocated, its idle-gap copy after 20 ms, not 450 (its figures meaningless here: the mock times
# nothing): the engine's warm pulls wait for each version on the trainer's
# doorbell (transport op bell_*, cuda_ipc), not on the store's watch.
out=$(REFIT_BENCH_GAP_MS=20 REFIT_LOG=info "$refit" bench gpu --colocated --layers 2 --vocab 512 --cycles 3 2>&1)
rc=$?
if [ $rc -ne 0 ] || ! echo "$out" | grep -q 'warm cycles (v >= 2)'; then
    echo "FAIL bench gpu --colocated: exit $rc"; echo "$out" | tail -15; fails=$((fails + 1))
elif ! echo "$out" | grep -q "waiting for versions on the 1 source(s)' doorbells"; then
    echo "FAIL bench gpu --colocated: the engine did not wait on the trainer's doorbell"
    echo "$out" | grep -i 'receiver\|bell' | tail -5; fails=$((fails + 1))
else
    echo "ok bench gpu --colocated: warm pulls woken by the doorbell"
fi
exit $fails
