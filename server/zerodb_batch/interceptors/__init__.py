"""Cross-cutting concerns of every RPC: authentication, error mapping, the request log."""
