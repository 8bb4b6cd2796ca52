#!/bin/sh
# cluster.sh — `refit bench cluster` on a tiny emulated cluster (root only;
# skipped, exit 77, otherwise): it must run real publish/pull cycles in
# namespaces, with and without fan-out, print the comparison with
# `refit sim`, and leave no namespace behind, also when it fails.
set -u
REFIT="$1"
cd "$REFIT_SOURCE_ROOT" || exit 1
before=$(ip netns list 2>/dev/null | grep -c '^rfc' || true)
out=$("$REFIT" bench cluster --layers 1 --vocab 4000 --engines 2 --cycles 2 --fanout 1 --nic-mbit 2000 2>&1)
rc=$?
echo "$out"
[ $rc -eq 77 ] && exit 77
after=$(ip netns list 2>/dev/null | grep -c '^rfc' || true)
[ "$after" -le "$before" ] || { echo "FAIL: namespaces left behind"; ip netns list; exit 1; }
[ $rc -eq 0 ] || { echo "FAIL: exit $rc"; exit 1; }
echo "$out" | grep -q "^without fan-out" || { echo "FAIL: no baseline row"; exit 1; }
echo "$out" | grep -q "^fan-out 1" || { echo "FAIL: no fan-out row"; exit 1; }
# A failure part way (a model that does not exist) still tears down.
"$REFIT" bench cluster --model /nonexistent.yaml --engines 1 --cycles 2 >/dev/null 2>&1
after=$(ip netns list 2>/dev/null | grep -c '^rfc' || true)
[ "$after" -le "$before" ] || { echo "FAIL: namespaces left behind after a failure"; exit 1; }
echo "PASS"
