"""The URL-signing key: 32 random bytes in `<data_dir>/signing.key` (mode 0600), made once.

Keeping it on disk makes signed URLs and bearer tokens (domain/tokens.py, keyed by a sub-key of
it) survive a restart. Deleting the file invalidates every URL and token handed out so far (a
new key is made on the next start).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_FILE = "signing.key"
KEY_BYTES = 32


def load_signing_key(data_dir: Path) -> bytes:
    """The key in `data_dir`, created atomically (temp file + link) on first use."""
    path = data_dir / KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    if len(key) >= KEY_BYTES:
        return key
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(KEY_BYTES))
            out.flush()
            os.fsync(out.fileno())
        if path.exists():  # an empty or truncated file from a crash: replace it
            os.replace(tmp, path)
        else:
            try:  # another process may create it at the same moment: first one wins
                os.link(tmp, path)
            except FileExistsError:
                pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes()
