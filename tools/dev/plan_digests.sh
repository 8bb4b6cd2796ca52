#!/usr/bin/env bash
# plan_digests.sh — the plan digests (`refit bench plan`) of a fixed set of
# model shapes and layouts from one or two refit binaries, side by side: a
# planner change that must not change any plan gives the same digest on
# every line.  Exit status 1 when two binaries disagree on a line.
#
#   tools/dev/plan_digests.sh build/tools/refit/refit [build-main/tools/refit/refit]
#
# Run from the repository root.  Shapes: Kimi-K2 (TP8·EP32 trainer, 256 and
# 32 ranks) into vLLM TP16 ranks 0 and 7 and TP16·EP16, DeepSeek-V3 TP8 and
# TP8·EP8, GLM-5, GLM-4.5-Air, Qwen3-235B (model YAML and built-in default,
# also --naive), Qwen3-30B, Qwen3-0.6B, the qwen3-tiny fixture (when
# ../shared/fixtures is there), and engines choosing sources together
# (refit.replicas 4, engines 0 and 3, through a model YAML with a refit
# section, which every version reads).
set -u
a=$1
b=${2:-}
tmp=$(mktemp -d /tmp/plan-digests-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
for i in 0 3; do
    { cat configs/models/kimi-k2.yaml; printf 'refit:\n  replicas: 4\n  replica_index: %d\n' "$i"; } >"$tmp/kimi-rep$i.yaml"
    { cat configs/models/qwen3-235b-a22b.yaml; printf 'refit:\n  replicas: 4\n  replica_index: %d\n' "$i"; } >"$tmp/qwen-rep$i.yaml"
done
K=configs/models/kimi-k2.yaml
shapes=(
    "--model $K --src tp=8,ep=32 --dst tp=16 --gpus 256"
    "--model $K --src tp=8,ep=32 --dst tp=16 --gpus 256 --rank 7"
    "--model $K --src tp=8,ep=32 --dst tp=16,ep=16 --gpus 256"
    "--model $K --src tp=8,ep=32 --dst tp=16"
    "--model $K --src tp=8,ep=32 --dst tp=16,ep=16 --rank 5"
    "--model $tmp/kimi-rep0.yaml --src tp=8,ep=32 --dst tp=16 --gpus 256"
    "--model $tmp/kimi-rep3.yaml --src tp=8,ep=32 --dst tp=16,ep=16 --gpus 256"
    "--model configs/models/deepseek-v3.yaml --src tp=8,ep=32 --dst tp=8"
    "--model configs/models/deepseek-v3.yaml --src tp=8,ep=32 --dst tp=8,ep=8 --rank 3"
    "--model configs/models/glm-5.yaml --src tp=8,ep=16 --dst tp=8"
    "--model configs/models/glm-4.5-air.yaml --src tp=4,ep=8 --dst tp=4 --gpus 32"
    "--model configs/models/qwen3-235b-a22b.yaml --src tp=4,ep=8 --dst tp=8"
    "--model $tmp/qwen-rep3.yaml --src tp=4,ep=8 --dst tp=8 --gpus 32"
    "--model configs/models/qwen3-30b-a3b.yaml --src tp=2,ep=4 --dst tp=4,ep=4 --rank 1"
    "--model configs/models/qwen3-0.6b.yaml --src tp=2,ep=1 --dst tp=1 --gpus 4"
    ""
    "--dst tp=8,ep=8"
    "--naive"
)
[ -f ../shared/fixtures/qwen3-tiny/config.json ] &&
    shapes+=("--hf-config ../shared/fixtures/qwen3-tiny/config.json --src tp=2,ep=1 --dst tp=1 --gpus 4")
digest() {
    # shellcheck disable=SC2086
    "$1" bench plan $2 --iters 1 2>&1 | sed -n 's/^  plan digest \([0-9a-f]*\).*/\1/p'
}
bad=0
for s in "${shapes[@]}"; do
    da=$(digest "$a" "$s")
    [ -n "$da" ] || da=FAILED
    if [ -n "$b" ]; then
        db=$(digest "$b" "$s")
        [ -n "$db" ] || db=FAILED
        same=same
        [ "$da" = "$db" ] && [ "$da" != FAILED ] || { same=DIFF; bad=1; }
        printf '%-4s %s %s  %s\n' "$same" "${da:0:16}" "${db:0:16}" "${s:-(default)}"
    else
        printf '%s  %s\n' "$da" "${s:-(default)}"
    fi
done
exit $bad
