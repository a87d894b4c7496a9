"""TLS and mTLS to Temporal, through a TLS-terminating proxy in front of the real dev server.

The dev server speaks plain gRPC, so a local proxy holds the server certificate (issued for
`temporal.internal`, not 127.0.0.1), demands a client certificate from our CA, and forwards
the decrypted stream to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hookyard import services
from runtime.temporal import connect
from settings import Settings
from tests.conftest import Stack, make_settings

SERVER_NAME = "temporal.internal"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey] | None, *, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    if subject == SERVER_NAME:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.with_suffix(".key").write_bytes(pem)


@dataclass
class Pki:
    folder: Path

    def path(self, name: str, suffix: str) -> str:
        return str(self.folder / f"{name}{suffix}")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("hookyard test CA", ca_key, None, ca=True)
    _write(folder / "ca", ca)
    for subject, name in ((SERVER_NAME, "server"), ("hookyard-worker", "client")):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(folder / name, _issue(subject, key, ("hookyard test CA", ca_key), ca=False), key)
    return Pki(folder)


@dataclass
class TlsProxy:
    address: str
    clients: list[str] = field(default_factory=list)  # common names of accepted client certificates


@pytest.fixture(scope="module")
async def proxy(stack: Stack, pki: Pki) -> AsyncIterator[TlsProxy]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.path("server", ".pem"), pki.path("server", ".key"))
    context.load_verify_locations(pki.path("ca", ".pem"))
    context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["h2"])
    upstream_host, upstream_port = stack.temporal_address.rsplit(":", 1)
    port = services.free_port()
    result = TlsProxy(f"127.0.0.1:{port}")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert") or {}
        result.clients += [value for rdn in peer.get("subject", ()) for key, value in rdn if key == "commonName"]
        up_reader, up_writer = await asyncio.open_connection(upstream_host, int(upstream_port))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port, ssl=context)
    async with server:
        yield result
        server.close()


def tls_settings(stack: Stack, proxy: TlsProxy, pki: Pki, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "temporal_address": proxy.address,
        "temporal_tls_ca_file": pki.path("ca", ".pem"),
        "temporal_tls_cert_file": pki.path("client", ".pem"),
        "temporal_tls_key_file": pki.path("client", ".key"),
        "temporal_tls_server_name": SERVER_NAME,
    }
    values.update(overrides)
    return make_settings(stack, **values)


async def test_mtls_connection_verifies_the_server_and_presents_the_client_certificate(
    stack: Stack, proxy: TlsProxy, pki: Pki
):
    client = await asyncio.wait_for(connect(tls_settings(stack, proxy, pki)), 30)
    await client.count_workflows("WorkflowType = 'nothing-here'")
    assert "hookyard-worker" in proxy.clients


async def test_without_the_client_certificate_the_server_refuses(stack: Stack, proxy: TlsProxy, pki: Pki):
    settings = tls_settings(stack, proxy, pki, temporal_tls_cert_file="", temporal_tls_key_file="")
    with pytest.raises(RuntimeError, match="connect"):
        await asyncio.wait_for(connect(settings), 20)


async def test_a_server_certificate_for_another_name_is_refused(stack: Stack, proxy: TlsProxy, pki: Pki):
    settings = tls_settings(stack, proxy, pki, temporal_tls_server_name="")  # then it must be valid for 127.0.0.1
    with pytest.raises(RuntimeError, match="InvalidCertificate"):
        await asyncio.wait_for(connect(settings), 20)


async def test_a_server_certificate_from_an_unknown_ca_is_refused(stack: Stack, proxy: TlsProxy, pki: Pki):
    settings = tls_settings(stack, proxy, pki, temporal_tls_ca_file="")  # the system roots do not know our CA
    with pytest.raises(RuntimeError, match="UnknownIssuer"):
        await asyncio.wait_for(connect(settings), 20)
