"""The lab provider: kind's two-cluster topology emulated in network namespaces (docs/ARCHITECTURE.md, "The lab")."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from crossnet.bgp import OFFICE, OFFICE_HOST
from crossnet.globalnet import CLUSTERSET_DOMAIN
from crossnet.model import CROSSNET_NAMESPACE, ClusterSet, Topology
from crossnet.plumbing.routes import RouteChange
from crossnet.providers.base import ExecTarget, InputError, ProviderError, StateFile
from crossnet.providers.exec_backend import exec_host
from crossnet.providers.lab import bgp as lab_bgp
from crossnet.providers.lab import mcs as lab_mcs
from crossnet.providers.lab import topology as lab
from crossnet.providers.lab.clusterset import live_cluster_set
from crossnet.providers.lab.sandbox import UNIX_PATH_MAX, Sandbox, SandboxClient, SandboxError, start_sandbox
from crossnet.providers.select import ProviderSettings
from crossnet.providers.statedir import (
    process_identity,
    refuse_existing_state_dir,
    release_state_dir,
    same_process,
    still_running,
)
from crossnet.wire import ProbeResult, ProbeSpec
from crossnet.workloads import HEADLESS_SERVICE

__all__ = ["LabProvider", "UnixAgentClient", "attach", "create", "usable"]

READY_TIMEOUT = 15.0
# Before every `exec` command: a private mount namespace with a fresh /proc (of the lab's pid namespace).
OWN_PROC = ("unshare", "--mount", "--propagation", "private", "--mount-proc", "--")


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class UnixAgentClient:
    """Talks to one agent's control API over its unix socket in the state directory."""

    def __init__(self, path: str) -> None:
        self.path = path

    def probe(self, probes: list[ProbeSpec], timeout: float) -> list[ProbeResult]:
        conn = _UnixHTTPConnection(self.path, timeout)
        try:
            conn.request(
                "POST", "/probe", body=json.dumps({"probes": probes}), headers={"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            body = json.loads(response.read())
        finally:
            conn.close()
        if response.status != 200:
            raise ProviderError(f"agent at {self.path}: HTTP {response.status}: {body.get('error')}")
        results: list[ProbeResult] = body["results"]
        return results


def _agent_slug(agent_id: str) -> str:
    return agent_id.replace("/", ".")


class LabProvider:
    """One lab run, owning one state directory. `up` or `attach`, then `down`."""

    name = "lab"
    converge_timeout = 30.0  # the lab DNS re-reads its Corefile within 0.1 s; 30 s is a generous bound
    multicluster_owns_corefile = False  # the lab emulates Lighthouse: crossnet adds its forward

    def __init__(
        self, state_dir: Path, run_id: str, detached: bool = False, global_cidr: str | None = None, **layers: Any
    ) -> None:
        self.state_dir = state_dir
        self.global_cidr = global_cidr  # emulate Submariner Globalnet with this global CIDR
        # layers: bgp (profile.BgpPlumbing: the bgp topology), mcs (profile.McsPlumbing: the mcs topology)
        self.bgp, self.mcs, self._imports = layers.get("bgp"), layers.get("mcs"), list[dict[str, Any]]()
        self._bgp_plan: lab_bgp.LabBgp | None = None
        self.run_id = run_id
        self.detached = detached
        self.state = StateFile(state_dir)
        self.sandbox = SandboxClient(state_dir)
        self._sandbox: Sandbox | None = None
        self._attached = False
        self._plan: lab.LabPlan | None = None
        self._agents: dict[str, dict[str, str]] = {}
        self._nodes: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def attach(cls, state_dir: Path, alive: bool = True) -> LabProvider:
        """The lab of a run's state directory; alive=False skips the liveness check (to clean up)."""
        data = StateFile(state_dir).read()
        if data.get("provider") != "lab":
            raise ProviderError(f"{state_dir} belongs to provider {data.get('provider')!r}, not lab")
        provider = cls(state_dir, data["run_id"], detached=True)
        provider._attached = True
        if alive:
            provider.sandbox.ping()
        return provider

    def up(self, topology: Topology) -> ClusterSet:
        longest = self.state_dir / "agents" / f"a{2 * sum(len(c.nodes) for c in topology.clusters)}.sock.tmp"
        if len(str(longest)) > UNIX_PATH_MAX:
            raise InputError(
                f"the state directory path is too long for the lab's unix sockets ({len(str(longest))} > "
                f"{UNIX_PATH_MAX} bytes: {longest})\n    fix: pass a shorter --state-dir"
            )
        refuse_existing_state_dir(self.state_dir)  # the sandbox itself creates it (0700, owner mark)
        lacking = lab_bgp.missing_tools() if self.bgp is not None else None
        if lacking:
            raise InputError(lacking)
        try:
            self._sandbox = start_sandbox(self.state_dir, self.detached, self.run_id)
        except SandboxError as exc:
            release_state_dir(self.state_dir, self.run_id)
            if "already exists" in str(exc) or "belongs to crossnet run" in str(exc):
                raise InputError(str(exc)) from None
            raise ProviderError(str(exc)) from None
        pid = self._sandbox.process.pid
        try:  # from here a kill of this process ends the sandbox, which removes the state directory
            self.state.write(
                {
                    "provider": "lab",
                    "run_id": self.run_id,
                    "owner_pid": os.getpid(),
                    "owner_identity": process_identity(os.getpid()),
                    "sandbox_pid": pid,
                    "sandbox_identity": process_identity(pid),
                    "detached": self.detached,
                    "phase": "starting",
                }
            )
            plan = self._plan = lab.plan_lab(topology, self.global_cidr)
            if self.mcs is not None:  # ServiceImport VIPs and derived Services (providers/lab/mcs.py)
                plan = self._plan = lab_mcs.with_mcs(plan, topology, self.mcs)
                self._imports = lab_mcs.serviceimports(plan, topology)
            bgp = self._bgp_plan = lab_bgp.plan_bgp(plan, topology, self.bgp) if self.bgp is not None else None
            links = lab.link_batch(plan) + ("\n".join(lab_bgp.link_lines()) + "\n" if bgp else "")
            self._check(self.sandbox.exec(None, ["ip", "-batch", "-"], input=links), "create namespaces")
            extra = tuple(lab_bgp.underlay_lines()) if bgp else ()
            jobs: list[tuple[str, str, str]] = [(lab.UNDERLAY_NETNS, lab.underlay_script(plan, extra), "underlay")]
            for cluster in plan.clusters:
                for node in cluster.nodes:
                    routing = bgp.routing_of(node.netns) if bgp else None
                    jobs.append((node.netns, lab.node_script(plan, cluster, node, routing), f"node {node.netns}"))
                    jobs += [(pod.netns, lab.pod_script(node, pod), f"pod {pod.netns}") for pod in node.pods]
            jobs += lab_bgp.namespace_jobs(plan) if bgp else []
            with ThreadPoolExecutor(max_workers=8) as pool:
                results = list(pool.map(lambda job: (self.sandbox.exec(job[0], ["sh", "-c", job[1]]), job[2]), jobs))
            for result, what in results:
                self._check(result, f"configure {what}")
            if bgp:  # BIRD everywhere and unbound, then every expected route installed by BGP alone
                daemons = lab_bgp.start_daemons(self.sandbox, self.state_dir, bgp)
                self.state.update(bgp=daemons)
                controls = {ns: bird["control"] for ns, bird in daemons["bird"].items()}
                self.state.update(bgp_converged_s=round(lab_bgp.wait_converged(self.sandbox, bgp, controls), 3))
            cluster_set = self._live(plan)
            self.state.update(
                phase="up",
                cluster_set=cluster_set.to_json(),
                plan=_plan_json(plan, bgp is not None),
                namespaces=[j[0] for j in jobs],
                **({"mcs": lab_mcs.state_record(topology, self._imports)} if self.mcs is not None else {}),
            )
        except BaseException:
            self.down()
            raise
        return cluster_set

    def deploy_agents(self) -> ClusterSet:
        """Start a DNS server per cluster (consuming its Corefile) and every probe agent."""
        plan = self._require_plan()
        waits: list[Path] = []
        agents: dict[str, dict[str, str]] = {}
        for cluster in plan.clusters:
            cdir = self.state_dir / "clusters" / cluster.spec.name
            cdir.mkdir(parents=True, exist_ok=True)
            (cdir / "Corefile").write_text(lab.stock_corefile(cluster.spec.dns_domain))
            (cdir / "records.json").write_text(json.dumps(_records(cluster, self._imports), indent=1))
            ready = cdir / "dns.ready"
            self.sandbox.spawn_python(
                cluster.dns_pod.netns,
                "dns",
                ["--corefile", str(cdir / "Corefile"), "--records", str(cdir / "records.json"), "--ready", str(ready)],
                self.state_dir / "logs" / f"dns-{cluster.spec.name}.log",
            )
            waits.append(ready)
            if cluster.globalnet is not None:  # Lighthouse: clusterset.local names -> global IPs
                corefile = f"{CLUSTERSET_DOMAIN}:53 {{\n    errors\n    lighthouse\n}}\n"
                (cdir / "Corefile.lighthouse").write_text(corefile)
                (cdir / "records.lighthouse.json").write_text(
                    json.dumps({"services": [], "pods": [], "clusterset": _clusterset_names(plan)}, indent=1)
                )
                ready = cdir / "lighthouse.ready"
                self.sandbox.spawn_python(
                    cluster.globalnet.lighthouse_pod.netns,
                    "dns",
                    [
                        "--corefile",
                        str(cdir / "Corefile.lighthouse"),
                        "--records",
                        str(cdir / "records.lighthouse.json"),
                        "--ready",
                        str(ready),
                    ],
                    self.state_dir / "logs" / f"lighthouse-{cluster.spec.name}.log",
                )
                waits.append(ready)
            for node in cluster.nodes:
                for agent_id, netns in (
                    (f"{node.cluster}/{node.short}/agent", f"{node.netns}.agent"),
                    (f"{node.cluster}/{node.short}/host", node.netns),
                ):
                    # Short names: a unix socket path holds at most 107 bytes.
                    control = self.state_dir / "agents" / f"a{len(agents)}.sock"
                    control.parent.mkdir(exist_ok=True)
                    if len(str(control)) + len(".tmp") > UNIX_PATH_MAX:
                        raise ProviderError(
                            f"the state directory path is too long for the agents' unix sockets "
                            f"({control}); fix: pass a shorter --state-dir"
                        )
                    self.sandbox.spawn_python(
                        netns,
                        "agent",
                        ["serve", "--id", agent_id, "--control-socket", str(control)],
                        self.state_dir / "logs" / f"agent-{_agent_slug(agent_id)}.log",
                    )
                    agents[agent_id] = {"control": str(control), "netns": netns}
                    waits.append(control)
        if self._bgp_plan is not None:  # the office host's agent: the external vantage and egress target
            control = self.state_dir / "agents" / f"a{len(agents)}.sock"
            agent_id = f"{OFFICE}/{OFFICE_HOST}/host"
            self.sandbox.spawn_python(
                lab_bgp.NETNS[OFFICE_HOST],
                "agent",
                ["serve", "--id", agent_id, "--control-socket", str(control)],
                self.state_dir / "logs" / f"agent-{_agent_slug(agent_id)}.log",
            )
            agents[agent_id] = {"control": str(control), "netns": lab_bgp.NETNS[OFFICE_HOST]}
            waits.append(control)
        deadline = time.monotonic() + READY_TIMEOUT
        for path in waits:
            while not path.exists():
                if time.monotonic() > deadline:
                    log = sorted((self.state_dir / "logs").glob("*.log"))
                    tails = "\n".join(
                        f"--- {p.name}\n{p.read_text(errors='replace')[-600:]}" for p in log if p.stat().st_size
                    )
                    raise ProviderError(f"lab: {path.name} not ready within {READY_TIMEOUT:.0f}s\n{tails}")
                time.sleep(0.003)
        self._wait_links_up(plan)
        self._agents = agents
        self.state.update(agents=agents, phase="agents-ready")
        return self._live(plan)

    def _live(self, plan: lab.LabPlan) -> ClusterSet:
        cluster_set = live_cluster_set(plan)
        if self._bgp_plan is None:
            return cluster_set
        return dataclasses.replace(cluster_set, outside=(lab_bgp.outside_cluster(),))

    def _wait_links_up(self, plan: lab.LabPlan) -> None:
        """Wait until every interface is operationally UP. The kernel's linkwatch applies carrier
        changes at most once a second, and until it does a new veth drops what it is given
        (measured: the first cross-cluster packet after bring-up was delayed ~1 s in 1 of 3 runs)."""
        namespaces = (
            [lab.UNDERLAY_NETNS] + [n.netns for n in plan.nodes] + [p.netns for n in plan.nodes for p in n.pods]
        )
        namespaces += list(lab_bgp.NETNS.values()) if self._bgp_plan is not None else []
        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(
                pool.map(lambda ns: (self.sandbox.exec(ns, ["sh", "-c", lab.WAIT_LINKS_UP]), ns), namespaces)
            )
        for result, netns in results:
            self._check(result, f"links of {netns} up")

    def detach(self) -> None:
        """The lab is ready: let its sandbox outlive this process (`crossnet up`); no-op otherwise."""
        if self._sandbox is not None and self.detached:
            self._sandbox.detach()

    def down(self) -> None:
        """End the sandbox (every process and namespace with it; the sandbox removes the state
        directory on its way out) and remove what is left of the state directory if it is ours.
        Acts only on a sandbox this object started or attached to: never on a directory it was
        merely handed (a bring-up refused for an existing --state-dir ends nothing)."""
        if self._sandbox is None and not self._attached:
            return
        self.sandbox.shutdown()
        if self._sandbox is not None:
            self._sandbox.close_lifeline()
            try:
                self._sandbox.process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self._sandbox.process.kill()
                self._sandbox.process.wait()
        else:
            self._end_recorded_sandbox()
        release_state_dir(self.state_dir, self.run_id)

    def _end_recorded_sandbox(self) -> None:
        """Wait for the sandbox recorded in the state file to end; signal it only if the process
        with that pid is provably the same one (its start time was recorded), never a reused pid."""
        try:
            data = self.state.read()
        except ProviderError:
            return
        pid, identity = data.get("sandbox_pid"), data.get("sandbox_identity")
        if not pid or not same_process(int(pid), identity):
            return
        _wait_gone(int(pid), identity)

    # ------------------------------------------------------------------ the provider seam

    def exec(self, target: ExecTarget, argv: list[str], timeout: float = 30.0) -> tuple[int, str, str]:
        """Run `argv` in a node's or pod's network namespace, with a /proc of its own: the sandbox
        inherits the host's /proc, where `ps` fails ("lookup self") and pids are the host's. The
        command gets a private mount namespace with a fresh proc of the lab's pid namespace
        (`unshare --mount-proc` execs in place: one process, ended by the timeout like before; the
        mount goes with the namespace when the command exits, nothing leaks into the sandbox)."""
        if not argv:
            raise InputError("nothing to run: an empty command")
        result = self.sandbox.exec(self._netns_of(target), [*OWN_PROC, *argv], timeout=timeout)
        return result.rc, result.stdout, result.stderr

    def dns_server_ips_now(self, cluster: str) -> tuple[str, ...]:
        """The cluster DNS pod's IPs as its namespace holds them now (facts compare the peers'
        Corefile forwards with these, not with what was recorded at `crossnet up`)."""
        nodes = self._known_nodes()
        hosts = [n for n in nodes.values() if n["cluster"] == cluster and "coredns" in n["pods"]]
        if not hosts:
            raise ProviderError(f"lab: cluster {cluster!r} has no DNS pod; known nodes: {', '.join(sorted(nodes))}")
        ips: list[str] = []
        for node in hosts:
            rc, out, err = self.exec(ExecTarget(cluster, node["short"], "coredns"), ["ip", "-4", "-o", "addr", "show"])
            if rc != 0:
                raise ProviderError(f"lab: cannot read {cluster}/{node['short']}/coredns's addresses: {err.strip()}")
            ips += [f.split()[3].split("/")[0] for f in out.splitlines() if len(f.split()) > 3 and f.split()[1] != "lo"]
        return tuple(sorted(ips))

    def node_host(self, cluster: str, node: str) -> Any:
        """testinfra's view of a node: commands through this provider's exec."""
        return exec_host(self.exec, cluster, node)

    def apply_routes(self, changes: list[RouteChange]) -> None:
        self._route_batches(changes, undo=False)

    def apply_routes_undo(self, changes: list[RouteChange]) -> None:
        """Remove routes this run added; one already gone is not an error (-force goes on)."""
        self._route_batches(changes, undo=True)

    def _route_batches(self, changes: list[RouteChange], undo: bool) -> None:
        by_node: dict[tuple[str, str], list[RouteChange]] = {}
        for change in changes:
            by_node.setdefault((change.cluster, change.node), []).append(change)

        def apply(item: tuple[tuple[str, str], list[RouteChange]]) -> None:
            (cluster, node), node_changes = item
            batch = "".join(" ".join((c.undo_argv if undo else c.apply_argv)[1:]) + "\n" for c in node_changes)
            result = self.sandbox.exec(
                f"{cluster}.{node}", ["ip", "-force", "-batch", "-"] if undo else ["ip", "-batch", "-"], input=batch
            )
            if not undo:
                self._check(result, f"routes on {cluster}/{node}")

        with ThreadPoolExecutor(max_workers=6) as pool:
            list(pool.map(apply, by_node.items()))

    def read_corefile(self, cluster: str) -> str:
        return (self.state_dir / "clusters" / cluster / "Corefile").read_text()

    def write_corefile(self, cluster: str, text: str) -> None:
        path = self.state_dir / "clusters" / cluster / "Corefile"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        os.replace(temporary, path)  # the lab DNS notices the change like CoreDNS's `reload`

    def agent_client(self, agent_id: str) -> UnixAgentClient:
        if agent_id not in self._agents:
            self._agents = dict(self.state.read().get("agents") or {})
        if agent_id not in self._agents:
            raise ProviderError(f"lab: no agent {agent_id}; known: {', '.join(sorted(self._agents))}")
        return UnixAgentClient(self._agents[agent_id]["control"])

    # ------------------------------------------------------------------ helpers

    def _require_plan(self) -> lab.LabPlan:
        if self._plan is None:
            raise ProviderError("lab: the topology is not up")
        return self._plan

    def _known_nodes(self) -> dict[str, dict[str, Any]]:
        if not self._nodes:  # read once: every exec (and every testinfra command) maps a target
            plan = self.state.read().get("plan", {})
            self._nodes = {f"{n['cluster']}/{n['short']}": n for n in plan.get("nodes", [])}
        return self._nodes

    def _netns_of(self, target: ExecTarget) -> str:
        nodes = self._known_nodes()
        node = nodes.get(f"{target.cluster}/{target.node}")
        if node is None:
            raise InputError(f"no node {target.cluster}/{target.node} in this lab; known: {', '.join(sorted(nodes))}")
        if not target.pod:
            return str(node["netns"])
        if target.pod not in node["pods"]:
            raise InputError(
                f"no pod {target.pod!r} on {target.cluster}/{target.node}; known: {', '.join(node['pods'])}"
            )
        return f"{node['netns']}.{target.pod}"

    @staticmethod
    def _check(result: Any, what: str) -> None:
        if result.rc != 0:
            raise ProviderError(f"lab: {what} failed (exit {result.rc}): {result.stderr.strip()[-800:]}")


def _clusterset_names(plan: lab.LabPlan) -> dict[str, list[str]]:
    """What Lighthouse answers: <svc>.<ns>.svc.clusterset.local (every exporting cluster's global
    IP; real Lighthouse picks one, preferring the local cluster), <cluster>.<svc>.<ns>..., and
    <pod>.<cluster>.<svc>.<ns>... for the pods of an exported headless Service."""
    names: dict[str, list[str]] = {}
    for cluster in plan.clusters:
        gn = cluster.globalnet
        if gn is None:
            continue
        for service, ip in gn.allocation.service_ips.items():
            names.setdefault(f"{service}.{CROSSNET_NAMESPACE}.svc.{CLUSTERSET_DOMAIN}", []).append(ip)
            names[f"{cluster.spec.name}.{service}.{CROSSNET_NAMESPACE}.svc.{CLUSTERSET_DOMAIN}"] = [ip]
        for host, ip in gn.allocation.pod_ips.items():
            names[f"{host}.{cluster.spec.name}.{HEADLESS_SERVICE}.{CROSSNET_NAMESPACE}.svc.{CLUSTERSET_DOMAIN}"] = [ip]
    return names


def _records(cluster: lab.LabCluster, imports: list[dict[str, Any]]) -> dict[str, Any]:
    """What the lab DNS's `kubernetes` plugin serves (the API view of CoreDNS), and its
    `multicluster` plugin (the ServiceImports)."""
    return {
        "serviceimports": imports,
        # A NodePort Service resolves like a ClusterIP one.
        "services": [
            {
                "name": s.name,
                "namespace": s.namespace,
                "cluster_ip": s.cluster_ip,
                "type": "ClusterIP" if s.type == "NodePort" else s.type,
                "external_name": s.external_name,
                "ports": [[p, port] for p, port, _ in s.ports],
                "endpoints": [{"ip": ip, "hostname": host} for ip, host in s.endpoints],
            }
            for s in cluster.services
            if s.type != lab_mcs.CLUSTERSET_TYPE  # a ServiceImport's VIP: no Service of the API
        ],
        "pods": [
            {"ip": p.ip, "namespace": CROSSNET_NAMESPACE if p.name == "agent" else "kube-system"}
            for n in cluster.nodes
            for p in n.pods
        ],
    }


def _plan_json(plan: lab.LabPlan, bgp: bool = False) -> dict[str, Any]:
    nodes = [
        {"cluster": n.cluster, "short": n.short, "ip": n.ip, "netns": n.netns, "pods": [p.name for p in n.pods]}
        for n in plan.nodes
    ]
    outside = lab_bgp.outside_cluster().nodes if bgp else ()  # `crossnet exec office/tor -- birdc ...`
    nodes += [{"cluster": OFFICE, "short": n.short, "ip": n.ip, "netns": n.handle, "pods": []} for n in outside]
    return {"nodes": nodes}


def _wait_gone(pid: int, identity: str | None, timeout: float = 5.0) -> None:
    """Wait for the sandbox `pid` to end; kill it if it does not, after checking once more that
    the pid still names the recorded process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not still_running(pid, identity):
            return
        time.sleep(0.01)
    if same_process(pid, identity):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def create(state_dir: Path, run_id: str, settings: ProviderSettings) -> LabProvider:
    return LabProvider(state_dir, run_id, settings.detached, settings.global_cidr, bgp=settings.bgp, mcs=settings.mcs)


def attach(state_dir: Path, alive: bool = True) -> LabProvider:
    return LabProvider.attach(state_dir, alive=alive)


def usable() -> str | None:
    """The lab needs no binary beyond what `crossnet doctor` checks; it says what is missing at start."""
    return None
