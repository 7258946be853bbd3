"""The errors starting or stopping the embedded servers raises."""

from zerodb_batch.errors import StartupError


class EmbeddedError(StartupError):
    """Start-up/shut-down failure with a message for a human."""


class EmbeddedBusy(EmbeddedError):
    """Another `serve` holds the data dir (its servers are running and are its to stop)."""
