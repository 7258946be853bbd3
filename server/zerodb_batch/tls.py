"""The server's TLS material: its certificate and key, and the CA whose client certificates it
demands (mutual TLS), from PEM files checked once at start-up; used by the gRPC port and the
HTTP door alike."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path


class TlsFileError(ValueError):
    """A TLS file the server cannot use; `client_ca` tells which setting is at fault."""

    def __init__(self, expected: str, client_ca: bool = False) -> None:
        super().__init__(expected)
        self.client_ca = client_ca


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the certificate chain, its private key and, for mutual TLS, the client CA."""

    cert: Path
    key: Path
    client_ca: Path | None = None

    @property
    def mutual(self) -> bool:
        return self.client_ca is not None

    def server_context(self) -> ssl.SSLContext:
        """An ssl context serving the certificate (and demanding a client certificate signed by
        the client CA, when there is one). TlsFileError with a reason a human can act on."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as e:
            raise TlsFileError(f"a readable PEM certificate and its private key ({_why(e)})") from e
        if self.client_ca is not None:
            try:
                context.load_verify_locations(cafile=self.client_ca)
            except (OSError, ssl.SSLError) as e:
                raise TlsFileError(
                    f"a readable PEM file of CA certificates ({_why(e)})", client_ca=True
                ) from e
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def pem(self) -> tuple[bytes, bytes, bytes | None]:
        """(certificate chain, private key, client CA or None), as gRPC takes them."""
        ca = self.client_ca.read_bytes() if self.client_ca else None
        return self.cert.read_bytes(), self.key.read_bytes(), ca


def _why(e: OSError | ssl.SSLError) -> str:
    if isinstance(e, ssl.SSLError):
        return e.reason or str(e)  # e.g. KEY_VALUES_MISMATCH, NO_CERTIFICATE_OR_CRL_FOUND
    return e.strerror or str(e)


def is_loopback(host: str) -> bool:
    """Whether a listen host only takes connections from this machine (`localhost`, 127.0.0.0/8,
    ::1). Any other name may resolve to a network address, so it does not count."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
