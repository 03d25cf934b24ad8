"""The embedded backend: every port in memory, for `taskforge dev` and the unit tests.

Production code, not a test double: it keeps the Postgres adapters' semantics (conditional
transitions, fencing, idempotency) and is checked by the same contract suite. Each method
runs without awaiting inside its critical section, so on one event loop it is atomic.
"""
