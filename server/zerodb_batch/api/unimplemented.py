"""Placeholders for services a later release builds: every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zerodb_batch.errors import Unimplemented


def placeholder(base: Any) -> Any:
    """An instance of a generated servicer base whose every RPC is UNIMPLEMENTED (with details)."""
    methods = {name: _refuse(name) for name in getattr(base, "__abstractmethods__", ())}
    return type(f"Unimplemented{base.__name__}", (base,), methods)()


def _refuse(name: str) -> Callable[..., Any]:
    # A plain function that raises at once serves unary and streaming RPCs alike.
    def refuse(self: object, request: object, context: object) -> Any:
        raise Unimplemented(f"{name} is not implemented yet")

    return refuse
