"""`crossnet-agent serve|probe`: the agent's command line (also `python -m crossnet.agent`)."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import sys
from typing import Any

from crossnet.agent.control import MAX_LINE, TOKEN_HEADER, Handler, allowed_uids, control_handler, read_token
from crossnet.agent.core import AGENT_ID, PROBE_PROTOCOLS, run_probe
from crossnet.agent.echo import EchoServers
from crossnet.agent.validate import QTYPES, BadRequest, validate_probe


async def _start_unix(handler: Handler, path: str) -> asyncio.Server:
    """Serve on `path`, a socket only its owner may open (0600 whatever the umask). It is bound
    under a temporary name and renamed: it appears under its name only when serving (readiness)."""
    temporary = f"{path}.tmp"
    umask = os.umask(0o077)
    try:
        server = await asyncio.start_unix_server(handler, path=temporary, limit=MAX_LINE)
    finally:
        os.umask(umask)
    os.chmod(temporary, 0o600)
    os.rename(temporary, path)
    return server


async def _serve(args: argparse.Namespace, token: bytes | None) -> None:
    echo = EchoServers(args.id, args.listen, args.port)
    await echo.start()
    servers = []
    if args.control_socket:
        handler = control_handler(args.id, token, allowed_uids(args.control_socket))
        servers.append(await _start_unix(handler, args.control_socket))
    if args.control_port:
        if token is None:
            print(
                f"crossnet-agent: the control port {args.control_port} authenticates nobody (no --token-file): "
                "whoever reaches it can make this agent probe",
                file=sys.stderr,
                flush=True,
            )
        servers.append(
            await asyncio.start_server(
                control_handler(args.id, token), args.listen, args.control_port, reuse_address=True, limit=MAX_LINE
            )
        )
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
    serve.add_argument(
        "--control-port",
        type=int,
        default=0,
        help="TCP port for the control API (kind); without --token-file it authenticates nobody",
    )
    serve.add_argument(
        "--token-file",
        metavar="FILE",
        help=f"a shared secret (the file's content, stripped): every control request must carry it "
        f"in the {TOKEN_HEADER} header, else 401",
    )
    probe = sub.add_parser("probe", help="run one probe from here and print what it saw (repro commands)")
    probe.add_argument("protocol", choices=PROBE_PROTOCOLS)
    probe.add_argument("dst", help="IP address, or a DNS name (dns-udp/dns-tcp; or tcp/udp to resolve then connect)")
    probe.add_argument("port", nargs="?", type=int, default=8080)
    probe.add_argument("--server", help="DNS server IP (dns probes, and tcp/udp to a name)")
    probe.add_argument("--dns-port", type=int, default=53, help="DNS server port (default 53)")
    probe.add_argument("--search", action="append", default=[], help="DNS search domain (repeatable)")
    probe.add_argument(
        "--qtype", type=str.upper, choices=QTYPES, default="A", help="record type of a dns probe (default A)"
    )
    probe.add_argument("--timeout", type=float, default=2.0)
    probe.add_argument(
        "--payload", type=int, default=0, help="payload bytes (tcp/udp echo), or EDNS padding bytes (dns probes)"
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        if not AGENT_ID.fullmatch(args.id):
            parser.error(f"--id {args.id!r}: an agent id is up to 8 '/'-separated parts of letters, digits, '.-_'")
        if not 0 <= args.control_port <= 65535:
            parser.error(f"--control-port {args.control_port}: not a port")
        token = None
        if args.token_file:
            try:
                token = read_token(args.token_file)
            except (OSError, ValueError) as exc:
                parser.error(f"--token-file: {exc}")
        asyncio.run(_serve(args, token))
        return 0
    spec: dict[str, Any] = {"id": "cli", "protocol": args.protocol, "timeout": args.timeout, "payload": args.payload}
    by_name = args.protocol.startswith("dns") or not _is_ip(args.dst)
    if by_name:
        if not args.server:
            parser.error("a name needs --server IP (the cluster DNS service IP)")
        spec.update(qname=args.dst, server=args.server, search=args.search, dns_port=args.dns_port)
    if args.protocol.startswith("dns"):
        spec["qtype"] = args.qtype
    else:
        if args.qtype != "A":
            parser.error(f"--qtype {args.qtype}: only dns-udp and dns-tcp probes ask other record types")
        spec.update(port=args.port, **({} if by_name else {"dst": args.dst}))
    try:
        spec = validate_probe(spec)
    except BadRequest as exc:
        parser.error(str(exc))
    result = asyncio.run(run_probe(spec))
    print(json.dumps(result, indent=1))
    return 0 if result["reached"] else 1


if __name__ == "__main__":
    sys.exit(main())
