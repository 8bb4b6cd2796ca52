#!/usr/bin/env bash
# cuda_ipc.sh — the GPU checks of the cuda_ipc transport, for a machine with
# NVIDIA GPUs (two for the cross-GPU runs).  Run from the project root:
#
#   tools/dev/gpu/cuda_ipc.sh [DIR]
#
# DIR holds the binaries tools/dev/gpu/pack.sh collected: refit,
# librefit.so*, plugins/<kind>/<name>/*.so, tests/transport/{test_transport,
# tp_peer}.  Default: $REFIT_BUILD (set by .devpack/env.sh, i.e.
# .devpack/tree/devbuild), else devbuild.  Libraries the binaries need
# besides librefit come from LD_LIBRARY_PATH (.devpack/env.sh sets it).
#
# Prints one PASS, FAIL or SKIP line per check and a summary; exits 1 when
# a check failed, 2 when DIR is incomplete.  Full logs go to
# $OUT/cuda_ipc-logs when OUT is set (the device tool's output folder), else
# /tmp/cuda_ipc-logs (7 files).  Takes a few minutes; each suite run is cut
# off after 170 s, so the whole script stays inside the device tool's 10
# minutes even when something hangs.
set -uo pipefail

dir=${1:-${REFIT_BUILD:-devbuild}}
if ! dir=$(cd "$dir" 2>/dev/null && pwd); then
  echo "FAIL setup: no directory '${1:-${REFIT_BUILD:-devbuild}}' (run tools/dev/gpu/pack.sh BUILD_DIR here first)"
  exit 2
fi
for f in refit tests/transport/test_transport tests/transport/tp_peer \
         plugins/transport/cuda_ipc/refit-transport-cuda_ipc.so; do
  if [ ! -f "$dir/$f" ]; then
    echo "FAIL setup: $dir/$f is missing (was the build configured with CUDA?)"
    exit 2
  fi
done
logs=${OUT:-/tmp}/cuda_ipc-logs
mkdir -p "$logs"

npass=0 nfail=0 nskip=0
pass() { echo "PASS $*"; npass=$((npass + 1)); }
fail() { echo "FAIL $*"; nfail=$((nfail + 1)); }
skip() { echo "SKIP $*"; nskip=$((nskip + 1)); }

# librefit from DIR (the binaries' build-time RUNPATH does not exist here);
# plugins from DIR only: the loader searches REFIT_PLUGIN_PATH, and
# REFIT_NO_BUILD_TREE keeps it off the build tree compiled into librefit.
export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
REFIT_PLUGIN_PATH=$(find "$dir/plugins" -mindepth 2 -maxdepth 2 -type d | sort | paste -sd: -)
export REFIT_PLUGIN_PATH REFIT_NO_BUILD_TREE=1
unset REFIT_TP_SKIP REFIT_TP_MEMTYPE REFIT_TP_CUDA_DEVICE REFIT_TP_PEER_CUDA_DEVICE CUDA_LAUNCH_BLOCKING
refit=$dir/refit

echo "== machine"
ngpu=0
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi -L | tee "$logs/gpus.txt"
  ngpu=$(grep -c '^GPU ' "$logs/gpus.txt")
  nvidia-smi topo -m > "$logs/topo.txt" 2>&1 && head -n $((ngpu + 1)) "$logs/topo.txt"
else
  echo "(no nvidia-smi: the GPU count comes from the test programs)"
  ngpu=2
fi
[ "$ngpu" -ge 1 ] || fail "machine: nvidia-smi lists no GPU"

echo "== plugin"
missing=$(ldd "$dir/plugins/transport/cuda_ipc/refit-transport-cuda_ipc.so" "$refit" \
          "$dir/tests/transport/test_transport" 2>&1 | grep 'not found' | sort -u)
if [ -n "$missing" ]; then
  fail "libraries: $(echo "$missing" | tr '\n' ' ')(source .devpack/env.sh first?)"
fi
if timeout 60 "$refit" plugins > "$logs/plugins.txt" 2>&1 && grep -q 'transport  *cuda_ipc' "$logs/plugins.txt"; then
  pass "refit plugins lists cuda_ipc"
else
  fail "refit plugins does not list cuda_ipc: $(grep -i 'cuda_ipc\|rejected' "$logs/plugins.txt" | head -3)"
fi
timeout 120 "$refit" doctor --set transport.plugin=cuda_ipc > "$logs/doctor.txt" 2>&1
uses=$(sed -n '/^  cuda_ipc:/,/^  [a-z]/p' "$logs/doctor.txt" | grep -m1 'uses:')
if [ -n "$uses" ]; then
  pass "refit doctor: cuda_ipc initialises:${uses#*uses:}"
else
  fail "refit doctor: cuda_ipc does not initialise: $(sed -n '/^  cuda_ipc:/,/^  [a-z]/p' "$logs/doctor.txt" | grep -m1 'would fail')"
fi

echo "== conformance suite (tests/transport/test_transport cuda_ipc, device memory)"
# NAME, then VAR=VALUE settings for both processes.  t_peer_stopped is
# skipped as in tests/transport/meson.build (a stopped owner does not stop
# one-sided copies).
suite() {
  local name=$1 log
  shift
  log="$logs/$(echo "$name" | tr -c 'A-Za-z0-9' _ | sed 's/__*/_/g;s/_$//').log"
  env "$@" REFIT_TP_PEER="$dir/tests/transport/tp_peer" REFIT_TP_MEMTYPE=cuda \
      REFIT_TP_SKIP=t_peer_stopped CK_FORK=yes CK_VERBOSITY=normal \
      timeout 170 "$dir/tests/transport/test_transport" cuda_ipc > "$log" 2>&1
  local rc=$? checks
  checks=$(grep -m1 'Checks:' "$log")
  case $rc in
    0) pass "$name: ${checks:-no summary}" ;;
    77) fail "$name: skipped, $(grep -m1 SKIP "$log")" ;;
    124) fail "$name: did not finish within 170 s (log: $log)"
         grep -E ':[EF]:' "$log" | head -10 | sed 's/^/     /' ;;
    *) fail "$name: exit $rc, ${checks:-no summary} (log: $log)"
       grep -E ':[EF]:|did not start' "$log" | head -20 | sed 's/^/     /' ;;
  esac
  grep -E 'nothing checked|no deregistration overlapped' "$log" | sed 's/^/     note: /'
}
if [ "$ngpu" -ge 2 ]; then
  suite "test on GPU 0, peer on GPU 1" REFIT_TP_CUDA_DEVICE=0 REFIT_TP_PEER_CUDA_DEVICE=1
  sockdir=$(mktemp -d)
  suite "GPU 0 <-> 1, 3 streams, 1 MiB chunks, socket in a directory" \
    REFIT_TP_CUDA_DEVICE=0 REFIT_TP_PEER_CUDA_DEVICE=1 REFIT_TRANSPORT_CUDA_IPC_STREAMS=3 \
    REFIT_TRANSPORT_CUDA_IPC_CHUNK=1MiB REFIT_TRANSPORT_CUDA_IPC_SOCKET_DIR="$sockdir"
  rm -rf "$sockdir" # a killed peer (t_peer_killed) leaves its socket file
else
  skip "cross-GPU runs: this machine has $ngpu GPU"
fi
suite "both processes on GPU 0" REFIT_TP_CUDA_DEVICE=0 REFIT_TP_PEER_CUDA_DEVICE=0

echo "== summary"
echo "cuda_ipc.sh: $npass passed, $nfail failed, $nskip skipped (logs in $logs)"
[ "$nfail" -eq 0 ]
