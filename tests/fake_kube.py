"""An in-memory Kubernetes API server for the existing-clusters provider (crossnet.providers.existing):
it implements the provider's REST seam (`KubeApi.request` / `exec`) the way an API server answers,
and it enforces RBAC — it grants exactly what the RBAC documents it is given grant (what
`crossnet rbac` prints) and denies everything else with 403, SelfSubjectAccessReviews included.

Also: namespace lifecycle (no object in a namespace that does not exist, 404), server-side dry
runs (`dryRun=All`: admitted, never stored), Pod Security Admission by namespace label (or a
cluster default), an admission webhook that can refuse privileged namespaces or hostNetwork pods,
ClusterIP and NodePort allocation (an out-of-range clusterIP gets the API server's own error text,
which names the valid range), pod IPs from the node's podCIDR (or a Calico-style pool when nodes
carry none), agents behind the pod proxy that answer only the run's token, and pod logs.

Every request is recorded in `requests` (method, path, verb, namespace, resource, dry run, allowed).
`HttpBridge` serves a FakeCluster over HTTP so the real kubernetes client can be tested against it.

For `--plumbing inject`: PUT replaces an object (a stale metadata.resourceVersion is a 409), and
with `node_net` set (a `NodeNet`), commands exec'd in a hostNetwork pod run against that pod's
node's routing table (`ip -4 route show`, `ip route add|del DEST via GW`); others answer rc 0.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml

from crossnet.providers.existing.kube import ApiError

USER = "User:crossnet"
BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                 "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
PSA = "pod-security.kubernetes.io/enforce"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    verb: str
    group: str
    resource: str  # with the subresource, e.g. pods/proxy
    namespace: str
    name: str
    dry_run: bool
    allowed: bool


def parse_path(path: str) -> tuple[str, str, str, str, str]:
    """(group, resource[/subresource], namespace, name, rest) of an API path."""
    parts = [p for p in path.split("/") if p]
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if resource == "pods" and ":" in name:
        name = name.split(":")[0]
    return group, resource + (f"/{sub}" if sub else ""), namespace, name, "/".join(rest[3:])


class Rbac:
    """The grants of RBAC documents for one subject."""

    def __init__(self, documents: Sequence[dict[str, Any]], subject: str = USER) -> None:
        kind, _, name = subject.partition(":")
        roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d.get("rules") or []
                 for d in documents if d["kind"] in ("Role", "ClusterRole")}
        self.grants: list[tuple[str | None, dict[str, Any]]] = []  # (namespace or None = everywhere, rule)
        for doc in documents:
            if doc["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            if not any(s["kind"] == kind and s["name"] == name.split("/")[-1] for s in doc["subjects"]):
                continue
            ref = doc["roleRef"]
            where = doc["metadata"].get("namespace", "") if doc["kind"] == "RoleBinding" else None
            role_ns = where if ref["kind"] == "Role" else ""
            for rule in roles.get((ref["kind"], role_ns or "", ref["name"]), []):
                self.grants.append((where, rule))

    @classmethod
    def from_yaml(cls, text: str, subject: str = USER) -> Rbac:
        return cls([d for d in yaml.safe_load_all(text) if d], subject)

    def allows(self, verb: str, group: str, resource: str, namespace: str, name: str = "") -> bool:
        for where, rule in self.grants:
            if where is not None and where != namespace:
                continue
            if not ({verb, "*"} & set(rule["verbs"]) and {group, "*"} & set(rule["apiGroups"])
                    and {resource, "*"} & set(rule["resources"])):
                continue
            names = rule.get("resourceNames") or []
            if names and name not in names:
                continue
            return True
        return False


class AllowAll:
    def allows(self, verb: str, group: str, resource: str, namespace: str, name: str = "") -> bool:
        return True


class NodeNet:
    """The nodes' routing tables, as `ip` shows and changes them (main table, IPv4, with `proto`), and
    kindnet's KIND-MASQ-AGENT nat chain and conntrack table as iptables and conntrack change them."""

    def __init__(self) -> None:
        self.routes: dict[str, list[str]] = {}  # node name -> lines of `ip -4 route show`
        self.commands: list[tuple[str, list[str]]] = []  # every command run on a node, in order
        self.masq: dict[str, list[list[str]]] = {}  # node name -> KIND-MASQ-AGENT's rules (the words after the chain)
        self.no_masq_chain: set[str] = set()  # nodes without kindnet's chain
        self.flows: dict[str, list[str]] = {}  # node name -> conntrack entries' destination IPs

    def run(self, node: str, argv: list[str]) -> tuple[int, str, str]:
        self.commands.append((node, argv))
        table = self.routes.setdefault(node, [])
        if argv[:2] == ["sh", "-c"] and len(argv) > 3 and argv[3] == "sh":  # the scripts crossnet sends
            return self._script(node, argv[2], argv[4:])
        if argv[:1] == ["iptables"]:
            return self._iptables(node, argv)
        if argv[:1] == ["conntrack"]:
            return self._conntrack(node, argv)
        if argv == ["ip", "-4", "route", "show"]:
            return 0, "".join(f"{line}\n" for line in table), ""
        if argv[:3] in (["ip", "route", "add"], ["ip", "route", "del"]) and len(argv) in (6, 8) and argv[4] == "via":
            proto = argv[7] if len(argv) == 8 and argv[6] == "proto" else None
            line = f"{argv[3]} via {argv[5]} dev eth0" + (f" proto {proto}" if proto else "")
            if argv[2] == "add":
                if any(existing.split()[0] == argv[3] for existing in table):
                    return 2, "", "RTNETLINK answers: File exists\n"
                table.append(line)
                return 0, "", ""
            # as the kernel: a delete without proto matches any proto, with one only that proto
            found = [x for x in table if x.split()[:3] == argv[3:6] and (proto is None or f" proto {proto}" in x)]
            if not found:
                return 2, "", "RTNETLINK answers: No such process\n"
            table.remove(found[0])
            return 0, "", ""
        return 0, "", ""

    def _script(self, node: str, script: str, args: list[str]) -> tuple[int, str, str]:
        if "-S KIND-MASQ-AGENT" in script:  # the guard: exit 0 without kindnet's chain, else run the argv
            return (0, "", "") if node in self.no_masq_chain else self.run(node, args)
        if "conntrack -D" in script:  # one delete per argument; exit 1 (nothing matched) is fine
            for cidr in args:
                if self._conntrack(node, ["conntrack", "-D", "-d", cidr])[0] > 1:
                    return 1, "", ""
            return 0, "", ""
        if "printf" in script and "exit 1" in script:
            return 1, "", f"{args[0]}\n"
        return 0, "", ""

    def _iptables(self, node: str, argv: list[str]) -> tuple[int, str, str]:
        if "KIND-MASQ-AGENT" not in argv:
            return 0, "", ""
        if node in self.no_masq_chain:
            return 1, "", "iptables: No chain/target/match by that name.\n"
        rules = self.masq.setdefault(node, [])
        at = argv.index("KIND-MASQ-AGENT")
        if "-S" in argv:
            return 0, "-N KIND-MASQ-AGENT\n", ""
        if "-I" in argv:
            rules.insert(0, argv[at + 2 :])
        elif "-D" in argv:
            if argv[at + 1 :] not in rules:
                return 1, "", "iptables: Bad rule (does a matching rule exist in that chain?).\n"
            rules.remove(argv[at + 1 :])
        return 0, "", ""

    def _conntrack(self, node: str, argv: list[str]) -> tuple[int, str, str]:
        flows = self.flows.setdefault(node, [])
        if argv[1:] == ["-F"]:
            flows.clear()
            return 0, "", ""
        if argv[1:3] == ["-D", "-d"]:
            gone = [ip for ip in flows if ipaddress.ip_address(ip) in ipaddress.ip_network(argv[3])]
            self.flows[node] = [ip for ip in flows if ip not in gone]
            return (0, "", f"{len(gone)} flow entries have been deleted.\n") if gone else (1, "", "")
        return 0, "", ""


