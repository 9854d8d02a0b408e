"""TLS on the Thrift port: the server's ``ssl.SSLContext``, built from the settings.

Each worker builds its own context (an ``SSLContext`` cannot cross to a spawned process); the
supervisor builds one first, before any worker starts, so that a missing file, a key that is not
the certificate's or a file that is not PEM stops ``bidfilter serve`` at once with an error
naming the setting, instead of every worker dying and being replaced in a loop.

TLS is terminated by the event loop: ``ThriftConnection`` sees the decrypted bytes, so the
per-connection protocol detection works unchanged.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from bidfilter.settings import Settings

log = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
# A certificate this close to its end is logged as a warning at start: time to rotate it.
EXPIRY_WARNING = datetime.timedelta(days=14)


class TLSSettingsError(ValueError):
    """A TLS setting is missing, unreadable or inconsistent; ``field`` names the setting
    (``"tls_cert"``, ``"tls_key"`` or ``"tls_client_ca"``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The context the Thrift port serves with, or ``None`` when TLS is off (no TLS setting).

    With ``tls_client_ca`` clients must present a certificate that CA signed (mutual TLS).
    Raises ``TLSSettingsError`` naming the setting at fault.
    """
    cert, key, client_ca = settings.tls_cert, settings.tls_key, settings.tls_client_ca
    if cert is None and key is None and client_ca is None:
        return None
    if cert is None:
        given = "tls_key" if key is not None else "tls_client_ca"
        raise TLSSettingsError("tls_cert", f"required when {given} is set (--tls-cert)")
    if key is None:
        raise TLSSettingsError("tls_key", "required when tls_cert is set (--tls-key)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    # The certificate is parsed alone first, so that a key failing below is the key's fault.
    with _loading("tls_cert", cert, "holds no PEM certificate"):
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cert)

    def no_password() -> NoReturn:
        # Without a callback OpenSSL would prompt on the terminal, in every worker.
        raise TLSSettingsError("tls_key", f"{key} is encrypted; give an unencrypted key")

    with _loading("tls_key", key, f"is not a PEM private key matching tls_cert {cert}"):
        context.load_cert_chain(cert, key, password=no_password)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        with _loading("tls_client_ca", client_ca, "holds no PEM CA certificate"):
            context.load_verify_locations(client_ca)
    return context


@contextlib.contextmanager
def _loading(field: str, path: Path, not_pem: str) -> Iterator[None]:
    """Turn what OpenSSL raises while loading ``path`` into an error naming ``field``."""
    try:
        yield
    except ssl.SSLError as error:  # before OSError: SSLError is one
        raise TLSSettingsError(field, f"{path} {not_pem} ({error.reason or error})") from None
    except OSError as error:
        raise TLSSettingsError(field, f"cannot read {path}: {error.strerror or error}") from None


def certificate_not_after(settings: Settings) -> datetime.datetime | None:
    """When the server's certificate (the first in ``tls_cert``) stops being valid, logging at
    start what clients that verify it will see: an error if it is expired or not yet valid,
    a warning if it ends within ``EXPIRY_WARNING``. Call after ``server_context`` accepted it.

    OpenSSL loads an expired certificate without a word and the server starts; only clients
    find out, each with a handshake failure. ``cryptography`` parses it (``ssl`` cannot read a
    certificate file without a handshake).
    """
    from cryptography import x509

    if settings.tls_cert is None:
        return None
    with _loading("tls_cert", settings.tls_cert, "holds no PEM certificate"):
        pem = settings.tls_cert.read_bytes()
    try:
        certificate = x509.load_pem_x509_certificate(pem)
    except ValueError as error:  # OpenSSL took it; a stricter parser may not: not fatal
        log.warning("tls_cert %s: cannot read its validity: %s", settings.tls_cert, error)
        return None
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    now = datetime.datetime.now(datetime.UTC)
    where = f"tls_cert {settings.tls_cert}"
    if end <= now:
        log.error("%s expired on %s: clients that verify it will refuse it", where, end)
    elif start > now:
        log.error("%s is not valid before %s: clients that verify it will refuse it", where, start)
    elif end - now < EXPIRY_WARNING:
        days = (end - now).total_seconds() / 86400
        log.warning("%s expires on %s, in %.1f days: rotate it", where, end, days)
    return end
