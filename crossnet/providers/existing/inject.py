"""`--plumbing inject` on existing clusters the user owns: join them the way the kind provider does,
and undo exactly that.

crossnet.lifecycle plans the changes (crossnet.plumbing: a route on every sampled node to every peer
node's pod CIDR via that node's InternalIP, the profile's service routes, kindnet's masquerade
exception, a fenced Corefile forward per peer domain) and calls the provider seam; this module is
that seam's body for the existing provider:

- node commands run in the run's privileged hostNetwork debug pods (debug.py), through the
  kubernetes exec API, as argv (never a shell line built from API values);
- before anything changes, every value those commands and the Corefile take from the API (node
  InternalIPs, spec.podCIDRs, the CoreDNS pods' IPs) is checked, raw, to be a canonical IP or a
  network without host bits: one error naming the node and the value, nothing changed;
- a route already on a node is left as it is and never removed; every route crossnet adds carries
  `proto 77` (ROUTE_PROTO) and is recorded in the state file (`existing.inject`) before it is added,
  so `crossnet down` after a kill removes it -- deleting with the same proto, never a look-alike
  route somebody else added -- and nothing else;
- kindnet's masquerade exception is inserted here (so its outcome is known), recorded per cluster,
  node and rule; a delete runs only for a recorded entry and drops it only once it is gone, so a
  rule crossnet never added is never deleted; lifecycle's conntrack flush becomes, on the nodes
  where crossnet inserted an exception, a delete of the entries towards those peer pod CIDRs only
  (never the whole table of a node the user owns);
- the ConfigMap kube-system/coredns: its Corefile is recorded before the first write, written with
  the resourceVersion read (a concurrent edit is a conflict, not overwritten) and only when it still
  is the text the patch was computed from; restored byte for byte -- unless somebody changed it
  after crossnet, then it is left and the original kept in a file.
"""

from __future__ import annotations

import ipaddress
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from crossnet.plumbing.corefile import CorefileError, strip_crossnet_fences
from crossnet.plumbing.nodes import CONNTRACK_FLUSH, MASQ_CHAIN
from crossnet.plumbing.routes import RouteChange
from crossnet.providers.base import SAFE_NAME, ProviderError
from crossnet.providers.existing.debug import debug_pod_name
from crossnet.providers.existing.kube import ApiError, ExistingKube, api_path

__all__ = ["Injector", "canonical_ip", "canonical_network", "check_api_values"]

EXEC_TIMEOUT = 30.0
ROUTE_TYPES = {"unicast", "local", "broadcast", "multicast", "throw", "unreachable", "prohibit", "blackhole", "nat"}
ROUTE_PROTO = "77"  # an unassigned rtnetlink protocol: crossnet's routes, told apart from look-alikes
# kindnet's masquerade chain exists only under kindnet: elsewhere the exception is not needed, so skipped.
MASQ_GUARD = f'iptables -w 5 -t nat -S {MASQ_CHAIN} >/dev/null 2>&1 || exit 0; exec "$@"'
# conntrack -D exits 1 when no entry matched: that is success here.
CONNTRACK_DELETE = 'for d in "$@"; do conntrack -D -d "$d" >/dev/null 2>&1; [ $? -le 1 ] || exit 1; done; exit 0'
NOOP = ["true"]


def _warn(message: str) -> None:
    print(f"crossnet: warning: {message}", file=sys.stderr, flush=True)


def canonical_ip(value: Any) -> str | None:
    """`value` when it is an IP address written canonically (no space, newline or leading zero), else None."""
    if not isinstance(value, str):
        return None
    try:
        return value if str(ipaddress.ip_address(value)) == value else None
    except ValueError:
        return None


def canonical_network(value: Any) -> str | None:
    """`value` when it is a network without host bits, written canonically, else None."""
    if not isinstance(value, str):
        return None
    try:
        return value if str(ipaddress.ip_network(value, strict=True)) == value else None
    except ValueError:
        return None


def _refuse(cluster: str, what: str, value: Any) -> ProviderError:
    return ProviderError(
        f"{cluster}: {what} is {str(value)[:80]!r}, not a canonical IP address or network (no host bits); "
        "--plumbing inject puts nothing from the API on a node's command line unchecked, so nothing was changed: "
        "fix the object, or run with --plumbing none"
    )


