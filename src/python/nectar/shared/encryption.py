"""Encrypting secrets at rest (integration credentials, TOTP seeds) with Fernet, rotatable.

Keys come from NECTAR_ENCRYPTION_KEYS: comma-separated `key_id:fernet_key` pairs, newest first.
New data is encrypted with the first key; every listed key can still decrypt, so rotation is: put
a new key first, re-encrypt (`admin.pex rotate-credentials`), then drop the old key. Outside
production a key is generated once into var/encryption.key, so development needs no setup.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from nectar.shared.config import ConfigError, Settings, development_secret


class DecryptionFailed(Exception):
    """The ciphertext was made with a key that is no longer configured, or was altered."""


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[tuple[str, Fernet], ...]

    @property
    def current_id(self) -> str:
        return self.keys[0][0]

    def encrypt(self, plaintext: bytes) -> tuple[bytes, str]:
        return self.keys[0][1].encrypt(plaintext), self.current_id

    def decrypt(self, ciphertext: bytes) -> bytes:
        try:
            return MultiFernet([key for _, key in self.keys]).decrypt(ciphertext)
        except InvalidToken:
            raise DecryptionFailed(
                "these credentials were encrypted with a key that is not configured any more"
            ) from None

    def rotate(self, ciphertext: bytes) -> tuple[bytes, str]:
        """Re-encrypts with the current key."""
        try:
            return MultiFernet([key for _, key in self.keys]).rotate(ciphertext), self.current_id
        except InvalidToken:
            raise DecryptionFailed("cannot rotate: no configured key decrypts this") from None


def parse_keys(raw: str) -> KeyRing:
    keys = []
    for item in raw.split(","):
        key_id, sep, key = item.strip().partition(":")
        if not sep or not key_id or not key:
            raise ConfigError("NECTAR_ENCRYPTION_KEYS must be comma-separated key_id:fernet_key pairs")
        try:
            keys.append((key_id, Fernet(key.encode())))
        except ValueError:
            raise ConfigError(
                f"NECTAR_ENCRYPTION_KEYS: key {key_id!r} is not a Fernet key (32 url-safe base64 bytes)"
            ) from None
    return KeyRing(tuple(keys))


def key_ring(settings: Settings) -> KeyRing:
    if settings.encryption_keys:
        return parse_keys(settings.encryption_keys)
    if settings.is_production:
        raise ConfigError(
            "NECTAR_ENCRYPTION_KEYS is not set; production refuses to store credentials without it"
        )
    return parse_keys(f"dev:{_development_key(settings.var_dir)}")


def _development_key(directory: Path) -> str:
    return development_secret(directory / "encryption.key", lambda: Fernet.generate_key().decode())
