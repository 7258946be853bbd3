"""The errors starting or stopping the embedded servers raises."""


class EmbeddedError(Exception):
    """Start-up/shut-down failure with a message for a human."""


class EmbeddedBusy(EmbeddedError):
    """Another `serve` holds the data dir (its servers are running and are its to stop)."""
