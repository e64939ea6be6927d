"""The kind provider: real kind clusters (DESIGN §5 "kind").

Clusters come from `kind-configs/` through the kind CLI (in parallel); node routes go in through
the docker SDK (`exec` in each node container); the Corefile is the ConfigMap
`kube-system/coredns`; agents are pods pinned to every node plus a hostNetwork pod per node in
the namespace `crossnet-<run-id>`, running the agent zipapp from a ConfigMap on `python:3-slim`,
controlled through the API server's pod proxy. Everything above the provider seam (plumbing
plans, cells, probes, judging, reports) is shared with the lab.

Tested here with fakes for the kind CLI, the kubernetes API and docker (tests/test_kind_provider.py)
and with a real docker daemon for the docker layer; only the nightly run drives real clusters.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from crossnet.globalnet import NOT_EXPORTED_SERVICE, GlobalAllocation
from crossnet.model import AGENT_PORT, ClusterSet, LiveCluster, LiveNode, LivePod, LiveService, Topology
from crossnet.plumbing.routes import RouteChange
from crossnet.providers.base import ExecTarget, ProviderError, StateFile
from crossnet.providers.kind.bundle import AGENT_ARCHIVE, build_agent_zipapp
from crossnet.providers.kind.clusters import KindCli, KindRunner, create_clusters
from crossnet.providers.kind.kube import MANAGED_BY, RUN_LABEL, ApiKubeCluster, KubeCluster, configmap_binary, is_ours
from crossnet.providers.kind.submariner import (
    SubctlCli,
    SubctlRunner,
    deploy_globalnet,
    export_services,
    read_allocations,
    undo_globalnet,
)
from crossnet.providers.statedir import claim_state_dir, release_state_dir
from crossnet.workloads import (
    AGENT_POD,
    ECHO_NODE_PORT,
    ECHO_SERVICE,
    HEADLESS_SERVICE,
    agent_id,
    external_name_services,
    pod_hostname,
)

__all__ = ["DEFAULT_AGENT_IMAGE", "TOKEN_HEADER", "KindProvider", "KubeAgentClient"]

DEFAULT_AGENT_IMAGE = "python:3-slim"
CONTROL_PORT = 8081
READY_TIMEOUT = 300.0
MANAGED = MANAGED_BY
AGENT_SELECTOR = "app=crossnet-agent"
TOKEN_HEADER = "X-Crossnet-Token"  # the agent answers its control API only with the run's token
TOKEN_SECRET = "crossnet-agent-token"
TOKEN_FILE = "/crossnet-token/token"


def _stderr(message: str) -> None:
    print(f"crossnet: {message}", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    """Something crossnet deliberately left alone: always on stderr, whatever the progress sink."""
    print(f"crossnet: warning: {message}", file=sys.stderr, flush=True)


def _write_private(path: Path, text: str) -> None:
    """Write `text` readable by the owner only (0600) whatever the umask, also over an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # before any content: the mode of a file that already existed
        out.write(text)


class KubeAgentClient:
    """An agent's control API through the API server's pod proxy (no route into the cluster),
    each request carrying the run's token."""

    def __init__(self, kube: KubeCluster, namespace: str, pod: str, token: str) -> None:
        self.kube, self.namespace, self.pod, self.token = kube, namespace, pod, token

    def probe(self, probes: list[dict[str, Any]], timeout: float) -> list[dict[str, Any]]:
        body = self.kube.proxy_post(self.namespace, self.pod, CONTROL_PORT, "probe", {"probes": probes}, timeout,
                                    headers={TOKEN_HEADER: self.token})
        if "results" not in body:
            raise ProviderError(f"agent {self.namespace}/{self.pod}: {body.get('error', 'no results')}")
        results: list[dict[str, Any]] = body["results"]
        return results


def _pod_name(vantage: str, node: str) -> str:
    return f"{AGENT_POD}-{node}" if vantage == "pod" else f"host-{node}"


