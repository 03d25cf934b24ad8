"""The API's own bounds on connections: a request head that never completes, a body that
stalls, and more connections than the process accepts (a real `taskforge dev` process)."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support import free_port, wait_until_healthy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5
MAX_CONNECTIONS = 8
CLOSE_DEADLINE = 10.0
"""Far above the timeouts: what is asserted is that the server closes, not how fast."""


@pytest.fixture(scope="module")
def api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server whose head and body deadlines are short enough to be waited for."""
    yield from serve(tmp_path_factory, HEADER_TIMEOUT, BODY_TIMEOUT)


@pytest.fixture(scope="module")
def patient_api_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server with the same cap whose deadlines no pause of the test outlasts: connections
    it holds stay open until the test closes them."""
    yield from serve(tmp_path_factory, CLOSE_DEADLINE, CLOSE_DEADLINE)


def serve(
    tmp_path_factory: pytest.TempPathFactory, header_timeout: float, body_timeout: float
) -> Iterator[str]:
    port = free_port()
    log: Path = tmp_path_factory.mktemp("limits") / "dev.log"
    env = dict(os.environ)
    env.update(
        HTTP_ADDR=f"127.0.0.1:{port}",
        HTTP_HEADER_TIMEOUT=str(header_timeout),
        HTTP_BODY_TIMEOUT=str(body_timeout),
        HTTP_MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        LOG_LEVEL="warn",
    )
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from taskforge.entrypoints.cli import main; main()",
                "dev",
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(wait_until_healthy(url, lambda: process.poll() is None, log.read_text, 30))
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=CLOSE_DEADLINE)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the deadline fails)."""
    received = b""
    deadline = time.monotonic() + CLOSE_DEADLINE
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk
    raise AssertionError(f"the server kept the connection open; got {received!r}")


def test_a_request_head_that_never_completes_is_answered_408_and_closed(api_url: str) -> None:
    with connect(api_url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"code":"validation_error"' in answer


@pytest.mark.parametrize(
    "head",
    [
        b"GET /jobs/" + b"x" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # past the parser
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Bad\x01: y\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    ],
    ids=["url-too-long", "control-byte-in-header", "bad-content-length"],
)
def test_a_request_the_http_parser_refuses_is_a_400_in_the_error_shape(
    api_url: str, head: bytes
) -> None:
    with connect(api_url) as sock:
        sock.sendall(head)
        answer = read_until_closed(sock)
    status, _, body = answer.partition(b"\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"\r\nx-request-id: " in status
    error = json.loads(body)
    assert (error["code"], error["details"]) == ("validation_error", None)
    assert error["message"].startswith("the HTTP request cannot be read (")


@pytest.mark.parametrize(
    "header_lines",
    [[b"X-Big: " + b"a" * 131_072], [b"X-A: b"] * 2_000],
    ids=["a-long-value", "many-short-lines"],
)
def test_a_request_head_past_its_bounds_is_refused_as_it_arrives(
    patient_api_url: str, header_lines: list[bytes]
) -> None:
    """The server holds a head in memory until it ends: one past 64 KiB or 256 header
    lines is answered 400 while it is still arriving, not at its deadline."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        line + b"\r\n" for line in header_lines
    )
    head += b"X-Endless: " + b"a" * (1 << 20)  # and it never ends
    with connect(patient_api_url) as sock:
        for start in range(0, len(head), 16_384):
            try:
                sock.sendall(head[start : start + 16_384])
            except OSError:
                break
            if select.select([sock], [], [], 0.02)[0]:
                break
        answer = read_until_closed(sock)
    status, _, body = answer.partition(b"\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 400 "), status
    error = json.loads(body)
    assert error["code"] == "validation_error"
    assert error["message"].startswith("the HTTP request cannot be read (")


@pytest.mark.parametrize(
    "header_lines",
    [[b"X-Big: " + b"a" * 70_000], [b"X-A: b"] * 300],
    ids=["a-long-value", "many-short-lines"],
)
def test_a_complete_request_head_past_its_bounds_is_refused(
    api_url: str, header_lines: list[bytes]
) -> None:
    """Sent in one piece, such a head reaches the server in one read and ends within it."""
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(
        line + b"\r\n" for line in header_lines
    )
    with connect(api_url) as sock:
        sock.sendall(head + b"\r\n")
        answer = read_until_closed(sock)
    status, _, body = answer.partition(b"\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 400 "), status
    error = json.loads(body)
    assert error["code"] == "validation_error"
    assert error["message"] == (
        "the HTTP request cannot be read (its head is over 65536 bytes or 256 header lines)"
    )


def test_a_head_within_its_bounds_is_served(api_url: str) -> None:
    headers = {f"X-H{n}": "v" * 200 for n in range(200)}  # 200 lines, about 42 KB
    answer = httpx.get(f"{api_url}/healthz", headers=headers, timeout=5)
    assert answer.status_code == 200


def test_trickling_a_head_does_not_extend_its_deadline(api_url: str) -> None:
    with connect(api_url) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        received = b""
        deadline = time.monotonic() + CLOSE_DEADLINE
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], HEADER_TIMEOUT / 5)
            if readable:
                received = read_until_closed(sock)
                break
            sock.sendall(b"X-A: b\r\n")  # a header line well within every pause
        assert received.startswith(b"HTTP/1.1 408 ")


def test_a_connection_that_sends_nothing_is_closed(api_url: str) -> None:
    with connect(api_url) as sock:
        assert read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_a_stalled_body_closes_the_connection(api_url: str) -> None:
    with connect(api_url) as sock:
        sock.sendall(
            b"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"jobType":'
        )
        answer = read_until_closed(sock)
    assert b" 201 " not in answer


def test_connections_beyond_the_cap_are_refused_with_503_until_one_closes(
    patient_api_url: str,
) -> None:
    api_url = patient_api_url  # the connections held are not closed by the head deadline
    held = [connect(api_url) for _ in range(MAX_CONNECTIONS)]
    try:
        with connect(api_url) as extra:
            answer = read_until_closed(extra)
        assert answer.startswith(b"HTTP/1.1 503 ")
        assert b'"code":"not_ready"' in answer
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + CLOSE_DEADLINE
    while True:
        try:
            if httpx.get(f"{api_url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the API did not accept connections again"
        time.sleep(0.05)


def test_a_normal_request_with_a_body_is_unaffected(api_url: str) -> None:
    with httpx.Client(base_url=api_url, timeout=5) as client:
        for _ in range(3):  # keep-alive: the deadline is re-armed per request
            answer = client.post("/jobs", json={"jobType": "noop"})
            assert answer.status_code == 201
