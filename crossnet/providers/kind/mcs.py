"""Multi-Cluster Services on kind (the `mcs` topology): Submariner with Lighthouse and without Globalnet
(subctl, the version pinned in submariner.py), the first cluster's `echo`, `echo-headless` and `remote-echo`
exported (ServiceExport), the importing clusters' ServiceImports waited for, and CoreDNS's RBAC for ServiceImports
checked where CoreDNS reads them itself (its `multicluster` plugin; Lighthouse answers clusterset.local
from its own DNS server, which CoreDNS forwards to).

Every change goes to `record` (the state file, key `mcs`; Submariner's under `submariner`, undone by the
provider as for Globalnet) before it is made; `undo_mcs` deletes only this run's ServiceExports (by label).
Lighthouse exports only ClusterIP and headless Services (Valid=False UnsupportedServiceType for a NodePort
one: submariner-io/lighthouse pkg/agent/controller/agent.go, getServiceImportType), so in the exporting
cluster kube_agents makes `echo` ClusterIP (its NodePort on `echo-nodeport`) and adds `remote-echo` (a
Service only the exporter has, imported everywhere: reached from the importers through clusterset.local
only), as the lab emulates them (providers/lab/mcs.py); `exporter` names that cluster to kube_agents.
Tested with fakes (tests/test_mcs_api.py); only the nightly `kind-mcs` job runs real Lighthouse.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossnet.model import Topology
from crossnet.providers import mcs_api
from crossnet.providers.base import ProviderError
from crossnet.providers.existing.kube import ApiError, KubeApi
from crossnet.providers.kind.kube import KubeCluster
from crossnet.providers.kind.submariner import SubctlCli, SubctlRunner, deploy_globalnet
from crossnet.workloads import ECHO_SERVICE, HEADLESS_SERVICE, REMOTE_SERVICE

__all__ = [
    "EXPORTED",
    "LighthouseCli",
    "McsSite",
    "check_tools",
    "deploy",
    "deploy_lighthouse",
    "export",
    "export_services",
    "exporter",
    "mcs_of",
    "undo",
    "undo_mcs",
]

# name -> the ServiceImport's type; each a ClusterIP or headless Service of the exporter (kube_agents, mcs_exporter)
EXPORTED = {ECHO_SERVICE: "ClusterSetIP", HEADLESS_SERVICE: "Headless", REMOTE_SERVICE: "ClusterSetIP"}
IMPORT_TIMEOUT = 300.0  # Lighthouse: the export reaches the broker, then every other cluster

Record = Callable[[dict[str, Any]], object]


def mcs_of(settings: Any) -> Any:
    """The profile's `McsPlumbing` from ProviderSettings (None: no MCS), before and after the field exists."""
    return getattr(settings, "mcs", None)


def exporter(provider: Any, topology: Topology) -> str | None:
    """The cluster whose agents' Services are made exportable (kube_agents' mcs_exporter): the first, under MCS."""
    return topology.clusters[0].name if getattr(provider, "mcs", None) is not None else None


class LighthouseCli(SubctlCli):
    """subctl as for Globalnet, but the broker without `--globalnet`: Lighthouse (service discovery)
    and the gateways' tunnels only, the clusters' own pod and service CIDRs (they must not overlap)."""

    def deploy_broker(self, kubeconfig: Path, workdir: Path) -> Path:
        self._run(["deploy-broker", "--kubeconfig", str(kubeconfig)], workdir)
        return workdir / "broker-info.subm"


def deploy_lighthouse(
    subctl: SubctlRunner | None,
    topology: Topology,
    kubes: Mapping[str, KubeCluster],
    kubeconfigs: Mapping[str, Path],
    workdir: Path,
    progress: Callable[[str], None],
    record: Callable[[dict[str, Any]], None],
) -> None:
    """Submariner with Lighthouse on every cluster: gateway labels, the broker on the first cluster,
    every cluster joined, each recorded (key `submariner`) before it is made, as for Globalnet."""
    deploy_globalnet(subctl or LighthouseCli(), topology, kubes, kubeconfigs, workdir, progress, record)


