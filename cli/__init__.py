"""`taskforge-cli`, the operator's command line: a client of the REST API, built on
`taskforge.client`."""

import gc
import sys

# httpx's own command line (`httpx._main`) loads click and pygments on `import httpx`, about
# 15 ms of every run; taskforge-cli never calls it, and httpx falls back to a stub without it.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


def main() -> None:
    """`taskforge-cli`. Its modules are imported with the cycle collector paused, as the
    service's are (`taskforge.entrypoints.cli.main`): about 10 ms of each run."""
    gc.disable()
    try:
        from taskforge.cli.app import main as run_command
    except KeyboardInterrupt:  # Ctrl-C while they load: as during the command, no traceback
        raise SystemExit(130) from None

    gc.freeze()
    gc.enable()
    run_command()
