#!/usr/bin/env bash
# resident.sh — on a machine with two GPUs, from the project root, with
# devbuild/ made by tools/dev/gpu/pack.sh (and .devpack/env.sh sourced):
# the device-resident refit over cuda_ipc checked byte for byte against
# refit convert (FP8 off and on), then `refit bench gpu` beside NCCL (needs
# python3 with PyTorch).  PASS/FAIL per step; non-zero exit on a failure.
set -u
root=$(pwd)
db=${DEVBUILD:-$root/devbuild}
[ -x "$db/refit" ] || { echo "FAIL preflight: $db/refit missing (tools/dev/gpu/pack.sh)"; exit 1; }
export LD_LIBRARY_PATH="$db${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
REFIT_PLUGIN_PATH=$(find "$db/plugins" -name 'refit-*.so' -printf '%h\n' | sort -u | paste -sd: -)
export REFIT_PLUGIN_PATH REFIT_NO_BUILD_TREE=1
fails=0
step() {
    local name=$1 t=$2
    shift 2
    echo "=== $name"
    if timeout "$t" "$@"; then echo "PASS $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi
}
for fp8 in off trainer; do
    step "resident demo, fp8 $fp8, GPU 0 -> GPU 1" 300 env REFIT_REFIT_IN_PLACE=true REFIT_REFIT_VERIFY=off \
        "$db/refit" demo --device cuda --transport cuda_ipc --fp8 "$fp8" --layers 4 --cycles 2 --engines 1 --dst-gpu 1
done
step "refit bench gpu" 400 "$db/refit" bench gpu --cycles 5
echo "resident.sh: $fails failed"
exit $((fails > 0))
