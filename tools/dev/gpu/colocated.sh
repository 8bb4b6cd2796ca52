#!/usr/bin/env bash
# colocated.sh — the colocated GPU data path (issue 18) on one GPU: the device
# program's kernel against its host reference, then `refit bench gpu
# --colocated` (trainers and engines on GPU 0, the device-copy baseline in the
# same run) for Qwen3-0.6B and Qwen3-4B shapes, FP8 off and on, TP2 -> TP2, and
# the transport's path (refit.device_program off) for comparison.
#
# Here: tools/dev/gpu/pack.sh build .devpack-gpu/devbuild && ../shared/hooks/device-pack .devpack-gpu/devbuild
# There (carry .devpack): source .devpack/env.sh && tools/dev/gpu/colocated.sh [short|quick|attrib|diag|mps]
# (attrib: the 0.6B runs with each of refit.ack_async, the polled wait and
# the one-launch FP8 program undone, beside the defaults; untraced; the copy
# kernel's tile size and grid bound; diag: the launch-to-start latency
# (REFIT_DPROG_PROBE: an empty kernel or a copy before the program), GPU
# clocks sampled through a run, the copy kernel's variants, and the same
# runs under the CUDA MPS daemon when the machine has it; mps: the targets
# under the MPS daemon, then without it on the same card)
# Logs to $OUT (or /tmp); prints a PASS/FAIL line per step, the ratio lines
# and two warm pulls' traces (REFIT_PULL_TRACE=1, receiver.h: each step of
# the pull in ms, the kernels' device time; REFIT_PULL_TRACE=0 turns it off).
set -u
db=${REFIT_BUILD:-devbuild}
logs=${OUT:-/tmp}
export LD_LIBRARY_PATH="$db${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
REFIT_PLUGIN_PATH=$(find "$db/plugins" -name 'refit-*.so' -printf '%h\n' | sort -u | paste -sd: -)
export REFIT_PLUGIN_PATH REFIT_NO_BUILD_TREE=1 CK_FORK=yes CK_VERBOSITY=normal
export REFIT_PULL_TRACE=${REFIT_PULL_TRACE:-1}
nvidia-smi -L 2>/dev/null
fails=0
step() {
    local name=$1 limit=$2 t0=$SECONDS
    shift 2
    echo "=== $name: $*" | tee -a "$logs/colocated.log"
    timeout "$limit" "$@" > "$logs/step.log" 2>&1
    local rc=$?
    echo "($((SECONDS - t0)) s)"
    cat "$logs/step.log" >> "$logs/colocated.log"
    grep -E 'warm cycles|device copy of|same copy after|FP8 kernel alone|colocated on GPU|Checks|byte|differ|error|rror:|match' "$logs/step.log" | tail -8
    grep 'pull trace' "$logs/step.log" | grep -v ' v1:' | head -2 | sed 's/discover+plan(+wait) [0-9.]* //'
    if [ $rc -eq 0 ]; then echo "PASS $name"; else echo "FAIL $name (exit $rc)"; tail -5 "$logs/step.log"; fails=$((fails + 1)); fi
}
step dprog-cuda 40 "$db/tests/cuda/test-cuda-dprog" device
# the copy kernel with a small grid walking many small tiles, against the host reference too
step dprog-cuda-walk 40 env REFIT_DPROG_CTAS=64 REFIT_DPROG_TILE_KB=4 "$db/tests/cuda/test-cuda-dprog" device
r=$db/refit
mps_runs() { # the targets under the CUDA MPS daemon (one GPU context for all processes)
    if command -v nvidia-cuda-mps-control > /dev/null; then
        export CUDA_MPS_PIPE_DIRECTORY=/tmp/refit-mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/refit-mps-log
        mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
        if nvidia-cuda-mps-control -d; then
            trap 'echo quit | nvidia-cuda-mps-control' EXIT; trap 'exit 143' TERM INT
            step "MPS: 0.6B fp8 off, checked" 45 "$r" bench gpu --colocated --check --cycles 4
            step "MPS: 0.6B fp8 off" 40 "$r" bench gpu --colocated --cycles 6
            step "MPS: 0.6B fp8 trainer, checked" 45 "$r" bench gpu --colocated --check --fp8 trainer --cycles 4
            step "MPS: 0.6B fp8 trainer" 40 "$r" bench gpu --colocated --fp8 trainer --cycles 6
            step "MPS: 4B fp8 off" 60 "$r" bench gpu --colocated --model configs/models/qwen3-4b.yaml --cycles 4
            step "MPS: 4B fp8 trainer" 60 "$r" bench gpu --colocated --model configs/models/qwen3-4b.yaml --fp8 trainer --cycles 4
            echo quit | nvidia-cuda-mps-control
            trap - EXIT TERM INT
            cp "$CUDA_MPS_LOG_DIRECTORY/control.log" "$logs/mps-control.log" 2>/dev/null
        else
            echo "MPS: nvidia-cuda-mps-control -d failed"
        fi
        unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    else
        echo "MPS: no nvidia-cuda-mps-control on this machine"
    fi
}
if [ "${1:-}" = mps ]; then # the targets under MPS, then the same without it on the same card
    mps_runs
    step "0.6B fp8 off" 40 "$r" bench gpu --colocated --cycles 6
    step "0.6B fp8 trainer" 40 "$r" bench gpu --colocated --fp8 trainer --cycles 6
    step "4B fp8 off" 60 "$r" bench gpu --colocated --model configs/models/qwen3-4b.yaml --cycles 4
    echo "colocated.sh: $fails failed"
    exit $((fails > 0))
