"""Parameters of set-based statements that unnest binary arrays: values no column array holds
as they are."""

from __future__ import annotations

from typing import Any


def flat_tags(tags: list[list[str]]) -> dict[str, list[Any]]:
    """All records' tags in one array plus each record's slice (`tag_from` to `tag_to`, 1-based,
    inclusive): a text[][] must be rectangular, and a jsonb per record costs an encoding each."""
    values: list[str] = []
    starts, ends = [], []
    for record_tags in tags:
        starts.append(len(values) + 1)
        values.extend(record_tags)
        ends.append(len(values))
    return {"tag_values": values, "tag_from": starts, "tag_to": ends}


def column(values: list[Any]) -> list[Any] | None:
    """A column for a multi-array `unnest`: one NULL when every value is NULL, which `unnest`
    pads with NULLs just the same, instead of an array psycopg must scan and send in full."""
    return None if values.count(None) == len(values) else values
