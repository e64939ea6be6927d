"""The `bgp` topology on kind: Calico without encapsulation in every cluster, a top-of-rack switch
(BIRD 2), the office host and the enterprise DNS (unbound) as docker containers on kind's network.

Planned as data (the Calico objects, the switch's bird.conf, unbound.conf, every route) and applied
behind two seams, `KubectlRunner` (Calico's manifest and custom objects) and `OfficeDocker` (the run's
own containers), so the logic is tested with fakes here (tests/test_kind_calico.py). Only the
nightly run (`kind-calico-bgp`) proves that Calico, BIRD and unbound do what is planned.

Every change goes to `record` (the state file, key `calico`) before it is made. Teardown removes the
run's containers (by name *and* run label) and, on reused clusters (created ones are deleted whole),
the Calico objects, node routes and node labels it recorded. Clusters already running Calico are refused.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from crossnet.bgp import ENTERPRISE_DNS, INGRESS_LABEL, OFFICE_HOST, SWITCH, cluster_as, ingress_nodes
from crossnet.model import Topology
from crossnet.plumbing.bgp import BgpSpeaker, bird_conf, unbound_conf
from crossnet.plumbing.routes import RouteChange
from crossnet.providers.base import ProviderError
from crossnet.providers.kind.kube import MANAGED_BY, RUN_LABEL, KubeCluster
from crossnet.providers.kind.nodes import kind_node_name, kind_node_short

__all__ = ["CALICO_MANIFEST_URL", "CALICO_VERSION", "OFFICE_IMAGE", "CalicoBgp", "Site", "calico_objects"]

# Calico's manifest install, pinned to a release tag: one file (CRDs, calico-node with BIRD as its
# BGP backend, calico-kube-controllers) on the Kubernetes datastore, whose crd.projectcalico.org/v1
# objects kubectl creates directly. The tigera operator would add an operator, an Installation and
# the Calico API server to wait for; nothing here needs them.
CALICO_VERSION = "v3.28.2"
CALICO_MANIFEST_URL = f"https://raw.githubusercontent.com/projectcalico/calico/{CALICO_VERSION}/manifests/calico.yaml"
CALICO_API = "crd.projectcalico.org/v1"
CALICO_CRDS = ("ippools", "bgpconfigurations", "bgppeers")
# The office containers: Debian 12 (bird2 2.0.12, unbound 1.17), the packages installed at start.
# Only the nightly run proves the image, the packages and the daemons.
OFFICE_IMAGE = "debian:bookworm-slim"
PACKAGES = {SWITCH: "bird2 iproute2", OFFICE_HOST: "iproute2 dnsutils", ENTERPRISE_DNS: "unbound iproute2"}
ROLES = (SWITCH, OFFICE_HOST, ENTERPRISE_DNS)
KIND_NETWORK = "kind"
CONF_DIR = "/crossnet"
BIRD_SOCKET = "/run/crossnet-bird.ctl"
UNBOUND_SOCKET = "/run/crossnet-unbound.ctl"
READY_TIMEOUT = 300.0  # calico-node on every node; each office container's package install
# The switch forwards, on the interface it receives on (no redirects, no reverse-path filter).
SWITCH_SYSCTLS = {f"net.ipv4.conf.{i}.{k}": "0" for i in ("all", "default") for k in ("rp_filter", "send_redirects")}
SWITCH_SYSCTLS["net.ipv4.ip_forward"] = "1"
RUN_OPTIONS: dict[str, Any] = {"detach": True, "network": KIND_NETWORK, "cap_add": ["NET_ADMIN"]}
INSTALL = (  # a container's command: its packages, then a mark that it is ready
    "set -e; apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
    f"{{packages}} >/tmp/crossnet-install.log 2>&1; mkdir -p {CONF_DIR}; touch {CONF_DIR}/ready; exec sleep infinity"
)
_NAME = re.compile(r"crossnet-[a-z0-9][a-z0-9-]{0,60}-(tor|host|dns)")
_SAFE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

Record = Callable[[dict[str, Any]], object]  # the state file's update


def container_name(run_id: str, role: str) -> str:
    """The run's container of `role` (tor, host, dns): teardown removes exactly these names."""
    return f"crossnet-{run_id}-{role}".lower()


