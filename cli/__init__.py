"""`taskforge-cli`, the operator's command line: a client of the REST API, built on
`taskforge.client`."""

import sys

# httpx's own command line (`httpx._main`) loads click and pygments on `import httpx`, about
# 15 ms of every run; taskforge-cli never calls it, and httpx falls back to a stub without it.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
