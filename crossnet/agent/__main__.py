"""`crossnet-agent serve|probe`: the agent's command line (also `python -m crossnet.agent`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import signal
import sys
from typing import Any

from crossnet.agent.core import PROBE_PROTOCOLS, EchoServers, run_probe, run_probes

MAX_REQUEST = 4 * 1024 * 1024


async def _http_reply(writer: asyncio.StreamWriter, status: str, payload: Any) -> None:
    body = json.dumps(payload).encode()
    writer.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + body)
    await writer.drain()
    writer.close()


def _control_handler(agent_id: str) -> Any:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = (await reader.readline()).decode(errors="replace").split()
            length = 0
            while True:
                header = await reader.readline()
                if header in (b"\r\n", b"\n", b""):
                    break
                name, _, value = header.decode(errors="replace").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if length > MAX_REQUEST:
                await _http_reply(writer, "413 Payload Too Large", {"error": "request too large"})
                return
            body = await reader.readexactly(length) if length else b""
            if len(request_line) < 2:
                await _http_reply(writer, "400 Bad Request", {"error": "no request line"})
            elif request_line[0] == "GET" and request_line[1] == "/healthz":
                await _http_reply(writer, "200 OK", {"agent": agent_id, "pid": os.getpid()})
            elif request_line[0] == "POST" and request_line[1] == "/probe":
                probes = json.loads(body or b"{}").get("probes", [])
                await _http_reply(writer, "200 OK", {"agent": agent_id, "results": await run_probes(probes)})
            else:
                await _http_reply(writer, "404 Not Found", {"error": f"no route {' '.join(request_line[:2])}"})
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            with contextlib.suppress(OSError):
                await _http_reply(writer, "400 Bad Request", {"error": str(exc)})

    return handle


async def _serve(args: argparse.Namespace) -> None:
    echo = EchoServers(args.id, args.listen, args.port)
    await echo.start()
    handler = _control_handler(args.id)
    servers = []
    if args.control_socket:
        temporary = f"{args.control_socket}.tmp"
        servers.append(await asyncio.start_unix_server(handler, path=temporary))
        os.rename(temporary, args.control_socket)  # readiness: appears under its name only when serving
    if args.control_port:
        servers.append(await asyncio.start_server(handler, args.listen, args.control_port, reuse_address=True))
    stop = asyncio.get_running_loop().create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, request_stop)
    await stop
    echo.close()
    for server in servers:
        server.close()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crossnet-agent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the TCP/UDP echo and the control API")
    serve.add_argument("--id", required=True, help="agent id, e.g. cluster-1/worker/agent")
    serve.add_argument("--listen", default="0.0.0.0", help="address of the echo services (default: all)")
    serve.add_argument("--port", type=int, default=8080, help="TCP and UDP echo port (default 8080)")
    serve.add_argument("--control-socket", help="unix socket path for the control API (lab)")
    serve.add_argument("--control-port", type=int, default=0, help="TCP port for the control API (kind)")
    probe = sub.add_parser("probe", help="run one probe from here and print what it saw (repro commands)")
    probe.add_argument("protocol", choices=PROBE_PROTOCOLS)
    probe.add_argument("dst", help="IP address, or a DNS name (dns-udp/dns-tcp; or tcp/udp to resolve then connect)")
    probe.add_argument("port", nargs="?", type=int, default=8080)
    probe.add_argument("--server", help="DNS server IP (dns probes, and tcp/udp to a name)")
    probe.add_argument("--dns-port", type=int, default=53, help="DNS server port (default 53)")
    probe.add_argument("--search", action="append", default=[], help="DNS search domain (repeatable)")
    probe.add_argument("--timeout", type=float, default=2.0)
    probe.add_argument("--payload", type=int, default=0,
                       help="payload bytes (tcp/udp echo), or EDNS padding bytes (dns probes)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        asyncio.run(_serve(args))
        return 0
    spec: dict[str, Any] = {"id": "cli", "protocol": args.protocol, "timeout": args.timeout, "payload": args.payload}
    by_name = args.protocol.startswith("dns") or not _is_ip(args.dst)
    if by_name:
        if not args.server:
            parser.error("a name needs --server IP (the cluster DNS service IP)")
        spec.update(qname=args.dst, server=args.server, search=args.search, dns_port=args.dns_port)
    if not args.protocol.startswith("dns"):
        spec.update(port=args.port, **({} if by_name else {"dst": args.dst}))
    result = asyncio.run(run_probe(spec))
    print(json.dumps(result, indent=1))
    return 0 if result["reached"] else 1


if __name__ == "__main__":
    sys.exit(main())
