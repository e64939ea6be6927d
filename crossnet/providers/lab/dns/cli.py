"""The command line: `python -m crossnet.providers.lab.dns` (and the lab zygote's `main(argv)`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from crossnet.providers.lab.dns.plugins import IMPLEMENTED_PLUGINS, NO_OP_PLUGINS
from crossnet.providers.lab.dns.plugins.forward import FORWARD_TIMEOUT
from crossnet.providers.lab.dns.query import log
from crossnet.providers.lab.dns.records import RECORDS_FORMAT, LabDnsConfigError
from crossnet.providers.lab.dns.server import LabDnsServer

__all__ = ["main"]

_EPILOG = f"""\
{RECORDS_FORMAT}
plugins: {" ".join(IMPLEMENTED_PLUGINS)}
  (+ no-ops: {" ".join(sorted(NO_OP_PLUGINS))}); any other plugin is an error.
  forward never reads /etc/resolv.conf.

exit status: 0 after SIGTERM/SIGINT, 1 if the address cannot be bound, 2 if the Corefile or
the records file cannot be served (the message names the file, the line and the fix).
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until SIGTERM or SIGINT; returns the exit status (see --help)."""
    args = _arguments(argv)
    try:
        server = LabDnsServer(args.corefile, args.records, args.listen, args.port, args.forward_timeout)
    except LabDnsConfigError as err:
        log(f"crossnet lab dns: {err}")
        return 2
    return asyncio.run(_serve_until_signalled(server, args.ready))


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m crossnet.providers.lab.dns",
        description="The crossnet lab's cluster DNS server: serves a Corefile (the subset of CoreDNS "
        "kind clusters use) over UDP and TCP, answering the kubernetes plugin from a records file.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--corefile", required=True, type=Path, metavar="PATH", help="the Corefile to serve")
    parser.add_argument(
        "--records",
        required=True,
        type=Path,
        metavar="PATH",
        help="the records JSON the kubernetes plugin answers from",
    )
    parser.add_argument(
        "--ready",
        type=Path,
        metavar="PATH",
        help="create this file (atomically, JSON with pid/listen/port) once listening; removed on exit",
    )
    parser.add_argument("--listen", default="0.0.0.0", metavar="ADDR", help="address to bind (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, metavar="N", help="port to bind instead of the Corefile's (0: any free port)"
    )
    parser.add_argument(
        "--forward-timeout",
        type=float,
        default=FORWARD_TIMEOUT,
        metavar="SECONDS",
        help="per-upstream forward timeout (default: %(default)s)",
    )
    return parser.parse_args(argv)


async def _serve_until_signalled(server: LabDnsServer, ready: Path | None) -> int:
    try:
        port = await server.start()
    except OSError as err:
        log(
            f"crossnet lab dns: cannot listen on {server.listen} port {server.configured_port}: "
            f"{err.strerror or err}; check that --listen is an address of this host and that the port is "
            "free, or pass --port"
        )
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if ready is not None:
        _write_ready_file(ready, server.listen, port)
    log(f"[INFO] crossnet lab dns: serving {server.corefile_path} on {server.listen}:{port} (udp, tcp)")
    try:
        await stop.wait()
    finally:
        await server.stop()
        if ready is not None:
            ready.unlink(missing_ok=True)
    return 0


def _write_ready_file(path: Path, listen: str, port: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps({"pid": os.getpid(), "listen": listen, "port": port}) + "\n", encoding="utf-8")
    os.rename(temporary, path)
