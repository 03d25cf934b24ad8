"""dramatiq's side of `just bench-peers`, run by .venv-peers' interpreter.

    python dramatiq_peer.py drain|enqueue REDIS_URL JOBS [THREADS] [PROCESSES]

Messages go under a namespace of their own, deleted at the end. Prints one JSON object:
`seconds` (drain: from spawning `dramatiq dramatiq_app --processes P --threads T` to the
last message acked, which deletes it from Redis; polled every 10 ms). dramatiq has no bulk
enqueue (a group sends its messages one by one), so there is no `enqueue-many`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from _process import stop  # beside this file, on sys.path when run as a script

HERE = Path(__file__).resolve().parent
DEADLINE = 600.0
CHUNK = 1_000


def main(scenario: str, url: str, jobs: int, threads: int, processes: int) -> None:
    namespace = f"peerbench-{uuid.uuid4().hex[:8]}"
    os.environ.update(PEER_REDIS_URL=url, PEER_NAMESPACE=namespace)
    sys.path.insert(0, str(HERE))
    import dramatiq_app

    broker, client = dramatiq_app.broker, dramatiq_app.broker.client
    try:
        if scenario == "drain":
            send_many(jobs)
            spawned = time.time()
            worker = subprocess.Popen(  # noqa: S603 - dramatiq's own command
                [
                    str(Path(sys.executable).with_name("dramatiq")),
                    "dramatiq_app",
                    "--processes",
                    str(processes),
                    "--threads",
                    str(threads),
                ],
                env={**os.environ, "PYTHONPATH": str(HERE)},
                cwd=HERE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + DEADLINE
                while client.hlen(f"{namespace}:default.msgs") > 0:
                    if time.monotonic() > deadline or worker.poll() is not None:
                        raise RuntimeError("dramatiq did not drain its messages")
                    time.sleep(0.01)
                result = {"seconds": time.time() - spawned}
            finally:
                stop(worker, 15)
        elif scenario == "enqueue":
            started = time.perf_counter()
            for _ in range(jobs):
                dramatiq_app.noop.send()
            result = {"seconds": time.perf_counter() - started}
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")
    finally:
        keys = list(client.scan_iter(match=f"{namespace}:*"))
        if keys:
            client.delete(*keys)
        broker.close()
    print(json.dumps(result))


def send_many(jobs: int) -> None:
    """The drain's backlog, sent before the clock starts."""
    import dramatiq
    import dramatiq_app

    for start in range(0, jobs, CHUNK):
        size = min(CHUNK, jobs - start)
        dramatiq.group(dramatiq_app.noop.message() for _ in range(size)).run()


if __name__ == "__main__":
    scenario, url, jobs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    processes = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    main(scenario, url, jobs, threads, processes)
