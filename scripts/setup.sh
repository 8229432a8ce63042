#!/usr/bin/env bash
# Install what weft needs on Debian 12, as root: system packages, npm packages, the build, and
# the `weft` command on PATH. Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "setup: run as root (weft builds namespaces, links and firewall rules)" >&2
  exit 1
fi
if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "setup: weft needs Node.js 20 or newer on PATH" >&2
  exit 1
fi

# Debian packages: command → package. Installed only when the command is missing.
declare -A pkgs=(
  [ip]=iproute2 [bridge]=iproute2 [nft]=nftables [iptables]=iptables [conntrack]=conntrack
  [ping]=iputils-ping [iperf3]=iperf3 [socat]=socat [busybox]=busybox-static [nc]=netcat-openbsd
  [tcpdump]=tcpdump [curl]=curl [nsenter]=util-linux [unshare]=util-linux [perl]=perl-base
  # the etcd store's tests and `weft lab --store etcd`
  [etcd]=etcd-server
  # the Docker plugin's real-client test: Debian's dockerd 20.10 (with containerd, runc), started
  # only by the test inside its own namespaces; the guard below keeps the package from starting it
  [dockerd]=docker.io
  # the CNI plugin's real-client test: Debian's podman 4.3 with its CNI backend and runc (crun
  # refuses these machines' cgroup layout); podman has no service of its own to start
  [podman]=podman [runc]=runc
  # the `weft ui` page's end-to-end test drives Debian's headless Chromium (playwright-core)
  [chromium]=chromium
  # better-sqlite3 is compiled at npm install time (node-gyp)
  [g++]=g++ [make]=make [python3]=python3
)
missing=()
for cmd in "${!pkgs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkgs[$cmd]}")
done
# The reference CNI plugins (benchmarks measure against them; the CNI issue chains them).
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
if [ ${#missing[@]} -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  # Install only: no package may start a service (etcd-server would start one on the host;
  # weft runs etcd itself inside its own namespaces). policy-rc.d is Debian's switch for that.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT # also when the install fails
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if trap -p EXIT | grep -q policy-rc.d; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
fi

# npm packages (exactly the lock file's), then the build.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages"
  # Build native addons against the installed Node's headers, never downloaded ones (offline).
  if [ -z "$(npm config get nodedir 2>/dev/null | grep -v '^undefined$')" ] && [ -f /usr/include/node/node_version.h ]; then
    export npm_config_nodedir=/usr
  fi
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build

# `weft` on PATH: a launcher pointing at this checkout.
if [ "$(readlink -f /usr/local/bin/weft 2>/dev/null)" != "$(pwd)/bin/weft.js" ]; then
  ln -sf "$(pwd)/bin/weft.js" /usr/local/bin/weft
fi
