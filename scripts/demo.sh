#!/usr/bin/env bash
# The demo, as the README gives it: setup, then `weft lab`: a whole cluster on this machine
# (hosts in network namespaces, a weft daemon each, an underlay switch, a router and an
# "internet", containers on every host), brought up, checked, and left up to explore.
#   bash scripts/demo.sh                         3 hosts, vxlan, embedded store, 2 containers each
#   bash scripts/demo.sh --backend host-gw --hosts 4 --store etcd     any `weft lab up` option
#   WEFT_LAB=other bash scripts/demo.sh          another lab name (labs coexist)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

export WEFT_LAB="${WEFT_LAB:-weft}"
if [ -e "/var/lib/weft/lab/$WEFT_LAB" ] || [ -e "/run/netns/weft-$WEFT_LAB-sw" ]; then
  echo "demo: a lab named \"$WEFT_LAB\" is already up; taking it down first"
  weft lab down
fi

weft lab up "$@"
echo
status=0
weft lab check || status=$?
echo

# From the lab's status: a container on host1, one on the second host, the published port.
read -r h1 c1 ip cname chost pub <<<"$(weft lab status --json | node -e '
  const s = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const a = s.hosts[0], b = s.hosts[1] ?? s.hosts[0];
  const ca = a?.containers[0], cb = b?.containers.find((c) => c.name !== ca?.name);
  const p = s.published ? `${s.published.publicIp}:${s.published.port}` : "-";
  process.stdout.write([a?.name, ca?.name, cb?.ip, cb?.name, b?.name, p].map((x) => x ?? "-").join(" "));
')" || true

cat <<EOF
The lab "$WEFT_LAB" stays up for you to explore (as root):
  weft lab status                           its hosts, their subnets and public IPs, the containers
  weft lab exec $chost -- weft ps            inside a host, plain weft commands talk to that host's daemon
  weft lab exec $chost -- ip route           the routes the backend programmed for the other hosts' subnets
EOF
if [ "${ip:--}" != - ] && [ "${c1:--}" != - ]; then
  echo "  weft lab exec $h1 $c1 -- curl -s http://$ip/    from $c1 on $h1 to $cname on $chost"
fi
if [ "${pub:--}" != - ]; then
  echo "  weft lab exec internet -- curl -s http://$pub/    a published port, from the internet"
fi
if [ "${cname:--}" != - ] && [ "${c1:--}" != - ]; then
  echo "  weft trace $c1 $chost/$cname:80 --probe    the packet's way, hop by hop, confirmed by a real one"
fi
echo "  weft ui                                   a live picture of the lab on http://127.0.0.1:8088 (click two containers)"
cat <<EOF
  weft lab add-host; weft lab rm-host $chost hosts join and leave; the others converge
  weft lab logs host1                       a daemon's log
  weft lab check                            every container to every other, the internet, the published port

Take it down:  weft lab down
EOF
exit "$status"