def run_labels(run_id: str) -> dict[str, str]:
    return {**MANAGED_BY, RUN_LABEL: run_id}


@dataclass(frozen=True)
class Site:
    """What one bring-up deploys on: the profile's `bgp` (crossnet.profile.BgpPlumbing), the clusters
    (kubes and kubeconfigs by name) and where each change is recorded before it is made."""

    bgp: Any
    topology: Topology
    run_id: str
    kubes: Mapping[str, KubeCluster]
    kubeconfigs: Mapping[str, Path]
    record: Record


# ------------------------------------------------------------------------------------ planned as data


def calico_manifest(text: str, run_id: str) -> list[dict[str, Any]]:
    """Calico's manifest as objects labelled with the run, calico-node told to make no default IPPool
    (NO_DEFAULT_POOLS: crossnet's pool, blockSize 24 without encapsulation, is the cluster's only one)."""
    objects = [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and doc.get("kind")]
    patched = 0
    for doc in objects:
        meta = doc.setdefault("metadata", {})
        meta["labels"] = {**(meta.get("labels") or {}), **run_labels(run_id)}
        if doc["kind"] == "DaemonSet" and meta.get("name") == "calico-node":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                if container.get("name") == "calico-node":
                    env = [e for e in container.get("env") or [] if e.get("name") != "NO_DEFAULT_POOLS"]
                    container["env"] = [*env, {"name": "NO_DEFAULT_POOLS", "value": "true"}]
                    patched += 1
    if not patched:
        raise ProviderError(f"the Calico manifest ({CALICO_MANIFEST_URL}) has no calico-node container")
    return objects


def _object(kind: str, name: str, spec: dict[str, Any], run_id: str) -> dict[str, Any]:
    meta = {"name": name, "labels": run_labels(run_id)}
    return {"apiVersion": CALICO_API, "kind": kind, "metadata": meta, "spec": spec}


def _pool(cidr: str, enabled: bool) -> dict[str, Any]:
    spec = {"cidr": cidr, "blockSize": 24, "ipipMode": "Never", "vxlanMode": "Never", "natOutgoing": enabled}
    return spec if enabled else {**spec, "disabled": True}


def calico_objects(topology: Topology, name: str, bgp: Any, switch_ip: str, run_id: str) -> list[dict[str, Any]]:
    """Cluster `name`'s IPPools (its podSubnet; under keep_source a disabled one per peer podSubnet,
    which Calico's natOutgoing leaves alone), its BGPConfiguration and its BGPPeer to the switch."""
    cluster = topology.cluster(name)
    objects = [_object("IPPool", f"crossnet-{name}", _pool(cluster.pod_subnet, True), run_id)]
    for peer in topology.peers_of(name) if bgp.keep_source else ():
        objects.append(_object("IPPool", f"crossnet-peer-{peer.name}", _pool(peer.pod_subnet, False), run_id))
    config: dict[str, Any] = {"asNumber": cluster_as(topology, name), "nodeToNodeMeshEnabled": True}
    if bgp.advertise_service_ips:
        config["serviceClusterIPs"] = [{"cidr": cluster.service_subnet}]
    objects.append(_object("BGPConfiguration", "default", config, run_id))
    switch = {"peerIP": str(ipaddress.IPv4Address(switch_ip)), "asNumber": int(bgp.switch_as)}
    switch["nodeSelector"] = f"{INGRESS_LABEL} == 'true'"
    return [*objects, _object("BGPPeer", f"crossnet-{SWITCH}", switch, run_id)]


def switch_speaker(topology: Topology, bgp: Any, switch_ip: str, ips: Mapping[str, Mapping[str, str]]) -> BgpSpeaker:
    """The switch's BIRD: eBGP to every ingress node of every cluster (peer AS: that cluster's)."""
    peers = [(ips[c.name][n.short], cluster_as(topology, c.name)) for c in topology.clusters for n in ingress_nodes(c)]
    return BgpSpeaker(name=SWITCH, router_id=switch_ip, local_as=int(bgp.switch_as), peers=tuple(peers))


