"""Queries per second of the lab's DNS server (no root, no lab: two servers on 127.0.0.1, the
second reached through a Corefile forward of the first, as a peer cluster's DNS is).

    .venv/bin/python benchmarks/lab_dns_qps.py            # 3 s per kind of question
    .venv/bin/python benchmarks/lab_dns_qps.py --seconds 10 --in-flight 32

Kinds of question, as a by-name probe asks them: an own Service name (an answer from the records,
kept and sent again), a search-list miss (NXDOMAIN with the zone's SOA, kept too), and a peer's
name (forwarded every time). The client keeps `--in-flight` UDP queries outstanding from one
asyncio loop in this process; the server runs in a second process, so the figure is the server's
(the client's own CPU is on the other core). A benchmark prints figures; no test asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import dns.message
import dns.rcode

from crossnet.plumbing.corefile import plan_forward_patch
from crossnet.providers.lab.dns import LabDnsServer
from crossnet.providers.lab.stock import stock_corefile

QUESTIONS = {
    "own Service (kept answer)": ("echo.crossnet.svc.cluster-1.com", "NOERROR"),
    "search-list miss (NXDOMAIN)": ("echo.crossnet.svc.cluster-2.com.crossnet.svc.cluster-1.com", "NXDOMAIN"),
    "peer's name (forwarded)": ("echo.crossnet.svc.cluster-2.com", "NOERROR"),
}


def _records(prefix: str) -> dict[str, Any]:
    echo = {
        "name": "echo",
        "namespace": "crossnet",
        "type": "ClusterIP",
        "cluster_ip": f"{prefix}.0.100",
        "external_name": None,
        "ports": [["tcp", 8080], ["udp", 8080]],
        "endpoints": [],
    }
    return {"services": [echo], "pods": []}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _serve(directory: str, ports: dict[str, int], ready: Any) -> None:
    """Both servers in one child process (one core), until killed."""

    async def main() -> None:
        servers = []
        for name in ("cluster-1", "cluster-2"):
            base = Path(directory) / name
            server = LabDnsServer(base / "Corefile", base / "records.json", port=ports[name])
            await server.start()
            servers.append(server)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


def _write(directory: Path, ports: dict[str, int]) -> None:
    for name, prefix in (("cluster-1", "10.40"), ("cluster-2", "10.50")):
        base = directory / name
        base.mkdir()
        corefile = stock_corefile(f"{name}.com")
        if name == "cluster-1":
            corefile = plan_forward_patch(
                corefile, "bench", {"cluster-2.com": [f"127.0.0.1:{ports['cluster-2']}"]}
            ).patched
        (base / "Corefile").write_text(corefile)
        (base / "records.json").write_text(json.dumps(_records(prefix)))


async def _flood(port: int, qname: str, rcode: str, seconds: float, in_flight: int) -> tuple[int, int]:
    """(answers, wrong answers) in `seconds`, `in_flight` queries outstanding."""
    loop = asyncio.get_running_loop()
    answered, wrong = 0, 0
    deadline = loop.time() + seconds

    async def client() -> None:
        nonlocal answered, wrong
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(("127.0.0.1", port))
        wire = dns.message.make_query(qname, "A").to_wire()[2:]  # built once: the client must stay cheap
        want = int(dns.rcode.from_text(rcode))
        try:
            while loop.time() < deadline:
                ident = (answered * in_flight + id(sock)) & 0xFFFF
                await loop.sock_sendall(sock, ident.to_bytes(2, "big") + wire)
                async with asyncio.timeout(2.0):
                    reply = await loop.sock_recv(sock, 4096)
                answered += 1
                wrong += reply[:2] != ident.to_bytes(2, "big") or reply[3] & 0x0F != want
        finally:
            sock.close()

    await asyncio.gather(*(client() for _ in range(in_flight)))
    return answered, wrong


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--in-flight", type=int, default=16)
    args = parser.parse_args()
    ports = {"cluster-1": _free_port(), "cluster-2": _free_port()}
    with tempfile.TemporaryDirectory(prefix="crossnet-dns-qps-") as tmp:
        _write(Path(tmp), ports)
        ready = multiprocessing.Event()
        child = multiprocessing.Process(target=_serve, args=(tmp, ports, ready), daemon=True)
        child.start()
        try:
            if not ready.wait(10):
                print("the lab DNS servers did not start", file=sys.stderr)
                return 1
            time.sleep(0.2)  # the first reload check
            print(f"lab DNS, UDP, {args.in_flight} queries in flight, {args.seconds:g} s each")
            for label, (qname, rcode) in QUESTIONS.items():
                answered, wrong = asyncio.run(_flood(ports["cluster-1"], qname, rcode, args.seconds, args.in_flight))
                print(
                    f"{label:30s} {answered / args.seconds:8.0f} queries/s" + (f"  ({wrong} wrong!)" if wrong else "")
                )
        finally:
            child.kill()
            child.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