fi
if [ "${1:-}" = diag ]; then # where the ~0.1 ms from launch to the kernels' start goes, and the copy kernel's shape
    # the copy kernel's variants against the host reference (byte-identical)
    step dprog-cuda-u8-cs-wb 40 env REFIT_DPROG_UNROLL=8 REFIT_DPROG_LOAD=cs REFIT_DPROG_STORE=wb \
        REFIT_DPROG_TILE_KB=16 "$db/tests/cuda/test-cuda-dprog" device
    mps_runs
    # the copy tiles before (256 KiB) and after (16 KiB, the default since 2026-12-06), and 8 KiB
    step "0.6B fp8 off, 256 KiB tiles" 40 env REFIT_DPROG_TILE_KB=256 "$r" bench gpu --colocated --cycles 6
    step "0.6B fp8 trainer, 256 KiB tiles" 40 env REFIT_DPROG_TILE_KB=256 "$r" bench gpu --colocated --fp8 trainer --cycles 6
    step "0.6B fp8 off, 8 KiB tiles" 40 env REFIT_DPROG_TILE_KB=8 "$r" bench gpu --colocated --cycles 6
    nvidia-smi --query-gpu=persistence_mode,compute_mode,clocks.sm,clocks.max.sm,clocks.mem,pstate,power.draw \
        --format=csv 2>&1 | tee -a "$logs/colocated.log"
    # GPU clocks every 50 ms through one bench run (idle gaps between cycles included)
    nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,pstate,power.draw --format=csv,noheader \
        -lms 50 > "$logs/clocks.csv" 2>&1 &
    smi=$!
    step "0.6B fp8 off (clocks sampled)" 40 "$r" bench gpu --colocated --cycles 6
    kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
    echo "clocks.sm during that run (MHz: count):"; cut -d, -f2 "$logs/clocks.csv" | sort | uniq -c | sort -rn | head -6
    # an empty kernel, then a cudaMemcpyAsync of the program's bytes, waited for before the program (PROBE)
    step "0.6B fp8 off, probe kernel" 40 env REFIT_DPROG_PROBE=kernel "$r" bench gpu --colocated --cycles 6
    step "0.6B fp8 off, probe copy" 40 env REFIT_DPROG_PROBE=copy "$r" bench gpu --colocated --cycles 6
    echo "colocated.sh: $fails failed"
    exit $((fails > 0))
