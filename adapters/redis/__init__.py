"""The Redis side of the production backend: dispatch hints per queue and the shared rate limit.

Redis holds nothing that cannot be rebuilt from Postgres. Needs Redis 6.2 or newer (float
timeouts for BRPOP, RPOP with a count).
"""
