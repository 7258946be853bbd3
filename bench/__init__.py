"""Side-by-side benchmarks: our service and the raw PostgreSQL/Redis path in one run."""