fi
if [ "${1:-}" = attrib ]; then # what each fixed-cost change buys (defaults against each undone), 0.6B
    step "0.6B fp8 off" 40 "$r" bench gpu --colocated --cycles 6
    # completion through the host-mapped word (REFIT_DPROG_FLAG) against the event, and the kernel with it
    step dprog-cuda-flag 40 env REFIT_DPROG_FLAG=1 "$db/tests/cuda/test-cuda-dprog" device
    step "0.6B fp8 off, event wait" 40 env REFIT_DPROG_FLAG=0 "$r" bench gpu --colocated --cycles 6
    step "0.6B fp8 off, flag wait" 40 env REFIT_DPROG_FLAG=1 "$r" bench gpu --colocated --cycles 6
    step "0.6B fp8 trainer, flag wait" 40 env REFIT_DPROG_FLAG=1 "$r" bench gpu --colocated --fp8 trainer --cycles 6
    step "0.6B fp8 off, acks in the pull" 40 env REFIT_REFIT_ACK_ASYNC=false "$r" bench gpu --colocated --cycles 6
    step "0.6B fp8 off, blocking wait" 40 env REFIT_DPROG_SPIN_US=0 "$r" bench gpu --colocated --cycles 6
    step "0.6B fp8 trainer" 40 "$r" bench gpu --colocated --fp8 trainer --cycles 6
    step "0.6B fp8 trainer, two launches" 40 env REFIT_DPROG_SPLIT=1 "$r" bench gpu --colocated --fp8 trainer --cycles 6
    # untraced (no timing events, no start poll): the totals without the trace's own cost
    step "0.6B fp8 off, untraced" 40 env REFIT_PULL_TRACE=0 "$r" bench gpu --colocated --cycles 6
    step "0.6B fp8 trainer, untraced" 40 env REFIT_PULL_TRACE=0 "$r" bench gpu --colocated --fp8 trainer --cycles 6
    # the copy kernel's shape: smaller tiles, and a grid of 8 CTAs per SM walking them
    step "0.6B fp8 off, 32 KiB tiles" 40 env REFIT_DPROG_TILE_KB=32 "$r" bench gpu --colocated --cycles 6
    step "0.6B fp8 off, grid 8/SM, 64 KiB tiles" 40 env REFIT_DPROG_CTAS=1056 REFIT_DPROG_TILE_KB=64 \
        "$r" bench gpu --colocated --cycles 6 # 132 SMs (H100 SXM, H200)
    echo "colocated.sh: $fails failed"
    exit $((fails > 0))
fi
if [ "${1:-}" = short ]; then # the targets only, within about four minutes
    step "0.6B fp8 off, checked" 75 "$r" bench gpu --colocated --check --cycles 4
    step "0.6B fp8 trainer" 30 "$r" bench gpu --colocated --fp8 trainer --cycles 5
    step "0.6B fp8 trainer, checked" 60 "$r" bench gpu --colocated --check --fp8 trainer --cycles 3
    step "4B fp8 off" 100 "$r" bench gpu --colocated --model configs/models/qwen3-4b.yaml --cycles 4
    echo "colocated.sh: $fails failed"
    exit $((fails > 0))
fi
step "0.6B fp8 off, checked" 100 "$r" bench gpu --colocated --check --cycles 3
step "0.6B fp8 trainer, checked" 100 "$r" bench gpu --colocated --check --fp8 trainer --cycles 3
if [ "${1:-}" != quick ]; then
    step "4B fp8 off" 110 "$r" bench gpu --colocated --model configs/models/qwen3-4b.yaml --cycles 5
    step "4B fp8 trainer" 110 "$r" bench gpu --colocated --model configs/models/qwen3-4b.yaml --fp8 trainer --cycles 5
fi
step "0.6B fp8 off" 60 "$r" bench gpu --colocated --cycles 6
step "0.6B fp8 trainer" 60 "$r" bench gpu --colocated --fp8 trainer --cycles 6
step "0.6B fp8 off, transport path" 90 env REFIT_REFIT_DEVICE_PROGRAM=false "$r" bench gpu --colocated --cycles 6
step "0.6B tp2->tp2 fp8 off, checked" 120 "$r" bench gpu --colocated --check --src tp=2 --dst-tp 2 --cycles 3
echo "colocated.sh: $fails failed"
[ $fails -eq 0 ]