def check_api_values(cluster: str, kube: ExistingKube) -> None:
    """Every node's InternalIPs and pod CIDRs and every CoreDNS pod's IPs, raw from the API, must be
    canonical (IPv6 too, though only IPv4 is used); the first bad one is the error."""
    for node in kube.list_objects("/api/v1/nodes"):
        name = str((node.get("metadata") or {}).get("name"))[:80]
        spec, status = node.get("spec") or {}, node.get("status") or {}
        for address in status.get("addresses") or []:
            internal = isinstance(address, dict) and address.get("type") == "InternalIP"
            if internal and canonical_ip(address.get("address")) is None:
                raise _refuse(cluster, f"node {name!r}'s InternalIP", address.get("address"))
        for cidr in [*(spec.get("podCIDRs") or []), *([spec["podCIDR"]] if spec.get("podCIDR") else [])]:
            if canonical_network(cidr) is None:
                raise _refuse(cluster, f"node {name!r}'s podCIDR", cidr)
    for pod in kube.list_objects(api_path("v1", "pods", "kube-system"), "k8s-app=kube-dns"):
        name = str((pod.get("metadata") or {}).get("name"))[:80]
        status = pod.get("status") or {}
        ips = [status["podIP"]] if status.get("podIP") else []
        ips += [p.get("ip") for p in status.get("podIPs") or [] if isinstance(p, dict)]
        for ip in ips:
            if canonical_ip(ip) is None:
                raise _refuse(cluster, f"CoreDNS pod {name!r}'s IP", ip)


def _check_route(change: RouteChange, clusters: Sequence[str]) -> None:
    if change.cluster not in clusters or not SAFE_NAME.match(change.node):
        raise ProviderError(f"route {change.label[:120]!r}: no such node in this run; nothing was changed")
    network, via = canonical_network(change.destination), canonical_ip(change.via)
    if network is None or ipaddress.ip_network(network).version != 4:
        raise _refuse(change.cluster, f"the destination of route {change.label[:100]!r}", change.destination)
    if via is None or ipaddress.ip_address(via).version != 4:
        raise _refuse(change.cluster, f"the gateway of route {change.label[:100]!r}", change.via)


def present_routes(text: str) -> dict[str, str]:
    """Destination -> the line `ip -4 route show` prints for it (a host route gets its /32)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        words = line.split()
        if words and words[0] in ROUTE_TYPES:
            words = words[1:]
        if not words or words[0] == "default":
            continue
        destination = words[0] if "/" in words[0] else f"{words[0]}/32"
        found.setdefault(destination, line.strip())
    return found


def _key(route: dict[str, Any] | RouteChange) -> tuple[str, str, str, str]:
    if isinstance(route, RouteChange):
        return route.cluster, route.node, route.destination, route.via
    return str(route["cluster"]), str(route["node"]), str(route["destination"]), str(route["via"])


def _add_argv(change: RouteChange) -> list[str]:
    """`ip route add`, not kind's `replace`: a route that appeared meanwhile is refused, never changed."""
    return ["ip", "route", "add", change.destination, "via", change.via, "proto", ROUTE_PROTO]


def _gone(err: str) -> bool:
    """`ip route del` / `iptables -D` of something no longer there."""
    return any(s in err for s in ("No such process", "No such file", "Cannot find", "does a matching rule exist"))


