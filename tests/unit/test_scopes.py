"""Every RPC of the API has a scope in the access table, and one without is refused (fails closed).

The RPCs are walked from the generated descriptors of every `zerodb.v1` proto, so an RPC added to a
proto without a line in RPC_SCOPES fails here before it can be served."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.descriptor import MethodDescriptor

import zerodb.v1
from zerodb.v1 import table_pb2
from zerodb_batch.errors import PermissionDenied
from zerodb_batch.interceptors.auth import RPC_SCOPES, Access
from zerodb_batch.limits import KEY_SCOPES
from zerodb_batch.storage.keys import Grant


def every_rpc() -> Iterator[MethodDescriptor]:
    for info in pkgutil.iter_modules(zerodb.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"zerodb.v1.{info.name}")
            for service in module.DESCRIPTOR.services_by_name.values():
                yield from service.methods


RPCS = list(every_rpc())


def path(method: MethodDescriptor) -> str:
    return f"/{method.containing_service.full_name}/{method.name}"


def test_every_rpc_has_a_scope() -> None:
    assert len(RPCS) >= 25
    missing = [m.full_name for m in RPCS if m.full_name not in RPC_SCOPES]
    assert missing == [], "add these RPCs to RPC_SCOPES (interceptors/auth.py)"
    assert {RPC_SCOPES[m.full_name] for m in RPCS} <= set(KEY_SCOPES)


def test_the_table_names_only_rpcs_that_exist() -> None:
    assert set(RPC_SCOPES) == {m.full_name for m in RPCS}


@pytest.mark.parametrize("method", RPCS, ids=lambda m: m.full_name)
def test_every_rpc_is_open_to_its_scope(method: MethodDescriptor) -> None:
    access = Access.of(path(method), method.client_streaming, method.server_streaming)
    access.refuse_if_closed()
    assert access.scope == RPC_SCOPES[method.full_name]


def test_an_rpc_without_a_scope_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(RPC_SCOPES, "zerodb.v1.MemoryService.ListMemories")
    access = Access.of("/zerodb.v1.MemoryService/ListMemories", False, False)
    with pytest.raises(PermissionDenied) as caught:
        access.refuse_if_closed()
    assert caught.value.reason == "METHOD_NOT_ALLOWED"
    assert "no scope" in caught.value.message


def grant(*scopes: str) -> Grant:
    return Grant("p", list(scopes), None)


def test_scope_missing_names_the_needed_scope() -> None:
    access = Access.of("/zerodb.v1.TableService/CreateTable", False, False)
    with pytest.raises(PermissionDenied) as caught:
        access.check_scope(grant("read", "write"))
    assert caught.value.reason == "SCOPE_MISSING"
    assert caught.value.metadata == {"required_scope": "admin", "key_scopes": "read,write"}


@pytest.mark.parametrize(
    ("ops", "needed"),
    [
        ((), "read"),
        (("", "query", "count"), "read"),
        (("query", "insert"), "write"),
        (("update",), "write"),
        (("delete",), "write"),
        (("drop",), "write"),  # unknown: not known to only read
    ],
)
def test_batch_query_needs_write_for_writing_operations(ops: tuple[str, ...], needed: str) -> None:
    access = Access.of("/zerodb.v1.TableService/BatchQuery", False, False)
    request = table_pb2.BatchQueryRequest(
        project_id="p", operations=[table_pb2.TableOperation(op=op) for op in ops]
    )
    access.check_scope(grant(needed), request)
    others = [s for s in KEY_SCOPES if s != needed]
    with pytest.raises(PermissionDenied):
        access.check_scope(grant(*others), request)


def test_expiry() -> None:
    now = datetime.now(UTC)
    assert not Grant("p", ["read"], None).expired(now)
    assert not Grant("p", ["read"], now + timedelta(seconds=1)).expired(now)
    assert Grant("p", ["read"], now).expired(now)
