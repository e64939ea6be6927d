"""Verdicts you can trust: probing is paced (no agent, DNS server or the harness gets a burst), a
timeout while the agent was starved is re-probed and otherwise an infrastructure error (never a
regression), a dead agent gives pytest errors and a headline saying how many cells were not
probed, `--attach` refuses a run brought up for another profile, and reports never pretend a run
that did not end finished."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from crossnet.live import live_cell
from crossnet.options import load_setup
from crossnet.providers.lab.clusterset import live_cluster_set
from crossnet.providers.lab.sandbox import SandboxClient
from crossnet.providers.lab.topology import plan_lab
from crossnet.runner import Pacing, SuiteRunner, probe_cells
from crossnet.wire import ProbeResult, ProbeSpec
from tests.lab_helpers import load_matrix, needs_lab, run_suites

SETUP = load_setup("routed", None, None)
CLUSTER_SET = live_cluster_set(plan_lab(SETUP.topology))


class RecordingAgents:
    """Fake agents that answer every probe as reached, recording how much was in flight at once."""

    def __init__(self, answer: Any = None, quiet: frozenset[str] = frozenset()) -> None:
        self.quiet = quiet  # ids of cells expected isolated: their chunks wait beside the paced ones
        self.lock = threading.Lock()
        self.agents_busy: Counter[str] = Counter()
        self.dns_busy: Counter[str] = Counter()
        self.max_agent = self.max_in_flight = self.in_flight = 0
        self.max_dns: Counter[str] = Counter()
        self.sizes: list[int] = []
        self.answer = answer or (lambda agent, probe, n: {"id": probe["id"], "reached": True, "loop_lag_ms": 0.0})
        self.calls: Counter[str] = Counter()

    def client(self, agent: str) -> RecordingAgents.Client:
        return RecordingAgents.Client(self, agent)

    class Client:
        def __init__(self, outer: RecordingAgents, agent: str) -> None:
            self.outer, self.agent = outer, agent

        def probe(self, probes: list[ProbeSpec], timeout: float) -> list[ProbeResult]:
            o = self.outer
            paced = not all(str(p["id"]) in o.quiet for p in probes)
            servers = {str(p["server"]) for p in probes if p.get("server")} if paced else set()
            with o.lock:
                o.agents_busy[self.agent] += paced
                o.max_agent = max(o.max_agent, o.agents_busy[self.agent])
                o.in_flight += len(probes)
                o.max_in_flight = max(o.max_in_flight, o.in_flight)
                for server in servers:
                    o.dns_busy[server] += 1
                    o.max_dns[server] = max(o.max_dns[server], o.dns_busy[server])
                if probes:
                    o.sizes.append(len(probes))
            time.sleep(0.002)
            with o.lock:
                o.agents_busy[self.agent] -= paced
                o.in_flight -= len(probes)
                for server in servers:
                    o.dns_busy[server] -= 1
                results = []
                for p in probes:
                    o.calls[str(p["id"])] += 1
                    results.append(o.answer(self.agent, p, o.calls[str(p["id"])]))
            return results


def test_probing_is_paced_per_agent_per_dns_server_and_overall() -> None:
    pacing = Pacing(chunk=24, quiet_chunk=128, workers=6, per_dns_server=2)
    lives = [live_cell(c, CLUSTER_SET, 2.0) for c in SETUP.cells]
    agents = RecordingAgents(quiet=frozenset(v.cell.id for v in lives if v.cell.expectation.reachable == "no"))
    observed = probe_cells(lives, agents.client, 2.0, pacing)
    assert len(observed) == len(lives) and all(o.reached for o in observed.values())
    assert agents.max_agent == 1  # an agent gets its next paced chunk only when the last one was answered
    assert max(agents.max_dns.values()) <= 2
    assert agents.max_in_flight <= pacing.workers * pacing.quiet_chunk
    loud = [size for size in agents.sizes if size <= pacing.chunk]
    assert loud and max(agents.sizes) <= pacing.quiet_chunk
    assert len(agents.sizes) > len({live.agent for live in lives})  # batches were really cut into chunks


def test_a_timeout_while_the_agent_was_starved_is_re_probed_not_a_regression() -> None:
    cells = [c for c in SETUP.cells if c.suite == "pod-to-pod" and c.expectation.reachable == "yes"][:20]

    def starved_once(agent: str, probe: ProbeSpec, attempt: int) -> ProbeResult:
        if attempt == 1:
            return {"id": probe["id"], "reached": False, "error": "timeout", "loop_lag_ms": 1500.0}
        return {"id": probe["id"], "reached": True, "loop_lag_ms": 3.0}

    agents = RecordingAgents(starved_once)
    judged = SuiteRunner(CLUSTER_SET, agents.client, 2.0).judge_cells(cells)
    assert {j.verdict for j in judged.values()} <= {"pass", "source-mismatch"}  # not flaky: the network never failed
    assert "flaky" not in {j.verdict for j in judged.values()}

    def always_starved(agent: str, probe: ProbeSpec, attempt: int) -> ProbeResult:
        return {"id": probe["id"], "reached": False, "error": "timeout", "loop_lag_ms": 1500.0}

    judged = SuiteRunner(CLUSTER_SET, RecordingAgents(always_starved).client, 2.0).judge_cells(cells)
    assert {j.observation.error for j in judged.values()} == {"starved"}
    assert all("overloaded" in j.observation.detail for j in judged.values())


def test_a_send_the_host_had_no_buffer_for_is_an_infrastructure_error_not_a_verdict() -> None:
    """ENOBUFS for a small packet is the sending machine's limit (e.g. Linux's host-wide neighbour
    table): re-probed, and if it persists an infrastructure error, never a regression."""
    cells = [c for c in SETUP.cells if c.suite == "pod-to-pod" and c.expectation.reachable == "yes"][:10]

    def no_buffer(agent: str, probe: ProbeSpec, attempt: int) -> ProbeResult:
        return {"id": probe["id"], "reached": False, "error": "no-buffer", "loop_lag_ms": 1.0, "detail": "ENOBUFS"}

    agents = RecordingAgents(no_buffer)
    judged = SuiteRunner(CLUSTER_SET, agents.client, 2.0).judge_cells(cells)
    assert {j.observation.error for j in judged.values()} == {"no-buffer"}
    assert set(agents.calls.values()) == {3}  # asked again twice before it is called the harness's


def test_errno_texts_say_what_they_mean_for_the_path() -> None:
    import errno as errnos

    from crossnet.agent.results import os_error

    big = {"protocol": "udp", "dst": "10.0.0.5", "port": 8080, "payload": 1400}
    small = {"protocol": "udp", "dst": "10.0.0.5", "port": 8080, "payload": 0}
    assert os_error(OSError(errnos.ENOBUFS, "No buffer space available"), 0.0, big)["error"] == "mtu"
    assert os_error(OSError(errnos.ENOBUFS, "No buffer space available"), 0.0, small)["error"] == "no-buffer"
    assert os_error(OSError(errnos.EMSGSIZE, "Message too long"), 0.0, big)["error"] == "mtu"
    refused = OSError(errnos.ECONNREFUSED, "Connection refused")
    by_a_hop = os_error(refused, 0.0, small, ("10.0.0.1", "port unreachable"))
    assert by_a_hop["error"] == "rejected" and "10.0.0.1" in by_a_hop["detail"]
    assert os_error(refused, 0.0, small, ("10.0.0.5", "port unreachable"))["error"] == "refused"
    assert os_error(refused, 0.0, small, ("10.0.0.5", "administratively prohibited"))["error"] == "rejected"


def test_a_timeout_with_a_lively_agent_stays_a_network_verdict() -> None:
    cells = [c for c in SETUP.cells if c.suite == "pod-to-pod" and c.expectation.reachable == "yes"][:5]

    def lost(agent: str, probe: ProbeSpec, attempt: int) -> ProbeResult:
        return {"id": probe["id"], "reached": False, "error": "timeout", "loop_lag_ms": 4.0}

    judged = SuiteRunner(CLUSTER_SET, RecordingAgents(lost).client, 2.0).judge_cells(cells)
    assert {j.verdict for j in judged.values()} == {"regression"}


# ---------------------------------------------------------------- on a live lab


@needs_lab
def test_attach_refuses_a_run_brought_up_for_another_profile(lab: Path, tmp_path: Path) -> None:
    done = run_suites("suites/test_dns.py", "--attach", str(lab), "--profile", "flat-routed-svc",
                      "--reports", str(tmp_path))
    out = done.stdout + done.stderr
    assert done.returncode == 4 and "brought up with profile flat-routed, whose plumbing" in out, out[-1500:]
    assert "service_routes=False" in out and "service_routes=True" in out and "Traceback" not in out
    assert "crossnet matrix: no cell was judged" in out and "0 cells" not in out
    same = run_suites("suites/test_dns.py", "--attach", str(lab), "--reports", str(tmp_path))
    assert same.returncode == 0, same.stdout[-2000:]


@needs_lab
def test_a_dead_agent_gives_errors_and_an_honest_headline(lab: Path, tmp_path: Path) -> None:
    # `ip netns pids` reads the host's /proc: the pids are the host's, so the host ends them.
    pids = SandboxClient(lab).exec(None, ["ip", "netns", "pids", "cluster-1.worker.agent"]).stdout.split()
    assert pids
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    done = run_suites("suites/test_pod_to_pod.py", "-k", "tcp and not 1400b", "--attach", str(lab), "-rE",
                      "--reports", str(tmp_path))
    out = done.stdout
    assert "ProbeInfrastructureError" in out and " error" in out.splitlines()[-1], out[-2500:]
    matrix = load_matrix(tmp_path)
    assert matrix["run"]["not_probed"] > 0
    assert not [c["id"] for c in matrix["cells"] if c["verdict"] == "regression"]  # no network verdict from it
    summary = (tmp_path / "summary.md").read_text()
    assert f"infrastructure error: {matrix['run']['not_probed']} cells not probed" in summary


@needs_lab
@pytest.mark.parametrize("lab", [["--profile", "flat-routed"]], indirect=True)
def test_the_run_records_what_it_was_brought_up_for(lab: Path) -> None:
    import json

    recorded = json.loads((lab / "state.json").read_text())["setup"]
    assert recorded["profile"] == "flat-routed" and recorded["clusters"] == ["cluster-1", "cluster-2"]
    assert all(len(h) == 64 for h in [recorded["profile_sha256"], *recorded["configs_sha256"]])


@needs_lab
def test_a_service_with_one_dead_endpoint_fails_naming_it(lab: Path, tmp_path: Path) -> None:
    """kube-proxy picks an endpoint at random: one connection finds a dead endpoint of three only a
    third of the time. A Service cell connects until every endpoint answered (bounded), so a DROP
    in front of one endpoint fails every cell of that Service, naming the endpoint."""
    drop = ["iptables", "-I", "INPUT", "-p", "tcp", "--dport", "8080", "-j", "DROP"]
    on = SandboxClient(lab).exec("cluster-2.worker2.agent", drop)
    assert on.rc == 0, on.stderr
    done = run_suites("suites/test_service.py", "-k", "cluster-ip and tcp", "--attach", str(lab),
                      "--reports", str(tmp_path))
    cells = [c for c in load_matrix(tmp_path)["cells"] if c["id"].endswith("->cluster-2/echo:cluster-ip:tcp")]
    reachable = [c for c in cells if c["expected"] == "yes"]
    assert done.returncode == 1 and len(reachable) >= 6
    assert {c["verdict"] for c in reachable} == {"regression"}, [(c["id"], c["verdict"]) for c in reachable]
    unnamed = [c["message"] for c in reachable if "endpoint cluster-2/worker2/agent never answered" not in c["message"]]
    assert unnamed == []
    others = [c for c in load_matrix(tmp_path)["cells"] if c["id"].endswith("->cluster-1/echo:cluster-ip:tcp")
              and c["expected"] == "yes"]
    assert others and {c["verdict"] for c in others} == {"pass"}  # the other cluster's Service is whole


@needs_lab
def test_an_mtu_black_hole_is_caught_every_time_and_its_path_mtu_measured(lab: Path, tmp_path: Path) -> None:
    """A link with a smaller MTU that drops big frames silently (no ICMP: a black hole) fails the
    large-payload cells through it in every run: a path MTU the kernel learned from an earlier probe
    never heals a later one (probes send with DF at the interface MTU). The DF ladder measures the
    path MTU of every cross-cluster path into matrix.json, and a failed large probe names it."""
    shrink = SandboxClient(lab).exec("cluster-2.worker", ["ip", "link", "set", "dev", "eth0", "mtu", "1300"])
    assert shrink.rc == 0, shrink.stderr
    into = "->cluster-2/worker:pod-ip:"
    for attempt in range(2):
        reports = tmp_path / f"run{attempt}"
        run_suites("suites/test_pod_to_pod.py", "--attach", str(lab), "--reports", str(reports))
        cells = [c for c in load_matrix(reports)["cells"] if c["src"].startswith("cluster-1/") and into in c["id"]]
        large = [c for c in cells if c["protocol"] in ("tcp-1400b", "udp-1400b")]
        small = [c for c in cells if c["protocol"] in ("tcp", "udp", "icmp")]
        assert large and small
        assert {c["verdict"] for c in large} == {"regression"}, [(c["id"], c["verdict"]) for c in large]
        assert {c["verdict"] for c in small} == {"pass"}, [(c["id"], c["verdict"]) for c in small]
        pod_ladders = [c for c in large if c["src_kind"] == "pod" and c["protocol"] == "udp-1400b"]
        # a veth lets a frame 4 bytes over its MTU through (room for a VLAN tag)
        measured = [c["path_mtu"] for c in pod_ladders]
        assert pod_ladders and all(1300 <= mtu <= 1304 for mtu in measured), measured
        assert all(re.search(r"path MTU to \S+ is 130[0-4] bytes", c["message"]) for c in large), large[0]["message"]
        healthy = [c for c in load_matrix(reports)["cells"] if c["protocol"] == "udp-1400b" and c["path_mtu"]
                   and c["src"].startswith("cluster-1/") and "->cluster-2/" in c["id"] and into not in c["id"]]
        assert healthy and {c["path_mtu"] for c in healthy} == {1500}


@needs_lab
def test_a_reject_on_the_way_reads_as_rejected_and_a_closed_port_as_refused(lab: Path, tmp_path: Path) -> None:
    """A node's REJECT answers with an ICMP error from the node, a pod without a listener from the
    pod itself: crossnet tells them apart by who sent the ICMP (IP_RECVERR), instead of calling
    both "refused"."""
    reject = ["iptables", "-I", "FORWARD", "-d", "10.20.1.2", "-p", "udp", "-j", "REJECT"]
    assert SandboxClient(lab).exec("cluster-2.worker", reject).rc == 0
    run_suites("suites/test_pod_to_pod.py", "-k", "cluster-1/ and cluster-2/worker:pod-ip:udp", "--attach", str(lab),
               "--reports", str(tmp_path))
    cells = [c for c in load_matrix(tmp_path)["cells"] if c["src_kind"] == "pod"]
    assert cells and {c["observed"] for c in cells} == {"rejected"}, [(c["id"], c["observed"]) for c in cells]
    assert all("rejected by 172.19." in c["message"] for c in cells), cells[0]["message"]
