"""Events beyond PostgreSQL: the Redis streams, the outbox relay, and subscriptions."""
