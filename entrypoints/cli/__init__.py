"""Command lines: `taskforge` (service roles) and `taskforge-cli` (the API client)."""

import gc


def main() -> None:
    """`taskforge`. The service's modules are imported with the cycle collector paused:
    importing allocates some hundred thousand objects, all kept for the process's life, and
    each collection on the way would scan them again (about a tenth of a worker's start-up).
    Frozen afterwards, later collections skip them too."""
    gc.disable()
    try:
        from taskforge.entrypoints.cli.service import main as run_command
    except KeyboardInterrupt:  # Ctrl-C while they load: as during the command, no traceback
        raise SystemExit(130) from None

    gc.freeze()
    gc.enable()
    run_command()
