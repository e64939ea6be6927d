#!/usr/bin/env bash
# Join the clusters of a lab brought up with `crossnet up --plumbing none`, the way a vendor's
# product or a platform team's script joins kind clusters: a route on every node to every peer
# node's podCIDR, and a forward server block per peer domain in each cluster's Corefile (on kind:
# the coredns ConfigMap in kube-system; in the lab: the Corefile file its DNS server reloads).
# crossnet itself changes nothing under --plumbing none: this script is the "vendor".
#
#   crossnet up --plumbing none --state-dir /tmp/lab
#   bash examples/join-lab.sh /tmp/lab
#   pytest suites/ --attach /tmp/lab --plumbing none
#
# It reads the topology from `crossnet status --json` and changes nodes only through
# `crossnet exec`. Undo: `crossnet down` ends the whole lab.
set -euo pipefail

state_dir=${1:?usage: join-lab.sh STATE_DIR (of a run brought up with crossnet up --plumbing none)}
crossnet=${CROSSNET:-crossnet}
[ -f "$state_dir/state.json" ] || { echo "join-lab.sh: $state_dir has no state.json (not a crossnet run)" >&2; exit 2; }

plan=$("$crossnet" status --state-dir "$state_dir" --json | python3 -c '
import ipaddress, json, re, sys
state = json.load(sys.stdin)
if state.get("provider") != "lab":
    sys.exit("join-lab.sh: this script joins lab runs; for kind see examples/vendor-join-kind.sh")
name = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
clusters = state["cluster_set"]["clusters"]
for c in clusters:  # every value is checked before it reaches a command line
    assert name.fullmatch(c["name"]), c["name"]
    assert re.fullmatch(r"[a-z0-9.-]{1,253}", c["domain"]), c["domain"]
    for n in c["nodes"]:
        assert name.fullmatch(n["short"]), n["short"]
        ipaddress.ip_address(n["ip"]), ipaddress.ip_network(n["pod_cidr"])
    for ip in c["dns_server_ips"]:
        ipaddress.ip_address(ip)
for c in clusters:
    for peer in clusters:
        if peer["name"] == c["name"]:
            continue
        for n in c["nodes"]:
            for p in peer["nodes"]:
                print("route", c["name"], n["short"], p["pod_cidr"], p["ip"])
        print("forward", c["name"], peer["domain"], " ".join(peer["dns_server_ips"]))
')

while read -r kind cluster a b c; do
    case $kind in
    route)  # node a of cluster: peer podCIDR b via peer node IP c
        "$crossnet" exec --state-dir "$state_dir" "$cluster/$a" -- ip route replace "$b" via "$c"
        echo "join-lab.sh: $cluster/$a: route $b via $c"
        ;;
    forward)  # cluster's Corefile: zone a forwarded to the peer's DNS pods (b c ...)
        corefile=$state_dir/clusters/$cluster/Corefile
        servers="$b${c:+ $c}"
        if ! grep -q "^$a:53 {" "$corefile"; then
            tmp=$(mktemp "$corefile.XXXXXX")
            { cat "$corefile"; printf '%s:53 {\n    errors\n    cache 30\n    forward . %s\n}\n' "$a" "$servers"; } >"$tmp"
            chmod --reference="$corefile" "$tmp"
            mv "$tmp" "$corefile"  # one rename: the DNS server reloads a whole file, as CoreDNS's reload does
        fi
        echo "join-lab.sh: $cluster: forward $a to $servers"
        ;;
    esac
done <<<"$plan"
