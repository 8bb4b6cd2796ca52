#!/usr/bin/env bash
# deps.sh — make sure the Debian packages refit builds and tests with are
# installed.  As root it installs what is missing with apt-get; otherwise it
# prints the exact apt-get line and fails, so nothing half-works.
set -euo pipefail
pkgs=(
  gcc meson ninja-build pkg-config
  libltdl-dev libyaml-dev check libmsgpack-dev libjansson-dev libxxhash-dev
  libucx-dev ucx-utils libfabric-dev libfabric-bin libibverbs-dev libnuma-dev
  libhiredis-dev redis-server redis-tools iperf3
  python3 python3-pytest python3-numpy
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
line="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "refit needs these Debian packages; run as root:" >&2
  echo "  apt-get update && $line" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# redis-server's postinst starts a service where systemd runs; tests start
# their own servers on random ports, so that one is harmless.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
