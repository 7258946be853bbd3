"""The HTTP/JSON front door: the protos' `google.api.http` routes, transcoded to gRPC calls.

The door is a gRPC client of its own server (over a private unix socket), so every HTTP call
passes through the same interceptors as a gRPC call: authentication, error mapping, the log.
"""
