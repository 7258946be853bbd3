"""zerodb-batch: ZeroDB's batch operations over gRPC, on PostgreSQL and Redis Streams."""
