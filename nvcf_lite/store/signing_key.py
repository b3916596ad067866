"""The URL-signing key: 32 random bytes in `<data_dir>/signing.key` (mode 0600), made once.

Keeping it on disk makes signed URLs and bearer tokens (domain/tokens.py, keyed by a sub-key of
it) survive a restart. Deleting the file invalidates every URL and token handed out so far (a
new key is made on the next start).
"""

from __future__ import annotations

from pathlib import Path

from nvcf_lite.store.key_files import load_key_file

KEY_FILE = "signing.key"


def load_signing_key(data_dir: Path) -> bytes:
    """The key in `data_dir`, created atomically on first use."""
    return load_key_file(data_dir, KEY_FILE)
