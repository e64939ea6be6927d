#!/usr/bin/env bash
# Joins kind clusters the way a vendor or a platform team joins clusters by hand, so that crossnet
# can validate them with `--provider existing --plumbing none` (the nightly `vendor` job does that):
#
#   examples/vendor-join-kind.sh CLUSTER CLUSTER [CLUSTER...]        e.g. cluster-1 cluster-2
#
# for every ordered pair of clusters (A, B):
#   - routes: on every node of A, `ip route replace <podCIDR of node b> via <InternalIP of b>` for
#     every node b of B (`docker exec`; kind's nodes share one docker network, so b is one hop away);
#   - DNS: A's CoreDNS ConfigMap (kube-system/coredns) gets a server block for B's cluster domain
#     that forwards to B's CoreDNS pod IPs. The stock Corefile's `reload` plugin picks it up (within
#     about a minute and a half); CoreDNS is NOT restarted, since a restart gives its pods new IPs
#     and the peers' forward blocks would point at the old ones;
# then it waits until a pod in every cluster resolves `kubernetes.default.svc.<domain>.` of every peer.
#
# Needs kind, kubectl (contexts kind-<name>, from $KUBECONFIG or ~/.kube/config) and docker.
# Running it again replaces its own routes and blocks (each block is fenced by `# vendor-join-kind`
# lines naming the peer). It deletes nothing but its own check pods (`kubectl run --rm`). Environment:
#   JOIN_CHECK_IMAGE   the image of the check pods (default python:3-slim, crossnet's agent image)
#   JOIN_WAIT_SECONDS  how long to wait for nodes, CoreDNS and the peer names (default 300)
set -euo pipefail

JOIN_CHECK_IMAGE=${JOIN_CHECK_IMAGE:-python:3-slim}
JOIN_WAIT_SECONDS=${JOIN_WAIT_SECONDS:-300}

die() { echo "vendor-join-kind: $*" >&2; exit 2; }
say() { echo "vendor-join-kind: $*" >&2; }

# --- inputs -------------------------------------------------------------------------------
[ "$#" -ge 2 ] || die "usage: $0 CLUSTER CLUSTER [CLUSTER...] (kind cluster names, at least two)"
declare -A seen=()
for name in "$@"; do
  # kind cluster names are DNS-1123 labels; checked before any name reaches a command.
  if [ "${#name}" -gt 50 ] || ! [[ $name =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]]; then
    die "'${name:0:60}' is not a kind cluster name (lowercase letters, digits and '-', at most 50 characters)"
  fi
  [ -z "${seen[$name]:-}" ] || die "cluster '$name' is named twice"
  seen[$name]=1
done
[[ $JOIN_WAIT_SECONDS =~ ^[1-9][0-9]{0,4}$ ]] || die "JOIN_WAIT_SECONDS must be a whole number of seconds"
for tool in kind kubectl docker; do
  command -v "$tool" >/dev/null || die "$tool is not installed (it needs kind, kubectl and docker)"
done

