"""Certificates for the audit webhook: a CA, the operator's serving certificate, kube-apiserver's client one.

kube-apiserver's webhook backend presents the client certificate (its webhook kubeconfig names it);
the operator serves TLS with the serving certificate and accepts only clients the CA signed
(`auditwatch run --webhook-client-ca`). Made with the openssl command, as kubeadm's docs do by hand.
``auditwatch cluster certs DIR`` writes them for kind and the install; the local control plane makes
its own for every start.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

CLIENT_NAME = "kube-apiserver"  # the client certificate's CN, which the operator may require
DAYS = 365


@dataclass(frozen=True)
class WebhookCerts:
    directory: Path

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def server_cert(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "tls.key"

    @property
    def client_cert(self) -> Path:
        return self.directory / "client.crt"

    @property
    def client_key(self) -> Path:
        return self.directory / "client.key"


def make_webhook_certs(directory: Path, hosts: list[str], days: int = DAYS) -> WebhookCerts:
    """Write a CA, a serving certificate for ``hosts`` (IP addresses and DNS names) and a client
    certificate for ``kube-apiserver``, all signed by that CA, into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    certs = WebhookCerts(directory)
    ca_key = directory / "ca.key"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        ca_key,
        "-out",
        certs.ca,
        "-days",
        days,
        "-subj",
        "/CN=auditwatch-webhook-ca",
    )
    sans = ",".join(f"IP:{h}" if h.replace(".", "").isdigit() or ":" in h else f"DNS:{h}" for h in hosts)
    _signed(
        certs,
        certs.server_key,
        certs.server_cert,
        "auditwatch-webhook",
        days,
        f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n",
    )
    _signed(certs, certs.client_key, certs.client_cert, CLIENT_NAME, days, "extendedKeyUsage=clientAuth\n")
    for key in (ca_key, certs.server_key, certs.client_key):
        key.chmod(0o600)
    return certs


def make_client_cert(certs: WebhookCerts, name: str, days: int = DAYS) -> tuple[Path, Path]:
    """Another client certificate the CA signs: (certificate, key). ``days`` < 0 gives an expired one."""
    cert, key = certs.directory / f"client-{name}{days}.crt", certs.directory / f"client-{name}{days}.key"
    _signed(certs, key, cert, name, days, "extendedKeyUsage=clientAuth\n")
    return cert, key


def _signed(certs: WebhookCerts, key: Path, cert: Path, name: str, days: int, extensions: str) -> None:
    csr, ext = cert.with_suffix(".csr"), cert.with_suffix(".ext")
    ext.write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    _openssl(
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        certs.ca,
        "-CAkey",
        certs.directory / "ca.key",
        "-CAcreateserial",
        "-out",
        cert,
        "-days",
        days,
        "-extfile",
        ext,
    )
    csr.unlink()
    ext.unlink()


def _openssl(*args: object) -> None:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")
