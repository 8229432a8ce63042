#!/usr/bin/env bash
# The demo, as the README gives it: setup, then `weft lab`: a whole cluster on this machine
# (hosts in network namespaces, a weft daemon each, an underlay switch, a router and an
# "internet", containers on every host), brought up, checked, and left up to explore.
#   bash scripts/demo.sh                         3 hosts, vxlan, embedded store, 2 containers each
#   bash scripts/demo.sh --backend host-gw --hosts 4 --store etcd     any `weft lab up` option
#   bash scripts/demo.sh --name other            another lab (labs coexist; or WEFT_LAB=other)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The lab's name, as `weft lab up` takes it: the last --name NAME / --name=NAME, else $WEFT_LAB,
# else weft. Every step below and every hint names it (the reader's shell has no WEFT_LAB).
lab="${WEFT_LAB:-weft}"
prev=
for a in "$@"; do
  [ "$prev" = --name ] && lab="$a"
  case "$a" in --name=*) lab="${a#--name=}" ;; esac
  prev="$a"
done
export WEFT_LAB="$lab"
# Hints name the lab unless it is the default one (as the CLI's own hints do).
nf=" --name $lab" ln=" --lab $lab"
if [ "$lab" = weft ]; then nf="" ln=""; fi

if [ -e "/var/lib/weft/lab/$lab" ] || [ -e "/run/netns/weft-$lab-sw" ]; then
  echo "demo: a lab named \"$lab\" is already up; taking it down first"
  weft lab down --name "$lab"
fi

weft lab up "$@"
echo
status=0
weft lab check --name "$lab" || status=$?
echo

# From the lab's status: a container on host1, one on the second host, the published port.
read -r h1 c1 ip cname chost pub <<<"$(weft lab status --name "$lab" --json | node -e '
  const s = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const a = s.hosts[0], b = s.hosts[1] ?? s.hosts[0];
  const ca = a?.containers[0], cb = b?.containers.find((c) => c.name !== ca?.name);
  const p = s.published ? `${s.published.publicIp}:${s.published.port}` : "-";
  process.stdout.write([a?.name, ca?.name, cb?.ip, cb?.name, b?.name, p].map((x) => x ?? "-").join(" "));
')" || true

# Hints: a command and what it shows, the commands padded to one column.
cmds=() what=()
hint() {
  cmds+=("$1")
  what+=("$2")
}
hint "weft lab status$nf" "its hosts, their subnets and public IPs, the containers"
hint "weft lab exec$nf $chost -- weft ps" "inside a host, plain weft commands talk to that host's daemon"
hint "weft lab exec$nf $chost -- ip route" "the routes the backend programmed for the other hosts' subnets"
if [ "${ip:--}" != - ] && [ "${c1:--}" != - ]; then
  hint "weft lab exec$nf $h1 $c1 -- curl -s http://$ip/" "from $c1 on $h1 to $cname on $chost"
fi
if [ "${pub:--}" != - ]; then
  hint "weft lab exec$nf internet -- curl -s http://$pub/" "a published port, from the internet"
fi
if [ "${cname:--}" != - ] && [ "${c1:--}" != - ]; then
  hint "weft trace $c1 $chost/$cname:80 --probe$ln" "the packet's way, hop by hop, confirmed by a real one"
fi
hint "weft ui$ln" "a live picture of the lab on http://127.0.0.1:8088 (click two containers)"
hint "weft lab add-host$nf; weft lab rm-host$nf $chost" "hosts join and leave; the others converge"
hint "weft lab logs$nf host1" "a daemon's log"
hint "weft lab check$nf" "every container to every other, the internet, the published port"
w=0
for c in "${cmds[@]}"; do [ "${#c}" -gt "$w" ] && w=${#c}; done
echo "The lab \"$lab\" stays up for you to explore (as root):"
for i in "${!cmds[@]}"; do printf '  %-*s   %s\n' "$w" "${cmds[$i]}" "${what[$i]}"; done
echo
echo "Take it down:  weft lab down$nf"
exit "$status"