def unbound_forwards(topology: Topology, dns_ips: Mapping[str, tuple[str, ...]]) -> list[tuple[str, tuple[str, ...]]]:
    """One forward zone per cluster domain, to that cluster's CoreDNS pod IPs."""
    return [(c.dns_domain, tuple(sorted(dns_ips[c.name]))) for c in topology.clusters]


def office_destinations(topology: Topology, bgp: Any) -> list[str]:
    """What the office reaches through the switch: every pod CIDR, and the service CIDRs under -svc."""
    found = [c.pod_subnet for c in topology.clusters]
    return found + ([c.service_subnet for c in topology.clusters] if bgp.advertise_service_ips else [])


def node_routes(topology: Topology, switch_ip: str, office_ips: Mapping[str, str]) -> list[RouteChange]:
    """On every kind node, the office's containers via the switch (the nodes' way to the office)."""
    why = f"the office lies behind the switch {SWITCH}"
    nodes = [(c.name, n.short) for c in topology.clusters for n in c.nodes]
    ips = [f"{ipaddress.IPv4Address(ip)}/32" for ip in office_ips.values()]
    return [RouteChange(cluster, node, ip, switch_ip, why) for cluster, node in nodes for ip in ips]


def node_blocks(kube: KubeCluster) -> dict[str, str]:
    """Each node's pod block as Calico IPAM affined it (kind's spec.podCIDR is not what Calico uses)."""
    try:
        affinities = kube.custom_objects("crd.projectcalico.org", "v1", "blockaffinities", None)
    except ProviderError:
        return {}
    blocks: dict[str, str] = {}
    for spec in (item.get("spec") or {} for item in affinities):
        if spec.get("state") == "confirmed" and spec.get("node") and spec.get("cidr"):
            blocks[str(spec["node"])] = min(blocks.get(str(spec["node"]), str(spec["cidr"])), str(spec["cidr"]))
    return blocks


# ------------------------------------------------------------------------------------ the seams


class KubectlRunner(Protocol):
    def create(self, kubeconfig: Path, manifests: list[dict[str, Any]]) -> None: ...
    def apply(self, kubeconfig: Path, manifests: list[dict[str, Any]]) -> None: ...
    def wait_established(self, kubeconfig: Path, crds: list[str], timeout: float) -> None: ...
    def delete(self, kubeconfig: Path, refs: list[dict[str, Any]]) -> None: ...


class KubectlCli:
    """The runner's kubectl. Calico's CRDs are too large for `apply`'s annotation: the manifest is created."""

    def __init__(self, binary: str = "kubectl") -> None:
        found = shutil.which(binary)
        if found is None:
            why = "the bgp topology on kind installs Calico with it (or run it with --provider lab)"
            raise ProviderError(f"kubectl is not on PATH; {why}")
        self.binary = found

    def _run(self, kubeconfig: Path, argv: list[str], items: list[dict[str, Any]], timeout: float = 300.0) -> None:
        stdin = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        try:
            command = [self.binary, "--kubeconfig", str(kubeconfig), *argv]
            done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ProviderError(f"`kubectl {' '.join(argv[:2])}` did not finish within {timeout:.0f}s") from None
        if done.returncode != 0:
            out = f"exit {done.returncode}: {(done.stderr or done.stdout).strip()[-800:]}"
            raise ProviderError(f"`kubectl {' '.join(argv)}` ({kubeconfig.name}) failed ({out}")

    def create(self, kubeconfig: Path, manifests: list[dict[str, Any]]) -> None:
        self._run(kubeconfig, ["create", "-f", "-"], manifests)

    def apply(self, kubeconfig: Path, manifests: list[dict[str, Any]]) -> None:
        self._run(kubeconfig, ["apply", "-f", "-"], manifests)

    def wait_established(self, kubeconfig: Path, crds: list[str], timeout: float) -> None:
        argv = ["wait", "--for", "condition=established", f"--timeout={int(timeout)}s", *crds]
        self._run(kubeconfig, argv, [], timeout + 30)

    def delete(self, kubeconfig: Path, refs: list[dict[str, Any]]) -> None:
        self._run(kubeconfig, ["delete", "--ignore-not-found", "--wait=false", "-f", "-"], refs)


