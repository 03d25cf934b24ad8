"""Bad input at scale: concurrent malformed requests beside the valid load.

Broken JSON, wrong types, huge and deeply nested payloads, invalid ids, status values and
pagination, wrong methods and content types, and header abuse over HTTP; plus raw-socket
abuse HTTP clients cannot send (garbage, conflicting lengths, broken chunking, NUL bytes,
control characters, a half-sent request). The API must answer every one with a 4xx (or
close a connection it cannot parse), never a 500, never crash, keep serving the valid load,
and keep its memory bounded (RSS read from /proc while the flood runs and after it).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import httpx

from tests.faults.harness import Check, Run, peak, rss_bytes

CONCURRENCY = 8
MIB = 1024 * 1024
RSS_PEAK_GROWTH = 256 * MIB
"""The API may grow this much over its RSS before the flood while the flood runs..."""
RSS_SETTLED_GROWTH = 128 * MIB
"""...and keep at most this much of it once the flood is over."""

JUNK = {"jobType": "faults.junk", "queue": "faults-junk", "delay": 315360000}
"""Fields for bodies that might pass validation: a queue no worker serves, due in 10 years."""


def _body(**fields: Any) -> bytes:
    return json.dumps({**JUNK, **fields}).encode()


def _nested(depth: int, opening: str = '{"a":', closing: str = "}") -> str:
    return opening * depth + "1" + closing * depth


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


JSON = {"Content-Type": "application/json"}


def _get(path: str, **params: str) -> Request:
    return Request("GET", path, params=params)


def _post(content: bytes, headers: dict[str, str] | None = None) -> Request:
    return Request("POST", "/jobs", content, headers if headers is not None else JSON)


def _deep_array_payload(depth: int) -> bytes:
    """A valid-looking job whose payload holds `depth` nested arrays."""
    return b'{"payload":{"x":' + _nested(depth, "[", "]").encode() + b"}," + _body()[1:]


def _unknown_field_nested(depth: int) -> bytes:
    """A body whose unknown field holds `depth` nested objects."""
    return b'{"p":' + _nested(depth).encode() + b"," + _body()[1:]


def http_cases(rng: random.Random) -> list[tuple[str, Callable[[], Request]]]:
    """(category, builder) pairs; builders run per request so huge bodies are not kept."""
    unknown = str(uuid4())
    queue_jobs = "/queues/faults/jobs"
    utf16 = json.dumps({"jobType": "x"}).encode("utf-16")
    many_headers = {f"X-Junk-{i}": "v" * 50 for i in range(300)}
    long_token = "Bearer " + "t" * 5000
    return [
        ("broken json", lambda: _post(b'{"jobType": "faults.junk"')),
        ("broken json", lambda: _post(b"{jobType: faults.junk}")),
        ("broken json", lambda: _post(b"\xff\xfe\x00\x01garbage")),
        ("broken json", lambda: _post(b'{"jobType":"a","payload":{"x":NaN}}')),
        ("broken json", lambda: _post(_body() + b"trailing")),
        ("broken json", lambda: _post(b"")),
        ("broken json", lambda: _post(b"[]")),
        ("broken json", lambda: _post(b"null")),
        ("broken json", lambda: _post(b'"a string"')),
        ("broken json", lambda: _post(b'{"jobType":"\\ud800"}')),
        ("wrong types", lambda: _post(_body(jobType=123))),
        ("wrong types", lambda: _post(_body(payload=[1, 2, 3]))),
        ("wrong types", lambda: _post(_body(payload="text"))),
        ("wrong types", lambda: _post(_body(maxAttempts="3"))),
        ("wrong types", lambda: _post(_body(maxAttempts=True))),
        ("wrong types", lambda: _post(_body(maxAttempts=10**30))),
        ("wrong types", lambda: _post(_body().replace(b"315360000", b"1e400"))),
        ("wrong types", lambda: _post(_body(visibilityTimeout=-1))),
        ("wrong types", lambda: _post(_body(backoff=0.5))),
        ("wrong types", lambda: _post(_body(initialDelay=5, maxDelay=1))),
        ("wrong types", lambda: _post(_body(runAt="yesterday"))),
        ("wrong types", lambda: _post(_body(runAt="2020-13-45T99:99:99Z"))),
        ("wrong types", lambda: _post(_body(runAt="2030-01-01T00:00:00Z"))),  # and a delay
        ("wrong types", lambda: _post(_body(jobType="x" * 5000))),
        ("wrong types", lambda: _post(_body(queue="taskforge:internal"))),
        ("wrong types", lambda: _post(_body(queue="bad queue name!"))),
        ("wrong types", lambda: _post(_body(idempotencyKey=""))),
        ("wrong types", lambda: _post(_body(idempotencyKey="k" * 300))),
        ("wrong types", lambda: _post(_body(idempotencyKey="\u0007bell"))),
        ("wrong types", lambda: _post(_body(payload={"\u0000": "nul"}))),
        ("wrong types", lambda: _post(_body(unknownField=1))),
        ("wrong types", lambda: _post(json.dumps({"payload": {}}).encode())),
        ("huge payload", lambda: _post(_body(payload={"blob": "x" * (2 * MIB)}))),
        ("huge payload", lambda: _post(b'{"payload": {"blob": "' + b"y" * (6 * MIB) + b'"}}')),
        ("huge payload", lambda: _post(_body(payload={f"k{i}": i for i in range(120_000)}))),
        ("huge payload", lambda: _post(_body(payload={"list": list(range(200_000))}))),
        ("deep nesting", lambda: _post(_unknown_field_nested(rng.choice([900, 5000, 50_000])))),
        ("deep nesting", lambda: _post(_deep_array_payload(100_000))),
        ("deep nesting", lambda: _post(b"[" * 200_000 + b"]" * 200_000)),
        ("invalid id", lambda: _get("/jobs/not-a-uuid")),
        ("invalid id", lambda: _get("/jobs/" + "9" * 4000)),
        ("invalid id", lambda: _get("/jobs/%00")),
        ("invalid id", lambda: _get("/jobs/..%2F..%2Fetc%2Fpasswd")),
        ("invalid id", lambda: _get(f"/jobs/{unknown}")),
        ("invalid id", lambda: Request("POST", f"/jobs/{unknown}/cancel", b"{}", JSON)),
        ("invalid id", lambda: Request("POST", "/jobs/zzz/retry")),
        ("invalid id", lambda: Request("POST", "/jobs/zzz/dlq", b'{"reason": 5}', JSON)),
        ("invalid id", lambda: Request("POST", f"/dlq/{unknown}/replay")),
        ("invalid id", lambda: _get("/dlq/%ff%fe")),
        ("invalid status", lambda: _get(queue_jobs, status="BOGUS")),
        ("invalid status", lambda: _get(queue_jobs, status="\x00")),
        ("invalid status", lambda: _get(queue_jobs, status="p" * 5000)),
        ("invalid status", lambda: _get("/jobs", limit="-1")),
        ("invalid status", lambda: _get("/jobs", limit="abc")),
        ("invalid status", lambda: _get("/jobs", limit="1e10")),
        ("invalid status", lambda: _get("/jobs", offset="9" * 40)),
        ("invalid status", lambda: _get("/jobs", offset="-5", limit="0")),
        ("invalid status", lambda: _get("/dlq", limit="NaN")),
        ("invalid status", lambda: _get("/queues/" + "q" * 300 + "/jobs")),
        ("invalid status", lambda: _get("/queues/taskforge:x/jobs")),
        ("wrong method", lambda: Request("DELETE", "/jobs")),
        ("wrong method", lambda: Request("PUT", f"/jobs/{unknown}", b"{}", JSON)),
        ("wrong method", lambda: Request("PATCH", "/dlq")),
        ("wrong method", lambda: _get("/nowhere/" + "x" * 2000)),
        ("content type", lambda: _post(_body(), {"Content-Type": "text/plain"})),
        ("content type", lambda: _post(_body(), {"Content-Type": "application/x-www-form"})),
        ("content type", lambda: _post(utf16, {"Content-Type": "application/json;charset=utf-16"})),
        ("content type", lambda: _post(_body(), {"Content-Type": "application/json" + ";" * 3000})),
        ("headers", lambda: Request("GET", "/healthz", headers={"X-Request-ID": "r" * 8000})),
        ("headers", lambda: Request("GET", "/jobs", headers=many_headers)),
        ("headers", lambda: Request("GET", "/jobs", headers={"Authorization": long_token})),
        ("headers", lambda: Request("GET", "/stats", headers={"X-Request-ID": " spaced id "})),
        ("headers", lambda: _post(_body(), {**JSON, "Content-Encoding": "gzip"})),
    ]


def _raw(start_line: bytes, *headers: bytes, body: bytes = b"") -> bytes:
    return b"\r\n".join([start_line, *headers, b"", b""]) + body


HOST = b"Host: x"
RAW_CASES: list[tuple[str, bytes]] = [
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256)) * 4),
    ("garbage", b"GARBAGE\r\n\r\n"),
    ("bad version", _raw(b"GET /healthz HTTP/9.9", HOST)),
    ("huge header", _raw(b"GET /jobs HTTP/1.1", HOST, b"X-Big: " + b"h" * 200_000)),
    ("many headers", _raw(b"GET /jobs HTTP/1.1", HOST, *[b"X-A: b"] * 5000)),
    (
        "length mismatch",
        _raw(
            b"POST /jobs HTTP/1.1",
            HOST,
            b"Content-Type: application/json",
            b"Content-Length: 10",
            body=b'{"jobType": "faults.junk", "queue": "faults-junk"}',
        ),
    ),
    ("negative length", _raw(b"POST /jobs HTTP/1.1", HOST, b"Content-Length: -1", body=b"{}")),
    ("huge length", _raw(b"POST /jobs HTTP/1.1", HOST, b"Content-Length: " + b"9" * 20)),
    (
        "bad chunking",
        _raw(
            b"POST /jobs HTTP/1.1",
            HOST,
            b"Content-Type: application/json",
            b"Transfer-Encoding: chunked",
            body=b"zz\r\n{}\r\n0\r\n\r\n",
        ),
    ),
    (
        "length and chunked",
        _raw(
            b"POST /jobs HTTP/1.1",
            HOST,
            b"Content-Length: 2",
            b"Transfer-Encoding: chunked",
            body=b"2\r\n{}\r\n0\r\n\r\n",
        ),
    ),
    ("nul in path", _raw(b"GET /jobs/\x00abc HTTP/1.1", HOST)),
    ("control chars", _raw(b"GET /healthz HTTP/1.1", HOST, b"X-Request-ID: \x01\x02\x7f")),
    ("non-ascii header", _raw(b"GET /healthz HTTP/1.1", HOST, b"X-Request-ID: \xe2\x98\xff")),
    ("no host", _raw(b"GET /jobs HTTP/1.1")),
    ("half sent", _raw(b"POST /jobs HTTP/1.1", HOST, b"Content-Length: 500", body=b'{"jobType"')),
]


@dataclass
class FloodReport:
    sent: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    """(category, status) pairs, written to the scenario's log."""
    server_errors: list[str] = field(default_factory=list)
    closed: int = 0
    """Raw requests the server closed without an answer (it could not parse them)."""