class Injector:
    """The inject plumbing of one run: `state_read`/`state_write` reach `existing.inject` in the state file."""

    def __init__(
        self,
        kube: Callable[[str], ExistingKube],
        namespace: str,
        run_id: str,
        state_read: Callable[[], dict[str, Any]],
        state_write: Callable[[dict[str, Any]], None],
        progress: Callable[[str], None],
        keep_dir: Path | None = None,
    ) -> None:
        self.kube, self.namespace, self.run_id = kube, namespace, run_id
        self._read, self._write, self._progress = state_read, state_write, progress
        self.keep_dir = keep_dir or Path.cwd() / "reports" / f"existing-{run_id}"
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the record

    def record(self) -> dict[str, Any]:
        found = self._read()
        return {"routes": [], "masquerade": [], "corefiles": {}, **found}

    def _update(self, change: Callable[..., None], *args: Any) -> None:
        """`change(record, *args)`, written back at once (node threads share the record)."""
        with self._lock:
            record = self.record()
            change(record, *args)
            self._write(record)

    def _node_exec(self, cluster: str, node: str, argv: list[str]) -> tuple[int, str, str]:
        return self.kube(cluster).exec_in_pod(self.namespace, debug_pod_name(node), argv, EXEC_TIMEOUT)

    # ------------------------------------------------------------------ routes

    def check(self, changes: Sequence[RouteChange], clusters: Sequence[str]) -> None:
        """Every value a change or the Corefile forwards take from the API, before anything changes."""
        for change in changes:
            _check_route(change, clusters)
        for cluster in clusters:
            check_api_values(cluster, self.kube(cluster))

    def apply_routes(self, changes: Sequence[RouteChange], clusters: Sequence[str]) -> None:
        self.check(changes, clusters)
        by_node: dict[tuple[str, str], list[RouteChange]] = {}
        for change in dict.fromkeys(changes):
            by_node.setdefault((change.cluster, change.node), []).append(change)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(by_node)))) as pool:
            list(pool.map(lambda item: self._apply_on(*item), sorted(by_node.items())))

    def _apply_on(self, where: tuple[str, str], changes: list[RouteChange]) -> None:
        cluster, node = where
        rc, out, err = self._node_exec(cluster, node, ["ip", "-4", "route", "show"])
        if rc != 0:
            raise ProviderError(f"{cluster}/{node}: `ip -4 route show` failed (exit {rc}): {err.strip()[-300:]}")
        present = present_routes(out)
        for change in changes:
            line = present.get(change.destination)
            if line is not None:
                self._leave(change, line)
                continue
            key = _key(change)
            entry = {"cluster": key[0], "node": key[1], "destination": key[2], "via": key[3], "state": "added"}
            self._update(_append, "routes", entry)  # recorded before it is made
            rc, _, err = self._node_exec(cluster, node, _add_argv(change))
            if rc != 0 and "File exists" in err:  # appeared meanwhile: not ours
                self._update(_mark_present, key)
                self._leave(change, "")
            elif rc != 0:
                raise ProviderError(
                    f"{change.label}: `{' '.join(_add_argv(change))}` failed (exit {rc}): {err.strip()[-300:]}"
                )

    def _leave(self, change: RouteChange, line: str) -> None:
        if line and f" via {change.via} " not in f" {line} ":
            _warn(f"{change.cluster}/{change.node}: left the route {line!r} as it is (not via {change.via})")
        self._progress(f"existing: {change.label}: already routed on the node; left as it is")

    def undo_routes(self, changes: Iterable[RouteChange] | None = None) -> list[str]:
        """Remove the routes crossnet added (of `changes`, or all); what could not be removed."""
        wanted = None if changes is None else {_key(c) for c in changes}
        added = [r for r in self.record()["routes"] if r.get("state") == "added"]
        added = [r for r in added if wanted is None or _key(r) in wanted]
        by_node: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for route in reversed(added):
            by_node.setdefault((str(route["cluster"]), str(route["node"])), []).append(route)
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(by_node)))) as pool:
            results = list(pool.map(lambda item: self._undo_on(*item), sorted(by_node.items())))
        return [problem for found in results for problem in found]

    def _undo_on(self, where: tuple[str, str], routes: list[dict[str, Any]]) -> list[str]:
        problems = []
        for route in routes:
            argv = ["ip", "route", "del", str(route["destination"]), "via", str(route["via"]), "proto", ROUTE_PROTO]
            try:
                rc, _, err = self._node_exec(*where, argv)
            except ProviderError as exc:
                rc, err = 1, str(exc)
            if rc == 0 or _gone(err):
                self._update(_drop_route, _key(route))
            else:
                problems.append(f"{'/'.join(where)}: `{' '.join(argv)}` failed ({err.strip()[-200:]}): run it by hand")
        return problems

    # ------------------------------------------------------------------ node commands (lifecycle's)

    def node_argv(self, cluster: str, node: str, argv: list[str]) -> list[str]:
        """The argv to run for lifecycle's node command. kindnet's masquerade exception is inserted or
        deleted here (its outcome decides the record), the argv returned then is a no-op (or fails as
        the change did); the conntrack flush touches only entries towards the peer pod CIDRs of the
        exceptions crossnet inserted on this node; no sysctl on a cluster crossnet did not make."""
        if argv[:1] == ["sysctl"] and any(a.startswith("-") and "w" in a for a in argv[1:]):
            raise ProviderError(
                f"{cluster}/{node}: --plumbing inject sets no sysctl (the profile's rp_filter) on existing clusters: "
                "choose a profile without rp_filter"
            )
        if argv == CONNTRACK_FLUSH:
            return self._conntrack_argv(cluster, node)
        if argv[:1] != ["iptables"] or MASQ_CHAIN not in argv:
            return argv
        if "-I" in argv:
            return self._insert_masquerade(cluster, node, argv)
        if "-D" in argv:
            found = any(_masq_key(e) == (cluster, node, argv) for e in self.record()["masquerade"])
            problem = self._delete_masquerade(cluster, node, argv) if found else None
            return NOOP if problem is None else _failing(problem)
        return argv

    def _insert_masquerade(self, cluster: str, node: str, argv: list[str]) -> list[str]:
        probe = ["iptables", "-w", "5", "-t", "nat", "-S", MASQ_CHAIN]
        if self._node_exec(cluster, node, probe)[0] != 0:
            return NOOP  # no kindnet chain: no exception needed, nothing changed
        at = argv.index("-I")
        undo = [*argv[:at], "-D", MASQ_CHAIN, *argv[at + 3 :]]  # -I CHAIN 1 -> -D CHAIN
        self._update(_append, "masquerade", {"cluster": cluster, "node": node, "undo": undo})  # before the insert
        rc, _, err = self._node_exec(cluster, node, argv)
        if rc == 0:
            return NOOP
        self._update(_drop_masquerade, (cluster, node, undo))  # refused: nothing was inserted
        return _failing(f"exit {rc}: {err.strip()[-300:]}")

    def _delete_masquerade(self, cluster: str, node: str, undo: list[str]) -> str | None:
        """Delete one recorded exception; its entry goes once it is gone. What failed, or None."""
        try:
            rc, _, err = self._node_exec(cluster, node, ["sh", "-c", MASQ_GUARD, "sh", *undo])
        except ProviderError as exc:
            rc, err = 1, str(exc)
        if rc == 0 or _gone(err):
            self._update(_drop_masquerade, (cluster, node, undo))
            return None
        return f"{cluster}/{node}: `{' '.join(undo)}` failed ({err.strip()[-200:]}): run it by hand"

    def _conntrack_argv(self, cluster: str, node: str) -> list[str]:
        cidrs: list[str] = []
        for entry in self.record()["masquerade"]:
            cluster_node, undo = _masq_key(entry)[:2], _masq_key(entry)[2]
            cidr = undo[undo.index("-d") + 1] if cluster_node == (cluster, node) and "-d" in undo[:-1] else None
            if canonical_network(cidr) is not None and cidr not in cidrs:
                cidrs.append(str(cidr))
        return ["sh", "-c", CONNTRACK_DELETE, "sh", *cidrs] if cidrs else NOOP

    def _undo_masquerade(self) -> list[str]:
        problems = []
        for entry in reversed(self.record()["masquerade"]):
            problem = self._delete_masquerade(*_masq_key(entry))
            problems += [problem] if problem else []
        return problems

    # ------------------------------------------------------------------ the Corefile

    def _configmap(self, cluster: str) -> tuple[dict[str, Any], str]:
        found = self.kube(cluster).get(api_path("v1", "configmaps", "kube-system", "coredns"))
        data = (found or {}).get("data") or {}
        if found is None or not isinstance(data.get("Corefile"), str):
            raise ProviderError(f"{cluster}: ConfigMap kube-system/coredns has no Corefile key")
        return found, str(data["Corefile"])

    def _put(self, cluster: str, configmap: dict[str, Any], text: str) -> None:
        body = {**configmap, "data": {**(configmap.get("data") or {}), "Corefile": text}}
        path = api_path("v1", "configmaps", "kube-system", "coredns")
        try:
            self.kube(cluster).api.request("PUT", path, body=body)
        except ApiError as exc:
            if exc.status == 409:
                raise ProviderError(
                    f"{cluster}: ConfigMap kube-system/coredns changed while crossnet wrote it; run again"
                ) from None
            raise

    def write_corefile(self, cluster: str, text: str) -> None:
        """Patch (recording the original first), or restore: `text` is the recorded original. A patch
        is written only onto the very Corefile it was computed from (its text without crossnet's fence)."""
        configmap, current = self._configmap(cluster)
        entry = self.record()["corefiles"].get(cluster)
        if entry is not None and text == entry["original"]:
            self._restore(cluster, entry, configmap, current)
            return
        if entry is None and f"# crossnet begin {self.run_id}" not in text:
            return  # a restore of a Corefile crossnet never wrote: nothing of crossnet's to undo
        try:
            computed_from = strip_crossnet_fences(text)
        except CorefileError:
            computed_from = None
        if computed_from != current:
            raise ProviderError(
                f"{cluster}: ConfigMap kube-system/coredns changed after crossnet read its Corefile (or the patch "
                "was not computed from it); nothing was written: run again"
            )
        if entry is None:
            entry = {"original": current}
        self._update(lambda r: r["corefiles"].__setitem__(cluster, {**entry, "written": text}))  # before the write
        self._put(cluster, configmap, text)

    def _restore(self, cluster: str, entry: dict[str, Any], configmap: dict[str, Any], current: str) -> None:
        original = str(entry["original"])
        if current not in (original, entry.get("written")):
            self.keep_dir.mkdir(parents=True, exist_ok=True)
            kept = self.keep_dir / f"corefile-{cluster}-before-crossnet"
            kept.write_text(original)
            _warn(
                f"left the Corefile of {cluster} (ConfigMap kube-system/coredns) as it is: it changed after crossnet "
                f"patched it; the Corefile from before crossnet is in {kept}: remove the section from `# crossnet "
                f"begin {self.run_id}` to `# crossnet end {self.run_id}` by hand"
            )
        elif current != original:
            self._put(cluster, configmap, original)
        self._update(lambda r: r["corefiles"].pop(cluster, None))

    def _restore_corefiles(self) -> list[str]:
        problems = []
        for cluster, entry in reversed(list(self.record()["corefiles"].items())):
            try:
                configmap, current = self._configmap(cluster)
                self._restore(cluster, entry, configmap, current)
            except ProviderError as exc:
                problems.append(f"restore the Corefile of {cluster}: {exc}")
        return problems

    # ------------------------------------------------------------------ everything

    def undo_all(self) -> list[str]:
        """What `down` does before the namespace (and its debug pods) goes: every recorded change undone."""
        record = self.record()
        if not (record["routes"] or record["masquerade"] or record["corefiles"]):
            return []
        self._progress("existing: undoing --plumbing inject (Corefiles, masquerade exceptions, routes)")
        return self._restore_corefiles() + self._undo_masquerade() + self.undo_routes()


def _mark_present(record: dict[str, Any], key: tuple[str, str, str, str]) -> None:
    for route in record["routes"]:
        if _key(route) == key:
            route["state"] = "present"


def _append(record: dict[str, Any], key: str, entry: dict[str, Any]) -> None:
    record[key].append(entry)


def _drop_route(record: dict[str, Any], key: tuple[str, str, str, str]) -> None:
    record["routes"] = [route for route in record["routes"] if _key(route) != key]


def _masq_key(entry: dict[str, Any]) -> tuple[str, str, list[str]]:
    return str(entry["cluster"]), str(entry["node"]), [str(a) for a in entry["undo"]]


def _drop_masquerade(record: dict[str, Any], key: tuple[str, str, list[str]]) -> None:
    """One entry of `key` (cluster, node, undo argv): one insert, one delete."""
    entries = record["masquerade"]
    at = next((i for i, entry in enumerate(entries) if _masq_key(entry) == key), None)
    if at is not None:
        del entries[at]


def _failing(message: str) -> list[str]:
    """An argv that fails saying `message` (passed as an argument, never as shell text)."""
    return ["sh", "-c", 'printf "%s\\n" "$1" >&2; exit 1', "sh", message]
