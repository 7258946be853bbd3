"""TLS and mutual TLS on the gRPC port and the HTTP door, with certificates made in the test
(trustme): a TLS client gets through, a plaintext one does not, and with a client CA only a client
holding a certificate that CA signed does."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
import trustme
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.api.test_load_cli import load
from tests.api.test_rlhf_cli import run_export
from tests.plugins.serve import Serve, grpcurl, serve_env
from tests.plugins.server import Project, ServerThread, server_settings
from tests.plugins.services import Backends
from zerodb.v1 import memory_pb2
from zerodb.v1.memory_pb2_grpc import MemoryServiceStub
from zerodb_batch.tls import TlsFiles

HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Pki:
    """A server CA and its certificate for the server; a client CA with one client certificate;
    and a stranger CA whose client certificate the server must not take."""

    dir: Path
    server_ca: Path  # what clients trust
    server_cert: Path
    server_key: Path
    client_ca: Path  # what the server trusts for mutual TLS
    client: tuple[Path, Path]  # (certificate, key) signed by client_ca
    stranger: tuple[Path, Path]  # (certificate, key) signed by another CA

    def trust(self) -> bytes:
        return self.server_ca.read_bytes()


def _issue(ca: trustme.CA, directory: Path, name: str, *hosts: str) -> tuple[Path, Path]:
    cert = ca.issue_cert(*hosts)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert.private_key_pem.write_to_path(str(key_path))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(cert_path), append=True)
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    server_ca, client_ca, stranger_ca = trustme.CA(), trustme.CA(), trustme.CA()
    server_ca.cert_pem.write_to_path(str(directory / "server-ca.pem"))
    client_ca.cert_pem.write_to_path(str(directory / "client-ca.pem"))
    cert, key = _issue(server_ca, directory, "server", *HOSTS)
    return Pki(
        directory,
        directory / "server-ca.pem",
        cert,
        key,
        directory / "client-ca.pem",
        _issue(client_ca, directory, "client", "client@example.org"),
        _issue(stranger_ca, directory, "stranger", "stranger@example.org"),
    )


def _server(database_url: str, backends: Backends, tls: TlsFiles) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(database_url, backends.redis_url, tls=tls))
    yield running
    running.close()


@pytest.fixture(scope="module")
def tls_server(database_url: str, backends: Backends, pki: Pki) -> Iterator[ServerThread]:
    yield from _server(database_url, backends, TlsFiles(pki.server_cert, pki.server_key))


@pytest.fixture(scope="module")
def mtls_server(database_url: str, backends: Backends, pki: Pki) -> Iterator[ServerThread]:
    yield from _server(
        database_url, backends, TlsFiles(pki.server_cert, pki.server_key, pki.client_ca)
    )


def tls_channel(server: ServerThread, pki: Pki, client: tuple[Path, Path] | None) -> grpc.Channel:
    key = cert = None
    if client is not None:
        cert, key = client[0].read_bytes(), client[1].read_bytes()
    credentials = grpc.ssl_channel_credentials(pki.trust(), key, cert)
    return grpc.secure_channel(server.address, credentials)


def check(channel: grpc.Channel) -> int:
    request = health_pb2.HealthCheckRequest()
    return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


def refused(channel: grpc.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        check(channel)
    return caught.value.code()  # type: ignore[no-any-return]


def test_a_tls_call_works(tls_server: ServerThread, pki: Pki) -> None:
    project = Project(*tls_server.new_key())
    with tls_channel(tls_server, pki, None) as channel:
        assert check(channel) == health_pb2.HealthCheckResponse.SERVING
        request = memory_pb2.BatchGetMemoriesRequest(project_id=project.id, ids=["x"])
        reply = MemoryServiceStub(channel).BatchGetMemories(request, metadata=project.auth)
        assert list(reply.not_found) == ["x"]


def test_a_plaintext_client_cannot_call_a_tls_server(tls_server: ServerThread) -> None:
    with grpc.insecure_channel(tls_server.address) as channel:
        assert refused(channel) is grpc.StatusCode.UNAVAILABLE


def test_a_client_that_does_not_trust_the_server_is_refused(
    tls_server: ServerThread, pki: Pki
) -> None:
    credentials = grpc.ssl_channel_credentials(trustme.CA().cert_pem.bytes())
    with grpc.secure_channel(tls_server.address, credentials) as channel:
        assert refused(channel) is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_a_client_without_a_certificate(
    mtls_server: ServerThread, pki: Pki
) -> None:
    with tls_channel(mtls_server, pki, None) as channel:
        assert refused(channel) is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_refuses_a_certificate_another_ca_signed(
    mtls_server: ServerThread, pki: Pki
) -> None:
    with tls_channel(mtls_server, pki, pki.stranger) as channel:
        assert refused(channel) is grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_takes_a_certificate_the_client_ca_signed(
    mtls_server: ServerThread, pki: Pki
) -> None:
    with tls_channel(mtls_server, pki, pki.client) as channel:
        assert check(channel) == health_pb2.HealthCheckResponse.SERVING


def https(server: ServerThread) -> str:
    return f"https://localhost:{server.app.http_port}"


def test_the_http_door_serves_tls_with_the_same_certificate(
    tls_server: ServerThread, pki: Pki
) -> None:
    project = Project(*tls_server.new_key())
    url = f"{https(tls_server)}/api/v1/projects/{project.id}/database/memory/batch/get"
    reply = requests.post(
        url, json={"ids": ["x"]}, headers={"x-api-key": project.key}, verify=pki.server_ca,
        timeout=10,
    )  # fmt: skip
    assert reply.status_code == 200, reply.text
    assert reply.json()["not_found"] == ["x"]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://localhost:{tls_server.app.http_port}/docs", timeout=10)


def test_the_http_door_demands_a_client_certificate_under_mutual_tls(
    mtls_server: ServerThread, pki: Pki
) -> None:
    url = f"{https(mtls_server)}/openapi.json"
    # Under TLS 1.3 the server judges the client's certificate after the client finished its
    # handshake: the refusal is an SSL alert or a closed connection, whichever the client sees.
    for cert in (None, pki.stranger):
        with pytest.raises(requests.ConnectionError):  # SSLError is one too
            requests.get(url, verify=pki.server_ca, cert=cert, timeout=10)
    reply = requests.get(url, verify=pki.server_ca, cert=pki.client, timeout=10)
    assert reply.status_code == 200


def test_grpcurl_and_curl_with_the_ca_file(tls_server: ServerThread, pki: Pki) -> None:
    listed = grpcurl("-cacert", str(pki.server_ca), tls_server.address, "list")
    assert listed.returncode == 0, listed.stderr
    assert "zerodb.v1.MemoryService" in listed.stdout
    plain = grpcurl("-plaintext", tls_server.address, "list")
    assert plain.returncode != 0
    url = f"{https(tls_server)}/openapi.json"
    curl = subprocess.run(
        ["curl", "-sS", "--fail", "--cacert", str(pki.server_ca), url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert curl.returncode == 0, curl.stderr
    assert '"openapi"' in curl.stdout


def test_the_load_and_export_commands_speak_tls(
    mtls_server: ServerThread, pki: Pki, tmp_path: Path
) -> None:
    """`zerodb-batch load` / `export` with --cacert, --cert and --key, against mutual TLS."""
    project = Project(*mtls_server.new_key())
    facts = tmp_path / "facts.jsonl"
    facts.write_text('{"content": "over TLS"}\n')
    tls = [
        "--cacert",
        str(pki.server_ca),
        "--cert",
        str(pki.client[0]),
        "--key",
        str(pki.client[1]),
    ]
    done = load(mtls_server, project, facts, *tls)
    assert done.returncode == 0, done.stderr
    without_cert = load(mtls_server, project, facts, "--cacert", str(pki.server_ca))
    assert without_cert.returncode == 2
    exported = run_export(mtls_server, project, *tls)
    assert exported.returncode == 0, exported.stderr
    half = run_export(mtls_server, project, "--cert", str(pki.client[0]))
    assert half.returncode == 2 and "--cert and --key go together" in half.stderr


def test_serve_with_tls_settings(
    database_url: str, backends: Backends, pki: Pki, tmp_path: Path
) -> None:
    """The real command with the README's settings: it says what it serves, and grpcurl with the
    CA file and a client certificate gets through. (Loopback only: tests never listen wider.)"""
    env = serve_env(
        tmp_path, "127.0.0.1:0", ZERODB_HTTP_LISTEN="127.0.0.1:0",
        ZERODB_DATABASE_URL=database_url, ZERODB_REDIS_URL=backends.redis_url,
        ZERODB_TLS_CERT=str(pki.server_cert), ZERODB_TLS_KEY=str(pki.server_key),
        ZERODB_TLS_CLIENT_CA=str(pki.client_ca),
    )  # fmt: skip
    serve = Serve(env)
    try:
        address = serve.wait_for(r"serving on (\S+) \(mutual TLS\)")[1]
        assert serve.wait_for(r"HTTP/JSON on (\S+)")[1].startswith("https://127.0.0.1:")
        client = ["-cert", str(pki.client[0]), "-key", str(pki.client[1])]
        listed = grpcurl("-cacert", str(pki.server_ca), *client, address, "list")
        assert listed.returncode == 0, listed.stderr
        assert "zerodb.v1.EventService" in listed.stdout
        assert grpcurl("-cacert", str(pki.server_ca), address, "list").returncode != 0
    finally:
        assert serve.stop() == 0
