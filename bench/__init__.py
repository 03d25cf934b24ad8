"""`taskforge bench`: TaskForge's own benchmark, on the configured Postgres and Redis.

It starts its own stack (a scratch database, a private Redis key prefix and queues, an API
process and worker processes), measures, prints a table, writes JSON, and removes what it
created. Speeds are medians of what one run sees on this machine: compare runs side by
side, never against a fixed number.

`stack` owns the processes and data of a run, `scenarios` holds what is measured (with
`transactional` for the SDK's enqueue and `startup` for a process's start-up), `report`
turns runs into medians and a table, `run` puts them together for the command. `peers`
runs TaskForge beside other job queues (`just bench-peers`).
"""
