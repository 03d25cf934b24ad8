"""What both peers' programs do with the worker process they spawn."""

from __future__ import annotations

import signal
import subprocess


def stop(worker: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, as an operator stops a worker; killed if it is still running after `grace`
    seconds."""
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(grace)
    except subprocess.TimeoutExpired:
        worker.kill()
