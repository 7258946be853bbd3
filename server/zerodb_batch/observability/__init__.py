"""What an operator sees of a running server: Prometheus metrics, OpenTelemetry traces, logs.

metrics.py defines every metric; calls.py records one RPC (counts, latency, sizes, its span and
the fields of its log line); sampler.py reads the gauges that are states rather than events
(pools, health, relay lag); exposition.py serves /metrics; tracing.py and logs.py set up traces
and the log format. Nothing here imports grpc, psycopg or redis: what it observes is handed in.
"""
