"""The agent's control API: HTTP/1.1 + JSON, one request per connection, on a unix socket (lab)
and/or a TCP port (kind, reached through the API server's pod proxy).

    GET  /healthz                       -> 200 {"agent": ID, "pid": PID}
    POST /probe  {"probes": [spec...]}  -> 200 {"agent": ID, "results": [result...]} (in order)

Who may ask (the agent runs as root):
  * unix socket: the file is created 0600 whatever the umask, and the peer's credentials
    (SO_PEERCRED) must name uid 0, the agent's own euid, or the owner of the socket's directory;
    anyone else gets 403 and the connection is closed before the request is read.
  * `--token-file FILE`: every request must carry `X-Crossnet-Token: <the file's content,
    stripped>` (compared in constant time); missing or wrong -> 401. This applies to both listeners.
  * the TCP control port without a token file authenticates nothing: whoever reaches the port
    (on kind: whoever may use the API server's `pods/proxy` in the run's namespace) can make the
    agent probe. The agent says so on stderr at start; pass `--token-file` wherever you can.

What a request may ask is bounded (see validate.py and the constants below): the header section,
the body (Content-Length only: chunked bodies get 411), the number of probes, each probe's timeout
and payload, and how many of one request's probes run at once (core.MAX_CONCURRENT).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import os
import re
import socket
import struct
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from crossnet.agent.core import run_probes
from crossnet.agent.validate import BadRequest, TooLarge, validate_batch

__all__ = ["MAX_BODY", "MAX_HEADERS", "MAX_LINE", "TOKEN_HEADER", "allowed_uids", "control_handler", "read_token"]

TOKEN_HEADER = "X-Crossnet-Token"
MAX_BODY = 1 << 20  # bytes of a request body (2000 probe specs take about 400 KiB)
MAX_HEADERS = 64  # header fields of one request
MAX_LINE = 8192  # bytes of the request line or of one header line; also the stream reader's limit
HEAD_TIMEOUT = 10.0  # seconds to send the request line and headers
BODY_TIMEOUT = 30.0  # seconds to send the body
LINGER_BYTES = 1 << 18  # after answering, discard at most this much of what the client still sends...
LINGER_SECONDS = 1.0  # ...for at most this long, so that closing does not reset the answer away
ROUTES = {"/healthz": "GET", "/probe": "POST"}
TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: a method or a header name
PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class _Closed(Exception):
    """The client went away before sending a request: nothing to answer."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, list[str]]  # lower-case name -> every value it was given


def read_token(path: str) -> bytes:
    """The shared secret of `--token-file`: the file's content without surrounding whitespace."""
    with open(path, "rb") as handle:
        token = handle.read(4096).strip()
    if not token:
        raise ValueError(f"{path}: the token file is empty")
    if any(b < 0x21 or b > 0x7E for b in token):
        raise ValueError(f"{path}: the token must be printable ASCII without spaces (it travels in a header)")
    return token


def allowed_uids(socket_path: str) -> frozenset[int]:
    """Who may use the unix control socket: root, this process's euid, the owner of its directory."""
    directory = os.path.dirname(os.path.abspath(socket_path))
    return frozenset({0, os.geteuid(), os.stat(directory).st_uid})


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    _pid, uid, _gid = PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
    return int(uid)


async def _line(reader: asyncio.StreamReader, too_long: HTTPStatus, first: bool) -> str:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpError(too_long, f"a line of the request head is longer than {MAX_LINE} bytes") from None
    except asyncio.IncompleteReadError as exc:
        if first and not exc.partial:
            raise _Closed from None
        raise HttpError(HTTPStatus.BAD_REQUEST, "the request ended inside its head") from None
    if len(raw) > MAX_LINE:
        raise HttpError(too_long, f"a line of the request head is longer than {MAX_LINE} bytes")
    return raw.rstrip(b"\r\n").decode("latin-1")


async def _read_head(reader: asyncio.StreamReader) -> Request:
    parts = (await _line(reader, HTTPStatus.REQUEST_URI_TOO_LONG, first=True)).split(" ")
    if len(parts) != 3 or not TOKEN.fullmatch(parts[0]) or not parts[2].startswith("HTTP/1."):
        raise HttpError(HTTPStatus.BAD_REQUEST, "not an HTTP/1.x request line")
    method, target, _version = parts
    headers: dict[str, list[str]] = {}
    count = 0
    while line := await _line(reader, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, first=False):
        count += 1
        if count > MAX_HEADERS:
            raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"more than {MAX_HEADERS} header fields")
        name, colon, value = line.partition(":")
        if not colon or not TOKEN.fullmatch(name):
            raise HttpError(HTTPStatus.BAD_REQUEST, f"malformed header field #{count}")
        headers.setdefault(name.lower(), []).append(value.strip(" \t"))
    return Request(method, target.split("?", 1)[0], headers)


def _authorized(request: Request, token: bytes | None) -> bool:
    if token is None:
        return True
    given = request.headers.get(TOKEN_HEADER.lower(), [])
    return len(given) == 1 and hmac.compare_digest(given[0].encode("latin-1"), token)


