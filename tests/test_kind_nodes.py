"""The kind provider's docker layer: against a fake SDK client, and against a real docker daemon
that the tests start in a network namespace of its own (docs/ARCHITECTURE.md), with node-shaped containers
built from a busybox rootfs without any registry."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crossnet.plumbing.routes import RouteChange
from crossnet.providers.base import ProviderError
from crossnet.providers.kind.nodes import (
    KIND_CLUSTER_LABEL,
    KIND_ROLE_LABEL,
    NodeContainer,
    NodeContainers,
    kind_node_name,
)

# --------------------------------------------------------------------------- a fake SDK client


class FakeContainer:
    def __init__(self, name: str, cluster: str, role: str, fail: bool = False) -> None:
        self.name, self.id = name, f"id-{name}"
        self.labels = {KIND_CLUSTER_LABEL: cluster, KIND_ROLE_LABEL: role}
        self.commands: list[list[str]] = []
        self.fail = fail

    def exec_run(self, cmd: list[str], demux: bool) -> tuple[int, tuple[bytes | None, bytes | None]]:
        self.commands.append(cmd)
        if self.fail:
            return 2, (None, b"RTNETLINK answers: Network is unreachable")
        return 0, (b"ok\n", None)


class FakeClient:
    def __init__(self, containers: list[FakeContainer]) -> None:
        self.by_name = {c.name: c for c in containers}
        outer = self

        class Containers:
            def list(self, filters: dict[str, str]) -> list[FakeContainer]:
                key, value = filters["label"].split("=")
                return [c for c in outer.by_name.values() if c.labels.get(key) == value]

            def get(self, name: str) -> FakeContainer:
                return outer.by_name[name]

        self.containers = Containers()


def fake_nodes(fail: str = "") -> tuple[NodeContainers, FakeClient]:
    client = FakeClient([FakeContainer("c1-worker2", "c1", "worker"), FakeContainer("c1-control-plane", "c1",
                         "control-plane"), FakeContainer("c1-worker", "c1", "worker", fail=fail == "c1-worker"),
                         FakeContainer("c2-control-plane", "c2", "control-plane")])
    return NodeContainers(client), client


def test_discovery_by_kind_labels_control_plane_first() -> None:
    nodes, _ = fake_nodes()
    assert [(n.short, n.role) for n in nodes.discover("c1")] == [
        ("control-plane", "control-plane"), ("worker", "worker"), ("worker2", "worker")]
    assert [n.name for n in nodes.discover("c1")] == [kind_node_name("c1", s) for s in ("control-plane", "worker",
                                                                                          "worker2")]
    with pytest.raises(ProviderError, match="no kind node container c1-worker9; known nodes of c1: control-plane, "
                                            "worker, worker2"):
        nodes.container_for("c1", "worker9")


def test_exec_is_bounded_and_routes_are_one_exec_per_node() -> None:
    nodes, client = fake_nodes()
    assert nodes.exec("c1-worker", ["ip", "route"], timeout=7) == (0, "ok\n", "")
    assert client.by_name["c1-worker"].commands[-1] == ["timeout", "7", "ip", "route"]
    changes = [RouteChange("c1", "worker", "10.20.0.0/24", "172.18.0.5", "x"),
               RouteChange("c1", "worker", "10.20.1.0/24", "172.18.0.6", "y")]
    nodes.apply_routes(changes)
    script = client.by_name["c1-worker"].commands[-1][-1]
    assert script == "ip route replace 10.20.0.0/24 via 172.18.0.5 && ip route replace 10.20.1.0/24 via 172.18.0.6"
    nodes.undo_routes(changes)
    undo = client.by_name["c1-worker"].commands[-1][-1]
    assert "ip route del 10.20.0.0/24 via 172.18.0.5 2>/dev/null || true" in undo


def test_a_failing_route_names_the_node() -> None:
    nodes, _ = fake_nodes(fail="c1-worker")
    with pytest.raises(ProviderError, match=r"routes on c1-worker failed \(exit 2\).*Network is unreachable"):
        nodes.apply_routes([RouteChange("c1", "worker", "10.20.0.0/24", "172.18.0.5", "x")])


def test_an_unreachable_daemon_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match=r"no docker daemon answers at unix://.*--provider lab"):
        NodeContainers.connect(f"unix://{tmp_path}/nothing.sock")


# --------------------------------------------------------------------------- a real docker daemon

DOCKERD = shutil.which("dockerd")
BUSYBOX = Path("/bin/busybox")
REAL = pytest.mark.skipif(
    DOCKERD is None or not BUSYBOX.exists() or os.geteuid() != 0,
    reason="needs root, dockerd and /bin/busybox: `apt-get install -y docker.io busybox-static` (.ci/setup does)")
IMAGE = "crossnet/node-shape:test"
SUBNET = ipaddress.ip_network("172.30.99.0/24")  # inside dockerd's own network namespace only


def _busybox_rootfs_tar(directory: Path) -> Path:
    rootfs = directory / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in ("sh", "ip", "sleep", "timeout", "cat", "ping", "true"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    tar_path = directory / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(rootfs, arcname=".")
    return tar_path


@pytest.fixture(scope="module")
def docker_daemon() -> Iterator[tuple[Any, dict[str, Any]]]:
    import docker

    base = Path(tempfile.mkdtemp(prefix="cn-dk-", dir="/tmp"))
    sock = base / "d.sock"
    log = (base / "dockerd.log").open("w")
    started = time.monotonic()
    proc = subprocess.Popen(
        ["unshare", "--net", "--fork", "--kill-child", "sh", "-c",
         f"ip link set lo up; exec dockerd --data-root {base}/data --exec-root {base}/exec -H unix://{sock} "
         f"--pidfile {base}/d.pid --bridge=none --iptables=false --ip6tables=false"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = None
    made: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = docker.DockerClient(base_url=f"unix://{sock}")
                client.ping()
                break
            except Exception:  # noqa: BLE001 - not up yet
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = (base / "dockerd.log").read_text()[-2000:]
                    raise AssertionError(f"dockerd did not come up:\n{tail}") from None
                time.sleep(0.2)
        made["daemon_start_s"] = time.monotonic() - started
        with _busybox_rootfs_tar(base).open("rb") as tar:
            client.api.import_image_from_data(tar.read(), repository=IMAGE.split(":")[0], tag=IMAGE.split(":")[1])
        network = client.networks.create(
            "crossnet-kind-test", internal=True,
            ipam=docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(SUBNET))]))
        made["network"] = network
        for cluster in ("c1", "c2"):
            for role, short in (("control-plane", "control-plane"), ("worker", "worker")):
                client.containers.run(IMAGE, ["sleep", "3600"], name=kind_node_name(cluster, short), detach=True,
                                      network=network.name, cap_add=["NET_ADMIN", "NET_RAW"],
                                      labels={KIND_CLUSTER_LABEL: cluster, KIND_ROLE_LABEL: role})
        yield client, made
    finally:
        if client is not None:
            for container in client.containers.list(all=True):
                container.remove(force=True)
            if "network" in made:
                made["network"].remove()
            with contextlib.suppress(Exception):  # removed with the data-root anyway
                client.images.remove(IMAGE, force=True)
        pid_file = base / "d.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(base, ignore_errors=True)
        assert not [p for p in Path("/proc").glob("[0-9]*/cmdline")
                    if str(sock) in p.read_bytes().decode(errors="replace")], "our dockerd is still running"


def _ip(client: Any, name: str) -> str:
    container = client.containers.get(name)
    return str(container.attrs["NetworkSettings"]["Networks"]["crossnet-kind-test"]["IPAddress"])


@REAL
def test_real_daemon_discovery_exec_and_timeout(docker_daemon: tuple[Any, dict[str, Any]]) -> None:
    client, made = docker_daemon
    nodes = NodeContainers(client)
    assert [n.short for n in nodes.discover("c2")] == ["control-plane", "worker"]
    assert nodes.exec("c1-worker", ["sh", "-c", "echo hi; exit 3"]) == (3, "hi\n", "")
    started = time.monotonic()
    assert nodes.exec("c1-worker", ["sleep", "30"], timeout=1)[0] in (124, 143)
    assert time.monotonic() - started < 15
    print(f"dockerd came up in {made['daemon_start_s']:.2f}s")


@REAL
def test_real_daemon_routes_are_injected_idempotently_and_undone(docker_daemon: tuple[Any, dict[str, Any]]) -> None:
    client, _ = docker_daemon
    nodes = NodeContainers(client)
    c2_worker_ip = _ip(client, "c2-worker")
    assert nodes.exec("c1-worker", ["ping", "-c1", "-W2", c2_worker_ip])[0] == 0  # a real network between them
    changes = [RouteChange("c1", short, "10.20.1.0/24", c2_worker_ip, "peer podCIDR")
               for short in ("control-plane", "worker")]
    nodes.apply_routes(changes)
    nodes.apply_routes(changes)  # `replace`: applying twice is fine
    for short in ("control-plane", "worker"):
        container = NodeContainer("c1", short, "", kind_node_name("c1", short), "")
        assert f"10.20.1.0/24 via {c2_worker_ip} dev eth0" in nodes.ip_routes(container)
    nodes.undo_routes(changes)
    nodes.undo_routes(changes)  # already gone: not an error
    assert not [r for r in nodes.ip_routes("c1-worker") if r.startswith("10.20.1.0/24")]