class OfficeDocker(Protocol):
    def run(self, name: str, command: list[str], labels: dict[str, str], sysctls: dict[str, str]) -> str: ...
    def exec(self, name: str, argv: list[str], timeout: float = 30.0) -> tuple[int, str, str]: ...
    def labels(self, name: str) -> dict[str, str] | None: ...  # None: no such container
    def remove(self, name: str) -> None: ...


class DockerOffice:
    """`OfficeDocker` on the docker SDK: OFFICE_IMAGE on kind's network (exercised by the nightly run)."""

    def __init__(self, client: Any = None) -> None:
        if client is None:
            try:
                import docker

                client = docker.from_env()
                client.ping()
            except Exception as exc:  # noqa: BLE001 - every way of not reaching docker gets the same advice
                why = f"no docker daemon answers ({exc.__class__.__name__})"
                raise ProviderError(f"{why}; the bgp topology's switch and office are docker containers") from None
        self.client = client

    def run(self, name: str, command: list[str], labels: dict[str, str], sysctls: dict[str, str]) -> str:
        """Start the container (pulling the image when missing); its IP on kind's network."""
        try:
            run = self.client.containers.run
            container = run(OFFICE_IMAGE, command, name=name, labels=labels, sysctls=sysctls, **RUN_OPTIONS)
            container.reload()
            return str(container.attrs["NetworkSettings"]["Networks"][KIND_NETWORK]["IPAddress"])
        except Exception as exc:  # noqa: BLE001 - the daemon's error, said with the container's name
            raise ProviderError(f"docker run {name} ({OFFICE_IMAGE}) failed: {exc.__class__.__name__}: {exc}") from None

    def exec(self, name: str, argv: list[str], timeout: float = 30.0) -> tuple[int, str, str]:
        try:
            target = self.client.containers.get(name)
            code, (out, err) = target.exec_run(["timeout", str(max(1, int(timeout))), *argv], demux=True)
        except Exception as exc:  # noqa: BLE001
            raise ProviderError(f"docker exec in {name} failed: {exc.__class__.__name__}: {exc}") from None
        text = [(data or b"").decode(errors="replace") for data in (out, err)]
        return int(code if code is not None else 1), text[0], text[1]

    def labels(self, name: str) -> dict[str, str] | None:
        import docker.errors

        try:
            return dict(self.client.containers.get(name).labels or {})
        except docker.errors.NotFound:
            return None

    def remove(self, name: str) -> None:
        self.client.containers.get(name).remove(force=True)


