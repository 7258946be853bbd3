"""TLS settings: the certificate and key go together, files are checked before anything starts
(exit status 2, one line), and plaintext is served only on loopback unless allowed outright."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from tests.api.test_settings import run
from zerodb_batch.config import SettingError, Settings


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths of a CA, a certificate with its key, and a key of another certificate."""
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert = ca.issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    ca.issue_cert("other").private_key_pem.write_to_path(str(d / "other.key"))
    return {n: str(d / n) for n in ("ca.pem", "cert.pem", "key.pem", "other.key")}


def refused(env: dict[str, str], tmp_path: Path, *args: str) -> str:
    """The one line a refused start prints; it exits 2 and starts nothing."""
    done = run({"ZERODB_DATA_DIR": str(tmp_path), **env}, *(args or ("serve",)))
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1
    assert not (tmp_path / "pg").exists(), "nothing may start before the settings are checked"
    return done.stderr


def test_a_certificate_without_its_key_names_both(pem: dict[str, str], tmp_path: Path) -> None:
    line = refused({"ZERODB_TLS_CERT": pem["cert.pem"]}, tmp_path)
    assert line == (
        "zerodb-batch: ZERODB_TLS_KEY='' is invalid: expected a PEM file, since ZERODB_TLS_CERT "
        "is set (the certificate and its key go together)\n"
    )
    line = refused({"ZERODB_TLS_KEY": pem["key.pem"]}, tmp_path)
    assert line.startswith("zerodb-batch: ZERODB_TLS_CERT='' is invalid")
    assert "since ZERODB_TLS_KEY is set" in line


def test_a_client_ca_needs_tls(pem: dict[str, str], tmp_path: Path) -> None:
    line = refused({"ZERODB_TLS_CLIENT_CA": pem["ca.pem"]}, tmp_path)
    assert "ZERODB_TLS_CLIENT_CA=" in line and "ZERODB_TLS_CERT and ZERODB_TLS_KEY" in line


@pytest.mark.parametrize(
    ("env", "name", "why"),
    [
        ({"ZERODB_TLS_CERT": "/nonexistent.pem", "ZERODB_TLS_KEY": "key.pem"}, "ZERODB_TLS_CERT",
         "No such file"),
        ({"ZERODB_TLS_CERT": "cert.pem", "ZERODB_TLS_KEY": "other.key"}, "ZERODB_TLS_CERT",
         "KEY_VALUES_MISMATCH"),
        ({"ZERODB_TLS_CERT": "key.pem", "ZERODB_TLS_KEY": "key.pem"}, "ZERODB_TLS_CERT",
         "a readable PEM certificate and its private key"),
        ({"ZERODB_TLS_CERT": "cert.pem", "ZERODB_TLS_KEY": "key.pem",
          "ZERODB_TLS_CLIENT_CA": "key.pem"}, "ZERODB_TLS_CLIENT_CA", "CA certificates"),
    ],
)  # fmt: skip
def test_tls_files_are_checked_at_start(
    env: dict[str, str], name: str, why: str, pem: dict[str, str], tmp_path: Path
) -> None:
    env = {k: pem.get(v, v) for k, v in env.items()}
    line = refused(env, tmp_path)
    assert line.startswith(f"zerodb-batch: {name}=") and why in line, line


@pytest.mark.parametrize("listen", ["0.0.0.0:50051", "[::]:50051", "example.org:50051"])
def test_plaintext_is_refused_off_loopback(listen: str, tmp_path: Path) -> None:
    line = refused({"ZERODB_LISTEN": listen}, tmp_path)
    assert line == (
        f"zerodb-batch: ZERODB_LISTEN={listen!r} is invalid: expected a loopback address "
        "(127.0.0.1, ::1, localhost) when serving plaintext: set ZERODB_TLS_CERT and "
        "ZERODB_TLS_KEY, or ZERODB_ALLOW_PLAINTEXT=on\n"
    )


def test_the_http_door_follows_the_same_rule(tmp_path: Path) -> None:
    assert "ZERODB_HTTP_LISTEN='0.0.0.0:0'" in refused(
        {"ZERODB_HTTP_LISTEN": "0.0.0.0:0"}, tmp_path
    )
    assert "--http='0.0.0.0:0'" in refused({}, tmp_path, "serve", "--http", "0.0.0.0:0")


def test_plaintext_off_loopback_when_allowed_or_with_tls(pem: dict[str, str]) -> None:
    for listen in ("127.0.0.1:1", "127.9.9.9:1", "[::1]:1", "localhost:1"):
        assert Settings.from_env({"ZERODB_LISTEN": listen}).tls is None
    allowed = {"ZERODB_LISTEN": "0.0.0.0:1", "ZERODB_ALLOW_PLAINTEXT": "on"}
    assert Settings.from_env(allowed).allow_plaintext
    tls = Settings.from_env(
        {"ZERODB_LISTEN": "0.0.0.0:1", "ZERODB_HTTP_LISTEN": "0.0.0.0:2",
         "ZERODB_TLS_CERT": pem["cert.pem"], "ZERODB_TLS_KEY": pem["key.pem"],
         "ZERODB_TLS_CLIENT_CA": pem["ca.pem"]}
    ).tls  # fmt: skip
    assert tls is not None and tls.mutual
    with pytest.raises(SettingError) as caught:
        Settings.from_env({"ZERODB_HTTP_LISTEN": "10.0.0.1:8080"})
    assert caught.value.name == "ZERODB_HTTP_LISTEN"
