"""The `existing` provider: clusters somebody else built, from a kubeconfig (README, "Validate your
own clusters").

up():            claim the state directory; discover (or take the controller's discovery), record
                 it and the topology in state.json; pre-flight (unless --skip-preflight); no agent yet.
deploy_agents(): in each cluster one namespace `crossnet-<run-id>` (labelled with the run, an
                 expiry annotation; recorded before it is made) or the --namespace given; dry runs
                 of an agent pod (refused: the run stops, with the reason), a hostNetwork pod (only
                 with --host-vantage; refused: host vantages off, with the reason) and a debug pod
                 (--node-evidence); then the agents of kube_agents, pinned to the sampled nodes,
                 meeting Pod Security "restricted"; the echo NodePort allocated by the API server. Under
                 an MCS profile (mcs.py) the first cluster's echo Services exported, imports awaited.
down():          delete the namespace where its labels name this run (--keep: leave it), or in a
                 given namespace the objects carrying the run's labels; nothing else, ever.

Plumbing `none` (the default): apply_routes and write_corefile refuse, read_corefile only reads.
`--plumbing inject` (explicit, clusters the user owns): inject.py, through the debug pods, undone in
down() too. Agents are asked through the pod proxy; exec only into crossnet's pods.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from crossnet.model import ClusterSet, Topology
from crossnet.plumbing.routes import RouteChange
from crossnet.providers.base import ExecTarget, InputError, ProviderError
from crossnet.providers.existing.debug import debug_pod, debug_pod_name
from crossnet.providers.existing.discovery import dry_run_source, service_cidr_unsettled, service_cidrs_by_dry_run
from crossnet.providers.existing.inject import Injector
from crossnet.providers.existing.kube import ExistingKube
from crossnet.providers.existing.learn import learn_from_agents
from crossnet.providers.existing.mcs import export_kinds, export_services, exporter, globalnet_exports
from crossnet.providers.existing.preflight import PRIVILEGED, blocking, preflight, render_table
from crossnet.providers.existing.sample import topology_to_json
from crossnet.providers.existing.session import (
    ApiFactory,
    Discovery,
    ExistingStateFile,
    connect,
    discover,
    live_cluster_set,
)
from crossnet.providers.existing.settings import ExistingSettings
from crossnet.providers.kind.bundle import build_agent_zipapp
from crossnet.providers.kind.kube import MANAGED_BY, RUN_LABEL, is_ours
from crossnet.providers.kube_agents import (
    AGENT_APP,
    AgentNode,
    AgentPodOptions,
    KubeAgentClient,
    agent_client,
    agent_command,
    agent_manifests,
    agent_pod,
    agent_pod_name,
    apply_agents,
    external_names,
    run_labels,
    wait_agents,
)
from crossnet.providers.select import ProviderSettings
from crossnet.providers.statedir import claim_state_dir, release_state_dir
from crossnet.workloads import ECHO_SERVICE, HEADLESS_SERVICE

__all__ = ["EXPIRES", "ExistingProvider", "attach", "create", "usable"]

EXPIRES = "crossnet.io/expires"  # annotation: when `crossnet down --context … --expired` may remove it
ANNOUNCE = 'echo "crossnet-resolv: $(grep -m1 "^search" /etc/resolv.conf)"; exec "$@"'  # the agent's DNS search list
NO_HOST = "host vantages are opt-in on clusters crossnet did not make: pass --host-vantage"


def _stderr(message: str) -> None:
    print(f"crossnet: {message}", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    print(f"crossnet: warning: {message}", file=sys.stderr, flush=True)


class ExistingProvider:
    name = "existing"
    converge_timeout = 0.0  # crossnet changes no Corefile here: nothing to converge
    multicluster_owns_corefile = True  # the Corefile is the vendor's
    plumbing_modes = ("none", "inject")

    def __init__(
        self,
        state_dir: Path,
        run_id: str,
        settings: ExistingSettings,
        *,
        discovery: Discovery | None = None,
        api_factory: ApiFactory | None = None,
        progress: Callable[[str], None] = _stderr,
        global_cidr: str | None = None,
        mcs: Any = None,
    ) -> None:
        self.state_dir, self.run_id, self.settings, self.mcs = state_dir, run_id, settings, mcs  # McsPlumbing
        self.state = ExistingStateFile(state_dir)
        self.namespace = settings.namespace or f"crossnet-{run_id}".lower()
        self.global_cidr = global_cidr
        self._discovery, self._api_factory, self._progress = discovery, api_factory, progress
        self._kubes: dict[str, ExistingKube] = {}
        self._token: str | None = None
        self._owned = False
        self._host: dict[str, str] = {}  # cluster -> why its host vantages are off ("" = on)
        self._evidence: dict[str, str] = {}  # cluster -> why node evidence is off ("" = on)
        self._allocations: dict[str, Any] = {}
        self._lock = threading.Lock()  # clusters are prepared in parallel; each may refine the discovery
        self._inject: Injector | None = None
        if settings.inject:  # inject.py: recorded under existing.inject, undone by down() as well
            self.converge_timeout = 180.0  # as on kind: the kubelet's ConfigMap sync plus CoreDNS `reload`
            record = (self._inject_record, self._record_inject)
            self._inject = Injector(self.kube, self.namespace, run_id, *record, progress)

    # ------------------------------------------------------------------ seams

    def kube(self, cluster: str) -> ExistingKube:
        if cluster not in self._kubes:
            ref = next((r for r in self.settings.clusters if r.name == cluster), None)
            if ref is None:
                raise ProviderError(f"no cluster {cluster} in this run")
            self._kubes[cluster] = connect(self.settings, ref, self._api_factory)
        return self._kubes[cluster]

    def _require(self) -> Discovery:
        if self._discovery is None:
            raise ProviderError("existing: the clusters were not discovered (up() first)")
        return self._discovery

    def _record(self, **fields: Any) -> None:
        data = self.state.read()
        self.state.update(existing={**(data.get("existing") or {}), **fields})

    def _inject_record(self) -> dict[str, Any]:
        return dict((self.state.read().get("existing") or {}).get("inject") or {})

    def _record_inject(self, record: dict[str, Any]) -> None:
        self._record(inject=record)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def attach(cls, state_dir: Path, api_factory: ApiFactory | None = None) -> ExistingProvider:
        data = ExistingStateFile(state_dir).read()
        if data.get("provider") != "existing":
            raise InputError(f"{state_dir} belongs to provider {data.get('provider')!r}, not existing")
        existing = data.get("existing") or {}
        settings = ExistingSettings.from_json(existing.get("settings") or {})
        provider = cls(state_dir, str(data["run_id"]), settings, api_factory=api_factory)
        provider.namespace = str(data.get("namespace") or provider.namespace)
        if provider._inject is not None:
            provider._inject.namespace = provider.namespace
        if existing.get("discovery"):
            provider._discovery = Discovery.from_json(settings, existing["discovery"])
        provider._host = {str(k): str(v) for k, v in (existing.get("host_vantages") or {}).items()}
        provider._evidence = {str(k): str(v) for k, v in (existing.get("node_evidence") or {}).items()}
        provider._owned = True
        return provider

    def up(self, topology: Topology) -> ClusterSet:
        claim_state_dir(self.state_dir, self.run_id)  # new and 0700 (the agent token); never adopted
        self._owned = True
        self._token = secrets.token_urlsafe(32)
        self.state.write(
            {
                "provider": "existing",
                "run_id": self.run_id,
                "namespace": self.namespace,
                "phase": "starting",
                "agent_token": self._token,
                "existing": {"settings": self.settings.to_json(), "namespace_on": []},
            }
        )
        discovery = self._discovery or discover(self.settings, self._api_factory, self._progress)
        self._discovery = discovery
        if topology_to_json(topology) != topology_to_json(discovery.topology):
            raise InputError(
                "the cells were collected for another topology than the one discovered now (did the clusters "
                "change?); start the run again"
            )
        self._record(discovery=discovery.to_json())
        if not self.settings.skip_preflight:
            self._preflight(discovery)
        cluster_set = self._cluster_set(with_agents=False)
        self.state.update(phase="up", cluster_set=cluster_set.to_json())
        return cluster_set

    def _preflight(self, discovery: Discovery) -> None:
        rows, _ = preflight(
            self.settings,
            lambda ref: self.kube(ref.name),
            self.namespace,
            facts={f.name: f for f in discovery.facts},
        )
        self._record(preflight=[asdict(r) for r in rows])
        failing = blocking(rows)
        if failing:
            raise ProviderError(
                f"pre-flight found {len(failing)} blocking problem(s); nothing was created "
                "(`crossnet preflight` prints the table, --skip-preflight runs anyway):\n" + render_table(failing)
            )
        warnings = sum(r.status == "warn" for r in rows)
        self._progress(f"existing: pre-flight passed ({len(rows)} checks, {warnings} warnings)")

    def deploy_agents(self) -> ClusterSet:
        discovery = self._require()
        names = [c.name for c in discovery.topology.clusters]
        kubes = {n: self.kube(n) for n in names}
        if not self.settings.namespace:
            self._record(namespace_on=names)  # before anything is made: down() looks here
        archive = build_agent_zipapp()
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            prepared = dict(zip(names, pool.map(lambda n: self._prepare(n, kubes[n], archive), names), strict=True))
        self._record(host_vantages=self._host, node_evidence=self._evidence)
        apply_agents(kubes, prepared)
        wait_agents(kubes, self.namespace, self.settings.image)
        for name in names:
            self._learn_from_agents(name, kubes[name])
        if self.global_cidr is not None:
            self._globalnet(kubes)
        elif self.mcs is not None:  # mcs.py: the exports, the imports, CoreDNS's RBAC (recorded: existing.mcs)
            export_services(self)
        cluster_set = self._cluster_set(with_agents=True)
        self._record(discovery=self._require().to_json())
        self.state.update(phase="agents-ready", cluster_set=cluster_set.to_json())
        return cluster_set

    def _options(self, host: bool) -> AgentPodOptions:
        return AgentPodOptions(
            host_vantage=host,
            node_port=None,  # allocated by the API server, read back from the Service
            image_pull_secrets=self.settings.image_pull_secrets,
            tolerations=self.settings.tolerations,
            node_selector=self.settings.node_selector,
            restricted=True,
            create_namespace=False,  # made (or checked) first, alone: the dry runs happen inside it
        )

    def _namespace_manifest(self, extra_labels: dict[str, str]) -> dict[str, Any]:
        expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + self.settings.ttl_hours * 3600))
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": self.namespace,
                "labels": {**run_labels(self.run_id), **extra_labels},
                "annotations": {EXPIRES: expires},
            },
        }

    def _namespace(self, cluster: str, kube: ExistingKube) -> None:
        """Make the run's namespace — with the Pod Security label hostNetwork pods need, when host
        vantages are asked for and that is allowed — or check the namespace given."""
        if self.settings.namespace:
            found = kube.namespace(self.namespace)
            if found is None:
                raise InputError(f"{cluster}: namespace {self.namespace} does not exist; create it or drop --namespace")
            level = ((found.get("metadata") or {}).get("labels") or {}).get(PRIVILEGED, "")
            if self.settings.host_vantage and level in ("baseline", "restricted"):
                self._host[cluster] = f"namespace {self.namespace} enforces Pod Security {level}"
            return
        extra = {PRIVILEGED: "privileged"} if self.settings.host_vantage else {}
        if extra:
            error = kube.dry_run_error(self._namespace_manifest(extra))
            if error is not None:
                self._host[cluster] = f"a privileged namespace is refused ({error.status} {error.api_message[:200]})"
                extra = {}
        kube.apply([self._namespace_manifest(extra)])

    def _prepare(self, cluster: str, kube: ExistingKube, archive: bytes) -> list[dict[str, Any]]:
        """The namespace, the dry runs, then every other manifest of `cluster`."""
        discovery = self._require()
        labels = run_labels(self.run_id)
        self._host[cluster] = "" if self.settings.host_vantage else NO_HOST
        debug_pods = self.settings.node_evidence or self.settings.inject  # inject runs in them too
        self._evidence[cluster] = "" if debug_pods else "node evidence needs --node-evidence"
        self._namespace(cluster, kube)
        nodes = [AgentNode(s.short, s.node.name) for s in discovery.sampled[cluster]]
        options = self._options(True)
        pod = agent_pod(
            cluster,
            nodes[0],
            "pod",
            namespace=self.namespace,
            image=self.settings.image,
            labels=labels,
            options=options,
        )
        error = kube.dry_run_error(pod)
        if error is not None:
            raise ProviderError(
                f"{cluster}: the agent pod is refused ({error.status} {error.api_message[:300]}); it meets Pod "
                "Security 'restricted': ask which policy refuses it (Gatekeeper, Kyverno, a quota), or mirror the image"
            )
        if not self._host[cluster]:
            host = agent_pod(
                cluster,
                nodes[0],
                "host",
                namespace=self.namespace,
                image=self.settings.image,
                labels=labels,
                options=options,
            )
            error = kube.dry_run_error(host)
            if error is not None:
                self._host[cluster] = f"hostNetwork pods are refused here ({error.status} {error.api_message[:200]})"
        debug = [debug_pod(n, self.namespace, labels, self.settings) for n in nodes]
        if not self._evidence[cluster]:
            error = kube.dry_run_error(debug[0])
            if error is not None:
                self._evidence[cluster] = (
                    f"privileged debug pods are refused ({error.status} {error.api_message[:200]})"
                )
                if self.settings.inject:
                    raise ProviderError(f"{cluster}: --plumbing inject runs in debug pods: {self._evidence[cluster]}")
        if self._host[cluster]:
            _warn(f"{cluster}: the host vantages' cells are skipped: {self._host[cluster]}")
        fact = discovery.fact(cluster)
        if service_cidr_unsettled(fact):  # none found, or only the hint: the dry run comes before the hint
            found = service_cidrs_by_dry_run(kube, self.namespace)
            if found:
                source = dry_run_source(self.namespace)
                with self._lock:
                    fact = self._require().fact(cluster)
                    refined = replace(fact, service_cidrs=found, service_source=source)
                    self._discovery = self._require().with_fact(refined)
        manifests = agent_manifests(
            cluster,
            nodes,
            namespace=self.namespace,
            labels=labels,
            image=self.settings.image,
            token=self._agent_token(),
            archive=archive,
            external=() if self.global_cidr else external_names(discovery.topology, cluster, self.namespace),
            options=replace(options, host_vantage=not self._host[cluster]),
            mcs_exporter=cluster == exporter(self.mcs, discovery.topology),
            exported=self.global_cidr is not None,  # every cluster exports echo under Globalnet
        )
        for manifest in manifests:
            if manifest["kind"] == "Pod" and manifest["metadata"]["labels"].get("app") == AGENT_APP:
                container = manifest["spec"]["containers"][0]
                container["command"] = ["sh", "-c", ANNOUNCE, "sh", *container["command"]]
        return manifests + (debug if not self._evidence[cluster] else [])

    def _learn_from_agents(self, cluster: str, kube: ExistingKube) -> None:
        self._discovery = learn_from_agents(self._require(), cluster, kube, self.namespace)  # learn.py

    def _globalnet(self, kubes: dict[str, ExistingKube]) -> None:
        """Export the echo Services (ServiceExport objects in crossnet's namespace) and read the global
        IPs Globalnet allocates, as on kind."""
        from crossnet.providers.kind.submariner import read_allocations

        for kube in kubes.values():  # in the MCS API version each cluster serves
            globalnet_exports(kube, self.namespace, self.run_id, (ECHO_SERVICE, HEADLESS_SERVICE))
        self._allocations = read_allocations(self._require().topology, kubes, self.namespace, self._progress)

    def _agent_token(self) -> str:
        if self._token is None:
            token = self.state.read().get("agent_token")
            if not token:
                raise ProviderError(f"the state at {self.state.path} has no agent token")
            self._token = str(token)
        return self._token

    def detach(self) -> None:
        """Nothing to do: the agents run in the clusters, not in this process."""

    def down(self) -> None:
        """Remove what this run made (see the module's docstring); every cluster is tried."""
        if not self._owned:
            return
        try:
            data = self.state.read()
        except ProviderError:
            data = {}
        existing = data.get("existing") or {}
        clusters = [r.name for r in self.settings.clusters] if self.settings.namespace else existing.get("namespace_on")
        namespace, run_id = str(data.get("namespace", self.namespace)), str(data.get("run_id", self.run_id))
        problems = self._inject.undo_all() if self._inject is not None else []  # while the debug pods live
        if self.settings.keep and clusters:
            contexts = " ".join(f"--context {r.name}={r.context}" for r in self.settings.clusters)
            _warn(
                f"--keep: left namespace {namespace} on {', '.join(clusters)}; remove it with "
                f"`crossnet down {contexts} --run-id {run_id}`"
            )
        else:
            for cluster in clusters or []:
                try:
                    self._remove(cluster, namespace, run_id)
                except ProviderError as exc:
                    problems.append(str(exc))
        release_state_dir(self.state_dir, self.run_id)
        if problems:
            raise ProviderError("teardown left something behind: " + "; ".join(problems))

    def _remove(self, cluster: str, namespace: str, run_id: str) -> None:
        kube = self.kube(cluster)
        if self.settings.namespace:  # not ours: only what carries this run's labels
            selector = ",".join(f"{k}={v}" for k, v in {**MANAGED_BY, RUN_LABEL: run_id}.items())
            kinds = [("v1", "pods"), ("v1", "services"), ("v1", "configmaps"), ("v1", "secrets")]
            if self.settings.mcs or self.settings.globalnet:
                kinds += export_kinds(kube)  # the version the cluster serves
            for version, plural in kinds:
                kube.delete_collection(version, plural, namespace, selector)
            return
        labels = kube.namespace_labels(namespace)
        if labels is None:
            return
        if not is_ours(labels, run_id):
            _warn(f"left namespace {namespace} on {cluster}: its labels ({labels}) do not name run {run_id}")
            return
        self._progress(f"existing: {cluster}: deleting namespace {namespace}")
        kube.delete_namespace(namespace)

    # ------------------------------------------------------------------ the provider seam

    def skip_reason(self, cluster: str, vantage: str) -> str | None:
        """Why the cells from `vantage` ("pod"/"host") of `cluster` cannot be probed, None when they can."""
        if vantage != "host":
            return None
        return self._host.get(cluster, NO_HOST if not self.settings.host_vantage else "") or None

    def exec(self, target: ExecTarget, argv: list[str], timeout: float = 30.0) -> tuple[int, str, str]:
        why = self._evidence.get(target.cluster, "node evidence needs --node-evidence")
        if why:
            raise ProviderError(f"{target}: crossnet execs nothing on clusters it did not make unless asked: {why}")
        if argv[:1] == ["crossnet-agent"] or argv[0].endswith("/crossnet-agent"):
            pod = agent_pod_name("pod" if target.pod else "host", target.node)
            return self.kube(target.cluster).exec_in_pod(self.namespace, pod, agent_command(argv[1:]), timeout)
        pod = agent_pod_name("pod", target.node) if target.pod else debug_pod_name(target.node)
        if self._inject is not None and not target.pod:  # lifecycle's node commands (inject.py)
            argv = self._inject.node_argv(target.cluster, target.node, argv)
        return self.kube(target.cluster).exec_in_pod(self.namespace, pod, argv, timeout)

    def apply_routes(self, changes: list[RouteChange]) -> None:
        if self._inject is None:
            raise ProviderError("the existing provider changes no route on clusters it did not make (plumbing: none)")
        self._inject.apply_routes(changes, [c.name for c in self._require().topology.clusters])

    def apply_routes_undo(self, changes: list[RouteChange]) -> None:
        problems = self._inject.undo_routes(changes) if self._inject is not None else []
        if problems or (changes and self._inject is None):
            raise ProviderError("; ".join(problems) or "the existing provider made no route, so it has none to remove")

    def read_corefile(self, cluster: str) -> str:
        data = self.kube(cluster).read_configmap("kube-system", "coredns")
        if "Corefile" not in data:
            raise ProviderError(f"{cluster}: ConfigMap kube-system/coredns has no Corefile key")
        return data["Corefile"]

    def write_corefile(self, cluster: str, text: str) -> None:
        if self._inject is None:
            raise ProviderError(f"{cluster}: the existing provider never writes a Corefile (plumbing: none)")
        self._inject.write_corefile(cluster, text)

    def agent_client(self, agent: str) -> KubeAgentClient:
        cluster, _, vantage = agent.split("/")
        reason = self.skip_reason(cluster, "host" if vantage == "host" else "pod")
        if reason:
            raise ProviderError(f"{agent}: no host vantage here: {reason}")
        return agent_client(self.kube, self.namespace, agent, self._agent_token())

    def node_access_refused(self, cluster: str) -> str | None:
        """Why nothing may run on this cluster's nodes (no --node-evidence, debug pods refused)."""
        return self._evidence.get(cluster, "node evidence needs --node-evidence") or None

    def node_host(self, cluster: str, node: str) -> Any:
        from crossnet.providers.exec_backend import exec_host

        return exec_host(self.exec, cluster, node)

    def _cluster_set(self, with_agents: bool) -> ClusterSet:
        mcs = (self.state.read().get("existing") or {}).get("mcs") if with_agents and self.mcs is not None else None
        return live_cluster_set(
            self._require(), self.kube if with_agents else None, self.namespace, self._allocations, mcs
        )


def create(state_dir: Path, run_id: str, settings: ProviderSettings) -> ExistingProvider:
    """`settings.existing`: the controller's Discovery (or ExistingSettings, discovered in up())."""
    given = settings.existing
    if isinstance(given, Discovery):
        existing, discovery = given.settings, given
    elif isinstance(given, ExistingSettings):
        existing, discovery = given, None
    else:
        raise InputError(
            "the existing provider needs the clusters: --context NAME=CONTEXT (twice or more) or --clusterset FILE"
        )
    if settings.agent_image:
        existing = replace(existing, image=settings.agent_image)
    return ExistingProvider(
        state_dir, run_id, existing, discovery=discovery, global_cidr=settings.global_cidr, mcs=settings.mcs
    )


def attach(state_dir: Path, alive: bool = True) -> ExistingProvider:
    """The clusters live on without crossnet: `down` of any run of ours can clean up."""
    return ExistingProvider.attach(state_dir)


def usable() -> str | None:
    """Never chosen by --provider auto: it needs to be told which clusters."""
    return "the existing provider is used only when asked (--provider existing with --context or --clusterset)"
