"""`python -m zerodb_batch` is the `zerodb-batch` command."""

from zerodb_batch.cli import main

main()