class FakeCluster:
    """One cluster's API server. `context` is the kubeconfig context it answers as."""

    node_net: NodeNet | None = None  # set by a test: execs in hostNetwork pods reach the node's routes

    def __init__(self, context: str, index: int = 1, *, rbac: Any = None, nodes: int = 3,
                 pod_cidrs: bool = True, service_cidr_objects: bool = True, kubeadm: bool = True,
                 domain: str | None = None, cni: str = "kindnet", kube_proxy: str | None = "iptables",
                 crds: Sequence[str] = (), psa_default: str = "privileged", deny_privileged_namespaces: bool = False,
                 deny_host_network: bool = False, uid: str | None = None, gateway: str | None = None,
                 image_pull_fails: bool = False, corefile_forwards: Mapping[str, str] | None = None,
                 version: str = "v1.33.1", pod_subnet: str | None = None, service_cidr: str | None = None,
                 globalnet: bool = False) -> None:
        self.context, self.index = context, index
        self.rbac = rbac if rbac is not None else AllowAll()
        self.domain = domain or f"cluster-{index}.local"
        self.service_cidr = service_cidr or f"10.{100 + index}.0.0/16"
        self.pod_subnet = pod_subnet or f"10.{index}0.0.0/16"
        self.psa_default, self.version = psa_default, version
        self.deny_privileged_namespaces, self.deny_host_network = deny_privileged_namespaces, deny_host_network
        self.image_pull_fails, self.globalnet = image_pull_fails, globalnet
        self.requests: list[Request] = []
        self.execs: list[tuple[str, str, list[str]]] = []
        self.lock = threading.Lock()
        self.store: dict[str, dict[str, dict[str, Any]]] = {}  # collection path -> name -> object
        self._next_ip, self._next_port = 10, 31000
        self.uid = uid or str(uuid.uuid4())
        for ns in ("default", "kube-system"):
            self._put("/api/v1/namespaces", {"metadata": {"name": ns, "uid": self.uid if ns == "kube-system"
                                                          else str(uuid.uuid4()), "labels": {}}})
        pool = ipaddress.IPv4Network(self.pod_subnet)
        subnets = list(pool.subnets(new_prefix=24))
        for i in range(nodes):
            name = f"node-{i}.{context}.example.internal" if i == 2 else f"{context}-node-{i}"
            labels = {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
            if i == 0:
                labels["node-role.kubernetes.io/control-plane"] = ""
            if gateway == name:
                labels["submariner.io/gateway"] = "true"
            spec: dict[str, Any] = {"podCIDRs": [str(subnets[i])], "podCIDR": str(subnets[i])} if pod_cidrs else {}
            self._put("/api/v1/nodes", {"metadata": {"name": name, "labels": labels}, "spec": spec, "status": {
                "addresses": [{"type": "InternalIP", "address": f"172.18.{index}.{2 + i}"},
                              {"type": "Hostname", "address": name}],
                "conditions": [{"type": "Ready", "status": "True"}]}})
        self.node_ips = {n: o["status"]["addresses"][0]["address"] for n, o in self.store["/api/v1/nodes"].items()}
        forwards = "".join(f"{zone}:53 {{\n    forward . {target}\n}}\n"
                           for zone, target in (corefile_forwards or {}).items())
        corefile = (f".:53 {{\n    errors\n    kubernetes {self.domain} in-addr.arpa ip6.arpa {{\n      pods insecure\n"
                    f"    }}\n    forward . /etc/resolv.conf\n    cache 30\n}}\n{forwards}")
        cms = "/api/v1/namespaces/kube-system/configmaps"
        self._put(cms, {"metadata": {"name": "coredns"}, "data": {"Corefile": corefile}})
        if kube_proxy is not None:
            self._put(cms, {"metadata": {"name": "kube-proxy"},
                            "data": {"config.conf": f"kind: KubeProxyConfiguration\nmode: {kube_proxy}\n"}})
        if kubeadm:
            cluster_config = {"kind": "ClusterConfiguration", "networking": {
                "podSubnet": self.pod_subnet, "serviceSubnet": self.service_cidr, "dnsDomain": self.domain}}
            if service_cidr_objects:  # newer kubeadm: the service CIDR only as ServiceCIDR objects here
                del cluster_config["networking"]["serviceSubnet"]
            self._put(cms, {"metadata": {"name": "kubeadm-config"},
                            "data": {"ClusterConfiguration": yaml.safe_dump(cluster_config)}})
        if service_cidr_objects:
            self._put("/apis/networking.k8s.io/v1/servicecidrs",
                      {"metadata": {"name": "kubernetes"}, "spec": {"cidrs": [self.service_cidr]}})
        if not pod_cidrs and cni == "calico":
            self._put("/apis/crd.projectcalico.org/v1/ippools",
                      {"metadata": {"name": "default-ipv4-ippool"}, "spec": {"cidr": self.pod_subnet}})
        daemonsets = {"kindnet": "kindnet", "calico": "calico-node", "cilium": "cilium"}
        for ds in [daemonsets.get(cni, cni), *(["kube-proxy"] if kube_proxy is not None else [])]:
            self._put("/apis/apps/v1/namespaces/kube-system/daemonsets", {"metadata": {"name": ds,
                                                                                        "namespace": "kube-system"}})
        if globalnet:  # Submariner Globalnet: 8 egress IPs in the cluster's /16 of 242.0.0.0/8
            self._put("/apis/submariner.io/v1/clusterglobalegressips", {
                "metadata": {"name": "cluster-egress.submariner.io"}, "spec": {"numGlobalIPs": 8},
                "status": {"allocatedIPs": [f"242.{index - 1}.0.{i}" for i in range(1, 9)]}})
        for crd in crds:
            self._put("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", {"metadata": {"name": crd}})
        services = "/api/v1/namespaces/kube-system/services"
        self._put(services, {"metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns"}},
                             "spec": {"type": "ClusterIP", "clusterIP": str(ipaddress.IPv4Network(
                                 self.service_cidr)[10]), "ports": [{"port": 53}]}})
        for i in range(2):
            self._put("/api/v1/namespaces/kube-system/pods", {
                "metadata": {"name": f"coredns-{i}", "labels": {"k8s-app": "kube-dns"}},
                "spec": {"nodeName": f"{context}-node-0"},
                "status": {"podIP": f"10.{index}0.0.{3 + i}", "phase": "Running",
                           "conditions": [{"type": "Ready", "status": "True"}]}})

    # ------------------------------------------------------------------ API discovery (added for the MCS API)

    api_resources: dict[str, list[str]]  # "group/version" -> the resources served there; set by a test

    def _discovery(self, group_version: str, what: str) -> Any:
        """An APIResourceList, as `GET /apis/<group>/<version>` answers (404 when that is not served)."""
        served = getattr(self, "api_resources", {}).get(group_version)
        if served is None:
            raise self._fail(what, 404, "Not Found", "the server could not find the requested resource")
        return {"kind": "APIResourceList", "groupVersion": group_version,
                "resources": [{"name": r, "namespaced": True, "verbs": ["list", "watch"]} for r in served]}

    # ------------------------------------------------------------------ storage

    def _put(self, collection: str, obj: dict[str, Any]) -> None:
        self.store.setdefault(collection, {})[obj["metadata"]["name"]] = obj

    def objects(self, collection: str) -> dict[str, dict[str, Any]]:
        return self.store.get(collection, {})

    def namespace_objects(self, namespace: str) -> list[str]:
        return [f"{c}/{n}" for c, objs in self.store.items() if f"/namespaces/{namespace}/" in c for n in objs]

    def writes(self) -> list[Request]:
        """Every write that changed something (dry runs and access reviews change nothing)."""
        return [r for r in self.requests if r.verb in WRITE_VERBS and not r.dry_run and r.allowed
                and r.resource != "selfsubjectaccessreviews"]

    def denied(self) -> list[Request]:
        return [r for r in self.requests if not r.allowed]

    # ------------------------------------------------------------------ the API

    def _fail(self, what: str, status: int, reason: str, message: str) -> ApiError:
        return ApiError(self.context, what, status, reason, message)

    def request(self, method: str, path: str, *, query: Sequence[tuple[str, str]] = (), body: Any = None,
                headers: Mapping[str, str] | None = None, timeout: float = 30.0, raw: bool = False) -> Any:
        with self.lock:
            return self._request(method, path.split("?")[0], dict(query), body, dict(headers or {}), raw)

    def _request(self, method: str, path: str, query: dict[str, str], body: Any, headers: dict[str, str],
                 raw: bool) -> Any:
        what = f"{method} {path}"
        if path == "/version":
            return {"gitVersion": self.version}
        if path.startswith("/apis/") and path.count("/") == 3:  # API discovery of one group/version
            return self._discovery(path[len("/apis/"):], what)
        group, resource, namespace, name, rest = parse_path(path)
        collection = path if not name else path.rsplit("/", 1)[0]
        if "/" in resource:  # a subresource: the collection is the parent's
            collection = path.split(f"/{name}")[0]
        verb = {"GET": "get" if name else "list", "POST": "create", "DELETE": "delete" if name else "deletecollection",
                "PUT": "update", "PATCH": "patch"}[method]
        if resource == "namespaces" and name:
            namespace = ""
        dry = query.get("dryRun") == "All"
        if resource == "selfsubjectaccessreviews":
            self.requests.append(Request(method, path, verb, group, resource, "", "", False, True))
            attrs = body["spec"]["resourceAttributes"]
            full = attrs["resource"] + (f"/{attrs['subresource']}" if attrs.get("subresource") else "")
            allowed = self.rbac.allows(attrs["verb"], attrs.get("group", ""), full, attrs.get("namespace", ""),
                                       attrs.get("name", ""))
            return {**body, "status": {"allowed": allowed, "reason": "RBAC" if allowed else ""}}
        allowed = self.rbac.allows(verb, group, resource, namespace, name)  # a create names no object (as RBAC)
        named = name or ((body or {}).get("metadata") or {}).get("name", "") if isinstance(body, dict) else name
        self.requests.append(Request(method, path, verb, group, resource, namespace, named, dry, allowed))
        if not allowed:
            raise self._fail(what, 403, "Forbidden", f'{resource} is forbidden: User "crossnet" cannot {verb} '
                             f'resource "{resource}" in API group "{group}"'
                             + (f' in the namespace "{namespace}"' if namespace else ""))
        if namespace and not self.objects("/api/v1/namespaces").get(namespace) and method == "POST":
            raise self._fail(what, 404, "Not Found", f'namespaces "{namespace}" not found')
        if resource == "pods/proxy":
            return self._proxy(namespace, name, rest, body, headers)
        if resource == "pods/log":
            return self._log(namespace, name)
        if method == "GET":
            return self._get(collection, name, query, what, group, resource)
        if method == "POST":
            return self._create(collection, resource, namespace, body, dry, what)
        if method == "DELETE":
            return self._delete(collection, name, resource, query, what)
        if method == "PUT" and name:
            return self._replace(collection, name, body, what, resource)
        raise self._fail(what, 405, "Method Not Allowed", "")

    def _replace(self, collection: str, name: str, body: Any, what: str, resource: str) -> Any:
        stored = self.objects(collection).get(name)
        if stored is None:
            raise self._fail(what, 404, "Not Found", f'{resource} "{name}" not found')
        sent = ((body or {}).get("metadata") or {}).get("resourceVersion")
        if sent is not None and sent != stored["metadata"].get("resourceVersion", "1"):
            raise self._fail(what, 409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": the '
                             "object has been modified; please apply your changes to the latest version")
        obj = json.loads(json.dumps(body))
        self._next_ip += 1
        obj["metadata"]["resourceVersion"] = str(1000 + self._next_ip)
        self._put(collection, obj)
        return obj

    def _get(self, collection: str, name: str, query: dict[str, str], what: str, group: str,
             resource: str) -> Any:
        if name:
            found = self.objects(collection).get(name)
            if found is None:
                raise self._fail(what, 404, "Not Found", f'{resource} "{name}" not found')
            return found
        if "/namespaces/" not in collection and resource not in ("namespaces", "nodes"):
            items = [o for c, objs in self.store.items() if c.endswith(f"/{resource}") and
                     (c.startswith(f"/apis/{group}/") or (not group and c.startswith("/api/")))
                     for o in objs.values()]
        else:
            items = list(self.objects(collection).values())
        selector = query.get("labelSelector", "")
        if selector:
            wanted = dict(p.split("=", 1) for p in selector.split(","))
            items = [o for o in items if all((o["metadata"].get("labels") or {}).get(k) == v
                                             for k, v in wanted.items())]
        return {"items": items}

    def _create(self, collection: str, resource: str, namespace: str, body: Any, dry: bool, what: str) -> Any:
        obj = json.loads(json.dumps(body))
        obj.setdefault("metadata", {}).setdefault("labels", {})
        name = obj["metadata"]["name"]
        if name in self.objects(collection):
            raise self._fail(what, 409, "Conflict", f'{resource} "{name}" already exists')
        if resource == "namespaces":
            level = obj["metadata"]["labels"].get(PSA)
            if self.deny_privileged_namespaces and level == "privileged":
                raise self._fail(what, 403, "Forbidden", 'admission webhook "validation.gatekeeper.sh" denied the '
                                 "request: [psa-pinned] namespaces may not be labelled privileged")
            obj["metadata"]["uid"] = str(uuid.uuid4())
        elif resource == "pods":
            self._admit_pod(obj, namespace, what)
        elif resource == "services":
            self._allocate(obj, what)
        if not dry:
            self._put(collection, obj)
            if resource == "serviceexports" and self.globalnet:
                self._export(namespace, name)
        return obj

    def _export(self, namespace: str, service: str) -> None:
        """What Globalnet allocates for an exported Service: its global IP, or one per headless pod."""
        base, ips = f"242.{self.index - 1}.1", f"/apis/submariner.io/v1/namespaces/{namespace}/globalingressips"
        if service == "echo":
            self._put(ips, {"metadata": {"name": "echo"}, "spec": {"target": "ClusterIPService", "serviceRef": {
                "name": "echo"}}, "status": {"allocatedIP": f"{base}.1"}})
            return
        pods = [n for n, o in self.objects(f"/api/v1/namespaces/{namespace}/pods").items()
                if o["metadata"]["labels"].get("app") == "crossnet-agent"]
        for i, pod in enumerate(sorted(pods)):
            self._put(ips, {"metadata": {"name": f"pod-{pod}"}, "spec": {"target": "HeadlessServicePod", "serviceRef": {
                "name": service}, "podRef": {"name": pod}}, "status": {"allocatedIP": f"{base}.{10 + i}"}})

    def _admit_pod(self, pod: dict[str, Any], namespace: str, what: str) -> None:
        spec = pod["spec"]
        ns = self.objects("/api/v1/namespaces")[namespace]
        level = (ns["metadata"].get("labels") or {}).get(PSA, self.psa_default)
        host = spec.get("hostNetwork") is True
        if self.deny_host_network and host:
            raise self._fail(what, 403, "Forbidden", 'admission webhook "validation.gatekeeper.sh" denied the '
                             "request: [no-host-network] hostNetwork is not allowed")
        problems = []
        for container in spec["containers"]:
            sc = container.get("securityContext") or {}
            caps = set((sc.get("capabilities") or {}).get("add") or [])
            if level in ("baseline", "restricted"):
                if host:
                    problems.append("host namespaces (hostNetwork=true)")
                if sc.get("privileged"):
                    problems.append(f'privileged (container "{container["name"]}" must not set privileged=true)')
                if caps - BASELINE_CAPS:
                    problems.append(f"non-default capabilities ({', '.join(sorted(caps - BASELINE_CAPS))})")
            if level == "restricted":
                pod_sc = spec.get("securityContext") or {}
                if not (pod_sc.get("runAsNonRoot") or sc.get("runAsNonRoot")):
                    problems.append("runAsNonRoot != true")
                if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []) or caps:
                    problems.append("unrestricted capabilities")
                if sc.get("allowPrivilegeEscalation") is not False:
                    problems.append("allowPrivilegeEscalation != false")
        if problems:
            raise self._fail(what, 403, "Forbidden", f'pods "{pod["metadata"]["name"]}" is forbidden: violates '
                             f'PodSecurity "{level}:latest": {"; ".join(problems)}')
        node = spec.get("nodeName")
        ready = not self.image_pull_fails
        if host and node:
            ip = self.node_ips[node]
        elif node and self.objects("/api/v1/nodes")[node]["spec"].get("podCIDRs"):
            ip = str(ipaddress.IPv4Network(self.objects("/api/v1/nodes")[node]["spec"]["podCIDRs"][0])[self._bump()])
        else:  # a Calico-style pool: addresses from the cluster's pod subnet, not per node
            ip = str(ipaddress.IPv4Network(self.pod_subnet)[200 * 256 + self._bump()])
        pod["status"] = {"podIP": ip, "phase": "Running" if ready else "Pending",
                         "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                         "containerStatuses": [] if ready else [{"state": {"waiting": {"reason": "ErrImagePull"}}}]}

    def _bump(self) -> int:
        self._next_ip += 1
        return self._next_ip

    def _allocate(self, svc: dict[str, Any], what: str) -> None:
        spec = svc["spec"]
        network = ipaddress.IPv4Network(self.service_cidr)
        wanted = spec.get("clusterIP")
        if wanted and wanted != "None" and ipaddress.IPv4Address(wanted) not in network:
            raise self._fail(what, 422, "Unprocessable Entity",
                             f'Service "{svc["metadata"]["name"]}" is invalid: spec.clusterIPs: Invalid value: '
                             f'[]string{{"{wanted}"}}: failed to allocate IP {wanted}: the provided IP ({wanted}) is '
                             f"not in the valid range. The range of valid IPs is {self.service_cidr}")
        if spec.get("type") != "ExternalName" and not wanted:
            spec["clusterIP"] = str(network[100 + self._bump()])
        if spec.get("type") == "NodePort":  # as the API server does: one NodePort per port number (tcp and udp)
            by_number: dict[int, int] = {}
            for port in spec["ports"]:
                if not port.get("nodePort"):
                    if port["port"] not in by_number:
                        self._next_port += 7
                        by_number[port["port"]] = self._next_port
                    port["nodePort"] = by_number[port["port"]]

    def _delete(self, collection: str, name: str, resource: str, query: dict[str, str], what: str) -> Any:
        if not name:
            selector = dict(p.split("=", 1) for p in query["labelSelector"].split(","))
            objs = self.objects(collection)
            for key in [k for k, o in objs.items() if all((o["metadata"].get("labels") or {}).get(a) == b
                                                          for a, b in selector.items())]:
                del objs[key]
            return {"kind": "Status", "status": "Success"}
        if name not in self.objects(collection):
            raise self._fail(what, 404, "Not Found", f'{resource} "{name}" not found')
        del self.store[collection][name]
        if resource == "namespaces":
            for key in [c for c in self.store if f"/namespaces/{name}/" in c]:
                del self.store[key]
        return {"kind": "Status", "status": "Success"}

    def _pod(self, namespace: str, name: str) -> dict[str, Any]:
        pod = self.objects(f"/api/v1/namespaces/{namespace}/pods").get(name)
        if pod is None:
            raise self._fail(f"pod {name}", 404, "Not Found", f'pods "{name}" not found')
        return pod

    def _proxy(self, namespace: str, name: str, rest: str, body: Any, headers: dict[str, str]) -> Any:
        self._pod(namespace, name)
        secret = self.objects(f"/api/v1/namespaces/{namespace}/secrets").get("crossnet-agent-token") or {}
        if not secret or headers.get("X-Crossnet-Token") != (secret.get("stringData") or {}).get("token"):
            return {"error": "403: no or wrong X-Crossnet-Token"}
        return {"results": [{"id": p["id"], "reached": True, "answers": ["10.0.0.1"]} for p in body["probes"]]}

    def _log(self, namespace: str, name: str) -> str:
        pod = self._pod(namespace, name)
        command = pod["spec"]["containers"][0]["command"]
        if command[0] != "sh":
            return ""
        return f"crossnet-resolv: search {namespace}.svc.{self.domain} svc.{self.domain} {self.domain}\nserving\n"

    def exec(self, namespace: str, pod: str, argv: list[str], timeout: float) -> tuple[int, str, str]:
        with self.lock:
            allowed = self.rbac.allows("create", "", "pods/exec", namespace, pod)
            self.requests.append(Request("POST", f"/api/v1/namespaces/{namespace}/pods/{pod}/exec", "create", "",
                                         "pods/exec", namespace, pod, False, allowed))
            if not allowed:
                raise self._fail("exec", 403, "Forbidden", "pods/exec is forbidden")
            found = self._pod(namespace, pod)
            self.execs.append((namespace, pod, list(argv)))
            if self.node_net is not None and found["spec"].get("hostNetwork") and found["spec"].get("nodeName"):
                return self.node_net.run(found["spec"]["nodeName"], list(argv))
        return 0, f"{pod}: {' '.join(argv)}\n", ""


class HttpBridge:
    """A FakeCluster over HTTP (http://127.0.0.1:PORT), answering only the bearer token it is given."""

    def __init__(self, cluster: FakeCluster, token: str) -> None:
        bridge = self
        self.cluster, self.token, self.seen_auth = cluster, token, []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                bridge.seen_auth.append(self.headers.get("Authorization", ""))
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                url = urlsplit(self.path)
                if self.headers.get("Authorization") != f"Bearer {bridge.token}":
                    status, data = 401, {"kind": "Status", "message": "Unauthorized", "code": 401}
                else:
                    try:
                        data = bridge.cluster.request(self.command, url.path, query=parse_qsl(url.query), body=body,
                                                      headers=dict(self.headers))
                        status = 201 if self.command == "POST" else 200
                    except ApiError as exc:
                        status, data = exc.status, {"kind": "Status", "message": exc.api_message, "code": exc.status}
                raw = data.encode() if isinstance(data, str) else json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if isinstance(data, str) else "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def kubeconfig_text(entries: Mapping[str, tuple[str, str]]) -> str:
    """A kubeconfig with a context per entry: context -> (server URL, bearer token)."""
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": next(iter(entries)),
           "clusters": [{"name": c, "cluster": {"server": url}} for c, (url, _) in entries.items()],
           "users": [{"name": c, "user": {"token": token}} for c, (_, token) in entries.items()],
           "contexts": [{"name": c, "context": {"cluster": c, "user": c}} for c in entries]}
    return yaml.safe_dump(doc)