def fetch_manifest(url: str = CALICO_MANIFEST_URL, timeout: float = 60.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return str(response.read().decode())
    except OSError as exc:
        why = f"cannot download Calico {CALICO_VERSION} from {url} ({exc})"
        raise ProviderError(f"{why}; the bgp topology on kind needs it (or run it with --provider lab)") from None


# ------------------------------------------------------------------------------------ deploy and undo


class CalicoBgp:
    """Deploys the bgp topology on kind (`deploy` before the clusters' readiness wait: nodes without
    a CNI never get Ready; `serve_dns` after it, once CoreDNS runs) and undoes it (`undo`). `done` is
    what the state file records, updated before each change."""

    def __init__(self, kubectl: KubectlRunner | None = None, docker: OfficeDocker | None = None) -> None:
        self._kubectl, self._docker = kubectl, docker
        self.fetch: Callable[[], str] = fetch_manifest  # Calico's manifest
        self.progress: Callable[[str], None] = lambda _message: None
        self.timeout, self.pause = READY_TIMEOUT, 2.0
        self.done: dict[str, Any] = {}

    def kubectl(self) -> KubectlRunner:
        if self._kubectl is None:
            self._kubectl = KubectlCli()
        return self._kubectl

    def docker(self) -> OfficeDocker:
        if self._docker is None:
            self._docker = DockerOffice()
        return self._docker

    def check_tools(self) -> None:
        """Before anything is made: kubectl and the docker daemon."""
        self.kubectl()
        self.docker()

    def deploy(self, site: Site, nodes: Any) -> None:
        """The switch and the office containers, Calico and its objects in every cluster, node routes
        to the office (`nodes`: the provider's NodeContainers); then wait until calico-node is ready."""
        topology, run_id = site.topology, site.run_id
        running = [c.name for c in topology.clusters if _calico_installed(site.kubes[c.name])]
        if running:
            why = "crossnet installs its own and removes it at teardown: use clusters without a CNI"
            raise ProviderError(f"Calico is already installed on {', '.join(running)}; {why} (disableDefaultCNI)")
        self.done = {"run_id": run_id, "containers": [], "objects": {}, "labels": [], "node_routes": []}
        ips = {role: self._container(site, role) for role in ROLES}  # all three install their packages at once
        speaker = switch_speaker(topology, site.bgp, ips[SWITCH], _node_ips(site))
        self._write(container_name(run_id, SWITCH), f"{CONF_DIR}/bird.conf", bird_conf(speaker))
        self._sh(container_name(run_id, SWITCH), f"bird -c {CONF_DIR}/bird.conf -s {BIRD_SOCKET}")
        routes = " && ".join(f"ip route replace {d} via {ips[SWITCH]}" for d in office_destinations(topology, site.bgp))
        for role in (OFFICE_HOST, ENTERPRISE_DNS):
            self._sh(container_name(run_id, role), routes)
        manifest = self.fetch()
        for cluster in topology.clusters:
            self._label_ingress(site, cluster.name)
            self._install(site, cluster.name, manifest, ips[SWITCH])
        changes = node_routes(topology, ips[SWITCH], {r: ips[r] for r in (OFFICE_HOST, ENTERPRISE_DNS)})
        self.done["node_routes"] = [asdict(c) for c in changes]
        site.record(self.done)
        nodes.apply_routes(changes)
        self._wait_calico(site)

    def serve_dns(self, site: Site) -> None:
        """The enterprise DNS forwards each cluster domain to that cluster's CoreDNS pods (ready by now)."""
        found: dict[str, tuple[str, ...]] = {}
        for cluster in site.topology.clusters:
            found[cluster.name] = tuple(p.ip for p in site.kubes[cluster.name].pods("kube-system", "k8s-app=kube-dns"))
        if not all(found.values()):
            missing = ", ".join(name for name, ips in found.items() if not ips)
            raise ProviderError(f"no CoreDNS pod IPs in {missing} for the enterprise DNS to forward to")
        name = container_name(site.run_id, ENTERPRISE_DNS)
        listen = next(str(c["ip"]) for c in self.done["containers"] if c["role"] == ENTERPRISE_DNS)
        forwards = unbound_forwards(site.topology, found)
        self._write(name, f"{CONF_DIR}/unbound.conf", unbound_conf(listen, CONF_DIR, forwards, UNBOUND_SOCKET))
        self._sh(name, f"unbound -c {CONF_DIR}/unbound.conf")
        self.progress(f"bgp: the enterprise DNS {listen} forwards {', '.join(d for d, _ in forwards)}")

    def _container(self, site: Site, role: str) -> str:
        name = container_name(site.run_id, role)
        entry: dict[str, Any] = {"role": role, "name": name, "ip": ""}
        self.done["containers"].append(entry)
        site.record(self.done)
        command = ["sh", "-c", INSTALL.format(packages=PACKAGES[role])]
        ip = self.docker().run(name, command, run_labels(site.run_id), SWITCH_SYSCTLS if role == SWITCH else {})
        entry["ip"] = str(ipaddress.IPv4Address(ip))
        site.record(self.done)
        self.progress(f"bgp: the {role} is container {name} at {ip} on docker network {KIND_NETWORK}")
        return str(entry["ip"])

    def _label_ingress(self, site: Site, cluster: str) -> None:
        """The BGPPeer selects INGRESS_LABEL: kind sets it from the config; a fallback ingress node gets it here."""
        for node in ingress_nodes(site.topology.cluster(cluster)):
            name = kind_node_name(cluster, node.short)
            previous = site.kubes[cluster].node_labels(name).get(INGRESS_LABEL)
            if previous != "true":
                self.done["labels"].append({"cluster": cluster, "node": name, "previous": previous})
                site.record(self.done)
                site.kubes[cluster].label_node(name, {INGRESS_LABEL: "true"})

    def _install(self, site: Site, name: str, manifest: str, switch_ip: str) -> None:
        objects = calico_manifest(manifest, site.run_id)
        ours = calico_objects(site.topology, name, site.bgp, switch_ip, site.run_id)
        self.done["objects"][name] = [_ref(m) for m in ours + objects]  # deleted in this order
        site.record(self.done)
        self.progress(f"bgp: installing Calico {CALICO_VERSION} on {name} (AS {cluster_as(site.topology, name)})")
        kubeconfig = site.kubeconfigs[name]
        self.kubectl().create(kubeconfig, objects)
        self.kubectl().wait_established(kubeconfig, [f"crd/{p}.crd.projectcalico.org" for p in CALICO_CRDS], 120.0)
        self.kubectl().apply(kubeconfig, ours)

    def _wait_calico(self, site: Site) -> None:
        deadline = time.monotonic() + self.timeout
        pending, last = {c.name for c in site.topology.clusters}, dict[str, str]()
        while pending:
            for name in sorted(pending):
                nodes, pods = site.kubes[name].nodes(), site.kubes[name].pods("kube-system", "k8s-app=calico-node")
                ready = [p for p in pods if p.ready]
                if nodes and len(ready) >= len(nodes):
                    pending.discard(name)
                    self.progress(f"bgp: {name}: calico-node ready on {len(ready)} nodes")
                    continue
                why = ", ".join(sorted({p.reason for p in pods if not p.ready and p.reason}))
                last[name] = f"{len(ready)}/{len(nodes)} calico-node pods ready" + (f" ({why})" if why else "")
            if pending and time.monotonic() > deadline:
                first = site.kubeconfigs[sorted(pending)[0]]
                raise ProviderError(
                    f"Calico did not become ready within {self.timeout:.0f}s: "
                    + "; ".join(f"{n}: {last[n]}" for n in sorted(pending))
                    + f". Check `kubectl --kubeconfig {first} -n kube-system get pods -l k8s-app=calico-node` and "
                    "`... logs ds/calico-node -c calico-node`; an ingress node stays unready until its BGP session "
                    f"with the switch is up: `docker exec {container_name(site.run_id, SWITCH)} birdc -s "
                    f"{BIRD_SOCKET} show protocols`"
                )
            if pending:
                time.sleep(self.pause)

    def _write(self, name: str, path: str, text: str) -> None:
        encoded = base64.b64encode(text.encode()).decode()
        self._exec(name, ["sh", "-c", 'printf %s "$1" | base64 -d > "$2"', "sh", encoded, path], f"write {path}")

    def _sh(self, name: str, script: str) -> None:
        self._exec(name, ["sh", "-c", script], script)

    def _exec(self, name: str, argv: list[str], what: str) -> None:
        self._ready(name)
        rc, out, err = self.docker().exec(name, argv, 60.0)
        if rc != 0:
            raise ProviderError(f"{name}: `{what[:120]}` failed (exit {rc}): {(err or out).strip()[-400:]}")

    def _ready(self, name: str) -> None:
        """Wait (bounded) until the container has installed its packages."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                rc = self.docker().exec(name, ["test", "-f", f"{CONF_DIR}/ready"], 10.0)[0]
            except ProviderError:
                rc = 1  # exited: its package install failed
            if rc == 0:
                return
            if time.monotonic() > deadline:
                see = f"`docker logs {name}`, `docker exec {name} cat /tmp/crossnet-install.log`"
                raise ProviderError(f"{name} did not install its packages in {self.timeout:.0f}s: see {see}")
            time.sleep(self.pause)

    def undo(self, done: Mapping[str, Any], run_id: str, reused: Mapping[str, Path], provider: Any) -> list[str]:
        """Undo what `deploy` recorded: the run's containers (only those whose name and labels say so),
        and on the `reused` clusters (name: kubeconfig) the node routes, Calico and the ingress labels,
        through the provider (`kube(cluster)`, `apply_routes_undo`). Returns what was left."""
        problems = [self._remove(entry, run_id) for entry in reversed(done.get("containers") or [])]
        routes = [r for r in map(_route, done.get("node_routes") or []) if r and r.cluster in reused]
        try:
            if routes:
                provider.apply_routes_undo(routes)
        except ProviderError as exc:
            problems.append(f"node routes to the office: {exc}")
        for cluster, refs in (done.get("objects") or {}).items():
            try:
                if cluster in reused:
                    self.kubectl().delete(reused[cluster], list(refs))
            except ProviderError as exc:
                problems.append(f"{cluster}: delete Calico: {exc}")
        for label in reversed([x for x in done.get("labels") or [] if x.get("cluster") in reused]):
            try:
                provider.kube(label["cluster"]).label_node(label["node"], {INGRESS_LABEL: label.get("previous")})
            except ProviderError as exc:
                problems.append(f"{label['cluster']}: restore label {INGRESS_LABEL} of {label['node']}: {exc}")
        return [p for p in problems if p]

    def _remove(self, entry: Mapping[str, Any], run_id: str) -> str:
        """Remove one recorded container when it is this run's: '' when done (or gone), else why not."""
        name = str(entry.get("name", ""))
        if name != container_name(run_id, str(entry.get("role"))) or not _NAME.fullmatch(name):
            return f"left container {name!r}: the state file does not name it as this run's"
        try:
            labels = self.docker().labels(name)
            if labels is not None and labels.get(RUN_LABEL) != run_id:
                return f"left container {name}: its label {RUN_LABEL} is {labels.get(RUN_LABEL)!r}, not {run_id}"
            if labels is not None:
                self.progress(f"bgp: removing container {name}")
                self.docker().remove(name)
        except Exception as exc:  # noqa: BLE001 - keep undoing the rest; say what was left
            return f"remove container {name}: {exc.__class__.__name__}: {exc}"
        return ""


def _calico_installed(kube: KubeCluster) -> bool:
    return bool(kube.pods("kube-system", "k8s-app=calico-node"))


def _node_ips(site: Site) -> dict[str, dict[str, str]]:
    """Every node's InternalIP by cluster and short name; every ingress node must have one."""
    ips = {c: {kind_node_short(c, n.name): n.internal_ip for n in kube.nodes()} for c, kube in site.kubes.items()}
    for cluster in site.topology.clusters:
        for node in ingress_nodes(cluster):
            if not ips.get(cluster.name, {}).get(node.short):
                see = f"`kubectl --context kind-{cluster.name} get nodes -o wide`"
                raise ProviderError(f"{cluster.name}: the ingress node {node.short} has no InternalIP; is it up? {see}")
    return ips


def _route(raw: Any) -> RouteChange | None:
    """A recorded node route, None unless every field is what `node_routes` writes (a state file is input)."""
    try:
        route = RouteChange(**raw)
        ipaddress.IPv4Network(route.destination), ipaddress.IPv4Address(route.via)
    except (TypeError, ValueError):
        return None
    return route if all(isinstance(v, str) and _SAFE.fullmatch(v) for v in (route.cluster, route.node)) else None


def _ref(manifest: dict[str, Any]) -> dict[str, Any]:
    meta = manifest["metadata"]
    where = {"name": str(meta["name"]), **({"namespace": str(meta["namespace"])} if meta.get("namespace") else {})}
    return {"apiVersion": manifest["apiVersion"], "kind": manifest["kind"], "metadata": where}
