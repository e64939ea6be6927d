"""crossnet's agents on any Kubernetes cluster, for every provider backed by an API server (kind
today, existing clusters from a kubeconfig next): nothing here knows how the clusters were made.

Per cluster, in the run's namespace: the Namespace, the token Secret, the agent zipapp as a
ConfigMap, two agent pods pinned to every node (the pod vantage `agent-<node>` and the
hostNetwork vantage `host-<node>`, both running the zipapp on a plain Python image), the echo
Services (NodePort, not exported, headless) and the ExternalName Services. In the exporting cluster
of the mcs topology (`mcs_exporter`) `echo` is ClusterIP -- Submariner Lighthouse exports nothing else
(a NodePort export is Valid=False UnsupportedServiceType) -- and `echo-nodeport` carries its NodePort;
`remote-echo`, a Service only that cluster has, is deployed there too (all exported by the provider).
Then the wait until every agent is ready, what the ClusterSet reports of them, and `KubeAgentClient`, the control API
through the API server's pod proxy with the run's token on every request.

The caller says which nodes (`AgentNode`: the topology's short name and the Kubernetes node
name), the namespace, the labels, the image and the token; `AgentPodOptions` what differs from
kind's defaults on clusters crossnet did not make (no host vantage, a NodePort the API server
allocates, pull secrets, tolerations, a node selector, pods that meet the PSA "restricted" level,
namespace labels and annotations, a namespace that already exists).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from crossnet.globalnet import NOT_EXPORTED_SERVICE
from crossnet.model import AGENT_PORT, LivePod, LiveService, Topology
from crossnet.providers.base import ProviderError
from crossnet.providers.kind.bundle import AGENT_ARCHIVE, build_agent_zipapp
from crossnet.providers.kind.kube import MANAGED_BY, RUN_LABEL, KubeCluster, configmap_binary
from crossnet.wire import ProbeResult, ProbeSpec
from crossnet.workloads import (
    AGENT_POD,
    ECHO_NODE_PORT,
    ECHO_NODE_PORT_SERVICE,
    ECHO_SERVICE,
    HEADLESS_SERVICE,
    REMOTE_SERVICE,
    agent_id,
    echo_port_name,
    external_name_services,
    pod_hostname,
)

__all__ = [
    "AGENT_APP",
    "AGENT_CONFIGMAP",
    "AGENT_SELECTOR",
    "CONTROL_PORT",
    "DEFAULT_AGENT_IMAGE",
    "HOST_AGENT_APP",
    "MANAGED_SELECTOR",
    "READY_TIMEOUT",
    "TOKEN_FILE",
    "TOKEN_HEADER",
    "TOKEN_SECRET",
    "VANTAGES",
    "AgentNode",
    "AgentPodOptions",
    "KubeAgentClient",
    "agent_client",
    "agent_command",
    "agent_manifests",
    "agent_pod",
    "agent_pod_name",
    "apply_agents",
    "deploy_agents",
    "echo_node_ports",
    "external_names",
    "live_agents",
    "node_port_carrier",
    "run_labels",
    "wait_agents",
]

DEFAULT_AGENT_IMAGE = "python:3-slim"
CONTROL_PORT = 8081
READY_TIMEOUT = 300.0
AGENT_APP = "crossnet-agent"  # label app= of the pod vantage (the Services select these)
HOST_AGENT_APP = "crossnet-host-agent"  # label app= of the hostNetwork vantage
AGENT_SELECTOR = f"app={AGENT_APP}"
MANAGED_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())  # every pod crossnet made
AGENT_CONFIGMAP = "crossnet-agent"
TOKEN_HEADER = "X-Crossnet-Token"  # the agent answers its control API only with the run's token
TOKEN_SECRET = "crossnet-agent-token"
TOKEN_FILE = "/crossnet-token/token"
VANTAGES = ("pod", "host")


@dataclass(frozen=True)
class AgentNode:
    """A node that gets agents: `short` as the topology names it (agent ids, pod names, DNS
    names), `node_name` as the API server names it (the pods' spec.nodeName)."""

    short: str
    node_name: str


@dataclass(frozen=True)
class AgentPodOptions:
    """How the agents differ from kind's defaults (the defaults reproduce kind's manifests)."""

    host_vantage: bool = True  # also a hostNetwork pod `host-<node>` per node
    node_port: int | None = ECHO_NODE_PORT  # the echo Service's NodePort; None: the API server allocates one
    image_pull_secrets: tuple[str, ...] = ()
    tolerations: tuple[dict[str, str], ...] | None = None  # None: tolerate every taint (an agent on every node)
    node_selector: tuple[tuple[str, str], ...] = ()
    # The pod vantage meets Pod Security "restricted": non-root, no capability at all, ICMP through
    # unprivileged ping sockets (the namespaced, PSA-safe sysctl net.ipv4.ping_group_range).
    restricted: bool = False
    # The namespace's labels beyond the run's (e.g. pod-security.kubernetes.io/enforce) and annotations (a TTL).
    namespace_labels: tuple[tuple[str, str], ...] = ()
    namespace_annotations: tuple[tuple[str, str], ...] = ()
    create_namespace: bool = True  # False: the namespace exists already (it is not in the manifests)


RESTRICTED_UID = 65534  # nobody


def run_labels(run_id: str) -> dict[str, str]:
    """The labels that mark an object as made by crossnet in the run `run_id` (kube.is_ours)."""
    return {**MANAGED_BY, RUN_LABEL: run_id}


def agent_pod_name(vantage: str, node: str) -> str:
    """`agent-<node>` for the pod vantage, `host-<node>` for the hostNetwork one."""
    return f"{AGENT_POD}-{node}" if vantage == "pod" else f"host-{node}"


def agent_command(args: Sequence[str]) -> list[str]:
    """The command line that runs the agent zipapp with `args` inside an agent pod."""
    return ["python3", f"/crossnet/{AGENT_ARCHIVE}", *args]


class KubeAgentClient:
    """An agent's control API through the API server's pod proxy (no route into the cluster),
    each request carrying the run's token."""

    def __init__(self, kube: KubeCluster, namespace: str, pod: str, token: str) -> None:
        self.kube, self.namespace, self.pod, self.token = kube, namespace, pod, token

    def probe(self, probes: list[ProbeSpec], timeout: float) -> list[ProbeResult]:
        body = self.kube.proxy_post(
            self.namespace,
            self.pod,
            CONTROL_PORT,
            "probe",
            {"probes": probes},
            timeout,
            headers={TOKEN_HEADER: self.token},
        )
        if "results" not in body:
            raise ProviderError(f"agent {self.namespace}/{self.pod}: {body.get('error', 'no results')}")
        results: list[ProbeResult] = body["results"]
        return results


def agent_client(kube_of: Callable[[str], KubeCluster], namespace: str, agent: str, token: str) -> KubeAgentClient:
    """The client of the agent `<cluster>/<node>/<agent|host>` (workloads.agent_id)."""
    cluster, node, vantage = agent.split("/")
    return KubeAgentClient(
        kube_of(cluster), namespace, agent_pod_name("pod" if vantage == AGENT_POD else "host", node), token
    )


def agent_pod(
    cluster: str,
    node: AgentNode,
    vantage: str,
    *,
    namespace: str,
    image: str,
    labels: Mapping[str, str],
    options: AgentPodOptions | None = None,
) -> dict[str, Any]:
    """The agent pod of `vantage` ("pod" or "host") pinned to `node`."""
    options = options or AgentPodOptions()
    spec: dict[str, Any] = {
        "nodeName": node.node_name,
        "tolerations": [{"operator": "Exists"}],  # control-plane taint: an agent on every node
        "automountServiceAccountToken": False,  # the agent never talks to the API server
        "containers": [
            {
                "name": "agent",
                "image": image,
                "command": agent_command(
                    [
                        "serve",
                        "--id",
                        agent_id(cluster, node.short, vantage),
                        "--control-port",
                        str(CONTROL_PORT),
                        "--token-file",
                        TOKEN_FILE,
                    ]
                ),
                "ports": [
                    {"containerPort": AGENT_PORT, "protocol": "TCP"},
                    {"containerPort": AGENT_PORT, "protocol": "UDP"},
                    {"containerPort": CONTROL_PORT},
                ],
                "readinessProbe": {"tcpSocket": {"port": CONTROL_PORT}, "periodSeconds": 1},
                # Probes need raw ICMP sockets (NET_RAW) and nothing else; Python imports from the
                # zipapp without writing, /tmp is a scratch emptyDir.
                "securityContext": {
                    "privileged": False,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "seccompProfile": {"type": "RuntimeDefault"},
                    "capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]},
                },
                "volumeMounts": [
                    {"name": "agent", "mountPath": "/crossnet", "readOnly": True},
                    {"name": "token", "mountPath": str(Path(TOKEN_FILE).parent), "readOnly": True},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": "agent", "configMap": {"name": AGENT_CONFIGMAP}},
            {"name": "token", "secret": {"secretName": TOKEN_SECRET, "defaultMode": 0o400}},
            {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        ],
    }
    _apply_options(spec, vantage, options)
    pod_labels = dict(labels)
    if vantage == "pod":
        spec.update(hostname=pod_hostname(node.short), subdomain=HEADLESS_SERVICE)
        pod_labels["app"] = AGENT_APP
    else:
        spec.update(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
        pod_labels["app"] = HOST_AGENT_APP
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": agent_pod_name(vantage, node.short), "namespace": namespace, "labels": pod_labels},
        "spec": spec,
    }


def _apply_options(spec: dict[str, Any], vantage: str, options: AgentPodOptions) -> None:
    """Pull secrets, tolerations, node selector and, for a restricted pod vantage, the
    securityContext of PSA "restricted" (the token readable through the pod's fsGroup)."""
    if options.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in options.image_pull_secrets]
    if options.tolerations is not None:
        spec["tolerations"] = [dict(t) for t in options.tolerations]
    if options.node_selector:
        spec["nodeSelector"] = dict(options.node_selector)
    if vantage != "pod" or not options.restricted:
        return
    spec["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": RESTRICTED_UID,
        "runAsGroup": RESTRICTED_UID,
        "fsGroup": RESTRICTED_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
        "sysctls": [{"name": "net.ipv4.ping_group_range", "value": f"0 {2**31 - 1}"}],
    }
    container = spec["containers"][0]
    container["securityContext"]["capabilities"] = {"drop": ["ALL"]}
    for volume in spec["volumes"]:
        if "secret" in volume:
            volume["secret"]["defaultMode"] = 0o440


def external_names(topology: Topology, cluster: str, namespace: str) -> list[tuple[str, str]]:
    """(Service name, externalName) of the ExternalName Services `cluster` gets (workloads)."""
    return [
        (ext.name, ext.external_name(topology.cluster(ext.target_cluster).dns_domain, namespace))
        for ext in external_name_services(topology)
        if ext.cluster == cluster
    ]


def agent_manifests(
    cluster: str,
    nodes: Sequence[AgentNode],
    *,
    namespace: str,
    labels: Mapping[str, str],
    image: str,
    token: str,
    archive: bytes,
    external: Sequence[tuple[str, str]] = (),
    options: AgentPodOptions | None = None,
    mcs_exporter: bool = False,
    exported: bool = False,
) -> list[dict[str, Any]]:
    """Everything one cluster gets, in the order it is applied: the Namespace, the token Secret,
    the zipapp ConfigMap, both agent pods of every node (the host one unless `options` leave it
    out), the echo Services and the ExternalName Services `external` names ((name, externalName) pairs).
    `mcs_exporter`: the cluster exports echo (then ClusterIP, its NodePort on echo-nodeport), echo-headless
    and remote-echo (the mcs topology: see the module's docstring); `exported`: echo is exported
    (Globalnet): ClusterIP, its NodePort on echo-nodeport, no remote-echo."""
    options = options or AgentPodOptions()
    ns, labels = namespace, dict(labels)
    namespace_meta: dict[str, Any] = {"name": ns, "labels": {**labels, **dict(options.namespace_labels)}}
    if options.namespace_annotations:
        namespace_meta["annotations"] = dict(options.namespace_annotations)
    manifests: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": namespace_meta},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": TOKEN_SECRET, "namespace": ns, "labels": labels},
            "stringData": {"token": token},
        },
        configmap_binary(AGENT_CONFIGMAP, ns, AGENT_ARCHIVE, archive, labels),
    ]
    if not options.create_namespace:
        manifests.pop(0)
    for node in nodes:
        for vantage in VANTAGES if options.host_vantage else ("pod",):
            manifests.append(
                agent_pod(cluster, node, vantage, namespace=ns, image=image, labels=labels, options=options)
            )
    ports = [
        {"name": echo_port_name(p), "protocol": p.upper(), "port": AGENT_PORT, "targetPort": AGENT_PORT}
        for p in ("tcp", "udp")
    ]
    node_port = {
        "type": "NodePort",
        "selector": {"app": AGENT_APP},
        "ports": [p if options.node_port is None else {**p, "nodePort": options.node_port} for p in ports],
    }
    plain = {"type": "ClusterIP", "selector": {"app": AGENT_APP}, "ports": ports}
    echoes = [(ECHO_SERVICE, plain), (ECHO_NODE_PORT_SERVICE, node_port), (REMOTE_SERVICE, plain)]
    chosen = echoes if mcs_exporter else echoes[:2] if exported else [(ECHO_SERVICE, node_port)]
    for name, spec in chosen:
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": spec,
            }
        )
    manifests.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": NOT_EXPORTED_SERVICE, "namespace": ns, "labels": labels},
            "spec": {"selector": {"app": AGENT_APP}, "ports": ports},
        }
    )
    manifests.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": HEADLESS_SERVICE, "namespace": ns, "labels": labels},
            "spec": {
                "clusterIP": "None",
                "selector": {"app": AGENT_APP},
                "ports": ports,
                "publishNotReadyAddresses": True,
            },
        }
    )
    for name, target in external:
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {"type": "ExternalName", "externalName": target},
            }
        )
    return manifests