def kind_api(state_dir: Path) -> Callable[[str], KubeApi]:
    """The REST seam on a kind cluster: its kubeconfig in the state directory, context kind-<name>."""

    def make(cluster: str) -> KubeApi:
        from crossnet.providers.existing.client import ClientKubeApi

        return ClientKubeApi(str(state_dir / f"kubeconfig-{cluster}"), f"kind-{cluster}")

    return make


@dataclass(frozen=True)
class McsSite:
    """One bring-up's MCS: the profile's McsPlumbing, the clusters, the run and where changes are recorded."""

    mcs: Any
    topology: Topology
    run_id: str
    namespace: str
    api: Callable[[str], KubeApi]
    record: Record
    progress: Callable[[str], None] = lambda _message: None
    timeout: float = IMPORT_TIMEOUT
    pause: float = 2.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def _corefile(api: KubeApi) -> str:
    try:
        data = api.request("GET", "/api/v1/namespaces/kube-system/configmaps/coredns")
    except ApiError as exc:
        if exc.status == 404:
            return ""
        raise
    corefile = ((data.get("data") if isinstance(data, dict) else None) or {}).get("Corefile")
    return corefile if isinstance(corefile, str) else ""


def check_coredns(site: McsSite, clusters: Sequence[str]) -> dict[str, str]:
    """CoreDNS's RBAC on each importing cluster, where CoreDNS reads ServiceImports itself (its
    `multicluster` plugin): a missing grant stops the run with the fix. Returns what was found."""
    found: dict[str, str] = {}
    for cluster in clusters:
        api = site.api(cluster)
        if not mcs_api.corefile_serves_multicluster(_corefile(api)):
            found[cluster] = "not needed: the Corefile has no multicluster plugin (Lighthouse's DNS answers)"
            continue
        granted, problem = mcs_api.coredns_serviceimport_grant(api, cluster)
        if granted is False:
            raise ProviderError(problem)
        found[cluster] = "granted" if granted else problem
    return found


def export_services(site: McsSite, services: Mapping[str, str] = EXPORTED) -> dict[str, Any]:
    """After the agents (and their Services) are deployed: export `services` from the first cluster,
    wait until they are exported there and imported (with their types) into every other cluster, and
    check CoreDNS's RBAC there. Returns the record (also in the state file under `mcs`)."""
    exporter, importers = site.topology.clusters[0].name, [c.name for c in site.topology.clusters[1:]]
    versions = {c.name: mcs_api.require_served_version(site.api(c.name), c.name) for c in site.topology.clusters}
    done: dict[str, Any] = {
        "cluster": exporter,
        "namespace": site.namespace,
        "version": versions[exporter],
        "exports": list(services),
        "run_id": site.run_id,
    }
    site.record(done)  # before anything is created: teardown deletes these names, if they carry our labels
    manifests = [mcs_api.service_export(n, site.namespace, site.run_id, versions[exporter]) for n in services]
    site.progress(f"mcs: exporting {', '.join(services)} from {exporter} ({mcs_api.GROUP}/{versions[exporter]})")
    mcs_api.create_exports(site.api(exporter), exporter, manifests)
    mcs_api.wait_exported(
        site.api(exporter),
        exporter,
        site.namespace,
        list(services),
        versions[exporter],
        site.timeout,
        site.pause,
        clock=site.clock,
        sleep=site.sleep,
    )
    imported: dict[str, Any] = {}
    for cluster in importers:
        got = mcs_api.wait_imported(
            site.api(cluster),
            cluster,
            site.namespace,
            services,
            versions[cluster],
            site.timeout,
            site.pause,
            clock=site.clock,
            sleep=site.sleep,
        )
        imported[cluster] = {
            n: {"type": i.type, "ips": list(i.ips), "clusters": list(i.clusters)} for n, i in got.items()
        }
        site.progress(f"mcs: {cluster} imports {', '.join(f'{n} ({i.type})' for n, i in got.items())}")
    done = {**done, "imported": imported, "coredns": check_coredns(site, importers)}
    site.record(done)
    return done


