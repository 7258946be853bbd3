"""Pure request logic (validation, conversion): no I/O, unit-tested without servers."""
