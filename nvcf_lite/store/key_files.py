"""Key files in `data_dir`: random bytes in a file of mode 0600, made once, atomically.

A key kept on disk survives a restart; a key kept outside the database means a copy of the
database alone reveals nothing the key protects. Deleting a key file invalidates what it
protects: signed URLs and tokens (`signing.key`), sealed secrets (`secrets.key`).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

KEY_BYTES = 32


def load_key_file(
    data_dir: Path,
    name: str,
    size: int = KEY_BYTES,
    make: Callable[[int], bytes] = secrets.token_bytes,
) -> bytes:
    """The key in `data_dir/name`, created (temp file + link, mode 0600) on first use from
    `make(size)` (random bytes; a text secret passes hex, which is longer than `size`)."""
    path = data_dir / name
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    if len(key) >= size:
        return key
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = data_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(make(size))
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