async def _send_http(client: httpx.AsyncClient, request: Request) -> int | None:
    try:
        response = await client.request(
            request.method,
            request.path,
            content=request.content,
            headers=request.headers,
            params=request.params,
        )
    except httpx.TransportError:
        return None
    return response.status_code


async def _send_raw(port: int, data: bytes) -> int | None:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), timeout=5
        )
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout=3)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.transport.abort()
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


async def bad_input_flood(run: Run, duration: float) -> FloodReport:
    """Send malformed requests from CONCURRENCY clients for `duration` seconds, beside the
    run's valid load, and record the checks on the run."""
    rng = random.Random(f"{run.seed}:bad-input")
    cases = http_cases(rng)
    report = FloodReport()
    api = run.cluster.current("api")
    port = int(run.cluster.api_url.rsplit(":", 1)[1])
    baseline = peak(run.rss[-5:]) or rss_bytes(api.pid) or 0
    flood_rss: list[int] = []
    deadline = time.monotonic() + duration
    run.say(f"bad input: {len(cases)} HTTP and {len(RAW_CASES)} raw cases for {duration:.0f}s")

    async def client_loop(index: int) -> None:
        local = random.Random(f"{run.seed}:bad-input:{index}")
        async with httpx.AsyncClient(base_url=run.cluster.api_url, timeout=30) as client:
            while time.monotonic() < deadline:
                if local.random() < 0.15:
                    category, data = local.choice(RAW_CASES)
                    status = await _send_raw(port, data)
                    what = f"raw {category}"
                else:
                    category, build = local.choice(cases)
                    request = build()
                    status = await _send_http(client, request)
                    what = f"{category}: {request.method} {request.path[:60]}"
                report.sent[category] += 1
                if status is None:
                    report.closed += 1
                    continue
                report.statuses[status] += 1
                report.answers[category, status] += 1
                if status >= 500 and len(report.server_errors) < 10:
                    report.server_errors.append(f"{status} for {what}")

    async def watch_memory() -> None:
        while time.monotonic() < deadline:
            if (rss := rss_bytes(api.pid)) is not None:
                flood_rss.append(rss)
            await asyncio.sleep(0.2)

    await asyncio.gather(watch_memory(), *(client_loop(i) for i in range(CONCURRENCY)))
    settled = await _settled_rss(api.pid, baseline)
    total = sum(report.sent.values())
    sent = ", ".join(f"{category} {count}" for category, count in sorted(report.sent.items()))
    run.say(f"bad input: {total} sent, answers {dict(sorted(report.statuses.items()))}")
    for (category, status), count in sorted(report.answers.items()):
        run.say(f"bad input: {category:20} {status} x{count}")
    run.checks.append(
        Check(
            "bad input: never a 5xx",
            not report.server_errors,
            "; ".join(report.server_errors)
            or f"{total} bad requests ({sent});"
            f" answers {dict(sorted(report.statuses.items()))}; {report.closed} closed unanswered",
        )
    )
    run.checks.append(
        Check(
            "bad input: API process still up",
            api.alive() and await _healthy(run),
            f"pid {api.pid} {'alive' if api.alive() else 'DEAD'}",
        )
    )
    grown, kept = peak(flood_rss) - baseline, settled - baseline
    run.checks.append(
        Check(
            "bad input: API memory bounded",
            baseline > 0 and grown <= RSS_PEAK_GROWTH and kept <= RSS_SETTLED_GROWTH,
            f"RSS {baseline / MIB:.0f} MiB before, peak {peak(flood_rss) / MIB:.0f} MiB"
            f" (+{grown / MIB:.0f}), {settled / MIB:.0f} MiB after (+{kept / MIB:.0f});"
            f" bounds +{RSS_PEAK_GROWTH // MIB} / +{RSS_SETTLED_GROWTH // MIB} MiB",
        )
    )
    run.statuses.update(report.statuses)
    return report


async def _settled_rss(pid: int, baseline: int) -> int:
    """The API's RSS once the flood is over: the lowest reading over two seconds."""
    readings = []
    for _ in range(10):
        if (rss := rss_bytes(pid)) is not None:
            readings.append(rss)
        await asyncio.sleep(0.2)
    return min(readings) if readings else baseline


async def _healthy(run: Run) -> bool:
    try:
        return (await run.http.get("/healthz")).status_code == 200
    except httpx.TransportError:
        return False
