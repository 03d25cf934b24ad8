"""The Redis side of the production backend: dispatch hints per queue and the shared rate limit.

Redis holds nothing that cannot be rebuilt from Postgres. Needs Redis 6.2 or newer (float
timeouts for BRPOP, RPOP with a count).
"""

import sys

# redis-py imports the OpenTelemetry metrics SDK when it can (for its own client metrics,
# which are off unless configured, and which TaskForge does not use): about 30 ms of every
# worker's start-up. Importing redis while that module reads as absent leaves redis-py's
# metrics out; TaskForge's own telemetry imports the SDK normally afterwards. Without
# effect when something imported redis first.
_SKIPPED = "opentelemetry.sdk.metrics"
if "redis" not in sys.modules and _SKIPPED not in sys.modules:
    sys.modules[_SKIPPED] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        import redis.asyncio  # noqa: F401
    finally:
        del sys.modules[_SKIPPED]
