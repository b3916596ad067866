"""Secrets at rest: values sealed with AES-256-GCM under `<data_dir>/secrets.key`.

Function secrets, registry credentials and telemetry secrets are stored sealed, never as plain
text: a copy of the database alone reveals none of them. The key file (32 random bytes, mode
0600) lives beside the database, not in it, and goes into backups with the other key files.

A sealed value is text: `aead1:` + base64url(12-byte random nonce + ciphertext + tag). Each is
sealed for a *context* (what it is, and whose: `function-secrets:<version id>`), bound in as
associated data, so a value copied onto another row does not open there. A value stored before
sealing existed (plain JSON text) is read as it is and sealed by `seal_legacy` at start.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import TYPE_CHECKING

from nvcf_lite.store.key_files import load_key_file

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_FILE = "secrets.key"
PREFIX = "aead1:"
_NONCE = 12


class SealBroken(Exception):
    """A sealed value does not open: the key file was replaced, or the value was altered."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("a secrets key needs 32 bytes")
        self._key = key[:32]
        self._cipher: AESGCM | None = None

    @property
    def _aead(self) -> AESGCM:
        # cryptography is loaded at the first seal or open, not at start: its native library is
        # ~7 MB of RSS that a server with no secret never needs
        if self._cipher is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._cipher = AESGCM(self._key)
        return self._cipher

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SecretBox:
        """The box keyed by `data_dir/secrets.key`, made on first use (blocking file I/O)."""
        return cls(load_key_file(data_dir, KEY_FILE))

    def seal(self, plaintext: bytes, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext, context.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, value: str, context: str) -> bytes:
        """The plaintext of a sealed value; a legacy plain value is returned as it is."""
        if not is_sealed(value):
            return value.encode()
        from cryptography.exceptions import InvalidTag

        try:
            raw = base64.urlsafe_b64decode(value[len(PREFIX) :])
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode())
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise SealBroken(
                f"a sealed secret ({context.split(':', 1)[0]}) does not open with "
                f"{KEY_FILE}: was the key file replaced or the database restored without it?"
            ) from exc


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)
