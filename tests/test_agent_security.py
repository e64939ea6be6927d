"""The agent runs as root: its control API says who may ask, bounds what may be asked, and tells
nothing about peers that are not crossnet's own echo (issue "Safe to run as root").

Each test starts a real agent (`python -m crossnet.agent serve`) on a unix socket in a temporary
directory and on 127.0.0.1 ports, and talks raw HTTP to it, so malformed requests reach it as sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

AGENT_ID = "test-cluster/node-1/agent"
TOKEN = "s3cret-T0ken_for-tests"
MiB = 1 << 20

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switches uid in a forked child: needs root")


def _free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (the echo serves both on one port)."""
    for _ in range(50):
        with socket.socket() as tcp, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@dataclass
class Agent:
    process: subprocess.Popen[bytes]
    socket_path: str
    control_port: int
    echo_port: int
    log: Path

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    text: str
    body: Any = field(default=None)


AgentFactory = Callable[..., Agent]


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[AgentFactory]:
    started: list[Agent] = []

    def start(*extra: str, directory: str | None = None, umask: int = 0o022, token: str | None = None) -> Agent:
        directory = directory or str(tmp_path)
        path = os.path.join(directory, f"a{len(started)}.sock")
        control, echo = _free_port(), _free_port()
        argv = [sys.executable, "-m", "crossnet.agent", "serve", "--id", AGENT_ID, "--listen", "127.0.0.1",
                "--port", str(echo), "--control-socket", path, "--control-port", str(control), *extra]
        if token is not None:
            token_file = tmp_path / f"token{len(started)}"
            token_file.write_text(token + "\n")
            argv += ["--token-file", str(token_file)]
        log = tmp_path / f"agent{len(started)}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, umask=umask)
        agent = Agent(process, path, control, echo, log)
        started.append(agent)
        deadline = time.monotonic() + 15
        while not os.path.exists(path) or not _accepts(control):
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the agent did not start: {log.read_text()}")
            time.sleep(0.02)
        return agent

    yield start
    for agent in started:
        agent.process.terminate()
        try:
            agent.process.wait(10)
        except subprocess.TimeoutExpired:
            agent.process.kill()
            agent.process.wait()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _connect(where: str | int, timeout: float) -> socket.socket:
    if isinstance(where, int):
        return socket.create_connection(("127.0.0.1", where), timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(where)
    return sock


def _parse(data: bytes) -> Response:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    text = rest.decode(errors="replace")
    try:
        body = json.loads(rest)
    except ValueError:
        body = None
    return Response(int(lines[0].split()[1]), headers, text, body)


def exchange(where: str | int, raw: bytes, timeout: float = 10.0) -> Response:
    """Send `raw` as it is, read until the agent closes."""
    with _connect(where, timeout) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return _parse(data)


def request(where: str | int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 10.0) -> Response:
    head = f"{method} {path} HTTP/1.1\r\nHost: agent\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return exchange(where, head.encode() + b"\r\n" + (body or b""), timeout)


def probe(where: str | int, probes: list[dict[str, Any]], headers: dict[str, str] | None = None,
          timeout: float = 20.0) -> Response:
    return request(where, "POST", "/probe", json.dumps({"probes": probes}).encode(), headers, timeout)


def _as_uid(uid: int, path: str) -> bytes:
    """GET /healthz on the unix socket `path` from a forked child running as `uid`: the raw answer,
    or b"ERR <exception>"."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        status = 0
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                with _connect(path, 5.0) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n")
                    data = b""
                    while chunk := sock.recv(65536):
                        data += chunk
            except OSError as exc:
                data = f"ERR {exc}".encode()
            os.write(write, data)
        except BaseException:  # noqa: BLE001 - never return into pytest from the child
            status = 1
        finally:
            os._exit(status)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert status == 0, "the child failed"
    return data


# --------------------------------------------------------------------------- who may ask


def test_the_control_socket_is_0600_whatever_the_umask(start_agent: AgentFactory) -> None:
    agent = start_agent(umask=0)
    mode = os.stat(agent.socket_path).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600, oct(stat.S_IMODE(mode))
    assert not os.path.exists(agent.socket_path + ".tmp")
    assert request(agent.socket_path, "GET", "/healthz").status == 200  # its owner (root here) still gets in


@needs_root
def test_a_peer_with_another_uid_is_refused_on_the_unix_socket(start_agent: AgentFactory) -> None:
    """SO_PEERCRED: root, the agent's euid and the owner of the socket's directory get in; anyone else
    gets 403 even where the file mode would let them connect."""
    directory = tempfile.mkdtemp(prefix="crossnet-agent-")
    try:
        os.chmod(directory, 0o755)
        os.chown(directory, 65534, 65534)  # the directory's owner: an allowed uid that is not root
        agent = start_agent(directory=directory)
        os.chmod(agent.socket_path, 0o666)  # take the file mode out of the way: the credentials decide
        refused = _parse(_as_uid(65533, agent.socket_path))
        assert refused.status == 403, refused
        assert "65533" in refused.body["error"] and AGENT_ID not in refused.text
        owner = _parse(_as_uid(65534, agent.socket_path))
        assert owner.status == 200 and owner.body["agent"] == AGENT_ID
        assert request(agent.socket_path, "GET", "/healthz").status == 200  # root
        assert "refused a control connection from uid 65533" in agent.log.read_text()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@needs_root
def test_the_0600_socket_keeps_other_uids_out(start_agent: AgentFactory) -> None:
    directory = tempfile.mkdtemp(prefix="crossnet-agent-")
    try:
        os.chmod(directory, 0o755)
        agent = start_agent(directory=directory, umask=0)
        answer = _as_uid(65534, agent.socket_path)
        assert answer.startswith(b"ERR") and b"Permission denied" in answer, answer
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_the_token_is_required_on_both_listeners(start_agent: AgentFactory) -> None:
    agent = start_agent(token=TOKEN)
    echo = {"id": "own", "protocol": "tcp", "dst": "127.0.0.1", "port": agent.echo_port}
    for where in (agent.socket_path, agent.control_port):
        for headers in ({}, {"X-Crossnet-Token": "wrong"}, {"X-Crossnet-Token": TOKEN + "x"},
                        {"X-Crossnet-Token": TOKEN[:-1]}, {"Authorization": f"Bearer {TOKEN}"}):
            missing = request(where, "GET", "/healthz", headers=headers)
            assert missing.status == 401, (where, headers, missing)
            assert "X-Crossnet-Token" in missing.body["error"] and TOKEN not in missing.text
            assert probe(where, [echo], headers).status == 401
        twice = exchange(where, f"GET /healthz HTTP/1.1\r\nX-Crossnet-Token: {TOKEN}\r\nx-crossnet-token: a\r\n\r\n"
                         .encode())
        assert twice.status == 401
        right = {"X-Crossnet-Token": TOKEN}
        assert request(where, "GET", "/healthz", headers=right).body["agent"] == AGENT_ID
        result = probe(where, [echo], right)
        assert result.status == 200 and result.body["results"][0]["reached"] is True


def test_the_tcp_control_port_without_a_token_serves_and_says_so(start_agent: AgentFactory) -> None:
    agent = start_agent()
    assert request(agent.control_port, "GET", "/healthz").body["agent"] == AGENT_ID
    assert f"the control port {agent.control_port} authenticates nobody" in agent.log.read_text()


# --------------------------------------------------------------------------- what may be asked


def test_a_body_over_the_limit_is_refused_before_it_is_read(start_agent: AgentFactory) -> None:
    agent = start_agent()
    # 2 MiB: over the 1 MiB limit; the agent answers at once, without waiting for a body that never comes.
    started = time.monotonic()
    over = exchange(agent.control_port, f"POST /probe HTTP/1.1\r\nContent-Length: {2 * MiB}\r\n\r\n".encode(),
                    timeout=5.0)
    assert over.status == 413 and time.monotonic() - started < 3, over
    # 400 MB announced, 48 MiB really sent: the agent answers 413 and does not buffer what follows.
    before = agent.rss_kib()
    with _connect(agent.control_port, 10.0) as sock:
        sock.sendall(b"POST /probe HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 400000000\r\n\r\n")
        answer = _parse(sock.recv(65536))
        assert answer.status == 413 and "1048576" in answer.body["error"]
        with contextlib.suppress(OSError):
            for _ in range(48):
                sock.sendall(b"x" * MiB)
    time.sleep(0.2)
    assert agent.rss_kib() - before < 8 * 1024, (before, agent.rss_kib())
    assert request(agent.control_port, "GET", "/healthz").status == 200
    huge = exchange(agent.socket_path, b"POST /probe HTTP/1.1\r\nContent-Length: " + b"9" * 40 + b"\r\n\r\n")
    assert huge.status == 413


def test_chunked_and_other_transfer_encodings_are_refused(start_agent: AgentFactory) -> None:
    agent = start_agent()
    body = json.dumps({"probes": [{"id": "x", "protocol": "icmp", "dst": "127.0.0.1"}]}).encode()
    chunked = (b"POST /probe HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
    refused = exchange(agent.control_port, chunked)
    assert refused.status == 411 and "chunked" in refused.body["error"], refused
    assert "results" not in refused.body
    gzip = exchange(agent.socket_path,
                    b"POST /probe HTTP/1.1\r\nTransfer-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}")
    assert gzip.status == 501


def test_methods_paths_and_missing_lengths_get_their_status(start_agent: AgentFactory) -> None:
    agent = start_agent()
    where = agent.socket_path
    for method in ("PUT", "DELETE", "PATCH", "GET"):
        answer = request(where, method, "/probe", b"{}" if method != "GET" else None)
        assert answer.status == 405 and answer.headers["allow"] == "POST", (method, answer)
        assert "results" not in answer.body
    assert request(where, "POST", "/healthz", b"{}").headers["allow"] == "GET"
    assert request(where, "DELETE", "/healthz").status == 405
    assert request(where, "GET", "/nothing-here").status == 404
    assert request(where, "POST", "/probe/../probe", b"{}").status == 404
    no_length = exchange(where, b"POST /probe HTTP/1.1\r\nHost: agent\r\n\r\n")
    assert no_length.status == 411 and "results" not in no_length.body
    assert exchange(where, b"POST /probe HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}").status == 400
    assert exchange(where, b"POST /probe HTTP/1.1\r\nContent-Length: -2\r\n\r\n{}").status == 400
    assert exchange(where, b"hello\r\n\r\n").status == 400


def test_the_header_section_is_bounded(start_agent: AgentFactory) -> None:
    agent = start_agent()
    many = "".join(f"X-H{i}: v\r\n" for i in range(65))
    assert exchange(agent.control_port, f"GET /healthz HTTP/1.1\r\n{many}\r\n".encode()).status == 431
    sixty_four = "".join(f"X-H{i}: v\r\n" for i in range(63))
    assert exchange(agent.control_port, f"GET /healthz HTTP/1.1\r\nHost: a\r\n{sixty_four}\r\n".encode()).status == 200
    long_line = f"GET /healthz HTTP/1.1\r\nX-Long: {'a' * 9000}\r\n\r\n".encode()
    assert exchange(agent.control_port, long_line).status == 431
    assert exchange(agent.socket_path, f"GET /{'a' * 9000} HTTP/1.1\r\n\r\n".encode()).status == 414
    assert exchange(agent.socket_path, b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n").status == 400


def test_bodies_that_are_not_a_batch_get_400(start_agent: AgentFactory) -> None:
    agent = start_agent()
    for body in (b"{not json", b"\xff\xfe", b"[1, 2]", b'"probes"', b'{"probes": "tcp"}', b'{"probes": [1]}',
                 b'{"nothing": []}', b"[" * 100000 + b"]" * 100000):
        answer = exchange(agent.socket_path, b"POST /probe HTTP/1.1\r\nContent-Length: "
                          + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert answer.status == 400 and "results" not in answer.body, (body[:20], answer)
    assert probe(agent.socket_path, []).body == {"agent": AGENT_ID, "results": []}


def test_too_many_probes_in_one_request_run_none(start_agent: AgentFactory) -> None:
    agent = start_agent()
    batch = [{"id": i, "protocol": "tcp", "dst": "127.0.0.1", "port": agent.echo_port} for i in range(2001)]
    started = time.monotonic()
    answer = probe(agent.socket_path, batch)
    assert answer.status == 413 and "2001" in answer.body["error"] and "2000" in answer.body["error"], answer
    assert time.monotonic() - started < 2
    assert probe(agent.socket_path, batch[:2000], timeout=60).status == 200


@pytest.mark.parametrize("timeout", ["NaN", "Infinity", "-Infinity", "0", "0.0", "-1", "30.5", "1e309", '"2"',
                                     "true", "[]"])
def test_a_bad_timeout_is_refused_naming_the_probe(start_agent: AgentFactory, timeout: str) -> None:
    agent = start_agent()
    good = json.dumps({"id": "ok", "protocol": "tcp", "dst": "127.0.0.1", "port": agent.echo_port, "timeout": 1})
    bad = f'{{"id": "bad", "protocol": "tcp", "dst": "127.0.0.1", "port": {agent.echo_port}, "timeout": {timeout}}}'
    body = f'{{"probes": [{good}, {bad}]}}'.encode()
    answer = exchange(agent.socket_path, b"POST /probe HTTP/1.1\r\nContent-Length: " + str(len(body)).encode()
                      + b"\r\n\r\n" + body)
    assert answer.status == 400 and "probes[1].timeout" in answer.body["error"], answer


BAD_FIELDS = [
    ({"protocol": "tcp", "dst": "127.0.0.1", "port": 8080, "payload": 65001}, "payload"),
    ({"protocol": "udp", "dst": "127.0.0.1", "port": 8080, "payload": 10 ** 9}, "payload"),
    ({"protocol": "icmp", "dst": "127.0.0.1", "payload": -1}, "payload"),
    ({"protocol": "tcp", "dst": "127.0.0.1", "port": 0}, "port"),
    ({"protocol": "tcp", "dst": "127.0.0.1", "port": 65536}, "port"),
    ({"protocol": "tcp", "dst": "127.0.0.1", "port": "22"}, "port"),
    ({"protocol": "tcp", "dst": "127.0.0.1"}, "port"),
    ({"protocol": "tcp", "dst": "localhost", "port": 22}, "dst"),
    ({"protocol": "udp", "dst": "127.0.0.1 ; id", "port": 53}, "dst"),
    ({"protocol": "icmp"}, "dst"),
    ({"protocol": "dns-udp", "qname": "a b.example.", "server": "127.0.0.1"}, "qname"),
    ({"protocol": "dns-udp", "qname": "x" * 300, "server": "127.0.0.1"}, "qname"),
    ({"protocol": "dns-udp", "qname": "echo.example."}, "server"),
    ({"protocol": "dns-tcp", "qname": "echo.example.", "server": "dns.example"}, "server"),
    ({"protocol": "dns-udp", "qname": "echo", "server": "127.0.0.1", "dns_port": 0}, "dns_port"),
    ({"protocol": "dns-udp", "qname": "echo", "server": "127.0.0.1", "search": ["ok.", "not ok"]}, "search[1]"),
    ({"protocol": "tcp", "dst": "127.0.0.1", "port": 80, "expect_agents": "one"}, "expect_agents"),
    ({"protocol": "http", "dst": "127.0.0.1", "port": 80}, "protocol"),
    ({"protocol": "tcp", "dst": "127.0.0.1", "port": 80, "id": ["x"]}, "id"),
]


def test_bad_fields_are_refused_naming_probe_and_field(start_agent: AgentFactory) -> None:
    agent = start_agent()
    ok = {"id": "ok", "protocol": "tcp", "dst": "127.0.0.1", "port": agent.echo_port, "payload": 1400}
    for spec, name in BAD_FIELDS:
        answer = probe(agent.socket_path, [ok, ok, spec])
        assert answer.status == 400 and f"probes[2].{name}" in answer.body["error"], (spec, answer)
    assert probe(agent.socket_path, [[1, 2]]).body["error"].startswith("probes[0]: must be an object")
    # the bounds leave the real probes alone: a near-MTU payload, the largest one, a probe by name
    big = {"id": "max", "protocol": "udp", "dst": "127.0.0.1", "port": agent.echo_port, "payload": 65000}
    answer = probe(agent.socket_path, [ok, big])
    assert answer.status == 200, answer
    assert [(r["id"], r["reached"]) for r in answer.body["results"]] == [("ok", True), ("max", True)]


# --------------------------------------------------------------------------- what comes back


@contextlib.contextmanager
def banner_servers(banner: bytes) -> Iterator[int]:
    """A TCP and a UDP service on one 127.0.0.1 port that answer `banner` to anyone."""
    port = _free_port()
    tcp = socket.create_server(("127.0.0.1", port))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", port))
    tcp.settimeout(0.2)
    udp.settimeout(0.2)
    stop = threading.Event()

    def serve_tcp() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                conn, _ = tcp.accept()
                with conn:
                    conn.sendall(banner)
                    conn.settimeout(1.0)
                    while conn.recv(65536):  # until the prober closes: closing first would reset the banner away
                        pass

    def serve_udp() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                _, peer = udp.recvfrom(65536)
                udp.sendto(banner, peer)

    threads = [threading.Thread(target=serve_tcp, daemon=True), threading.Thread(target=serve_udp, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        yield port
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        tcp.close()
        udp.close()


@pytest.mark.parametrize("banner", [
    b"SSH-2.0-secret-banner\r\n",
    b'{"agent": "secret-banner", "seen": "10.0.0.1", "len": 0, "x": 1}',  # a JSON look-alike without a newline
    b'{"agent": "secret banner!", "seen": "127.0.0.1", "len": 0}\n',  # not an agent id
    b'{"agent": "secret-banner", "seen": "not-an-ip", "len": 0}\n',
    b'{"agent": "secret-banner", "seen": "127.0.0.1", "len": "0"}\n',
    b"secret-banner " * 1000,  # no newline within the read bound
])
def test_a_peer_that_is_not_crossnets_echo_is_not_repeated(start_agent: AgentFactory, banner: bytes) -> None:
    agent = start_agent()
    with banner_servers(banner) as port:
        answer = probe(agent.socket_path, [{"id": proto, "protocol": proto, "dst": "127.0.0.1", "port": port,
                                            "timeout": 2} for proto in ("tcp", "udp")])
    assert answer.status == 200, answer
    assert "secret" not in answer.text and "banner" not in answer.text, answer.text
    for result in answer.body["results"]:
        # Something answered, but it is not the target the cell asks about: the verdict stays "not reached".
        assert result["reached"] is False and result["error"] == "wrong-answer", result
        assert result["peer"] == "not-crossnet-echo" and isinstance(result["reply_bytes"], int), result
        assert "responder" not in result and "source_ip" not in result
    # What the verdict needs from crossnet's own echo still comes back.
    own = probe(agent.socket_path, [
        {"id": "tcp", "protocol": "tcp", "dst": "127.0.0.1", "port": agent.echo_port, "expect_agents": [AGENT_ID]},
        {"id": "udp", "protocol": "udp", "dst": "127.0.0.1", "port": agent.echo_port, "payload": 1400},
        {"id": "other", "protocol": "tcp", "dst": "127.0.0.1", "port": agent.echo_port, "expect_agents": ["c/n/agent"]},
    ]).body["results"]
    assert [(r["id"], r["reached"], r.get("responder"), r.get("source_ip")) for r in own[:2]] == [
        ("tcp", True, AGENT_ID, "127.0.0.1"), ("udp", True, AGENT_ID, "127.0.0.1")]
    assert own[2]["error"] == "wrong-answer" and own[2]["responder"] == AGENT_ID


# --------------------------------------------------------------------------- how much at once


class SilentServer:
    """Accepts TCP connections and never answers; records how many were open at once."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=2048)
        self.listener.setblocking(False)
        self.port = int(self.listener.getsockname()[1])
        self.open = 0
        self.peak = 0
        self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ)
        while not self._stop.is_set():
            events = selector.select(0.05)
            # closes first: a connection that ended in this round makes room for one that began in it
            for key, _ in sorted(events, key=lambda event: event[0].fileobj is self.listener):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.listener:
                    with contextlib.suppress(BlockingIOError):
                        while True:
                            conn, _ = self.listener.accept()
                            conn.setblocking(False)
                            selector.register(conn, selectors.EVENT_READ)
                            self.open += 1
                            self.total += 1
                            self.peak = max(self.peak, self.open)
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(sock)
                    sock.close()
                    self.open -= 1
        selector.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.listener.close()


