"""A failing cell's diagnosis names the cause: its one-line message keeps the payload size, the
stage of a by-name connect, one text per cause, the target's kind and no unfilled placeholder;
its evidence holds the filter table with counters and the link MTUs of both ends; node facts
keep a route's type and compare Corefile forwards with the DNS pods of now; the repro command
names a state directory that is not the default; `crossnet exec` has a /proc of the lab."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import get_args

import pytest

from crossnet.evidence import End, collect_evidence, filter_excerpt, link_mtus, path_ends
from crossnet.facts import NodeFact, check_fact, node_host
from crossnet.judge import TARGET_WORDS, judge
from crossnet.lifecycle import Run, apply_plumbing
from crossnet.live import LiveCell, live_cell, repro_command
from crossnet.model import ClusterSet, Observation, TargetKind
from crossnet.options import load_setup
from crossnet.providers.base import ExecTarget
from crossnet.providers.fake import FakeProvider
from crossnet.providers.lab.clusterset import live_cluster_set
from crossnet.providers.lab.sandbox import SandboxClient
from crossnet.providers.lab.topology import plan_lab
from tests.lab_helpers import BIN, crossnet, load_matrix, needs_lab, processes_mentioning, run_suites

ROUTED = load_setup("routed", None, None)
GLOBALNET = load_setup("globalnet", None, None)
SETS = {
    "routed": (ROUTED, live_cluster_set(plan_lab(ROUTED.topology))),
    "globalnet": (GLOBALNET, live_cluster_set(plan_lab(GLOBALNET.topology, GLOBALNET.profile.plumbing.global_cidr))),
}
CELLS = {c.id: c for c in ROUTED.cells}
CLUSTER_SET = SETS["routed"][1]
TIMEOUT = Observation(reached=False, error="timeout", latency_ms=2000.0, detail="no TCP answer within 2.0s")


def live(cell_id: str) -> LiveCell:
    return live_cell(CELLS[cell_id], CLUSTER_SET, 2.0)


def got(message: str) -> str:
    return message.split(", got ", 1)[1]


# ---------------------------------------------------------------- b: payload size and by-name stage


def test_the_message_keeps_the_payload_size() -> None:
    for proto in ("udp-1400b", "tcp-1400b"):
        message = judge(live(f"pod:cluster-1/worker->cluster-2/worker2:pod-ip:{proto}"), TIMEOUT).message
        assert f" 10.20.2.2:8080/{proto}: expected reachable" in message, message
    optional = replace(CELLS["pod:cluster-1/worker->cluster-2/worker2:pod-ip:udp-1400b"], expectation=replace(
        CELLS["pod:cluster-1/worker->cluster-2/worker2:pod-ip:udp-1400b"].expectation, reachable="optional"))
    assert "/udp-1400b: optional" in judge(live_cell(optional, CLUSTER_SET, 2.0), TIMEOUT).message


def test_a_by_name_connect_says_which_step_failed() -> None:
    headless = live("pod:cluster-1/worker->cluster-2/worker:echo-headless:headless:tcp")
    name = "agent-worker.echo-headless.crossnet.svc.cluster-2.com"
    resolving = Observation(reached=False, error="timeout", latency_ms=2000.0, detail=f"resolving {name}: timeout")
    assert got(judge(headless, resolving).message) == f"resolving {name}: timeout after 2.0s"
    assert got(judge(headless, TIMEOUT).message) == "connect: timeout after 2.0s"
    servfail = Observation(reached=False, error="servfail", rcode="SERVFAIL", detail=f"resolving {name}: servfail")
    assert got(judge(headless, servfail).message) == f"resolving {name}: servfail"
    external = live("pod:cluster-2/worker->cluster-1:external-name:proxy-to-cluster-1:dns-name:tcp")
    refused = Observation(reached=False, error="no-route", detail="Connect call failed ('10.40.0.100', 8080)")
    assert got(judge(external, refused).message).startswith("connect: no-route")
    # a DNS cell has no connect step
    dns = live("pod:cluster-1/worker->cluster-2:full:echo:dns-name:dns-udp")
    assert got(judge(dns, replace(TIMEOUT, detail="no DNS answer within 2.0s")).message) == "timeout after 2.0s"


# ---------------------------------------------------------------- c: one cause, one text


def test_a_missing_route_reads_the_same_for_every_protocol() -> None:
    # What agents reported in one run when cluster-1/worker had no route to 10.20.2.0/24 (measured on
    # the lab, with the agent of before and of now): each protocol words the same cause its own way.
    seen = [
        ("tcp", "Connect call failed ('10.20.2.2', 8080)"),
        ("udp", "Network is unreachable"),
        ("icmp", "Network is unreachable"),
        ("tcp", "172.19.0.1 answered ICMP net unreachable: no way on to 10.20.2.2"),
        ("udp", "172.19.0.1 answered ICMP net unreachable: no way on to 10.20.2.2"),
        ("icmp", "no route to the destination (Network is unreachable: an ICMP unreachable or no local route)"),
        ("udp-1400b", "172.19.0.1 answered ICMP net unreachable: no way on to 10.20.2.2; path MTU not measured: "
                      "Network is unreachable"),
        ("tcp-1400b", "No route to host"),
    ]
    texts = {got(judge(live(f"{vantage}:cluster-1/worker->cluster-2/worker2:pod-ip:{proto}"),
                       Observation(reached=False, error="no-route", latency_ms=0.8, detail=detail)).message)
             for proto, detail in seen for vantage in ("pod", "host")}
    assert len(texts) == 1, texts
    assert texts.pop().startswith("no-route")
    refused = {got(judge(live(f"pod:cluster-1/worker->cluster-2/worker2:pod-ip:{proto}"),
                         Observation(reached=False, error="refused", detail=detail)).message)
               for proto, detail in (("tcp", "Connect call failed ('10.20.2.2', 8080)"),
                                     ("udp", "Connection refused"),
                                     ("tcp", "connection refused: the target answered with a reset (nothing "
                                             "listens on that port)"),
                                     ("udp", "nothing listens on 10.20.2.2 port 8080 (ICMP port unreachable "
                                             "from the target)"))}
    assert len(refused) == 1, refused
    closed = Observation(reached=False, error="refused", detail="connection closed without a reply")  # not that
    assert got(judge(live("pod:cluster-1/worker->cluster-2/worker2:pod-ip:tcp"), closed).message) == (
        "refused (connection closed without a reply)")
    # a cause the class does not say keeps its detail (a connection whose data then vanished: MTU)
    large = live("pod:cluster-1/worker->cluster-2/worker2:pod-ip:tcp-1400b")
    stuck = replace(TIMEOUT, detail="connected, but no reply")
    assert got(judge(large, stuck).message) == "timeout after 2.0s (connected, but no reply)"
    note = "the path MTU to 10.20.2.2 is 1500 bytes (DF ladder): not an MTU problem"
    assert got(judge(large, replace(TIMEOUT, detail=f"no TCP answer within 2.0s; {note}")).message) == (
        f"timeout after 2.0s ({note})")


# ---------------------------------------------------------------- d, e: kind words, no placeholders


def test_targets_are_named_by_their_kind() -> None:
    assert set(TARGET_WORDS) == set(get_args(TargetKind))
    cluster_ip = judge(live("pod:cluster-1/worker->cluster-2/echo:cluster-ip:tcp"), TIMEOUT).message
    assert " -> cluster-2 ClusterIP cluster-2/echo 10.50.0.100:8080/tcp:" in cluster_ip and " pod cluster-2/" \
        not in cluster_ip
    node_port = judge(live("pod:cluster-1/worker->cluster-2/worker2:echo:node-port:tcp"), TIMEOUT).message
    assert " -> cluster-2 NodePort cluster-2/worker2 172.19.0.7:30080/tcp:" in node_port
    pod = judge(live("pod:cluster-1/worker->cluster-2/worker2:pod-ip:tcp"), TIMEOUT).message
    assert " -> cluster-2 pod cluster-2/worker2 10.20.2.2:8080/tcp:" in pod
    name = judge(live("pod:cluster-1/worker->cluster-2:full:echo:dns-name:dns-udp"), TIMEOUT).message
    assert " -> cluster-2 name echo.crossnet.svc.cluster-2.com @10.40.0.10/dns-udp:" in name and " svc " not in name


@pytest.mark.parametrize("setup", sorted(SETS))
def test_no_message_holds_an_unfilled_placeholder(setup: str) -> None:
    cells, cluster_set = SETS[setup][0].cells, SETS[setup][1]
    failing = [Observation(reached=False, error="timeout", latency_ms=2000.0),
               Observation(reached=False, error="wrong-answer", answers=("10.0.0.1",))]
    messages = [judge(live_cell(c, cluster_set, 2.0), obs).message for c in cells for obs in failing]
    assert len(messages) > 600
    assert [m for m in messages if re.search(r"\{\w*\}", m)] == []


# ---------------------------------------------------------------- f: route facts keep their type


class ScriptedProvider(FakeProvider):
    """A fake provider whose node commands answer from a script ({command prefix: (rc, out, err)})
    and whose DNS pods can move (`dns_now`), as a restarted CoreDNS pod does."""

    def __init__(self, state_dir: Path, script: dict[str, tuple[int, str, str]] | None = None) -> None:
        super().__init__(state_dir)
        self.script = script or {}
        self.dns_now: dict[str, tuple[str, ...]] = {}
        self.calls: list[tuple[ExecTarget, list[str]]] = []

    def exec(self, target: ExecTarget, argv: list[str], timeout: float = 30.0) -> tuple[int, str, str]:
        self.calls.append((target, argv))
        return next((answer for prefix, answer in self.script.items() if argv[-1].startswith(prefix)), (0, "", ""))

    def dns_server_ips_now(self, cluster: str) -> tuple[str, ...]:
        assert self.cluster_set is not None
        return self.dns_now.get(cluster, self.cluster_set.cluster(cluster).dns_server_ips)


def scripted(tmp_path: Path, script: dict[str, tuple[int, str, str]] | None = None) -> tuple[Run, ScriptedProvider]:
    provider = ScriptedProvider(tmp_path, script)
    cluster_set: ClusterSet = provider.up(ROUTED.topology)
    return Run(provider, cluster_set, owned=False), provider


@pytest.mark.parametrize("kind", ["blackhole", "unreachable", "prohibit"])
def test_a_typed_route_is_shown_as_such(tmp_path: Path, kind: str) -> None:
    listing = f'[{{"type":"{kind}","dst":"10.20.2.0/24","flags":[]}}]'
    run, _ = scripted(tmp_path, {"ip -j route show table main": (0, listing, "")})
    fact = NodeFact("cluster-1", "worker", "route-to", "cluster-2/worker2")
    result = check_fact(node_host(run, "cluster-1", "worker"), fact, run)
    assert not result.ok and result.observed == f"{kind} route 10.20.2.0/24", result
    assert "None" not in result.observed
    fine = '[{"dst":"10.20.2.0/24","gateway":"172.19.0.7","dev":"eth0","flags":[]}]'
    run, _ = scripted(tmp_path / "fine", {"ip -j route show table main": (0, fine, "")})
    assert check_fact(node_host(run, "cluster-1", "worker"), fact, run).ok


# ---------------------------------------------------------------- g: Corefile forwards vs the DNS pods of now


def test_the_corefile_fact_follows_the_peer_dns_pods_of_now(tmp_path: Path) -> None:
    run, provider = scripted(tmp_path)
    apply_plumbing(provider, run.cluster_set, "run-1")  # cluster-1 forwards cluster-2.com to 10.20.0.3
    fact = NodeFact("cluster-1", "", "corefile-forward", "cluster-2.com")
    host = node_host(run, "cluster-1", "control-plane")
    assert check_fact(host, fact, run).ok
    provider.dns_now["cluster-2"] = ("10.20.0.7",)  # CoreDNS restarted elsewhere; the state file still says .3
    stale = check_fact(host, fact, run)
    assert not stale.ok, stale
    assert stale.expected == "cluster-2.com: forward . 10.20.0.7"
    assert stale.observed == "cluster-2.com: forward . 10.20.0.3"
    corefile = provider.corefiles["cluster-1"]
    provider.corefiles["cluster-1"] = corefile.replace("forward . 10.20.0.3", "forward . 10.20.0.7")
    assert check_fact(host, fact, run).ok


def test_under_plumbing_none_a_route_fact_reports_the_way_and_fails_only_a_dropped_one(tmp_path: Path) -> None:
    """Observed (plumbing none): any way the kernel takes to the peer's pods is reported with its value;
    only one the kernel drops (no route, a blackhole) fails, naming what it said."""
    fact = NodeFact("cluster-1", "worker", "route-to", "cluster-2/worker2", observe=True)
    way = "10.20.2.1 dev vx-submariner src 10.10.1.1 uid 0 \n    cache "
    run, _ = scripted(tmp_path, {"ip route get 10.20.2.1": (0, way, "")})
    seen = check_fact(node_host(run, "cluster-1", "worker"), fact, run)
    assert seen.ok and seen.observed == "10.20.2.1 dev vx-submariner src 10.10.1.1", seen
    assert "observed, not required" in seen.expected and "10.20.2.0/24" in seen.expected
    run, _ = scripted(tmp_path / "drop", {"ip route get 10.20.2.1": (2, "", "RTNETLINK answers: Invalid argument\n")})
    dropped = check_fact(node_host(run, "cluster-1", "worker"), fact, run)
    assert not dropped.ok and dropped.observed == "the kernel drops it: RTNETLINK answers: Invalid argument"


def test_under_plumbing_none_the_corefile_fact_reports_and_fails_only_a_wrong_target(tmp_path: Path) -> None:
    run, provider = scripted(tmp_path)
    fact = NodeFact("cluster-1", "", "corefile-forward", "cluster-2.com", observe=True)
    host = node_host(run, "cluster-1", "control-plane")
    none = check_fact(host, fact, run)  # nobody added a forward block: reported, not failed
    assert none.ok and none.observed.startswith("no server block for cluster-2.com"), none
    apply_plumbing(provider, run.cluster_set, "run-1")  # cluster-1 forwards cluster-2.com to 10.20.0.3
    assert check_fact(host, fact, run).observed == "cluster-2.com: forward . 10.20.0.3"
    provider.dns_now["cluster-2"] = ("10.20.0.7",)  # CoreDNS restarted elsewhere: the forward is stale
    stale = check_fact(host, fact, run)
    assert not stale.ok and "10.20.0.3 is not cluster-2's DNS now (10.20.0.7" in stale.observed, stale


# ---------------------------------------------------------------- a: filter table and MTUs, scripted


SAVE = """# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [10:600]
:FORWARD ACCEPT [40:2400]
:OUTPUT ACCEPT [9:540]
[0:0] -A FORWARD -s 10.9.0.0/16 -j ACCEPT
[7:420] -A FORWARD -d 10.20.2.2/32 -p tcp -m tcp --dport 8080 -j DROP
COMMIT
"""
LINKS = ("1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default\\"
         "    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00\n"
         "2: eth0@if7: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT\\"
         "    link/ether 3a:ed:c1:3f:c1:8d brd ff:ff:ff:ff:ff:ff link-netnsid 1\n"
         "3: vp-agent@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1000 qdisc noqueue state UP mode DEFAULT\\"
         "    link/ether 8e:f9:9d:2d:14:91 brd ff:ff:ff:ff:ff:ff link-netnsid 0\n")


def test_filter_excerpt_and_link_mtus() -> None:
    text = filter_excerpt(SAVE)
    lines = text.splitlines()
    assert lines[1] == "[7:420] -A FORWARD -d 10.20.2.2/32 -p tcp -m tcp --dport 8080 -j DROP"  # what drops, first
    assert ":FORWARD ACCEPT [40:2400]" in lines and "COMMIT" not in text and "Generated" not in text
    assert link_mtus(LINKS).splitlines() == ["lo mtu 65536 (UNKNOWN)", "eth0@if7 mtu 1500 (UP)",
                                             "vp-agent@if2 mtu 1000 (UP)"]
    assert link_mtus("eth0 mtu 1450\n") == "eth0 mtu 1450"  # sysfs fallback (a kind pod has no `ip`)


def test_failing_cell_evidence_has_the_filter_table_and_the_mtus_of_both_ends(tmp_path: Path) -> None:
    run, provider = scripted(tmp_path, {"iptables-save -c -t filter": (0, SAVE, ""), "ip -o link show": (0, LINKS, "")})
    src, dst, dns = path_ends(run.cluster_set, CELLS["pod:cluster-1/worker->cluster-2/worker2:pod-ip:tcp"])
    assert (src, dst, dns) == (End("cluster-1", "worker", "agent"), End("cluster-2", "worker2", "agent"), None)
    text = collect_evidence(run, src, dst, ("10.10.1.2", "10.20.2.2"), dns)
    for where in ("cluster-1/worker", "cluster-2/worker2"):
        assert f"=== {where}: iptables -t filter (counters) ===\n# what drops" in text
        assert f"=== {where}: link MTUs ===\nlo mtu 65536 (UNKNOWN)" in text
    for pod in ("cluster-1/worker/agent", "cluster-2/worker2/agent"):
        assert f"=== {pod}: link MTUs ===\n" in text
    assert "[7:420] -A FORWARD -d 10.20.2.2/32" in text and "vp-agent@if2 mtu 1000" in text
    pods = {str(target) for target, _ in provider.calls if target.pod}
    assert pods == {"cluster-1/worker/agent", "cluster-2/worker2/agent"}  # each pod end asked in its own namespace
    # a host vantage to a ClusterIP: node ends only, no pod asked
    provider.calls.clear()
    ends = path_ends(run.cluster_set, CELLS["host:cluster-1/worker->cluster-2/echo:cluster-ip:tcp"])
    assert ends[:2] == (End("cluster-1", "worker"), End("cluster-2", "control-plane"))
    collect_evidence(run, ends[0], ends[1], ("172.19.0.3", "10.50.0.100"))
    assert not [t for t, _ in provider.calls if t.pod]


# ---------------------------------------------------------------- h: the repro command pastes


def test_the_repro_names_a_state_dir_that_is_not_the_default(tmp_path: Path) -> None:
    repro = "crossnet exec cluster-1/worker/agent -- crossnet-agent probe tcp 10.20.2.2 8080"
    default = tmp_path / ".crossnet" / "20260101-000000-abcd"
    default.mkdir(parents=True)
    (default / "state.json").write_text("{}")
    assert repro_command(repro, default, tmp_path) == repro
    other = tmp_path / "my runs" / "state"
    pasted = repro_command(repro, other, tmp_path)
    assert pasted == f"crossnet exec --state-dir '{other}' cluster-1/worker/agent -- crossnet-agent probe tcp " \
                     "10.20.2.2 8080"
    assert shlex.split(pasted)[2:4] == ["--state-dir", str(other)]
    second = tmp_path / ".crossnet" / "20260101-000001-ef01"  # two runs here: `crossnet exec` cannot pick one
    second.mkdir()
    (second / "state.json").write_text("{}")
    assert "--state-dir" in repro_command(repro, default, tmp_path)


# ---------------------------------------------------------------- on a live lab


def on(lab: Path, target: str, *argv: str) -> str:
    return crossnet("exec", "--state-dir", str(lab), target, "--", *argv).stdout


@needs_lab
def test_a_drop_rule_and_a_lowered_mtu_show_in_the_failing_cells_evidence(lab: Path, tmp_path: Path) -> None:
    # On cluster-2/worker2: drop TCP to its pod's echo, and shrink the pod's own link (an MTU black
    # hole: the node forwards 1428-byte datagrams the pod's veth cannot take).
    on(lab, "cluster-2/worker2", "iptables", "-I", "FORWARD", "-d", "10.20.2.2", "-p", "tcp", "--dport", "8080",
       "-j", "DROP")
    on(lab, "cluster-2/worker2/agent", "ip", "link", "set", "dev", "eth0", "mtu", "1000")
    ids = ["pod:cluster-1/worker->cluster-2/worker2:pod-ip:tcp"]  # (a failed large probe adds the agent's
    # path-MTU ladder, seconds: the small one shows the same evidence of the same path)
    done = run_suites(*(f"suites/test_pod_to_pod.py::test_pod_to_pod[{i}]" for i in ids), "--attach", str(lab),
                      "--probe-timeout", "1", "--reports", str(tmp_path))
    assert done.returncode == 1, done.stdout[-3000:]
    cells = {c["id"]: c for c in load_matrix(tmp_path)["cells"]}
    assert {i: cells[i]["verdict"] for i in ids} == {i: "regression" for i in ids}
    evidence = cells[ids[0]]["evidence"]
    table = evidence.split("=== cluster-2/worker2: iptables -t filter (counters) ===\n")[1].split("===")[0]
    drop = next(line for line in table.splitlines() if line.endswith("--dport 8080 -j DROP"))
    assert int(drop.split(":")[0].lstrip("[")) > 0, drop  # it dropped the probe's packets
    pod_links = evidence.split("=== cluster-2/worker2/agent: link MTUs ===\n")[1].split("===")[0]
    assert re.search(r"^eth0@if\d+ mtu 1000 \(UP\)$", pod_links, re.M), pod_links
    assert re.search(r"^eth0@if\d+ mtu 1500", evidence.split("=== cluster-1/worker/agent: link MTUs ===\n")[1],
                     re.M)
    # h: the failure prints a repro that names this (non-default) state directory, and pasting it works
    repro = next(line.split("repro: ", 1)[1] for line in done.stdout.splitlines() if "repro: crossnet exec" in line)
    assert repro.startswith(f"crossnet exec --state-dir {lab} cluster-1/worker/agent -- crossnet-agent probe tcp")
    assert cells[ids[0]]["repro"] == repro
    argv = shlex.split(repro)
    pasted = subprocess.run([str(BIN / "crossnet"), *argv[1:], "--timeout", "1"], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert pasted.returncode == 1 and '"reached": false' in pasted.stdout, pasted.stdout + pasted.stderr


def _mounts(lab: Path) -> list[str]:
    return sorted(SandboxClient(lab).exec(None, ["cat", "/proc/self/mountinfo"]).stdout.splitlines())


@needs_lab
def test_exec_sees_the_labs_own_proc_and_leaks_nothing(lab: Path) -> None:
    mounts = _mounts(lab)
    pids = on(lab, "cluster-1/worker/agent", "ip", "netns", "pids", "cluster-1.worker.agent").split()
    listed = on(lab, "cluster-1/worker/agent", "ps", "-e", "-o", "pid=,args=")
    own = {line.split()[0] for line in listed.splitlines()}
    alive = [p for p in pids if p in own]  # the agent; the other pid was `ip netns pids` itself, gone since
    assert len(alive) == 1, (pids, listed)
    assert "crossnet" in on(lab, "cluster-1/worker", "cat", f"/proc/{alive[0]}/cmdline")
    # pid 1 is the lab's supervisor, not the host's init: the pids are the lab's own
    assert "crossnet.providers.lab.supervisor" in on(lab, "cluster-1/worker", "cat", "/proc/1/cmdline")
    # the /proc mount went with the command; a command ended by its timeout leaves no process
    assert _mounts(lab) == mounts
    ended = crossnet("exec", "--state-dir", str(lab), "--timeout", "1", "cluster-2/worker", "--", "sleep", "31.337",
                     check=False)
    assert ended.returncode == 124
    deadline = time.monotonic() + 3.0
    while processes_mentioning("sleep 31.337") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_mentioning("sleep 31.337") == []
    assert _mounts(lab) == mounts