def _content_length(request: Request) -> int | None:
    encodings = request.headers.get("transfer-encoding")
    if encodings:
        if any("chunked" in value.lower() for value in encodings):
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "chunked bodies are not accepted: send a Content-Length")
        raise HttpError(HTTPStatus.NOT_IMPLEMENTED, "no Transfer-Encoding is supported: send a Content-Length")
    lengths = request.headers.get("content-length")
    if not lengths:
        return None
    if len(set(lengths)) != 1 or not re.fullmatch(r"[0-9]+", lengths[0]):
        raise HttpError(HTTPStatus.BAD_REQUEST, "Content-Length must be one decimal number")
    if len(lengths[0]) > 18:
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body may have at most {MAX_BODY} bytes")
    return int(lengths[0])


async def _answer(request: Request, reader: asyncio.StreamReader, agent_id: str) -> tuple[HTTPStatus, Any]:
    length = _content_length(request)
    allowed = ROUTES.get(request.path)
    if allowed is None:
        raise HttpError(HTTPStatus.NOT_FOUND, f"no route {request.path[:100]!r}: {', '.join(ROUTES)}")
    if request.method != allowed:
        raise HttpError(HTTPStatus.METHOD_NOT_ALLOWED, f"{request.path} takes {allowed}", {"Allow": allowed})
    if request.method == "GET":
        return HTTPStatus.OK, {"agent": agent_id, "pid": os.getpid()}
    if length is None:
        raise HttpError(HTTPStatus.LENGTH_REQUIRED, "POST needs a Content-Length")
    if length > MAX_BODY:
        raise HttpError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"a body of {length} bytes: at most {MAX_BODY} are accepted"
        )
    try:
        body = await asyncio.wait_for(reader.readexactly(length), BODY_TIMEOUT)
    except TimeoutError:
        raise HttpError(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {BODY_TIMEOUT:g}s") from None
    except asyncio.IncompleteReadError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "the body is shorter than its Content-Length") from None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise HttpError(HTTPStatus.BAD_REQUEST, f"the body is not JSON: {exc.__class__.__name__}") from None
    try:
        probes = validate_batch(parsed)
    except TooLarge as exc:
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(exc)) from None
    except BadRequest as exc:
        raise HttpError(HTTPStatus.BAD_REQUEST, str(exc)) from None
    return HTTPStatus.OK, {"agent": agent_id, "results": await run_probes(probes)}


async def _reply(
    writer: asyncio.StreamWriter, status: HTTPStatus, payload: Any, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(payload).encode()
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    writer.write(
        f"HTTP/1.1 {status.value} {status.phrase}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra}\r\n".encode()
        + body
    )
    await writer.drain()


async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then drop (a bounded amount of) whatever the client still sends: closing with
    unread data makes TCP send a reset, which can destroy the answer before the client reads it."""
    with contextlib.suppress(OSError, RuntimeError, TimeoutError, asyncio.IncompleteReadError):
        if writer.can_write_eof():
            writer.write_eof()

        async def discard() -> None:
            left = LINGER_BYTES
            while left > 0 and (chunk := await reader.read(min(left, 65536))):
                left -= len(chunk)

        await asyncio.wait_for(discard(), LINGER_SECONDS)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def control_handler(agent_id: str, token: bytes | None = None, uids: frozenset[int] | None = None) -> Handler:
    """The connection handler of one listener. `uids`: who may connect over a unix socket (None: no
    check, for TCP); `token`: the secret every request must carry in X-Crossnet-Token (None: none)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = _peer_uid(writer) if uids is not None else None
            if uids is not None and uid not in uids:
                print(f"crossnet-agent: refused a control connection from uid {uid}", file=sys.stderr, flush=True)
                raise HttpError(HTTPStatus.FORBIDDEN, f"uid {uid} may not use this agent")
            try:
                request = await asyncio.wait_for(_read_head(reader), HEAD_TIMEOUT)
            except TimeoutError:
                raise HttpError(
                    HTTPStatus.REQUEST_TIMEOUT, f"the request head did not arrive within {HEAD_TIMEOUT:g}s"
                ) from None
            if not _authorized(request, token):
                raise HttpError(
                    HTTPStatus.UNAUTHORIZED,
                    f"a missing or wrong {TOKEN_HEADER} header",
                    {"WWW-Authenticate": f'{TOKEN_HEADER} realm="crossnet-agent"'},
                )
            status, payload = await _answer(request, reader, agent_id)
            await _reply(writer, status, payload)
        except HttpError as exc:
            with contextlib.suppress(OSError):
                await _reply(writer, exc.status, {"error": exc.message}, exc.headers)
        except (_Closed, OSError):
            pass
        except Exception as exc:  # noqa: BLE001 - a bug answers 500 and leaves the agent serving
            traceback.print_exc()
            with contextlib.suppress(OSError):
                await _reply(
                    writer, HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"agent bug: {exc.__class__.__name__}"}
                )
        finally:
            await _close(reader, writer)

    return handle
