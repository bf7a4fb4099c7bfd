"""What more than one process must agree on: the relay authority, the rate-limit store, the config
store; the single-host implementations behind each, and beside them the Redis engine's
(`[engine] type = "redis"`: `redis.py`, `cluster_limits.py`, `relay_redis.py`)."""
