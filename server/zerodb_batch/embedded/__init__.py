"""The embedded PostgreSQL and Valkey that `serve` runs under a data dir.

`Embedded` locks the data dir and starts both; `EmbeddedPostgres` and `EmbeddedValkey` are also
used alone, by the tests' fixtures.
"""

from zerodb_batch.embedded.data_dir import Embedded
from zerodb_batch.embedded.errors import EmbeddedBusy, EmbeddedError
from zerodb_batch.embedded.postgres import DATABASE, EmbeddedPostgres
from zerodb_batch.embedded.valkey import EmbeddedValkey

__all__ = [
    "DATABASE",
    "Embedded",
    "EmbeddedBusy",
    "EmbeddedError",
    "EmbeddedPostgres",
    "EmbeddedValkey",
]