class KindProvider:
    name = "kind"
    converge_timeout = 180.0  # the kubelet's ConfigMap sync plus CoreDNS `reload` (REFERENCE §F)

    def __init__(self, state_dir: Path, run_id: str, reuse: bool = False, agent_image: str = DEFAULT_AGENT_IMAGE,
                 kind: KindRunner | None = None, nodes: Any | None = None,
                 kube_factory: Callable[[str, Path], KubeCluster] | None = None,
                 progress: Callable[[str], None] = _stderr, logs_dir: Path | None = None,
                 global_cidr: str | None = None, subctl: SubctlRunner | None = None) -> None:
        self.global_cidr = global_cidr  # Submariner Globalnet, deployed with subctl
        self._subctl = subctl
        self._allocations: dict[str, GlobalAllocation] = {}
        self.state_dir, self.run_id, self.reuse, self.agent_image = state_dir, run_id, reuse, agent_image
        self.state = StateFile(state_dir)
        self.timings: dict[str, float] = {}
        self.namespace = f"crossnet-{run_id}".lower()
        self._kind, self._nodes, self._progress = kind, nodes, progress
        self._kube_factory = kube_factory or (lambda name, path: ApiKubeCluster(name, str(path)))
        self._kubes: dict[str, KubeCluster] = {}
        self._topology: Topology | None = None
        self._token: str | None = None  # the agents' control token: made by up(), read back by attach
        self._owned = False  # True once up() claimed the state directory, or attach() found a run there
        # Outside the state directory: teardown removes that, and failed creations keep their logs.
        self.logs_dir = logs_dir or Path.cwd() / "reports" / f"kind-logs-{run_id}"

    # ------------------------------------------------------------------ seams, created on first use

    def _subctl_cli(self) -> SubctlRunner:
        if self._subctl is None:
            self._subctl = SubctlCli()
        return self._subctl

    def _kubeconfigs(self) -> dict[str, Path]:
        return {c.name: self.state_dir / f"kubeconfig-{c.name}" for c in self._require_topology().clusters}

    def _kind_cli(self) -> KindRunner:
        if self._kind is None:
            self._kind = KindCli()
        return self._kind

    def _docker(self) -> Any:
        if self._nodes is None:
            from crossnet.providers.kind.nodes import NodeContainers

            self._nodes = NodeContainers.connect(None)
        return self._nodes

    def kube(self, cluster: str) -> KubeCluster:
        if cluster not in self._kubes:
            path = self.state_dir / f"kubeconfig-{cluster}"
            if not path.exists():
                raise ProviderError(f"no kubeconfig for {cluster} in {self.state_dir}")
            self._kubes[cluster] = self._kube_factory(cluster, path)
        return self._kubes[cluster]

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def attach(cls, state_dir: Path, **seams: Any) -> KindProvider:
        data = StateFile(state_dir).read()
        if data.get("provider") != "kind":
            raise ProviderError(f"{state_dir} belongs to provider {data.get('provider')!r}, not kind")
        provider = cls(state_dir, data["run_id"], reuse=True, **seams)
        provider._owned = True
        return provider

    def up(self, topology: Topology) -> ClusterSet:
        started = time.perf_counter()
        kind = self._kind_cli()  # checks the binary before anything is made
        self._docker()  # and the daemon
        if self.global_cidr is not None:
            self._subctl_cli()  # and subctl, when Globalnet is asked for
        self._topology = topology
        claim_state_dir(self.state_dir, self.run_id)  # new and 0700 (kubeconfigs, the agent token); never adopted
        self._owned = True
        self._token = secrets.token_urlsafe(32)
        self.state.write({"provider": "kind", "run_id": self.run_id, "namespace": self.namespace, "created": [],
                          "reused": [], "phase": "starting", "agent_token": self._token})
        names = [c.name for c in topology.clusters]
        existing = set(kind.clusters())
        clash = sorted(existing & set(names))
        if clash and not self.reuse:
            raise ProviderError(f"kind cluster(s) {', '.join(clash)} already exist; pass --reuse to use them "
                                "(crossnet then never deletes them), or remove them with `kind delete cluster "
                                f"--name {clash[0]}`")
        wanted = [(c.name, Path(c.source_file)) for c in topology.clusters if c.name not in existing]
        # Recorded before kind starts: a Ctrl-C or crash mid-creation still lets `down` find them.
        self.state.update(creating=[name for name, _ in wanted])
        created = create_clusters(kind, wanted, self.state_dir, self.logs_dir, self._progress)
        self.state.update(created=created, reused=clash)
        for name in created:  # kind writes them itself: make sure of the mode
            os.chmod(self.state_dir / f"kubeconfig-{name}", 0o600)
        for name in clash:
            _write_private(self.state_dir / f"kubeconfig-{name}", kind.kubeconfig(name))
        self._wait_ready(names)
        if self.global_cidr is not None:
            deploy_globalnet(self._subctl_cli(), topology, {n: self.kube(n) for n in names}, self._kubeconfigs(),
                             self.state_dir, self._progress, record=self._record_submariner)
        cluster_set = self._cluster_set(with_agents=False)
        self.state.update(phase="up", cluster_set=cluster_set.to_json())
        self.timings["topology_up"] = time.perf_counter() - started
        return cluster_set

    def _record_submariner(self, done: dict[str, Any]) -> None:
        self.state.update(submariner=done)

    def _wait_ready(self, names: list[str]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        pending = set(names)
        last: dict[str, str] = {}
        while pending:
            for name in sorted(pending):
                nodes = self.kube(name).nodes()
                dns = self.kube(name).pods("kube-system", "k8s-app=kube-dns")
                not_ready = [n.name for n in nodes if not n.ready]
                if nodes and not not_ready and dns and all(p.ready for p in dns):
                    pending.discard(name)
                    self._progress(f"kind: {name}: {len(nodes)} nodes Ready, CoreDNS Ready")
                else:
                    last[name] = f"nodes not Ready: {not_ready}" if not_ready else "CoreDNS not Ready"
            if pending and time.monotonic() > deadline:
                raise ProviderError("clusters not ready in time: " + "; ".join(f"{n}: {last[n]}" for n in pending))
            if pending:
                time.sleep(2.0)

    def deploy_agents(self) -> ClusterSet:
        started = time.perf_counter()
        topology = self._require_topology()
        archive = build_agent_zipapp()

        def deploy(cluster: str) -> None:
            self.kube(cluster).apply(self._manifests(topology, cluster, archive))

        with ThreadPoolExecutor(max_workers=len(topology.clusters)) as pool:
            list(pool.map(deploy, [c.name for c in topology.clusters]))
        self._wait_agents([c.name for c in topology.clusters])
        if self.global_cidr is not None:
            export_services(self._subctl_cli(), topology, self._kubeconfigs(), self.namespace)
            self._allocations = read_allocations(topology, {c.name: self.kube(c.name) for c in topology.clusters},
                                                 self.namespace, self._progress)
        cluster_set = self._cluster_set(with_agents=True)
        self.state.update(phase="agents-ready", cluster_set=cluster_set.to_json())
        self.timings["agents_ready"] = time.perf_counter() - started
        return cluster_set

    def _agent_token(self) -> str:
        if self._token is None:
            token = self.state.read().get("agent_token")
            if not token:
                raise ProviderError(f"the state at {self.state.path} has no agent token (made by a crossnet before "
                                    "agents had one); tear that run down and bring it up again")
            self._token = str(token)
        return self._token

    def _manifests(self, topology: Topology, cluster: str, archive: bytes) -> list[dict[str, Any]]:
        ns, labels = self.namespace, {**MANAGED, RUN_LABEL: self.run_id}
        manifests: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": labels}},
            {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": {"name": TOKEN_SECRET, "namespace": ns,
             "labels": labels}, "stringData": {"token": self._agent_token()}},
            configmap_binary("crossnet-agent", ns, AGENT_ARCHIVE, archive, labels),
        ]
        spec = topology.cluster(cluster)
        for node in spec.nodes:
            for vantage in ("pod", "host"):
                manifests.append(self._agent_pod(cluster, node.short, node.name, vantage, labels))
        ports = [{"name": p, "protocol": p.upper(), "port": AGENT_PORT, "targetPort": AGENT_PORT}
                 for p in ("tcp", "udp")]
        manifests.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": ECHO_SERVICE, "namespace": ns,
                          "labels": labels}, "spec": {"type": "NodePort", "selector": {"app": "crossnet-agent"},
                          "ports": [{**p, "nodePort": ECHO_NODE_PORT} for p in ports]}})
        manifests.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": NOT_EXPORTED_SERVICE,
                          "namespace": ns, "labels": labels}, "spec": {"selector": {"app": "crossnet-agent"},
                          "ports": ports}})
        manifests.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": HEADLESS_SERVICE,
                          "namespace": ns, "labels": labels}, "spec": {"clusterIP": "None", "selector":
                          {"app": "crossnet-agent"}, "ports": ports, "publishNotReadyAddresses": True}})
        for ext in () if self.global_cidr else external_name_services(topology):
            if ext.cluster == cluster:
                target = ext.external_name(topology.cluster(ext.target_cluster).dns_domain, ns)
                manifests.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": ext.name,
                                  "namespace": ns, "labels": labels}, "spec": {"type": "ExternalName",
                                  "externalName": target}})
        return manifests

    def _agent_pod(self, cluster: str, short: str, node_name: str, vantage: str,
                   labels: dict[str, str]) -> dict[str, Any]:
        pod = _pod_name(vantage, short)
        spec: dict[str, Any] = {
            "nodeName": node_name,
            "tolerations": [{"operator": "Exists"}],  # control-plane taint: an agent on every node
            "automountServiceAccountToken": False,  # the agent never talks to the API server
            "containers": [{
                "name": "agent", "image": self.agent_image,
                "command": ["python3", f"/crossnet/{AGENT_ARCHIVE}", "serve", "--id",
                            agent_id(cluster, short, vantage), "--control-port", str(CONTROL_PORT),
                            "--token-file", TOKEN_FILE],
                "ports": [{"containerPort": AGENT_PORT, "protocol": "TCP"},
                          {"containerPort": AGENT_PORT, "protocol": "UDP"}, {"containerPort": CONTROL_PORT}],
                "readinessProbe": {"tcpSocket": {"port": CONTROL_PORT}, "periodSeconds": 1},
                # Probes need raw ICMP sockets (NET_RAW) and nothing else; Python imports from the
                # zipapp without writing, /tmp is a scratch emptyDir.
                "securityContext": {"privileged": False, "allowPrivilegeEscalation": False,
                                    "readOnlyRootFilesystem": True, "seccompProfile": {"type": "RuntimeDefault"},
                                    "capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]}},
                "volumeMounts": [{"name": "agent", "mountPath": "/crossnet", "readOnly": True},
                                 {"name": "token", "mountPath": str(Path(TOKEN_FILE).parent), "readOnly": True},
                                 {"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "agent", "configMap": {"name": "crossnet-agent"}},
                        {"name": "token", "secret": {"secretName": TOKEN_SECRET, "defaultMode": 0o400}},
                        {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}],
        }
        pod_labels = dict(labels)
        if vantage == "pod":
            spec.update(hostname=pod_hostname(short), subdomain=HEADLESS_SERVICE)
            pod_labels["app"] = "crossnet-agent"
        else:
            spec.update(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")
            pod_labels["app"] = "crossnet-host-agent"
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": self.namespace,
                "labels": pod_labels}, "spec": spec}

    def detach(self) -> None:
        """Nothing to do: kind clusters and their agents already outlive the process that made them."""

    def _wait_agents(self, clusters: list[str]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            waiting = []
            for cluster in clusters:
                for pod in self.kube(cluster).pods(self.namespace, "app.kubernetes.io/managed-by=crossnet"):
                    if not pod.ready:
                        waiting.append(f"{cluster}/{pod.name} ({pod.reason or pod.phase})")
            if not waiting:
                return
            pulls = [w for w in waiting if "ImagePull" in w or "ErrImage" in w]
            if pulls or time.monotonic() > deadline:
                hint = (f"; the agent image {self.agent_image} cannot be pulled: mirror it and pass --agent-image"
                        if pulls else "")
                raise ProviderError(f"agents not ready: {', '.join(waiting[:8])}{hint}")
            time.sleep(1.0)

    def down(self) -> None:
        """Undo what this run changed on reused clusters (Submariner, gateway labels), delete the
        run's namespace wherever it carries this run's labels, and delete the clusters this run
        created (never reused ones)."""
        started = time.perf_counter()
        if not self._owned:  # a bring-up refused before it claimed its state directory: nothing is ours
            return
        try:
            data = self.state.read()
        except ProviderError:
            data = {}
        problems = self._undo_submariner(data)
        namespace, run_id = data.get("namespace", self.namespace), data.get("run_id", self.run_id)
        for cluster in data.get("created", []) + data.get("reused", []):
            try:
                self._delete_namespace(cluster, namespace, run_id)
            except ProviderError as exc:
                problems.append(str(exc))
        mine = list(dict.fromkeys(data.get("created", []) + data.get("creating", [])))
        if data.get("creating"):
            try:
                existing = set(self._kind_cli().clusters())
            except ProviderError:
                existing = set(mine)
            mine = [c for c in mine if c in existing]
        for cluster in mine:
            self._progress(f"kind: deleting {cluster}")
            try:
                self._kind_cli().delete(cluster)
            except ProviderError as exc:
                problems.append(str(exc))
        release_state_dir(self.state_dir, self.run_id)
        self.timings["teardown"] = time.perf_counter() - started
        if problems:
            raise ProviderError("teardown left something behind: " + "; ".join(problems))

    def _undo_submariner(self, data: dict[str, Any]) -> list[str]:
        """Submariner and gateway labels come off the reused clusters (created ones are deleted whole)."""
        reused = set(data.get("reused", []))
        if not data.get("submariner") or not reused:
            return []
        try:
            subctl = self._subctl_cli()
        except ProviderError as exc:
            return [f"Submariner left on {', '.join(sorted(reused))}: {exc}"]
        kubeconfigs = {c: self.state_dir / f"kubeconfig-{c}" for c in reused}
        return undo_globalnet(subctl, data["submariner"], self.kube, kubeconfigs, reused, self._progress)

    def _delete_namespace(self, cluster: str, namespace: str, run_id: str) -> None:
        """Delete `namespace` only when its labels say this run made it; otherwise leave it and say so."""
        kube = self.kube(cluster)
        labels = kube.namespace_labels(namespace)
        if labels is None:
            return  # never made, or already gone
        if not is_ours(labels, run_id):
            wanted = ", ".join(f"{k}={v}" for k, v in {**MANAGED, RUN_LABEL: run_id}.items())
            _warn(f"left namespace {namespace} on cluster {cluster}: it lacks the labels {wanted} (it has "
                  f"{labels or 'none'}), so this run did not make it; delete it yourself if it is a leftover")
            return
        kube.delete_namespace(namespace)

    # ------------------------------------------------------------------ the provider seam

    def exec(self, target: ExecTarget, argv: list[str], timeout: float = 30.0) -> tuple[int, str, str]:
        if argv[:1] == ["crossnet-agent"] or argv[:1] == [str(Path(sys.executable).parent / "crossnet-agent")]:
            # The agent lives in its pods (node containers have no Python): the host vantage is host-<node>.
            pod = _pod_name("pod" if target.pod else "host", target.node)
            command = ["python3", f"/crossnet/{AGENT_ARCHIVE}", *argv[1:]]
            return self.kube(target.cluster).exec_in_pod(self.namespace, pod, command, timeout)
        if target.pod:
            pod = _pod_name("pod", target.node) if target.pod == AGENT_POD else target.pod
            return self.kube(target.cluster).exec_in_pod(self.namespace, pod, argv, timeout)
        rc, out, err = self._docker().exec(f"{target.cluster}-{target.node}", argv, timeout)
        return int(rc), str(out), str(err)

    def apply_routes(self, changes: list[RouteChange]) -> None:
        self._docker().apply_routes(changes)

    def apply_routes_undo(self, changes: list[RouteChange]) -> None:
        self._docker().undo_routes(changes)

    def read_corefile(self, cluster: str) -> str:
        data = self.kube(cluster).read_configmap("kube-system", "coredns")
        if "Corefile" not in data:
            raise ProviderError(f"{cluster}: ConfigMap kube-system/coredns has no Corefile key")
        return data["Corefile"]

    def write_corefile(self, cluster: str, text: str) -> None:
        """Write the Corefile, never over somebody else's edit: once crossnet has written it, a
        later write (the restore at teardown) goes through only while the ConfigMap still holds
        exactly what crossnet last wrote. Otherwise the ConfigMap is left alone, `text` is kept
        in a file under the logs directory and a warning says so and where."""
        written = self._corefiles_written()
        last = written.get(cluster)
        if last is not None and self.read_corefile(cluster) not in (last, text):
            kept = self._keep_corefile(cluster, text)
            _warn(f"left the Corefile of {cluster} (ConfigMap kube-system/coredns) as it is: it changed after "
                  f"crossnet patched it, and restoring would undo that change; the Corefile from before crossnet is "
                  f"in {kept}: remove the section from `# crossnet begin {self.run_id}` to `# crossnet end "
                  f"{self.run_id}` by hand")
            return
        self.state.update(corefiles_written={**written, cluster: text})  # recorded before it is made
        self.kube(cluster).write_configmap_key("kube-system", "coredns", "Corefile", text)

    def _corefiles_written(self) -> dict[str, str]:
        try:
            written: dict[str, str] = self.state.read().get("corefiles_written") or {}
        except ProviderError:
            return {}
        return written

    def _keep_corefile(self, cluster: str, text: str) -> Path:
        """Save a Corefile crossnet did not put back, outside the state directory (teardown removes that)."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        kept = self.logs_dir / f"corefile-{cluster}-before-crossnet"
        kept.write_text(text)
        return kept

    def agent_client(self, agent: str) -> KubeAgentClient:
        cluster, node, vantage = agent.split("/")
        return KubeAgentClient(self.kube(cluster), self.namespace,
                               _pod_name("pod" if vantage == AGENT_POD else "host", node), self._agent_token())

    # ------------------------------------------------------------------ helpers

    def _global_fields(self, cluster: str) -> dict[str, Any]:
        """Global IPs as Submariner allocated them; clusterset.local is wired into CoreDNS by
        Submariner's Lighthouse itself, so crossnet forwards nothing (clusterset_dns_ips stays empty)."""
        allocation = self._allocations.get(cluster)
        if allocation is None:
            return {}
        ingress = [(f"svc/{n}", ip) for n, ip in allocation.service_ips.items()]
        ingress += [(f"pod/{n}", ip) for n, ip in allocation.pod_ips.items()]
        return {"global_cidr": allocation.cidr, "global_egress": allocation.egress_ips,
                "global_ingress": tuple(ingress)}

    def _require_topology(self) -> Topology:
        if self._topology is None:
            raise ProviderError("kind: the clusters are not up")
        return self._topology

    def _cluster_set(self, with_agents: bool) -> ClusterSet:
        clusters = []
        for spec in self._require_topology().clusters:
            kube = self.kube(spec.name)
            nodes = []
            for node in sorted(kube.nodes(), key=lambda n: (not n.control_plane, n.name)):
                short = node.name.removeprefix(f"{spec.name}-")
                nodes.append(LiveNode(short=short, role="control-plane" if node.control_plane else "worker",
                                      ip=node.internal_ip, pod_cidr=node.pod_cidr,
                                      host_agent=agent_id(spec.name, short, "host"), handle=node.name))
            dns_pods = kube.pods("kube-system", "k8s-app=kube-dns")
            kube_dns = next((s for s in kube.services("kube-system") if s.name == "kube-dns"), None)
            pods: list[LivePod] = []
            services: list[LiveService] = []
            if with_agents:
                by_name = {p.name: p for p in kube.pods(self.namespace, AGENT_SELECTOR)}
                for live in nodes:
                    agent = by_name.get(_pod_name("pod", live.short))
                    if agent is None:
                        raise ProviderError(f"{spec.name}: no agent pod on {live.short}")
                    pods.append(LivePod(AGENT_POD, live.short, agent.ip, agent_id(spec.name, live.short, "pod")))
                for svc in kube.services(self.namespace):
                    headless = svc.type == "Headless"
                    services.append(LiveService(
                        name=svc.name, namespace=self.namespace, type=svc.type,  # type: ignore[arg-type]
                        cluster_ip=svc.cluster_ip, external_name=svc.external_name, node_port=svc.node_port,
                        ports=(("tcp", AGENT_PORT), ("udp", AGENT_PORT)) if svc.type != "ExternalName" else (),
                        endpoints=tuple(p.ip for p in pods) if svc.type != "ExternalName" else (),
                        hostnames=tuple(pod_hostname(p.node) for p in pods) if headless else ()))
            clusters.append(LiveCluster(
                name=spec.name, domain=spec.dns_domain, pod_subnet=spec.pod_subnet,
                service_subnet=spec.service_subnet, nodes=tuple(nodes), pods=tuple(pods), services=tuple(services),
                dns_service_ip=kube_dns.cluster_ip if kube_dns and kube_dns.cluster_ip else "",
                dns_server_ips=tuple(sorted(p.ip for p in dns_pods)), **self._global_fields(spec.name)))
        return ClusterSet(provider="kind", clusters=tuple(clusters), namespace=self.namespace)
