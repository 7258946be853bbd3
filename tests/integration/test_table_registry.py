"""The table registry on real PostgreSQL: create (indexes built and valid), duplicates, keyset
listing by name, delete (rows and indexes gone, counted), isolation between projects, a delete
racing an insert, and sync_indexes repairing what a crash leaves."""

from __future__ import annotations

import asyncio
import json

import pytest
from psycopg import sql

from tests.plugins.checks import waiting_on_lock
from tests.plugins.tables import Loop
from zerodb_batch.domain.table_filter import MATCH_ALL
from zerodb_batch.domain.table_ops import TableSpec
from zerodb_batch.errors import AlreadyExists, NotFound
from zerodb_batch.storage import table_rows, tables
from zerodb_batch.storage.queries import Q
from zerodb_batch.storage.table_sql import index_name


def index_states(aloop: Loop, table_id: int) -> dict[str, bool]:
    """Our indexes of a table: name -> valid."""
    cur = aloop.run(aloop.conn.execute(
        "SELECT c.relname, x.indisvalid FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid"
        " WHERE c.relname LIKE %s", (f"table_rows_t{table_id}_f%",)))  # fmt: skip
    return dict(aloop.run(cur.fetchall()))  # type: ignore[arg-type]


def rows_of(aloop: Loop, table_id: int) -> int:
    cur = aloop.run(aloop.conn.execute(
        "SELECT count(*) FROM table_rows WHERE table_id = %s", (table_id,)))  # fmt: skip
    return aloop.run(cur.fetchone())[0]  # type: ignore[index, no-any-return]


def test_create_builds_valid_indexes_and_refuses_a_duplicate(aloop: Loop) -> None:
    info = aloop.table("agents", "status", "meta.score")
    assert info.indexed_fields == ("status", "meta.score")
    assert index_states(aloop, info.table_id) == {
        index_name(info.table_id, 0): True,
        index_name(info.table_id, 1): True,
    }
    with pytest.raises(AlreadyExists) as caught:
        aloop.table("agents")
    assert caught.value.reason == "TABLE_EXISTS"
    other = Loop(aloop.url)  # another project may use the same name
    try:
        assert other.table("agents").table_id != info.table_id
    finally:
        other.close()


def test_list_pages_by_name_in_code_point_order(aloop: Loop) -> None:
    for name in ("beta", "Zeta", "alpha", "a-1", "a_1"):
        aloop.table(name)
    names, after = [], None
    while page := aloop.run(tables.list_page(aloop.conn, aloop.project, after, 2)):
        names.extend(t.name for t in page)
        after = page[-1].name
    assert names == ["Zeta", "a-1", "a_1", "alpha", "beta"]


def test_delete_counts_rows_and_drops_indexes(aloop: Loop) -> None:
    info = aloop.table("doomed", "n")
    aloop.run(table_rows.insert(aloop.conn, info, [json.dumps({"n": i}) for i in range(7)]))
    assert aloop.run(tables.delete(aloop.conn, aloop.project, "doomed")) == 7
    assert rows_of(aloop, info.table_id) == 0
    assert index_states(aloop, info.table_id) == {}
    assert aloop.run(tables.resolve(aloop.conn, aloop.project, ["doomed"])) == {}
    with pytest.raises(NotFound):
        aloop.run(tables.delete(aloop.conn, aloop.project, "doomed"))


def test_another_projects_tables_are_invisible_and_untouchable(aloop: Loop) -> None:
    aloop.table("mine")
    other = Loop(aloop.url)
    try:
        assert other.run(tables.resolve(other.conn, other.project, ["mine"])) == {}
        assert other.run(tables.list_page(other.conn, other.project, None, 10)) == []
        with pytest.raises(NotFound):
            other.run(tables.delete(other.conn, other.project, "mine"))
    finally:
        other.close()
    assert list(aloop.run(tables.resolve(aloop.conn, aloop.project, ["mine"]))) == ["mine"]


def test_an_insert_into_a_deleted_table_is_not_found_and_leaves_no_row(aloop: Loop) -> None:
    info = aloop.table("gone")
    aloop.run(tables.delete(aloop.conn, aloop.project, "gone"))
    with pytest.raises(NotFound):
        aloop.run(table_rows.insert(aloop.conn, info, ['{"a": 1}']))
    assert rows_of(aloop, info.table_id) == 0


def test_delete_waits_for_an_insert_in_flight_and_deletes_its_rows(aloop: Loop) -> None:
    info = aloop.table("busy")
    writer, deleter = aloop.connect(), aloop.connect()

    async def scenario() -> int:
        async with writer.transaction():
            await table_rows.insert(writer, info, ['{"a": 1}', '{"a": 2}'])
            deleting = asyncio.create_task(tables.delete(deleter, aloop.project, "busy"))
            await waiting_on_lock(aloop.conn, deleter.info.backend_pid)
        return await deleting

    assert aloop.run(scenario()) == 2
    assert rows_of(aloop, info.table_id) == 0


def test_sync_indexes_drops_strays_and_builds_missing_ones(aloop: Loop) -> None:
    info = aloop.table("repair", "a", "b")
    missing, stray = index_name(info.table_id, 1), "table_rows_t999999999_f0"
    aloop.run(aloop.conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(missing))))
    aloop.run(aloop.conn.execute(sql.SQL(
        "CREATE INDEX {} ON table_rows (row_id) WHERE table_id = 999999999"
    ).format(sql.Identifier(stray))))  # fmt: skip
    changed = aloop.run(tables.sync_indexes(aloop.conn))
    assert missing in changed and stray in changed
    assert index_states(aloop, info.table_id) == {
        index_name(info.table_id, 0): True,
        missing: True,
    }
    assert index_states(aloop, 999999999) == {}
    assert aloop.run(tables.sync_indexes(aloop.conn)) == []


def test_sync_indexes_leaves_index_builds_in_flight_alone(aloop: Loop) -> None:
    stray = "table_rows_t999999998_f0"
    aloop.run(aloop.conn.execute(sql.SQL(
        "CREATE INDEX {} ON table_rows (row_id) WHERE table_id = 999999998"
    ).format(sql.Identifier(stray))))  # fmt: skip
    building = aloop.connect()  # as a create() building indexes on another server
    aloop.run(building.execute(Q["table_index_build_begin"]))
    assert aloop.run(tables.sync_indexes(aloop.conn)) == []
    assert index_states(aloop, 999999998) == {stray: True}
    aloop.run(building.execute(Q["table_index_build_end"]))
    assert stray in aloop.run(tables.sync_indexes(aloop.conn))


def test_a_failed_index_build_removes_the_table(aloop: Loop) -> None:
    # A lock timeout stands for any failure of CREATE INDEX CONCURRENTLY after the table row
    # was inserted: the name is free again and no index is left.
    blocker = aloop.connect()

    async def scenario() -> None:
        async with blocker.transaction():
            await blocker.execute("LOCK TABLE table_rows IN SHARE UPDATE EXCLUSIVE MODE")
            await aloop.conn.execute("SET lock_timeout = '50ms'")
            try:
                with pytest.raises(Exception, match="lock timeout"):
                    await tables.create(aloop.conn, aloop.project, TableSpec("t", "", (("a",),)))
            finally:
                await aloop.conn.execute("RESET lock_timeout")

    aloop.run(scenario())
    assert aloop.run(tables.resolve(aloop.conn, aloop.project, ["t"])) == {}
    assert aloop.run(table_rows.count(aloop.conn, aloop.table("t"), MATCH_ALL)) == 0
