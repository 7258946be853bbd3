"""Request fingerprints: what identifies a request for idempotent retries and page tokens."""

from __future__ import annotations

import hashlib

from google.protobuf.message import Message


def fingerprint(message: Message, *without: str) -> bytes:
    """SHA-256 of the message's deterministic serialization with the `without` fields cleared:
    two requests that differ only in those fields (a request_id, a page token) match."""
    if without:
        copy = type(message)()
        copy.CopyFrom(message)
        for name in without:
            copy.ClearField(name)
        message = copy
    return hashlib.sha256(message.SerializeToString(deterministic=True)).digest()