def apply_agents(kubes: Mapping[str, KubeCluster], manifests: Mapping[str, list[dict[str, Any]]]) -> None:
    """Apply each cluster's manifests, the clusters in parallel."""
    clusters = list(manifests)
    if not clusters:
        return
    with ThreadPoolExecutor(max_workers=len(clusters)) as pool:
        list(pool.map(lambda cluster: kubes[cluster].apply(manifests[cluster]), clusters))


def wait_agents(
    kubes: Mapping[str, KubeCluster], namespace: str, image: str, timeout: float = READY_TIMEOUT, poll: float = 1.0
) -> None:
    """Wait until every pod crossnet made in `namespace` is ready on every cluster; an image that
    cannot be pulled ends the wait at once, with the hint to mirror it."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = []
        for cluster, kube in kubes.items():
            for pod in kube.pods(namespace, MANAGED_SELECTOR):
                if not pod.ready:
                    waiting.append(f"{cluster}/{pod.name} ({pod.reason or pod.phase})")
        if not waiting:
            return
        pulls = [w for w in waiting if "ImagePull" in w or "ErrImage" in w]
        if pulls or time.monotonic() > deadline:
            hint = f"; the agent image {image} cannot be pulled: mirror it and pass --agent-image" if pulls else ""
            raise ProviderError(f"agents not ready: {', '.join(waiting[:8])}{hint}")
        time.sleep(poll)


def deploy_agents(
    kubes: Mapping[str, KubeCluster],
    nodes: Mapping[str, Sequence[AgentNode]],
    *,
    namespace: str,
    labels: Mapping[str, str],
    image: str,
    token: str,
    external: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    timeout: float = READY_TIMEOUT,
    options: AgentPodOptions | None = None,
    mcs_exporter: str | None = None,
    exported: Collection[str] = (),
) -> None:
    """Build the agent zipapp, apply every cluster's manifests (`nodes` says which clusters and
    nodes; `external` each cluster's ExternalName Services; `mcs_exporter` the cluster that exports
    the MCS Services, if any) in parallel, and wait for the agents."""
    archive = build_agent_zipapp()
    manifests = {
        cluster: agent_manifests(
            cluster,
            cluster_nodes,
            namespace=namespace,
            labels=labels,
            image=image,
            token=token,
            archive=archive,
            external=(external or {}).get(cluster, ()),
            options=options,
            mcs_exporter=cluster == mcs_exporter,
            exported=cluster in exported,
        )
        for cluster, cluster_nodes in nodes.items()
    }
    apply_agents(kubes, manifests)
    wait_agents({cluster: kubes[cluster] for cluster in nodes}, namespace, image, timeout)


def live_agents(
    kube: KubeCluster, cluster: str, namespace: str, nodes: Sequence[str]
) -> tuple[tuple[LivePod, ...], tuple[LiveService, ...]]:
    """The agent pods of `nodes` (short names, in that order) and the Services in `namespace`, as
    the ClusterSet reports them."""
    by_name = {p.name: p for p in kube.pods(namespace, AGENT_SELECTOR)}
    pods: list[LivePod] = []
    for node in nodes:
        agent = by_name.get(agent_pod_name("pod", node))
        if agent is None:
            raise ProviderError(f"{cluster}: no agent pod on {node}")
        pods.append(LivePod(AGENT_POD, node, agent.ip, agent_id(cluster, node, "pod")))
    services: list[LiveService] = []
    for svc in kube.services(namespace):
        headless = svc.type == "Headless"
        services.append(
            LiveService(
                name=svc.name,
                namespace=namespace,
                type=svc.type,  # type: ignore[arg-type]
                cluster_ip=svc.cluster_ip,
                external_name=svc.external_name,
                node_port=svc.node_port,
                ports=(("tcp", AGENT_PORT), ("udp", AGENT_PORT)) if svc.type != "ExternalName" else (),
                endpoints=tuple(p.ip for p in pods) if svc.type != "ExternalName" else (),
                hostnames=tuple(pod_hostname(p.node) for p in pods) if headless else (),
            )
        )
    carrier_name = node_port_carrier(s.name for s in services)
    carrier = next((s for s in services if s.name == carrier_name), None)
    if carrier is not None and carrier.name != ECHO_SERVICE:  # echo is exported (ClusterIP): its NodePort is here
        services = [replace(s, node_port=carrier.node_port) if s.name == ECHO_SERVICE else s for s in services]
    return tuple(pods), tuple(services)


def node_port_carrier(names: Iterable[str]) -> str:
    """The Service that carries the echo NodePort: echo-nodeport where echo is exported (ClusterIP), else echo."""
    return ECHO_NODE_PORT_SERVICE if ECHO_NODE_PORT_SERVICE in set(names) else ECHO_SERVICE


def echo_node_ports(services: Sequence[Mapping[str, Any]]) -> tuple[str, set[Any]]:
    """(the Service carrying the echo NodePort, the nodePorts of its ports) among Service objects of the API."""
    carrier = node_port_carrier(str((s.get("metadata") or {}).get("name")) for s in services)
    found = next((s for s in services if (s.get("metadata") or {}).get("name") == carrier), {})
    return carrier, {p.get("nodePort") for p in (found.get("spec") or {}).get("ports") or [] if isinstance(p, dict)}
