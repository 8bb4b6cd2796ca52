#!/bin/sh
# sim_cli.sh — `refit sim` end to end on Qwen3-30B-A3B shapes: the per-source
# split the simulator uses carries exactly the planner's wire bytes for
# every receiver position (refit_receiver_plan_dry's total, printed beside
# it), the prediction is never below the physical floor, and bad options
# name what is wrong.
set -u
REFIT="$1"
cd "$REFIT_SOURCE_ROOT" || exit 1
out=$("$REFIT" sim --model configs/models/qwen3-30b-a3b.yaml --trainer tp=2,ep=4 --trainer-gpus 8 \
      --engine tp=2,ep=2 --engines 3 --nic-gbps 100 --gpus-per-node 4 --schedule compare --jobs 2 2>&1)
rc=$?
echo "$out"
[ $rc -eq 0 ] || { echo "FAIL: refit sim exited $rc"; exit 1; }
# Rows "rank pieces descs wire kept items ms MiB growth": wire == items.
rows=$(echo "$out" | awk '$1 ~ /^[0-9]+$/ && NF == 9 {n++; if ($4 != $6) bad++} END {print n+0, bad+0}')
set -- $rows
[ "$1" -eq 2 ] || { echo "FAIL: expected 2 planned positions, got $1"; exit 1; }
[ "$2" -eq 0 ] || { echo "FAIL: $2 positions' item bytes differ from the planner's wire bytes"; exit 1; }
# predicted >= floor (both schedules).
echo "$out" | awk '/predicted/ {n++; if ($3 + 1e-9 < $6) {print "FAIL: predicted " $3 " below floor " $6; bad=1}}
                   END {exit (n == 2 && !bad) ? 0 : 1}' || { echo "FAIL: predictions"; exit 1; }
# Push with trainer FP8: fewer bytes on the wire than pull.
push=$("$REFIT" sim --model configs/models/qwen3-30b-a3b.yaml --trainer tp=2,ep=4 --trainer-gpus 8 \
       --engine tp=2,ep=2 --engines 3 --nic-gbps 100 --gpus-per-node 4 --mode push --fp8 trainer 2>&1) ||
  { echo "$push"; echo "FAIL: push"; exit 1; }
pw=$(echo "$out" | awk '/trainer NIC egress/ {print $5; exit}')
qw=$(echo "$push" | awk '/trainer NIC egress/ {print $5; exit}')
awk -v a="$qw" -v b="$pw" 'BEGIN {exit (a < 0.7 * b) ? 0 : 1}' ||
  { echo "FAIL: push FP8 egress $qw GB not below pull's $pw GB"; exit 1; }
# Errors name the option.
e=$("$REFIT" sim --model configs/models/qwen3-30b-a3b.yaml --trainer tp=2,pp=2 --engine tp=2 2>&1)
echo "$e" | grep -q "pp=2" || { echo "FAIL: pp error: $e"; exit 1; }
e=$("$REFIT" sim --trainer tp=2 2>&1)
echo "$e" | grep -q -- "--model is required" || { echo "FAIL: missing model: $e"; exit 1; }
e=$("$REFIT" sim --model configs/models/qwen3-30b-a3b.yaml --trainer tp=3 --trainer-gpus 8 2>&1)
echo "$e" | grep -q "not a multiple" || { echo "FAIL: gpus: $e"; exit 1; }
echo "PASS"
