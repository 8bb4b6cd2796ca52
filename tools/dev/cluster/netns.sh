#!/usr/bin/env bash
# netns.sh — an emulated cluster on one machine, for `refit bench cluster`.
#
#   netns.sh up PREFIX HOSTS RATE_MBIT [DELAY_US]
#   netns.sh down PREFIX
#   netns.sh check
#
# up: a "switch" namespace PREFIX-sw holding a bridge, and HOSTS host
# namespaces PREFIX-h0 .. PREFIX-h<HOSTS-1>, each with one veth "NIC" eth0
# at 10.77.0.<i+1>/24 plugged into the bridge.  Each NIC is shaped to
# RATE_MBIT each way with tbf: on eth0's egress (what the host sends) and
# on the switch port's egress (what the host receives), so a host is a
# full-duplex NIC of that rate behind a non-blocking switch.  DELAY_US adds
# netem delay where the kernel has netem (CONFIG_NET_SCH_NETEM); otherwise
# a note says it was left out.  The addresses exist only inside these
# namespaces, which have no route anywhere else.  A failure part way tears
# down what was made (trap), so `up` leaves all or nothing.
#
# down: deletes every namespace named PREFIX-* (their veths go with them).
# check: exit 0 when namespaces and tbf can be made here (root, ip, tc).
set -euo pipefail

die() { echo "netns.sh: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found (install iproute2: tools/dev/deps.sh)"; }

down() {
  local p=$1 n
  for n in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${p}-(sw|h[0-9]+)\$" || true); do
    ip netns del "$n" 2>/dev/null || true
  done
}

shape() { # shape NS DEV RATE DELAY
  local ns=$1 dev=$2 rate=$3 delay=$4
  # Burst: at least one 64 KiB GSO segment, ~1 ms of the rate otherwise.
  local burst=$(( rate * 1000 / 8 / 1000 ))
  [ "$burst" -lt 131072 ] && burst=131072
  ip netns exec "$ns" tc qdisc add dev "$dev" root handle 1: tbf rate "${rate}mbit" burst "$burst" latency 50ms
  if [ "$delay" != 0 ]; then
    if ! ip netns exec "$ns" tc qdisc add dev "$dev" parent 1:1 handle 10: netem delay "${delay}us" 2>/dev/null; then
      NODELAY=1
    fi
  fi
}

up() {
  local p=$1 hosts=$2 rate=$3 delay=${4:-0} i
  [ "$hosts" -ge 1 ] && [ "$hosts" -le 200 ] || die "HOSTS must be 1..200"
  trap 'down "$p"' ERR INT TERM
  ip netns add "$p-sw"
  ip netns exec "$p-sw" ip link set lo up
  ip netns exec "$p-sw" ip link add br0 type bridge
  ip netns exec "$p-sw" ip link set br0 up
  NODELAY=0
  for ((i = 0; i < hosts; i++)); do
    ip netns add "$p-h$i"
    ip netns exec "$p-h$i" ip link set lo up
    ip link add eth0 netns "$p-h$i" type veth peer name "p$i" netns "$p-sw"
    ip netns exec "$p-sw" ip link set "p$i" master br0
    ip netns exec "$p-sw" ip link set "p$i" up
    ip netns exec "$p-h$i" ip addr add "10.77.0.$((i + 1))/24" dev eth0
    ip netns exec "$p-h$i" ip link set eth0 up
    shape "$p-h$i" eth0 "$rate" "$delay"
    shape "$p-sw" "p$i" "$rate" "$delay"
  done
  trap - ERR INT TERM
  if [ "$NODELAY" = 1 ]; then
    echo "netns.sh: netem is not in this kernel: ${delay} us of delay not added (veth latency only)" >&2
  fi
}

case "${1:-}" in
  up) [ $# -ge 4 ] || die "usage: netns.sh up PREFIX HOSTS RATE_MBIT [DELAY_US]"; need ip; need tc; up "$2" "$3" "$4" "${5:-0}" ;;
  down) [ $# -eq 2 ] || die "usage: netns.sh down PREFIX"; need ip; down "$2" ;;
  check)
    [ "$(id -u)" -eq 0 ] || die "needs root (network namespaces and tc)"
    need ip; need tc
    p="rfchk$$"
    trap 'down "$p"' EXIT
    ip netns add "$p-h0" 2>/dev/null || die "cannot create network namespaces here"
    ip link add c0 netns "$p-h0" type veth peer name c1 netns "$p-h0" 2>/dev/null ||
      die "cannot create veth pairs in a namespace (CONFIG_VETH)"
    ip netns exec "$p-h0" tc qdisc add dev c0 root tbf rate 1gbit burst 128k latency 50ms 2>/dev/null ||
      die "tc tbf is not available (CONFIG_NET_SCH_TBF)"
    ;;
  *) die "usage: netns.sh up PREFIX HOSTS RATE_MBIT [DELAY_US] | down PREFIX | check" ;;
esac
