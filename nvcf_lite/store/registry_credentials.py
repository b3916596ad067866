"""Table `registry_credentials`: the records of an account's registry credentials and their
secrets, sealed (store/sealing.py) for their own row: the database file holds none in plain
text, and a secret copied onto another row does not open there."""

from __future__ import annotations

import sqlite3

import msgspec

from nvcf_lite.models import RegistryCredential
from nvcf_lite.store.sealing import SecretBox
from nvcf_lite.store.sqlite import Database, Row

_SELECT = "SELECT spec FROM registry_credentials"
_decoder = msgspec.json.Decoder(RegistryCredential)


class DuplicateRegistry(Exception):
    """The account already has a credential for this registry host."""


def _context(credential_id: str) -> str:
    return f"registry-credential:{credential_id}"


def _record(row: Row) -> RegistryCredential:
    return _decoder.decode(row["spec"])


class RegistryCredentialsRepo:
    def __init__(self, db: Database, box: SecretBox) -> None:
        self._db = db
        self._box = box

    async def insert(self, credential: RegistryCredential, secret: bytes) -> None:
        """Store a new credential with its sealed secret; DuplicateRegistry for a second one
        of the same account and registry host."""
        cid = credential.registry_credential_id
        try:
            async with self._db.transaction() as tx:
                await tx.execute(
                    "INSERT INTO registry_credentials (registry_credential_id, nca_id,"
                    " registry_hostname, created_at, spec, secret) VALUES (?,?,?,?,?,?)",
                    (
                        cid,
                        credential.nca_id,
                        credential.registry_hostname,
                        credential.created_at,
                        msgspec.json.encode(credential).decode(),
                        self._box.seal(secret, _context(cid)),
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise DuplicateRegistry(credential.registry_hostname) from exc

    async def get(self, nca_id: str, credential_id: str) -> RegistryCredential | None:
        row = await self._db.fetch_one(
            f"{_SELECT} WHERE nca_id = ? AND registry_credential_id = ?", (nca_id, credential_id)
        )
        return _record(row) if row else None

    async def list_all(self, nca_id: str) -> list[RegistryCredential]:
        rows = await self._db.fetch_all(
            f"{_SELECT} WHERE nca_id = ? ORDER BY created_at, rowid", (nca_id,)
        )
        return [_record(r) for r in rows]

    async def update(self, credential: RegistryCredential, secret: bytes | None) -> bool:
        """Rewrite the record and, when given, the secret; False if the credential is gone."""
        cid = credential.registry_credential_id
        spec = msgspec.json.encode(credential).decode()
        async with self._db.transaction() as tx:
            if secret is None:
                changed = await tx.execute(
                    "UPDATE registry_credentials SET spec = ? WHERE registry_credential_id = ?",
                    (spec, cid),
                )
            else:
                changed = await tx.execute(
                    "UPDATE registry_credentials SET spec = ?, secret = ?"
                    " WHERE registry_credential_id = ?",
                    (spec, self._box.seal(secret, _context(cid)), cid),
                )
        return changed > 0

    async def delete(self, nca_id: str, credential_id: str) -> bool:
        async with self._db.transaction() as tx:
            changed = await tx.execute(
                "DELETE FROM registry_credentials WHERE nca_id = ? AND registry_credential_id = ?",
                (nca_id, credential_id),
            )
        return changed > 0

    async def with_secret(
        self, nca_id: str, registry_hostname: str
    ) -> tuple[RegistryCredential, bytes] | None:
        """The account's credential for a registry host and its opened secret, else None.
        Raises SealBroken when the secret does not open."""
        row = await self._db.fetch_one(
            "SELECT registry_credential_id, spec, secret FROM registry_credentials"
            " WHERE nca_id = ? AND registry_hostname = ?",
            (nca_id, registry_hostname),
        )
        if row is None:
            return None
        plain = self._box.open(row["secret"], _context(row["registry_credential_id"]))
        return _record(row), plain