valid_ip() { [[ $1 =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}$ ]]; }
valid_cidr() { [[ $1 =~ ^([0-9]{1,3}\.){3}[0-9]{1,3}/[0-9]{1,2}$ ]]; }
valid_domain() { [[ ${#1} -le 253 && $1 =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$ ]]; }

# --- what each cluster is ------------------------------------------------------------------
declare -A NODES=() DOMAIN=() DNS_IPS=() COREFILE=()
declare -A NODE_IP=() NODE_CIDR=()
for cluster in "$@"; do
  ctx=kind-$cluster
  kind_nodes=" $(kind get nodes --name "$cluster" | tr '\n' ' ') "
  [ "$kind_nodes" != "  " ] || die "kind has no cluster '$cluster' (kind get clusters lists them)"
  kubectl --context "$ctx" wait --for=condition=Ready nodes --all --timeout="${JOIN_WAIT_SECONDS}s" >/dev/null
  kubectl --context "$ctx" -n kube-system rollout status deployment/coredns --timeout="${JOIN_WAIT_SECONDS}s" >/dev/null

  nodes=()
  while read -r node cidr ip; do
    [ -n "$node" ] || continue
    # Only containers kind lists for this cluster are ever `docker exec`ed.
    [[ $kind_nodes == *" $node "* ]] || die "$ctx: node '${node:0:60}' is not a kind node of $cluster"
    valid_cidr "$cidr" || die "$ctx: node $node has no podCIDR ('${cidr:0:40}')"
    valid_ip "$ip" || die "$ctx: node $node has no InternalIP ('${ip:0:40}')"
    nodes+=("$node")
    NODE_CIDR[$node]=$cidr
    NODE_IP[$node]=$ip
  done < <(kubectl --context "$ctx" get nodes -o \
    jsonpath='{range .items[*]}{.metadata.name}{" "}{.spec.podCIDR}{" "}{.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}')
  [ "${#nodes[@]}" -gt 0 ] || die "$ctx: no nodes"
  NODES[$cluster]="${nodes[*]}"

  dns_ips=$(kubectl --context "$ctx" -n kube-system get pods -l k8s-app=kube-dns \
    --field-selector=status.phase=Running -o jsonpath='{.items[*].status.podIP}')
  for ip in $dns_ips; do valid_ip "$ip" || die "$ctx: CoreDNS pod IP '${ip:0:40}' is not an IPv4 address"; done
  [ -n "${dns_ips// /}" ] || die "$ctx: no running CoreDNS pod (k8s-app=kube-dns)"
  DNS_IPS[$cluster]=$dns_ips

  corefile=$(kubectl --context "$ctx" -n kube-system get configmap coredns -o jsonpath='{.data.Corefile}')
  COREFILE[$cluster]=$corefile
  # The cluster's domain is the zone of the Corefile's kubernetes plugin (kind: the config's dnsDomain).
  domain=$(sed -n 's/^[[:space:]]*kubernetes[[:space:]]\{1,\}\([^[:space:]{]\{1,\}\).*/\1/p' <<<"$corefile" | head -n 1)
  domain=${domain%.}
  valid_domain "$domain" || die "$ctx: no cluster domain in the Corefile's kubernetes line ('${domain:0:60}')"
  DOMAIN[$cluster]=$domain
  say "$cluster: nodes ${NODES[$cluster]}; domain ${DOMAIN[$cluster]}; CoreDNS pods $dns_ips"
done

# --- routes to every peer's pod CIDRs --------------------------------------------------------
for cluster in "$@"; do
  for peer in "$@"; do
    [ "$peer" != "$cluster" ] || continue
    for node in ${NODES[$cluster]}; do
      for peer_node in ${NODES[$peer]}; do
        docker exec "$node" ip route replace "${NODE_CIDR[$peer_node]}" via "${NODE_IP[$peer_node]}"
        say "$node: route ${NODE_CIDR[$peer_node]} via ${NODE_IP[$peer_node]} ($peer_node)"
      done
    done
  done
done

# --- a forward block per peer domain in each Corefile ----------------------------------------
json_string() {  # a JSON string literal of $1 (the Corefile: printable text, newlines and tabs)
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/\\t}
  s=${s//$'\r'/\\r}
  s=${s//$'\n'/\\n}
  [[ $s != *[[:cntrl:]]* ]] || die "the Corefile holds control characters; edit it by hand"
  printf '"%s"' "$s"
}

for cluster in "$@"; do
  corefile=${COREFILE[$cluster]}
  for peer in "$@"; do
    [ "$peer" != "$cluster" ] || continue
    begin="# vendor-join-kind: $peer begin"
    end="# vendor-join-kind: $peer end"
    # Drop this script's earlier block for the peer, then append the current one.
    corefile=$(awk -v b="$begin" -v e="$end" '$0 == b { skip = 1; next } $0 == e { skip = 0; next } !skip' <<<"$corefile")
    corefile+=$'\n'"$begin"$'\n'"${DOMAIN[$peer]}:53 {"$'\n'"    errors"$'\n'"    cache 30"
    corefile+=$'\n'"    forward . ${DNS_IPS[$peer]}"$'\n'"}"$'\n'"$end"
  done
  kubectl --context "kind-$cluster" -n kube-system patch configmap coredns --type merge \
    -p "{\"data\":{\"Corefile\":$(json_string "$corefile"$'\n')}}" >/dev/null
  say "$cluster: Corefile forwards the peers' domains to their CoreDNS pods"
done

# --- wait until every cluster resolves every peer's names ------------------------------------
check='import socket, sys, time
deadline = time.monotonic() + float(sys.argv[2])
while True:
    try:
        print(sys.argv[1], socket.gethostbyname(sys.argv[1])); break
    except OSError as e:
        if time.monotonic() > deadline: sys.exit(f"{sys.argv[1]}: {e}")
        time.sleep(3)'
checks=0
for cluster in "$@"; do
  for peer in "$@"; do
    [ "$peer" != "$cluster" ] || continue
    name="kubernetes.default.svc.${DOMAIN[$peer]}."
    checks=$((checks + 1))
    say "$cluster: waiting until $name resolves (CoreDNS reload)"
    kubectl --context "kind-$cluster" -n default run "vendor-join-check-$$-$checks" --image="$JOIN_CHECK_IMAGE" \
      --restart=Never --rm --attach --quiet --pod-running-timeout="${JOIN_WAIT_SECONDS}s" \
      --command -- python3 -c "$check" "$name" "$JOIN_WAIT_SECONDS"
  done
done
say "joined: $*"
