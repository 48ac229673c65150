"""Apps served over real HTTP on loopback, for tests that cross a process boundary the way services
do (contract calls, webhooks, browsers), and addresses where nothing listens (a peer that is down)."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from werkzeug.serving import make_server


@contextmanager
def served(app, port: int = 0, *, tls: Path | None = None) -> Iterator[str]:
    """Serves a WSGI app with a threaded werkzeug server in a thread; yields its base URL. With
    `tls` (a directory), over HTTPS with a new self-signed certificate for 127.0.0.1, written to
    tls/ca.pem for clients to trust (REQUESTS_CA_BUNDLE)."""
    context = _self_signed(tls) if tls is not None else None
    server = make_server("127.0.0.1", port, app, threaded=True, ssl_context=context)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _self_signed(directory: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "ca.pem", directory / "key.pem")
    return context


def free_port() -> int:
    """A loopback port nothing listens on (just freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def dead_url() -> str:
    """The address of a peer that is down."""
    return f"http://127.0.0.1:{free_port()}"


@contextmanager
def service_process(
    module: str, environ: dict[str, str], timeout: float = 60, *, output: Path | None = None
) -> Iterator[str]:
    """Runs a service binary's default command (gunicorn, as deployed) in a subprocess with
    `environ` on a free loopback port; yields its base URL once /healthz answers. Its output goes
    to the file `output` when given (kept), else to a temporary one."""
    with gunicorn_process(module, environ, timeout, output=output) as (url, _master):
        yield url


@contextmanager
def gunicorn_process(
    module: str, environ: dict[str, str], timeout: float = 60, *, output: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """service_process, yielding its base URL and the process (gunicorn's master)."""
    port = free_port()
    env = {
        **os.environ,
        **environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    # A file: a pipe nobody reads would stop the server once full.
    log = (
        open(output, "w+b") if output is not None else tempfile.TemporaryFile()
    )  # noqa: SIM115 - closed below
    process = subprocess.Popen([sys.executable, "-m", module], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                log.seek(0)
                raise AssertionError(f"{module} exited: {log.read().decode(errors='replace')[-3000:]}")
            assert time.monotonic() < deadline, f"{module} did not answer /healthz within {timeout:g} s"
            try:
                if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                time.sleep(0.2)
        yield url, process
    finally:
        process.send_signal(signal.SIGINT)  # gunicorn's quick shutdown: held requests are cut off
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