def test_one_request_runs_at_most_256_probes_at_once_in_order(start_agent: AgentFactory) -> None:
    agent = start_agent()
    silent = SilentServer()
    try:
        # 3 s each: on a loaded machine (the whole suite in parallel) the first of 256 connections must
        # not time out before the last is opened, or the peak below measures the machine, not the gate
        batch = [{"id": f"p{i}", "protocol": "tcp", "dst": "127.0.0.1", "port": silent.port, "timeout": 3}
                 for i in range(300)]
        answer = probe(agent.socket_path, batch, timeout=30)
        time.sleep(0.2)
    finally:
        silent.close()
    assert answer.status == 200
    assert [r["id"] for r in answer.body["results"]] == [p["id"] for p in batch]
    assert all(r["error"] == "timeout" for r in answer.body["results"])
    assert silent.total == 300
    assert 200 <= silent.peak <= 256, silent.peak


def test_a_peer_that_sends_a_line_and_keeps_talking_is_judged_on_its_first_line() -> None:
    """A banner line followed by more bytes, the connection held open: `wrong-answer` at once from
    the first line (not a timeout waiting for the buffer to end in a newline)."""
    from crossnet.agent.core import run_probe

    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def banner() -> None:
        conn, _ = listener.accept()
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\npartial")
        held.append(conn)  # kept open until the test ends

    thread = threading.Thread(target=banner, daemon=True)
    thread.start()
    probe = {"id": "banner", "protocol": "tcp", "dst": "127.0.0.1", "port": listener.getsockname()[1], "timeout": 2.0}
    try:
        result = asyncio.run(run_probe(probe))
    finally:
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
    assert (result["reached"], result["error"]) == (False, "wrong-answer"), result
    assert result["latency_ms"] < 1000 and "SSH" not in str(result), result
