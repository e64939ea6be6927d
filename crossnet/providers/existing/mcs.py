"""Multi-Cluster Services on existing clusters (provider.py's helpers, kept apart for its size): the
MCS API version each cluster serves (providers/mcs_api.py's discovery: v1beta1 where served, else
v1alpha1), the ServiceExports a Globalnet run makes, and an MCS run (the `mcs` topology's profiles) as
on kind (providers/kind/mcs.py): the first cluster's echo, echo-headless and remote-echo exported,
the ServiceImports waited for on every other cluster, CoreDNS's RBAC for ServiceImports checked there.

The rights these use are rbac.rights(mcs=True): serviceexports create/get/delete in the run's namespace,
serviceimports get/list there, ClusterRoleBindings list and ClusterRoles get (CoreDNS's grant), the
CoreDNS Deployment get (its ServiceAccount). Nothing here deletes: the run's namespace goes whole, or
(--namespace) the run's objects by label (`export_kinds`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from crossnet.model import Topology
from crossnet.providers import mcs_api
from crossnet.providers.existing.kube import ExistingKube
from crossnet.providers.kind import mcs as kind_mcs

__all__ = ["export_kinds", "export_services", "exporter", "globalnet_exports"]


def exporter(mcs: Any, topology: Topology) -> str | None:
    """The cluster whose echo Services are made exportable (kube_agents' mcs_exporter) under an MCS profile."""
    return topology.clusters[0].name if mcs is not None else None


def globalnet_exports(kube: ExistingKube, namespace: str, run_id: str, names: Iterable[str]) -> None:
    """The ServiceExports of `names` in the MCS API version `kube` serves (an error naming the fix when none)."""
    version = mcs_api.require_served_version(kube.api, kube.name)
    kube.apply([mcs_api.service_export(name, namespace, run_id, version) for name in names])


def export_kinds(kube: ExistingKube) -> list[tuple[str, str]]:
    """(apiVersion, plural) of the run's ServiceExports, as the cluster serves them (none: no MCS API left)."""
    version = mcs_api.served_version(kube.api)
    return [] if version is None else [(f"{mcs_api.GROUP}/{version}", "serviceexports")]


def export_services(provider: Any) -> dict[str, Any]:
    """An MCS run's exports, imports and CoreDNS check (kind/mcs.py's export_services on the REST seam of
    each existing cluster of the ExistingProvider `provider`), recorded (before and after) as existing.mcs."""
    kube: Callable[[str], ExistingKube] = provider.kube
    site = kind_mcs.McsSite(
        provider.mcs,
        provider._require().topology,
        provider.run_id,
        provider.namespace,
        lambda cluster: kube(cluster).api,
        lambda done: provider._record(mcs=done),
        provider._progress,
    )
    return kind_mcs.export_services(site)
