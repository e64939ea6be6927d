"""The kind provider: real kind clusters (docs/ARCHITECTURE.md, "Providers").

Clusters come from `kind-configs/` through the kind CLI (in parallel); node routes go in through
the docker SDK (`exec` in each node container); the Corefile is the ConfigMap
`kube-system/coredns`; agents are pods pinned to every node plus a hostNetwork pod per node in
the namespace `crossnet-<run-id>`, running the agent zipapp from a ConfigMap on `python:3-slim`,
controlled through the API server's pod proxy (all of that in crossnet.providers.kube_agents, shared
with every Kubernetes-backed provider; kind only says which nodes, named `<cluster>-<node>`).
Everything above the provider seam (plumbing plans, cells, probes, judging, reports) is shared
with the lab.

Tested here with fakes for the kind CLI, the kubernetes API and docker (tests/test_kind_provider.py)
and with a real docker daemon for the docker layer; only the nightly run drives real clusters.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crossnet.globalnet import GlobalAllocation
from crossnet.model import ClusterSet, LiveCluster, LiveNode, LivePod, LiveService, Topology
from crossnet.plumbing.routes import RouteChange
from crossnet.providers.base import ExecTarget, ProviderError, StateFile
from crossnet.providers.kind import mcs as kind_mcs
from crossnet.providers.kind.calico import CalicoBgp, Site, node_blocks
from crossnet.providers.kind.clusters import KindCli, KindRunner, create_clusters
from crossnet.providers.kind.kube import ApiKubeCluster, KubeCluster, is_ours
from crossnet.providers.kind.nodes import kind_node_name, kind_node_short
from crossnet.providers.kind.submariner import (
    SubctlCli,
    SubctlRunner,
    deploy_globalnet,
    export_services,
    read_allocations,
    undo_globalnet,
)
from crossnet.providers.kube_agents import (
    DEFAULT_AGENT_IMAGE,
    TOKEN_HEADER,
    AgentNode,
    KubeAgentClient,
    agent_client,
    agent_command,
    agent_pod_name,
    deploy_agents,
    external_names,
    live_agents,
    run_labels,
)
from crossnet.providers.select import ProviderSettings
from crossnet.providers.statedir import claim_state_dir, release_state_dir
from crossnet.workloads import AGENT_POD

__all__ = ["DEFAULT_AGENT_IMAGE", "TOKEN_HEADER", "KindProvider", "KubeAgentClient"]

READY_TIMEOUT = 300.0  # for the clusters' nodes and CoreDNS


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


class KindProvider:
    name = "kind"
    converge_timeout = 180.0  # the kubelet's ConfigMap sync plus CoreDNS `reload` (up to ~1 min + 30 s ± 15 s)
    multicluster_owns_corefile = True  # subctl join: Lighthouse adds the clusterset.local forward

    def __init__(
        self,
        state_dir: Path,
        run_id: str,
        reuse: bool = False,
        agent_image: str = DEFAULT_AGENT_IMAGE,
        kind: KindRunner | None = None,
        nodes: Any | None = None,
        kube_factory: Callable[[str, Path], KubeCluster] | None = None,
        progress: Callable[[str], None] = _stderr,
        logs_dir: Path | None = None,
        global_cidr: str | None = None,
        subctl: SubctlRunner | None = None,
        bgp: Any = None,
        calico: CalicoBgp | None = None,
        mcs: Any = None,
    ) -> None:
        self.global_cidr = global_cidr  # Submariner Globalnet, deployed with subctl
        self.bgp, self._calico = bgp, calico or CalicoBgp()  # the bgp topology: Calico, switch, office (calico.py)
        self.mcs = mcs  # Multi-Cluster Services: Lighthouse + ServiceExports (kind/mcs.py)
        self._calico.progress = progress
        self._subctl = subctl
        self._allocations: dict[str, GlobalAllocation] = {}
        self.state_dir, self.run_id, self.reuse, self.agent_image = state_dir, run_id, reuse, agent_image
        self.state = StateFile(state_dir)
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
        kind = self._kind_cli()  # checks the binary before anything is made
        self._docker()  # and the daemon
        if self.global_cidr is not None:
            self._subctl_cli()  # and subctl, when Globalnet is asked for
        kind_mcs.check_tools(self)
        if self.bgp is not None:
            self._calico.check_tools()  # and kubectl and docker, for Calico and the office
        self._topology = topology
        claim_state_dir(self.state_dir, self.run_id)  # new and 0700 (kubeconfigs, the agent token); never adopted
        self._owned = True
        self._token = secrets.token_urlsafe(32)
        self.state.write(
            {
                "provider": "kind",
                "run_id": self.run_id,
                "namespace": self.namespace,
                "created": [],
                "reused": [],
                "phase": "starting",
                "agent_token": self._token,
            }
        )
        names = [c.name for c in topology.clusters]
        existing = set(kind.clusters())
        clash = sorted(existing & set(names))
        if clash and not self.reuse:
            raise ProviderError(
                f"kind cluster(s) {', '.join(clash)} already exist; pass --reuse to use them "
                "(crossnet then never deletes them), or remove them with `kind delete cluster "
                f"--name {clash[0]}`"
            )
        wanted = [(c.name, Path(c.source_file)) for c in topology.clusters if c.name not in existing]
        # Recorded before kind starts: a Ctrl-C or crash mid-creation still lets `down` find them.
        self.state.update(creating=[name for name, _ in wanted])
        created = create_clusters(kind, wanted, self.state_dir, self.logs_dir, self._progress)
        self.state.update(created=created, reused=clash)
        for name in created:  # kind writes them itself: make sure of the mode
            os.chmod(self.state_dir / f"kubeconfig-{name}", 0o600)
        for name in clash:
            _write_private(self.state_dir / f"kubeconfig-{name}", kind.kubeconfig(name))
        site = self._calico_site(topology) if self.bgp is not None else None
        if site is not None:  # Calico first: nodes without a CNI never get Ready
            self._calico.deploy(site, self._docker())
        self._wait_ready(names)
        if site is not None:
            self._calico.serve_dns(site)
        if self.global_cidr is not None:
            deploy_globalnet(
                self._subctl_cli(),
                topology,
                {n: self.kube(n) for n in names},
                self._kubeconfigs(),
                self.state_dir,
                self._progress,
                record=self._record_submariner,
            )
        kind_mcs.deploy(self, topology)
        cluster_set = self._cluster_set(with_agents=False)
        self.state.update(phase="up", cluster_set=cluster_set.to_json())
        return cluster_set

    def _record_submariner(self, done: dict[str, Any]) -> None:
        self.state.update(submariner=done)

    def _calico_site(self, topology: Topology) -> Site:
        kubes = {c.name: self.kube(c.name) for c in topology.clusters}
        return Site(self.bgp, topology, self.run_id, kubes, self._kubeconfigs(), lambda d: self.state.update(calico=d))

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
        topology = self._require_topology()
        names = [c.name for c in topology.clusters]
        deploy_agents(
            {n: self.kube(n) for n in names},
            self._agent_nodes(topology),
            namespace=self.namespace,
            labels=run_labels(self.run_id),
            image=self.agent_image,
            token=self._agent_token(),
            external=None if self.global_cidr else {n: external_names(topology, n, self.namespace) for n in names},
            mcs_exporter=kind_mcs.exporter(self, topology),
            exported=names if self.global_cidr is not None else (),  # Lighthouse exports ClusterIP Services only
        )
        if self.global_cidr is not None:
            export_services(self._subctl_cli(), topology, self._kubeconfigs(), self.namespace)
            self._allocations = read_allocations(
                topology, {c.name: self.kube(c.name) for c in topology.clusters}, self.namespace, self._progress
            )
        kind_mcs.export(self, topology)
        cluster_set = self._cluster_set(with_agents=True)
        self.state.update(phase="agents-ready", cluster_set=cluster_set.to_json())
        return cluster_set

    @staticmethod
    def _agent_nodes(topology: Topology) -> dict[str, list[AgentNode]]:
        """Every node of every cluster gets agents; kind names the node `<cluster>-<node>`."""
        return {
            c.name: [AgentNode(n.short, kind_node_name(c.name, n.short)) for n in c.nodes] for c in topology.clusters
        }

    def _agent_token(self) -> str:
        if self._token is None:
            token = self.state.read().get("agent_token")
            if not token:
                raise ProviderError(
                    f"the state at {self.state.path} has no agent token (made by a crossnet before "
                    "agents had one); tear that run down and bring it up again"
                )
            self._token = str(token)
        return self._token

    def detach(self) -> None:
        """Nothing to do: kind clusters and their agents already outlive the process that made them."""

    def down(self) -> None:
        """Undo what this run changed on reused clusters (Submariner, gateway labels), delete the
        run's namespace wherever it carries this run's labels, and delete the clusters this run
        created (never reused ones)."""
        if not self._owned:  # a bring-up refused before it claimed its state directory: nothing is ours
            return
        try:
            data = self.state.read()
        except ProviderError:
            data = {}
        problems = kind_mcs.undo(self, data) + self._undo_submariner(data) + self._undo_calico(data)
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

    def _undo_calico(self, data: dict[str, Any]) -> list[str]:
        """The bgp topology's containers go; on reused clusters also Calico and its node routes and labels."""
        if not data.get("calico"):
            return []
        reused = {c: self.state_dir / f"kubeconfig-{c}" for c in data.get("reused", [])}
        return self._calico.undo(data["calico"], self.run_id, reused, self)

    def _delete_namespace(self, cluster: str, namespace: str, run_id: str) -> None:
        """Delete `namespace` only when its labels say this run made it; otherwise leave it and say so."""
        kube = self.kube(cluster)
        labels = kube.namespace_labels(namespace)
        if labels is None:
            return  # never made, or already gone
        if not is_ours(labels, run_id):
            wanted = ", ".join(f"{k}={v}" for k, v in run_labels(run_id).items())
            _warn(
                f"left namespace {namespace} on cluster {cluster}: it lacks the labels {wanted} (it has "
                f"{labels or 'none'}), so this run did not make it; delete it yourself if it is a leftover"
            )
            return
        kube.delete_namespace(namespace)

    # ------------------------------------------------------------------ the provider seam

    def exec(self, target: ExecTarget, argv: list[str], timeout: float = 30.0) -> tuple[int, str, str]:
        if argv[:1] == ["crossnet-agent"] or argv[:1] == [str(Path(sys.executable).parent / "crossnet-agent")]:
            # The agent lives in its pods (node containers have no Python): the host vantage is host-<node>.
            pod = agent_pod_name("pod" if target.pod else "host", target.node)
            return self.kube(target.cluster).exec_in_pod(self.namespace, pod, agent_command(argv[1:]), timeout)
        if target.pod:
            pod = agent_pod_name("pod", target.node) if target.pod == AGENT_POD else target.pod
            return self.kube(target.cluster).exec_in_pod(self.namespace, pod, argv, timeout)
        rc, out, err = self._docker().exec(kind_node_name(target.cluster, target.node), argv, timeout)
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
            _warn(
                f"left the Corefile of {cluster} (ConfigMap kube-system/coredns) as it is: it changed after "
                f"crossnet patched it, and restoring would undo that change; the Corefile from before crossnet is "
                f"in {kept}: remove the section from `# crossnet begin {self.run_id}` to `# crossnet end "
                f"{self.run_id}` by hand"
            )
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
        return agent_client(self.kube, self.namespace, agent, self._agent_token())

    def node_host(self, cluster: str, node: str) -> Any:
        """A testinfra host for the node's container: testinfra's own `docker://<cluster>-<node>`
        backend (`docker exec … /bin/sh -c`, without a timeout)."""
        import testinfra

        return testinfra.get_host(f"docker://{kind_node_name(cluster, node)}")

    # ------------------------------------------------------------------ helpers

    def _global_fields(self, cluster: str) -> dict[str, Any]:
        """Global IPs as Submariner allocated them; clusterset.local is wired into CoreDNS by
        Submariner's Lighthouse itself, so crossnet forwards nothing (clusterset_dns_ips stays empty)."""
        allocation = self._allocations.get(cluster)
        if allocation is None:
            return {}
        ingress = [(f"svc/{n}", ip) for n, ip in allocation.service_ips.items()]
        ingress += [(f"pod/{n}", ip) for n, ip in allocation.pod_ips.items()]
        return {
            "global_cidr": allocation.cidr,
            "global_egress": allocation.egress_ips,
            "global_ingress": tuple(ingress),
        }

    def _require_topology(self) -> Topology:
        if self._topology is None:
            raise ProviderError("kind: the clusters are not up")
        return self._topology

    def _cluster_set(self, with_agents: bool) -> ClusterSet:
        clusters: list[LiveCluster] = []
        imports = self.state.read().get("mcs") if self.mcs is not None and with_agents else None
        exporter_ips: dict[str, str] = {}
        for spec in self._require_topology().clusters:
            kube = self.kube(spec.name)
            blocks = node_blocks(kube) if self.bgp is not None else {}  # Calico IPAM's, not spec.podCIDR
            nodes = []
            for node in sorted(kube.nodes(), key=lambda n: (not n.control_plane, n.name)):
                short = kind_node_short(spec.name, node.name)
                nodes.append(
                    LiveNode(
                        short=short,
                        role="control-plane" if node.control_plane else "worker",
                        ip=node.internal_ip,
                        pod_cidr=blocks.get(node.name, node.pod_cidr),
                        handle=node.name,
                    )
                )
            dns_pods = kube.pods("kube-system", "k8s-app=kube-dns")
            kube_dns = next((s for s in kube.services("kube-system") if s.name == "kube-dns"), None)
            pods: tuple[LivePod, ...] = ()
            services: tuple[LiveService, ...] = ()
            if with_agents:
                pods, services = live_agents(kube, spec.name, self.namespace, [n.short for n in nodes])
            if not clusters:  # the first cluster exports (kind/mcs.py)
                exporter_ips = {s.name: s.cluster_ip for s in services if s.cluster_ip}
            clusters.append(
                LiveCluster(
                    name=spec.name,
                    domain=spec.dns_domain,
                    pod_subnet=spec.pod_subnet,
                    service_subnet=spec.service_subnet,
                    nodes=tuple(nodes),
                    pods=pods,
                    services=services,
                    dns_service_ip=kube_dns.cluster_ip if kube_dns and kube_dns.cluster_ip else "",
                    dns_server_ips=tuple(sorted(p.ip for p in dns_pods)),
                    clusterset_ips=kind_mcs.clusterset_ips(imports, spec.name, exporter_ips),
                    **self._global_fields(spec.name),
                )
            )
        return ClusterSet(provider="kind", clusters=tuple(clusters), namespace=self.namespace)


def create(state_dir: Path, run_id: str, settings: ProviderSettings) -> KindProvider:
    image = settings.agent_image or DEFAULT_AGENT_IMAGE
    options = {"global_cidr": settings.global_cidr, "bgp": settings.bgp, "mcs": kind_mcs.mcs_of(settings)}
    return KindProvider(state_dir, run_id, reuse=settings.reuse, agent_image=image, **options)


def attach(state_dir: Path, alive: bool = True) -> KindProvider:
    """kind's liveness is its clusters': `down` of a run whose clusters are gone still cleans up."""
    return KindProvider.attach(state_dir)


def usable() -> str | None:
    """None when the kind binary and a docker daemon are usable, else why not."""
    if shutil.which("kind") is None:
        return "no kind binary on PATH, so the embedded lab emulates kind's topology here"
    try:
        from crossnet.providers.kind.nodes import NodeContainers

        NodeContainers.connect(None)
    except (ProviderError, ImportError) as exc:
        return f"kind is installed but docker is not usable ({str(exc).splitlines()[0]}); using the lab"
    return None
