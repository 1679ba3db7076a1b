"""What "PostgreSQL or Redis is unreachable" looks like as an exception, for code that decides what to do then.

These errors say nothing about the work in hand: the same work succeeds once the server is back (a restart, a
failover, a network blip). The worker's task base class (worker.task_base) retries or skips on them.
"""

from __future__ import annotations

from redis.exceptions import RedisError
from sqlalchemy.exc import InterfaceError, OperationalError

# OperationalError: the connection was refused, dropped or timed out; InterfaceError: a connection that was already
# closed; RedisError: any failure of the Redis client (connection, timeout, a server that is loading).
INFRASTRUCTURE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, RedisError)