def undo_mcs(done: Mapping[str, Any], api: Callable[[str], KubeApi], clusters: set[str]) -> list[str]:
    """Delete the ServiceExports `export_services` recorded, this run's only (by label), on `clusters`
    (the ones still there). Returns what could not be undone."""
    cluster, namespace, run_id = done.get("cluster"), done.get("namespace"), done.get("run_id")
    if not (isinstance(cluster, str) and isinstance(namespace, str) and isinstance(run_id, str) and run_id):
        return [f"the recorded MCS exports are malformed: {dict(done)}"] if done else []
    if cluster not in clusters:
        return []
    version: mcs_api.McsVersion = "v1beta1" if done.get("version") == "v1beta1" else "v1alpha1"
    try:
        mcs_api.delete_exports(api(cluster), namespace, run_id, version)
    except ProviderError as exc:
        return [f"{cluster}: delete the ServiceExports in {namespace}: {exc}"]
    return []


# ------------------------------------------------------------------------------------ KindProvider's hooks
# One line each in crossnet/providers/kind/provider.py; `provider` is the KindProvider (its `mcs` is the
# profile's McsPlumbing or None, and then each hook does nothing). `api`: the REST seam (tests pass fakes).


def check_tools(provider: Any) -> None:
    """At the start of `up`, before any cluster is made: the profile asks for nothing Lighthouse does
    not make, and subctl is on PATH when MCS is asked for."""
    if provider.mcs is not None and provider.mcs.derived_services:
        raise ProviderError(
            "the profile expects Karmada's derived Services (plumbing.mcs.derived_services), but kind's MCS is "
            "Submariner Lighthouse, which makes none: use --profile mcs-clusterset-only (or --provider lab)"
        )
    if provider.mcs is not None and provider._subctl is None:
        provider._subctl = LighthouseCli()


def deploy(provider: Any, topology: Topology) -> None:
    """In `up`, once the clusters are Ready: Submariner with Lighthouse (recorded under `submariner`)."""
    if provider.mcs is None:
        return
    kubes = {c.name: provider.kube(c.name) for c in topology.clusters}
    record = provider._record_submariner
    deploy_lighthouse(
        provider._subctl, topology, kubes, provider._kubeconfigs(), provider.state_dir, provider._progress, record
    )


def export(provider: Any, topology: Topology, api: Callable[[str], KubeApi] | None = None) -> dict[str, Any] | None:
    """In `deploy_agents`, once the agents' Services exist: the exports, the imports, CoreDNS's RBAC."""
    if provider.mcs is None:
        return None
    site = McsSite(
        provider.mcs,
        topology,
        provider.run_id,
        provider.namespace,
        api or kind_api(provider.state_dir),
        lambda done: provider.state.update(mcs=done),
        provider._progress,
    )
    return export_services(site)


def undo(provider: Any, data: Mapping[str, Any], api: Callable[[str], KubeApi] | None = None) -> list[str]:
    """In `down`, before Submariner is uninstalled and the namespace deleted: this run's ServiceExports."""
    if not data.get("mcs"):
        return []
    clusters = set(data.get("created") or []) | set(data.get("reused") or [])
    return undo_mcs(data["mcs"], api or kind_api(provider.state_dir), clusters)


def clusterset_ips(
    record: Mapping[str, Any] | None, cluster: str, exporter_ips: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """What `<svc>.<ns>.svc.clusterset.local` answers in `cluster`, from the recorded imports of
    `export_services`: a ClusterSetIP import's `ips`; where the implementation allocates none
    (Lighthouse without a clusterset IP answers with the exporting cluster's ClusterIP) the
    exporter's ClusterIP of that Service (`exporter_ips`: name -> ClusterIP). The exporting cluster
    itself, which imports nothing of its own here, sees what the importers see."""
    imported = (record or {}).get("imported") or {}
    if not isinstance(imported, Mapping) or not imported:
        return ()
    view = imported[cluster] if cluster in imported else next(iter(imported.values()))
    found: list[tuple[str, str]] = []
    for name, entry in sorted(view.items()):
        if not isinstance(entry, Mapping) or entry.get("type") != "ClusterSetIP":
            continue
        ips = [str(ip) for ip in entry.get("ips") or []] or ([exporter_ips[name]] if exporter_ips.get(name) else [])
        found += [(str(name), ip) for ip in ips]
    return tuple(found)
